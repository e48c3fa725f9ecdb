"""What /proc tells a test about a process it started, or about itself."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def sockets_to(port: int, pid: int | str = "self") -> set[str]:
    """The inodes of the IPv4 TCP sockets process ``pid`` holds open (by a descriptor) whose peer's
    port is ``port``: its client ends of connections to a server on that port."""
    held = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # a descriptor closed while the folder was read
            target = os.readlink(fd)
            if target.startswith("socket:["):
                held.add(target[len("socket:[") : -1])
    found = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[9] in held:
            found.add(fields[9])
    return found
