"""Acknowledgements kept back to share the next write of an HTTP/2 connection.

grpc-go sends a PING with its calls and answers (its bandwidth estimate), and each ACK
written at once was a write of its own: half the writes to an app, and on the front a
system call ahead of the backend request a handler had just queued. Each such write
wakes the peer for 17 bytes. Output that is only acknowledgements (of a PING, of
SETTINGS) is kept back while an answer or a call is known to follow, for at most
``HOLD_SECONDS``; anything else leaves at once, with whatever was kept back before it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

HOLD_SECONDS = 0.02  # far below any keepalive timeout, far above a call's usual time here
FRAME_HEADER = 9  # bytes: length (3), type, flags, stream id (4)
SETTINGS, PING, ACK = 0x4, 0x6, 0x1


def only_acks(output: bytes) -> bool:
    """``output`` is whole HTTP/2 frames (RFC 9113), each a PING or SETTINGS with the ACK flag."""
    at = 0
    while at + FRAME_HEADER <= len(output):
        if output[at + 3] not in (PING, SETTINGS) or not output[at + 4] & ACK:
            return False
        at += FRAME_HEADER + int.from_bytes(output[at : at + 3], "big")
    return at == len(output)


class HeldAcks:
    """One connection's kept-back acknowledgements.

    It holds no reference to its connection (a cycle would leave connections to the
    collector): the connection's flush is given with each ``keep``, and only the timer
    holds it, until it fires or is cancelled."""

    __slots__ = ("_kept", "_timer")

    def __init__(self) -> None:
        self._kept: bytes | None = None
        self._timer: asyncio.TimerHandle | None = None

    def keep(self, output: bytes, flush: Callable[[], None]) -> bool:
        """Keep ``output`` back if it is only acknowledgements, for ``flush`` to write when the
        time is up; False when it must go now."""
        if not only_acks(output):
            return False
        if self._kept is None:
            self._kept = output
            self._timer = asyncio.get_running_loop().call_later(HOLD_SECONDS, flush)
        else:
            self._kept += output
        return True

    def release(self, output: bytes | None) -> bytes | None:
        """What to write now: anything kept back, then ``output``."""
        if self._kept is None:
            return output
        kept, self._kept = self._kept, None
        self.cancel()
        return kept if output is None else kept + output

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
