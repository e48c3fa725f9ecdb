"""Dapr's topic scoping of a pub/sub component (allowedTopics, protectedTopics,
publishingScopes, subscriptionScopes). Before, the four were accepted and ignored: an app
published to and read any topic the manifest meant to keep from it."""

from __future__ import annotations

import asyncio

import pytest

from layotto_fast.errors import PermissionDenied
from layotto_fast.runtime import cloudevents
from layotto_fast.runtime.pubsub import Verdict
from layotto_fast.runtime.pubsub_scopes import TopicScopes
from layotto_fast.runtime.pubsub_service import BulkEntry, TopicSubscription
from tests.components.support import until
from tests.pubsub.service import memory_pubsub


def scopes(app_id: str = "app1", **metadata: str) -> TopicScopes:
    found = TopicScopes.of(metadata, app_id)
    assert found is not None
    return found


def test_no_scoping_metadata_means_no_scopes() -> None:
    assert TopicScopes.of({"redisHost": "x", "allowedTopics": ""}, "app1") is None


@pytest.mark.parametrize(
    ("metadata", "publishable", "not_publishable"),
    [
        ({"allowedTopics": "a, b"}, {"a", "b"}, {"c", ""}),
        ({"publishingScopes": "app1=a;app2=b"}, {"a"}, {"b", "c"}),
        ({"publishingScopes": "app2=b"}, {"a", "b", "c"}, set()),  # app1 is not named: no limit
        ({"publishingScopes": "app1="}, set(), {"a", "b"}),  # named with no topic: none
        ({"publishingScopes": "app1=a;app1=b"}, {"a", "b"}, {"c"}),
        ({"protectedTopics": "secret"}, {"a"}, {"secret"}),
        ({"protectedTopics": "secret", "publishingScopes": "app1=secret"}, {"secret"}, {"a"}),
        ({"allowedTopics": "a", "publishingScopes": "app1=a,b"}, {"a"}, {"b"}),
        ({"AllowedTopics": "a"}, {"a"}, {"b"}),  # names in any case, as Dapr reads them
    ],
)
def test_what_an_app_may_publish(metadata: dict[str, str], publishable: set[str], not_publishable: set[str]) -> None:
    found = scopes(**metadata)
    assert {t for t in publishable | not_publishable if found.may_publish(t)} == publishable


def test_publishing_and_subscription_scopes_are_apart() -> None:
    found = scopes(publishingScopes="app1=out", subscriptionScopes="app1=in")
    assert (found.may_publish("out"), found.may_publish("in")) == (True, False)
    assert (found.may_subscribe("in"), found.may_subscribe("out")) == (True, False)


def test_the_service_refuses_what_the_manifest_does_not_allow() -> None:
    metadata = {"allowedTopics": "orders,audit", "publishingScopes": "app=orders", "subscriptionScopes": "app=audit"}

    async def scenario() -> list[bytes]:
        components, service = await memory_pubsub(metadata)
        delivered: list[bytes] = []

        async def deliver(event: cloudevents.Event, timeout: float) -> Verdict:
            delivered.append(event.data)
            return Verdict.SUCCESS

        try:
            for topic in ("audit", "elsewhere"):
                with pytest.raises(PermissionDenied, match=f"topic '{topic}' of pubsub 'ps' is not allowed for app id"):
                    await service.publish("ps", topic, b"x", "text/plain", {})
                with pytest.raises(PermissionDenied, match=f"'{topic}'"):
                    await service.bulk_publish("ps", topic, [BulkEntry("1", b"x", "text/plain")], {})
            for topic in ("orders", "elsewhere"):
                with pytest.raises(PermissionDenied, match=f"subscription to topic '{topic}' on pubsub 'ps'"):
                    await service.subscribe(TopicSubscription("ps", topic), deliver)
            stop = await service.subscribe(TopicSubscription("ps", "audit"), deliver)
            assert await service.publish("ps", "orders", b"sent", "text/plain", {})
            # another app, which may publish to audit, publishes there: it is delivered here
            _, envelope = cloudevents.wrap(b"audited", "text/plain", source="other", topic="audit", pubsub_name="ps")
            await components.ready("pubsub")["ps"].publish("audit", envelope, {})
            assert await until(lambda: delivered == [b"audited"], 5)
            await stop()
        finally:
            await service.close()
            await components.close_all()
        return delivered

    assert asyncio.run(scenario()) == [b"audited"]
