"""``make bench``, first line: the machine the figures come from.

On a virtual machine, what a hop costs at low load depends less on the code than on how an
idle virtual CPU waits: one that halts (HLT) leaves the hypervisor, and waking it takes an
interrupt and a re-entry (tens of microseconds per process woken, in closed-loop runs
here). The guest's halt-polling (``guest_halt_poll_ns`` of the haltpoll cpuidle driver)
spins a while before halting instead. Printed so that a figure read later is read with it.
"""

from __future__ import annotations

import platform
from pathlib import Path


def read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return "-"


def hypervisor(cpuinfo: str) -> str:
    flags = next((line for line in cpuinfo.splitlines() if line.startswith("flags")), "")
    return "virtual machine" if " hypervisor" in flags else "no hypervisor flag"


def describe(root: Path = Path("/")) -> str:
    """One line: CPUs, model, whether virtualised, the idle driver and its halt-polling window."""
    cpuinfo = read(root / "proc" / "cpuinfo")
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "-")
    idle = root / "sys" / "devices" / "system" / "cpu" / "cpuidle"
    driver = read(idle / "current_driver")
    polling = read(root / "sys" / "module" / "haltpoll" / "parameters" / "guest_halt_poll_ns")
    cpus = cpuinfo.count("processor\t:")
    halts = " (an idle CPU halts at once: each wake-up of an idle process pays a hypervisor exit)"
    return (
        f"machine: {cpus} CPUs ({model}), {hypervisor(cpuinfo)}, kernel {platform.release()}; "
        f"cpuidle driver {driver}, guest_halt_poll_ns {polling}" + (halts if polling == "0" else "")
    )


if __name__ == "__main__":
    print(describe())
