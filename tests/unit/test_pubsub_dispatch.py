"""The dispatcher every pub/sub component hands its messages to: how much room it reports."""

from __future__ import annotations

import asyncio

from layotto_fast.runtime.pubsub import DRAIN_SECONDS, PARTITION_KEY, Message, Verdict
from layotto_fast.runtime.pubsub_dispatch import Dispatcher


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
        await dispatcher.drain(asyncio.get_running_loop().time() + 1)
        assert await asyncio.wait_for(dispatcher.room(10), 1) == 4

    asyncio.run(run())


def test_a_handler_future_is_settled_by_callback_without_a_task() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        pending: list[asyncio.Future[Verdict]] = []
        settled: list[tuple[bytes, Verdict]] = []

        def handler(message: Message) -> asyncio.Future[Verdict]:
            future: asyncio.Future[Verdict] = loop.create_future()
            pending.append(future)
            return future

        def settle(message: Message, verdict: Verdict) -> None:
            settled.append((message.data, verdict))

        dispatcher = Dispatcher(handler, settle, 4, "test")
        tasks_before = len(asyncio.all_tasks())
        for index in range(3):
            await dispatcher.submit(Message("t", b"%d" % index))
        assert dispatcher.free == 1
        await asyncio.sleep(0)  # submitted messages start on the next pass
        assert len(pending) == 3
        assert len(asyncio.all_tasks()) == tasks_before, "a future handler needs no task per message"
        assert dispatcher.free == 1
        pending[1].set_result(Verdict.DROP)
        pending[0].set_exception(RuntimeError("the subscriber broke"))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert sorted(settled) == [(b"0", Verdict.RETRY), (b"1", Verdict.DROP)]
        assert dispatcher.free == 3
        await dispatcher.drain(loop.time() + 0.01)
        assert pending[2].cancelled(), "drain gives up on what is still being handled"
        assert len(settled) == 2, "a message cut off by drain is not settled: it stays in the backend"
        assert dispatcher.free == 4

    asyncio.run(run())


def test_messages_start_after_what_their_loop_pass_already_queued() -> None:
    # The reply that brought the messages may have finished a caller's call too (a publish
    # acknowledged): that caller is answered before any of them is delivered.
    async def run() -> None:
        loop = asyncio.get_running_loop()
        order: list[str] = []

        def handler(message: Message) -> asyncio.Future[Verdict]:
            order.append(message.data.decode())
            future: asyncio.Future[Verdict] = loop.create_future()
            future.set_result(Verdict.SUCCESS)
            return future

        dispatcher = Dispatcher(handler, lambda message, verdict: None, 4, "test")
        loop.call_soon(order.append, "answer queued before")
        await dispatcher.submit(Message("t", b"m1"))
        await dispatcher.submit(Message("t", b"m2"))
        assert order == [] and dispatcher.free == 2, "slots are taken at once, handling waits"
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert order == ["answer queued before", "m1", "m2"]
        await dispatcher.submit(Message("t", b"m3"))
        await dispatcher.drain(loop.time() + 1)
        assert order[-1] == "m3", "drain starts what was submitted before waiting for it"

    asyncio.run(run())


def test_a_slot_stays_taken_until_an_asynchronous_settle_is_done() -> None:
    async def run() -> None:
        acked = asyncio.Event()

        async def handler(message: Message) -> Verdict:
            return Verdict.SUCCESS

        async def settle(message: Message, verdict: Verdict) -> None:
            await acked.wait()

        dispatcher = Dispatcher(handler, settle, 1, "test")
        await dispatcher.submit(Message("t", b"0"))
        await asyncio.sleep(0.01)
        assert dispatcher.free == 0, "handled, but its acknowledgement is still on its way"
        acked.set()
        assert await asyncio.wait_for(dispatcher.room(1), 1) == 1

    asyncio.run(run())


def test_a_handler_that_raises_at_once_settles_as_retry_and_the_reader_goes_on() -> None:
    async def run() -> None:
        settled: list[Verdict] = []

        def handler(message: Message) -> asyncio.Future[Verdict]:
            raise ValueError("cannot even start")

        def settle(message: Message, verdict: Verdict) -> None:
            settled.append(verdict)

        dispatcher = Dispatcher(handler, settle, 2, "test")
        await dispatcher.submit(Message("t", b"0"))
        await dispatcher.submit(Message("t", b"1"))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert settled == [Verdict.RETRY, Verdict.RETRY]
        assert dispatcher.free == 2

    asyncio.run(run())


