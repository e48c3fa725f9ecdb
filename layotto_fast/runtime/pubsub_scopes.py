"""Which topics of a pub/sub component this app may publish to and subscribe to: Dapr's
topic scoping, read from the component's manifest.

- ``allowedTopics`` (``a,b``): when set, no other topic of the component is usable at all.
- ``publishingScopes`` / ``subscriptionScopes`` (``app1=a,b;app2=c``): an app named there
  may publish to (subscribe to) only the topics listed for it; ``app1=`` lists none.
- ``protectedTopics`` (``a,b``): only apps whose scope lists one may use it.

An app no scope names may use every allowed topic that is not protected. The names are
read in any case and spaces are ignored, as Dapr reads them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

ALLOWED_TOPICS = "allowedTopics"
PROTECTED_TOPICS = "protectedTopics"
PUBLISHING_SCOPES = "publishingScopes"
SUBSCRIPTION_SCOPES = "subscriptionScopes"
NAMES = (ALLOWED_TOPICS, PROTECTED_TOPICS, PUBLISHING_SCOPES, SUBSCRIPTION_SCOPES)


@dataclass(frozen=True, slots=True)
class TopicScopes:
    allowed: frozenset[str]
    protected: frozenset[str]
    publishing: frozenset[str]  # this app's scope; empty: the app is not named
    subscribing: frozenset[str]

    @classmethod
    def of(cls, metadata: Mapping[str, str], app_id: str) -> TopicScopes | None:
        """The scoping ``metadata`` sets for ``app_id``; None when it sets none."""
        values = {name.lower(): value for name, value in metadata.items()}
        if not any(values.get(name.lower()) for name in NAMES):
            return None
        return cls(
            allowed=_topics(values.get(ALLOWED_TOPICS.lower(), "")),
            protected=_topics(values.get(PROTECTED_TOPICS.lower(), "")),
            publishing=_scope(values.get(PUBLISHING_SCOPES.lower(), ""), app_id),
            subscribing=_scope(values.get(SUBSCRIPTION_SCOPES.lower(), ""), app_id),
        )

    def may_publish(self, topic: str) -> bool:
        return self._allows(topic, self.publishing)

    def may_subscribe(self, topic: str) -> bool:
        return self._allows(topic, self.subscribing)

    def _allows(self, topic: str, scope: frozenset[str]) -> bool:
        if self.allowed and topic not in self.allowed:
            return False
        if not scope and topic not in self.protected:
            return True
        return topic in scope


def _topics(raw: str) -> frozenset[str]:
    raw = raw.replace(" ", "")
    return frozenset(raw.split(",")) if raw else frozenset()


def _scope(raw: str, app_id: str) -> frozenset[str]:
    """The topics ``raw`` (``app1=a,b;app2=c``) lists for ``app_id``, from every entry naming it."""
    topics: set[str] = set()
    for entry in raw.replace(" ", "").split(";"):
        parts = entry.split("=")
        if len(parts) >= 2 and parts[0] == app_id:
            topics.update(parts[1].split(","))
    return frozenset(topics)
