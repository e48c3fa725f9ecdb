"""The app's subscription cycle, without an app: what it does with the subscriptions it holds."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

from layotto_fast.runtime.app_subscriptions import AppSubscriptions
from layotto_fast.runtime.pubsub_service import TopicSubscription


def test_a_lost_app_stops_all_its_subscriptions_at_once() -> None:
    """Each stop may wait out its drain; one after another, ten took ten drains, while the ones
    not stopped yet kept reading messages for an app that was gone."""

    async def scenario() -> float:
        subscriptions = AppSubscriptions(cast(Any, None), cast(Any, None))
        stopped: list[int] = []

        def stop_of(number: int) -> Any:
            async def stop(deadline: float | None = None) -> None:
                await asyncio.sleep(0.3)  # a drain
                stopped.append(number)

            return stop

        subscriptions._stops = [stop_of(number) for number in range(10)]
        started = time.monotonic()
        await subscriptions._unsubscribe()
        assert sorted(stopped) == list(range(10)) and subscriptions._stops == []
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 1.0


class _ClosingApp:
    """An app reached at once whose every connection ends at once."""

    address = "app:1"

    def __init__(self) -> None:
        self.listed = 0

    async def list_subscriptions(self) -> list[Any]:
        self.listed += 1
        return []

    def deliver(self, event: Any, timeout: float) -> Any:
        raise AssertionError("nothing is subscribed")

    async def lost(self) -> None:
        await asyncio.sleep(0)

    async def replaced(self) -> None:
        await asyncio.Event().wait()

    async def close(self) -> None:
        return None


def test_connections_that_last_moments_do_not_set_the_pace_of_the_cycle() -> None:
    """Before, each lost connection began the next cycle at once: list, subscribe, stop, at the
    pace of the app (or a proxy) closing connections, with readiness flapping."""

    async def scenario() -> int:
        app = _ClosingApp()
        subscriptions = AppSubscriptions(cast(Any, None), app)
        subscriptions.start()
        await asyncio.sleep(1.0)
        await subscriptions.close()
        return app.listed

    assert asyncio.run(scenario()) <= 6  # 0.1 + 0.2 + 0.4 + 0.8 s of backoff within the second


class _ServiceLosingACancel:
    """A pub/sub service whose component, subscribing when the sidecar closes, loses the cancel
    as Python 3.11's ``wait_for`` in redis-py's send does (runtime/timeouts.py): a stand-in
    for that timing, which cannot be had on demand."""

    def __init__(self) -> None:
        self.subscribing = asyncio.Event()
        self.cancel_lost = False
        self.stopped = 0

    async def subscribe(self, subscription: TopicSubscription, deliver: Any) -> Any:
        self.subscribing.set()
        try:
            await asyncio.sleep(0.5)
        except asyncio.CancelledError:
            self.cancel_lost = True

        async def stop(deadline: float | None = None) -> None:
            self.stopped += 1

        return stop


class _AppOfOneTopic:
    """An app reached at once, asking for one topic, whose connection stays."""

    address = "app:1"

    async def list_subscriptions(self) -> list[TopicSubscription]:
        return [TopicSubscription("pubsub", "orders")]

    def deliver(self, event: Any, timeout: float) -> Any:
        raise AssertionError("nothing is published")

    async def lost(self) -> None:
        await asyncio.Event().wait()

    async def replaced(self) -> None:
        await asyncio.Event().wait()

    async def close(self) -> None:
        return None


def test_close_ends_the_cycle_when_a_subscribe_lost_its_cancel() -> None:
    """Before, the cycle went on waiting for the app's connection to end, and close() waited
    for the cycle forever. The subscription made meanwhile is stopped."""

    async def scenario() -> None:
        service = _ServiceLosingACancel()
        subscriptions = AppSubscriptions(cast(Any, service), _AppOfOneTopic())
        subscriptions.start()
        await asyncio.wait_for(service.subscribing.wait(), 5.0)
        await asyncio.wait_for(subscriptions.close(), 2.0)
        assert service.cancel_lost and service.stopped == 1

    asyncio.run(scenario())


class _AppReplacedByANewVersion:
    """An app whose connection is replaced once (a new version behind the same address) and
    whose first listing after that fails (it is still warming up)."""

    address = "app:1"

    def __init__(self) -> None:
        self.listed = 0
        self.replacement = asyncio.Event()

    async def list_subscriptions(self) -> list[TopicSubscription]:
        self.listed += 1
        if self.listed == 1:
            return [TopicSubscription("pubsub", "orders")]
        if self.listed == 2:
            raise RuntimeError("UNAVAILABLE: warming up")
        return [TopicSubscription("pubsub", "payments")]

    def deliver(self, event: Any, timeout: float) -> Any:
        raise AssertionError("nothing is published")

    async def lost(self) -> None:
        await asyncio.Event().wait()

    async def replaced(self) -> None:
        if self.listed == 1:  # once: the next wait is for a further replacement
            await asyncio.sleep(0.05)
            return
        await asyncio.Event().wait()

    async def close(self) -> None:
        return None


class _RecordingService:
    def __init__(self) -> None:
        self.topics: list[str] = []

    async def subscribe(self, subscription: TopicSubscription, deliver: Any) -> Any:
        self.topics.append(subscription.topic)

        async def stop(deadline: float | None = None) -> None:
            return None

        return stop


def test_a_new_version_whose_first_listing_fails_is_asked_again(monkeypatch: Any) -> None:
    """Before, one failed listing after the app replaced its connection was the last: the new
    version kept the old one's subscriptions until its connection was lost."""
    from layotto_fast.runtime import app_subscriptions

    monkeypatch.setattr(app_subscriptions, "RESUBSCRIBE_SECONDS", 0.05)

    async def scenario() -> tuple[tuple[str, ...], list[str]]:
        service, app = _RecordingService(), _AppReplacedByANewVersion()
        subscriptions = AppSubscriptions(cast(Any, service), app)
        subscriptions.start()
        deadline = time.monotonic() + 5
        while subscriptions.state.subscriptions != ("pubsub/payments",) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        held = subscriptions.state.subscriptions
        await subscriptions.close()
        return held, service.topics

    held, topics = asyncio.run(scenario())
    assert held == ("pubsub/payments",)
    assert topics == ["orders", "payments"]
