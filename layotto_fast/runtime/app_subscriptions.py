"""The app's own subscriptions: asked of its callback server, kept while it is reachable.

The sidecar dials the app, retrying with backoff until it answers, asks which topics it
wants, subscribes to exactly those, and delivers through the same connection. When the
connection is lost every subscription stops (messages in hand stay unacknowledged in
their backend) and the cycle starts again, asking afresh. No message is read from a
backend for a topic before the app has asked for it.

The app's reachability is its own, non-required entry in readiness: a sidecar without
an app is UP, as Layotto's is.
"""

from __future__ import annotations

import asyncio
import logging
from asyncio import FIRST_COMPLETED
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Protocol

from layotto_fast.runtime.cloudevents import Event
from layotto_fast.runtime.lifecycle import Health
from layotto_fast.runtime.pubsub import Unsubscribe, Verdict
from layotto_fast.runtime.pubsub_service import PubSubService, TopicSubscription
from layotto_fast.runtime.timeouts import end_if_cancelled

log = logging.getLogger(__name__)

BACKOFF_SECONDS = (0.1, 5.0)  # first and longest pause between attempts to reach the app
# A connection lost sooner than this after the app was reached is a failed attempt too: the
# next cycle waits the backoff, so connections that last moments (an app or proxy closing
# each one at once) do not set the pace of listing, subscribing and stopping again.
STEADY_SECONDS = 5.0
RESUBSCRIBE_SECONDS = 2.0  # how often a subscription that failed (its component DOWN) is tried again


class AppChannel(Protocol):
    """The app's callback server, as the runtime sees it (a transport implements it)."""

    @property
    def address(self) -> str: ...

    async def list_subscriptions(self) -> Sequence[TopicSubscription]:
        """The app's topics; raise when the app cannot be reached."""
        ...

    def deliver(self, event: Event, timeout: float) -> Awaitable[Verdict]:
        """The app's verdict on ``event``; TimeoutError after ``timeout`` s (pubsub_service.Deliver)."""
        ...

    async def lost(self) -> None:
        """Return once the connection to the app is lost."""
        ...

    async def replaced(self) -> None:
        """Return once the app has replaced its connection (a restart in place, a server
        rotating its connections): still reachable, perhaps as a new version."""
        ...

    async def close(self) -> None: ...


@dataclass
class AppState:
    status: Health = Health.INIT  # INIT until the app is first reached
    reason: str = "not reached yet"
    subscriptions: tuple[str, ...] = ()  # "pubsub/topic", each subscribed now
    failed: tuple[str, ...] = ()  # the app asked for these but they could not be subscribed


