"""make bench's machine line says what the machine's idle CPUs do, read from /proc and /sys."""

from __future__ import annotations

from pathlib import Path

from bench.machine import describe


def write(root: Path, path: str, text: str) -> None:
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    (root / path).write_text(text)


def test_a_guest_that_halts_at_once_is_named_so(tmp_path: Path) -> None:
    processor = "processor\t: {n}\nmodel name\t: Test CPU\nflags\t\t: fpu sse2 hypervisor avx\n\n"
    write(tmp_path, "proc/cpuinfo", processor.format(n=0) + processor.format(n=1))
    write(tmp_path, "sys/devices/system/cpu/cpuidle/current_driver", "haltpoll\n")
    write(tmp_path, "sys/module/haltpoll/parameters/guest_halt_poll_ns", "0\n")
    line = describe(tmp_path)
    assert line.startswith("machine: 2 CPUs (Test CPU), virtual machine, kernel ")
    assert "cpuidle driver haltpoll, guest_halt_poll_ns 0 (an idle CPU halts at once" in line


def test_polling_guests_and_missing_files_are_reported_as_found(tmp_path: Path) -> None:
    write(tmp_path, "proc/cpuinfo", "processor\t: 0\nflags\t\t: fpu sse2\n")
    write(tmp_path, "sys/module/haltpoll/parameters/guest_halt_poll_ns", "200000\n")
    line = describe(tmp_path)
    assert "1 CPUs (-), no hypervisor flag" in line
    assert line.endswith("cpuidle driver -, guest_halt_poll_ns 200000")
