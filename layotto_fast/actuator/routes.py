"""What the actuator answers: liveness, readiness, info and Prometheus metrics."""

from __future__ import annotations

import time
from collections.abc import Callable

import orjson

from layotto_fast import __version__
from layotto_fast.actuator.metrics import Metrics
from layotto_fast.runtime.lifecycle import Components, Health

JSON = b"application/json"
PROMETHEUS = b"text/plain; version=0.0.4; charset=utf-8"

Response = tuple[int, bytes, bytes]


class ActuatorRoutes:
    def __init__(
        self,
        components: Components,
        metrics: Metrics,
        identity: dict[str, str],
        subscriptions: Callable[[], int],
    ) -> None:
        self._components = components
        self._metrics = metrics
        self._identity = identity
        self._subscriptions = subscriptions
        self._routes: dict[str, Callable[[], Response]] = {
            "/actuator/health/liveness": self.liveness,
            "/actuator/health/readiness": self.readiness,
            "/actuator/health": self.readiness,
            "/actuator/info": self.info,
            "/metrics": self.metrics,
        }

    def __call__(self, method: str, path: str) -> Response:
        route = self._routes.get(path.rstrip("/") or "/")
        if route is None:
            return 404, JSON, orjson.dumps({"error": f"no actuator endpoint at {path}"})
        return route()

    def liveness(self) -> Response:
        # The process answers, so it is alive; a stopping process reports DOWN so a
        # platform does not mistake a drain for a healthy idle.
        status = Health.DOWN if self._components.stopping_reason else Health.UP
        return _health(status, {"process": {"status": status.value, "reason": self._components.stopping_reason}})

    def readiness(self) -> Response:
        status, components = self._components.readiness()
        if self._components.stopping_reason:
            components = {"sidecar": {"status": "DOWN", "reason": self._components.stopping_reason}, **components}
        return _health(status, components)

    def info(self) -> Response:
        body = {
            **self._identity,
            "version": __version__,
            "components": [
                {"name": s.manifest.name, "type": s.manifest.type, "version": s.manifest.version}
                for s in self._components.slots
            ],
            "configuration_subscriptions": self._subscriptions(),
            "uptime_seconds": round(time.time() - self._components.started_at, 3),
        }
        return 200, JSON, orjson.dumps(body)

    def metrics(self) -> Response:
        return 200, PROMETHEUS, self._metrics.render()


def _health(status: Health, components: dict[str, dict[str, str]]) -> Response:
    code = 200 if status == Health.UP else 503
    return code, JSON, orjson.dumps({"status": status.value, "components": components})