class AppSubscriptions:
    def __init__(self, service: PubSubService, channel: AppChannel) -> None:
        self._service = service
        self._channel = channel
        self.state = AppState()
        self._task: asyncio.Task[None] | None = None
        self._stops: list[Unsubscribe] = []

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def health(self) -> dict[str, object]:
        return {
            "status": self.state.status.value,
            "reason": self.state.reason,
            "required": False,
            "address": self._channel.address,
        }

    def info(self) -> dict[str, object]:
        return {
            **self.health(),
            "subscriptions": list(self.state.subscriptions),
            "failed_subscriptions": list(self.state.failed),
        }

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        pause = BACKOFF_SECONDS[0]
        # end_if_cancelled: a component's send, as it subscribes or stops, may lose close()'s
        # cancel (timeouts.py); the dials run in tasks of their own.
        while True:
            try:
                wanted = await self._channel.list_subscriptions()
            except Exception as exc:
                if self.state.status == Health.UP:
                    log.warning("app at %s unreachable: %s", self._channel.address, exc)
                if self.state.status != Health.INIT:
                    self.state.status = Health.DOWN
                self.state.reason = f"unreachable: {exc}"
                await asyncio.sleep(pause)
                pause = min(pause * 2, BACKOFF_SECONDS[1])
                continue
            reached = loop.time()
            self.state.status, self.state.reason = Health.UP, ""
            self.state.subscriptions = ()
            missing = await self._subscribe(wanted)
            log.info("app at %s reached: subscribed to %s", self._channel.address, ", ".join(self.state.subscriptions))
            lost = loop.create_task(self._channel.lost())
            replaced = loop.create_task(self._channel.replaced())
            ask_again = False  # the app replaced its connection and its listing is still owed
            try:
                end_if_cancelled()  # inside: what was subscribed is stopped on the way out
                while not lost.done():
                    await asyncio.wait([lost, replaced], timeout=RESUBSCRIBE_SECONDS, return_when=FIRST_COMPLETED)
                    if replaced.done() and not lost.done():
                        ask_again = True
                        replaced = loop.create_task(self._channel.replaced())
                    if ask_again and not lost.done():
                        # asked again at each tick until it answers: a new version still
                        # warming up must not keep the old one's subscriptions for good
                        wanted, missing, asked = await self._ask_again(wanted, missing)
                        ask_again = not asked
                        end_if_cancelled()
                    if missing and not lost.done():
                        missing = await self._subscribe(missing)
                        end_if_cancelled()
            finally:
                lost.cancel()
                replaced.cancel()
                await self._unsubscribe()
            end_if_cancelled()
            self.state.status, self.state.reason = Health.DOWN, "connection lost"
            self.state.failed = ()  # none is held, failed or not, until the app is back
            log.warning("lost the app at %s: subscriptions stopped until it is back", self._channel.address)
            if loop.time() - reached < STEADY_SECONDS:
                await asyncio.sleep(pause)
                pause = min(pause * 2, BACKOFF_SECONDS[1])
            else:
                pause = BACKOFF_SECONDS[0]

    async def _ask_again(
        self, wanted: Sequence[TopicSubscription], missing: list[TopicSubscription]
    ) -> tuple[Sequence[TopicSubscription], list[TopicSubscription], bool]:
        """After the app replaced its connection: its subscriptions asked for again and, when
        they changed (a new version of the app), subscribed afresh; else kept as they are.
        The last item: whether the app answered (if not, it is asked again later)."""
        try:
            now = await self._channel.list_subscriptions()
        except Exception as exc:  # lost meanwhile (the cycle ends on that), or not ready yet
            log.info("app at %s: asking for its subscriptions again failed: %s", self._channel.address, exc)
            return wanted, missing, False
        if list(now) == list(wanted):
            return wanted, missing, True
        log.info("app at %s changed its subscriptions: subscribing afresh", self._channel.address)
        await self._unsubscribe()
        missing = await self._subscribe(now)
        log.info("app at %s: subscribed to %s", self._channel.address, ", ".join(self.state.subscriptions))
        return now, missing, True

    async def _subscribe(self, wanted: Sequence[TopicSubscription]) -> list[TopicSubscription]:
        """Subscribe to each of ``wanted``; the ones that failed, to try again."""
        missing: list[TopicSubscription] = []
        failed: list[str] = []
        for subscription in wanted:
            name = f"{subscription.pubsub_name}/{subscription.topic}"
            try:
                self._stops.append(await self._service.subscribe(subscription, self._channel.deliver))
            except Exception as exc:
                why = getattr(exc, "message", None) or str(exc)
                if not any(f.startswith(f"{name}:") for f in self.state.failed):
                    log.error("the app's subscription to %s failed: %s", name, why)
                failed.append(f"{name}: {why}")
                missing.append(subscription)
            else:
                self.state.subscriptions += (name,)
        self.state.failed = tuple(failed)
        return missing

    async def _unsubscribe(self) -> None:
        """Stop every subscription at once: one by one, each could wait out its drain while
        the others kept reading messages for an app that is gone."""
        stops, self._stops = self._stops, []
        for outcome in await asyncio.gather(*(stop() for stop in stops), return_exceptions=True):
            if isinstance(outcome, Exception):
                log.error("stopping a subscription failed", exc_info=outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
        self.state.subscriptions = ()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
        await self._unsubscribe()
        await self._channel.close()
