"""The app's subscription cycle, without an app: what it does with the subscriptions it holds."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

from layotto_fast.runtime.app_subscriptions import AppSubscriptions


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
