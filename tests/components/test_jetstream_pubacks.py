"""PubAcks (publishing to JetStream and waiting for the PubAck) against a real nats-server."""

from __future__ import annotations

import asyncio
import time
import uuid

import nats
import pytest
from nats import errors as nats_errors
from nats.js import errors as js_errors

from layotto_fast.components.pubsub.jetstream_pubacks import PubAcks
from tests.backends.servers import NatsServer
from tests.components.support import LoopHarness

# One timeout for every publish of a PubAcks: long enough for 50 real PubAcks on a busy
# machine, the unanswered publish failing after it.
TIMEOUT = 2.0


def test_acknowledged_publishes_return_and_an_unanswered_one_times_out(nats_server: NatsServer) -> None:
    stored, silent = f"stored-{uuid.uuid4().hex[:8]}", f"silent-{uuid.uuid4().hex[:8]}"

    async def scenario() -> float:
        nc = await nats.connect(nats_server.url)
        try:
            await nc.jetstream().add_stream(name=stored, subjects=[stored])
            await nc.subscribe(silent, cb=_ignore)  # someone listens, nobody answers
            acks = PubAcks(nc, timeout=TIMEOUT)
            await acks.start()
            await asyncio.gather(*(acks.publish(stored, b"%d" % i, None) for i in range(50)))
            started = time.monotonic()
            late, answered = await asyncio.gather(
                acks.publish(silent, b"lost", None), acks.publish(stored, b"after", None), return_exceptions=True
            )
            assert isinstance(late, nats_errors.TimeoutError), late
            assert answered is None, "a publish answered in time is not failed by the timer"
            took = time.monotonic() - started
            info = await nc.jetstream().stream_info(stored)
            assert info.state.messages == 51
            with pytest.raises(js_errors.NoStreamResponseError):
                await acks.publish(f"nobody-{uuid.uuid4().hex[:8]}", b"x", None)
            with pytest.raises(nats_errors.BadSubjectError):
                await acks.publish("", b"x", None)  # refused before sending: nothing left to time out
            assert all(future.done() for _, future in acks._deadlines)
            return took
        finally:
            await nc.close()

    harness = LoopHarness(nats_server)
    try:
        took = harness.run(scenario())
    finally:
        harness.close()
    assert TIMEOUT - 0.05 <= took < TIMEOUT + 1.5, f"the unanswered publish failed after {took:.2f} s"


async def _ignore(msg: object) -> None:
    return None