def test_messages_of_one_partition_key_are_handled_one_after_another() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        started: list[bytes] = []
        pending: dict[bytes, asyncio.Future[Verdict]] = {}

        def handler(message: Message) -> asyncio.Future[Verdict]:
            started.append(message.data)
            pending[message.data] = loop.create_future()
            return pending[message.data]

        dispatcher = Dispatcher(handler, lambda message, verdict: None, 4, "test")
        for data, key in ((b"a1", "a"), (b"b1", "b"), (b"a2", "a")):
            await dispatcher.submit(Message("t", data, {PARTITION_KEY: key}))
        await asyncio.sleep(0.01)
        assert started == [b"a1", b"b1"], "a2 waits for a1"
        pending[b"a1"].set_result(Verdict.SUCCESS)
        await asyncio.sleep(0.01)
        assert started == [b"a1", b"b1", b"a2"]
        pending[b"b1"].set_result(Verdict.SUCCESS)
        pending[b"a2"].set_result(Verdict.SUCCESS)
        await dispatcher.drain(loop.time() + 1)
        assert dispatcher.free == 4

    asyncio.run(run())


def test_two_submitters_waiting_for_a_slot_both_get_one() -> None:
    """A Redis subscription submits from its reader and from its claimer of stale entries:
    neither may be forgotten while the other waits too."""

    async def run() -> None:
        loop = asyncio.get_running_loop()
        pending: list[asyncio.Future[Verdict]] = []

        def handler(message: Message) -> asyncio.Future[Verdict]:
            pending.append(loop.create_future())
            return pending[-1]

        dispatcher = Dispatcher(handler, lambda message, verdict: None, 1, "test")
        await dispatcher.submit(Message("t", b"first"))
        reader = asyncio.ensure_future(dispatcher.submit(Message("t", b"read")))
        claimer = asyncio.ensure_future(dispatcher.submit(Message("t", b"claimed")))
        await asyncio.sleep(0.01)
        assert not reader.done() and not claimer.done()
        for _ in range(2):
            pending[-1].set_result(Verdict.SUCCESS)
            await asyncio.wait([reader, claimer], timeout=1, return_when=asyncio.FIRST_COMPLETED)
            await asyncio.sleep(0.01)
        assert reader.done() and claimer.done(), "each waiter got a slot as one came free"
        pending[-1].set_result(Verdict.SUCCESS)
        await dispatcher.drain(loop.time() + 1)
        assert len(pending) == 3 and dispatcher.free == 1

    asyncio.run(run())


def test_drain_waits_until_its_deadline_or_the_default_and_not_longer() -> None:
    """The deadline is on the loop's clock: the handlers at work get until then, not a fixed
    while; without one they get DRAIN_SECONDS; one already past starts nothing more."""

    async def run() -> None:
        loop = asyncio.get_running_loop()
        settled: list[bytes] = []
        started: list[bytes] = []

        async def handler(message: Message) -> Verdict:
            started.append(message.data)
            await asyncio.sleep(float(message.data))
            return Verdict.SUCCESS

        def settle(message: Message, verdict: Verdict) -> None:
            settled.append(message.data)

        def dispatcher() -> Dispatcher:
            return Dispatcher(handler, settle, 4, "test")

        # Later than DRAIN_SECONDS: the one that needs 1.2 s is waited for.
        first = dispatcher()
        await first.submit(Message("t", b"%g" % (DRAIN_SECONDS + 0.2)))
        began = loop.time()
        await first.drain(began + DRAIN_SECONDS + 1.0)
        assert settled == [b"%g" % (DRAIN_SECONDS + 0.2)]
        assert loop.time() - began < DRAIN_SECONDS + 0.9, "drain returns when the handlers are done"

        # Sooner than DRAIN_SECONDS: cut off at the deadline, not settled.
        settled.clear()
        second = dispatcher()
        await second.submit(Message("t", b"5"))
        began = loop.time()
        await second.drain(began + 0.1)
        assert 0.08 <= loop.time() - began < 0.5 and settled == []

        # None: DRAIN_SECONDS.
        third = dispatcher()
        await third.submit(Message("t", b"5"))
        began = loop.time()
        await third.drain()
        assert DRAIN_SECONDS - 0.05 <= loop.time() - began < DRAIN_SECONDS + 0.5 and settled == []

        # Past: what is submitted and not started yet is never started.
        started.clear()
        fourth = dispatcher()
        await fourth.submit(Message("t", b"0"))
        await fourth.drain(loop.time() - 1)
        await asyncio.sleep(0.01)
        assert started == [] and settled == [] and fourth.free == 4

    asyncio.run(run())


def test_drain_waits_for_an_acknowledgement_that_starts_while_it_waits() -> None:
    """A message handled during the drain is settled asynchronously by a task the drain's
    first wait does not hold: it was cancelled once that wait ended, well before the
    deadline, and a verdict given in time never reached the backend."""

    async def run() -> list[bytes]:
        acked: list[bytes] = []
        handled = asyncio.Event()

        async def handler(message: Message) -> Verdict:
            await handled.wait()
            return Verdict.SUCCESS

        async def settle(message: Message, verdict: Verdict) -> None:
            await asyncio.sleep(0.05)
            acked.append(message.data)

        dispatcher = Dispatcher(handler, settle, 1, "test")
        await dispatcher.submit(Message("t", b"0"))
        await asyncio.sleep(0)
        asyncio.get_running_loop().call_later(0.01, handled.set)
        await dispatcher.drain(asyncio.get_running_loop().time() + 2)
        return acked

    assert asyncio.run(run()) == [b"0"]
