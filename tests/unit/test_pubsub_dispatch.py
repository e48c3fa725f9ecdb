"""The dispatcher every pub/sub component hands its messages to: how much room it reports."""

from __future__ import annotations

import asyncio

from layotto_fast.components.pubsub.dispatch import Dispatcher
from layotto_fast.runtime.pubsub import Message, Verdict


def test_room_waits_until_as_many_slots_as_wanted_are_free() -> None:
    async def run() -> None:
        releases = [asyncio.Event() for _ in range(4)]

        async def handler(message: Message) -> Verdict:
            await releases[int(message.data)].wait()
            return Verdict.SUCCESS

        async def settle(message: Message, verdict: Verdict) -> None:
            return None

        dispatcher = Dispatcher(handler, settle, 4, "test")
        for index in range(4):
            await dispatcher.submit(Message("t", b"%d" % index))
        assert dispatcher.free == 0
        room = asyncio.ensure_future(dispatcher.room(2))
        releases[0].set()
        await asyncio.sleep(0.01)
        assert not room.done(), "one free slot is not the two asked for"
        releases[1].set()
        assert await asyncio.wait_for(room, 1) == 2
        for release in releases:
            release.set()
        await dispatcher.drain(1)
        assert await asyncio.wait_for(dispatcher.room(10), 1) == 4

    asyncio.run(run())
