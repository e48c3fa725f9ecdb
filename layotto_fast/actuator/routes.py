"""What the actuator answers: liveness, readiness, info and Prometheus metrics."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from layotto_fast import __version__
from layotto_fast.actuator.metrics import Metrics
from layotto_fast.http import Limits, Request, Response, Router
from layotto_fast.runtime.app_subscriptions import AppSubscriptions
from layotto_fast.runtime.lifecycle import Components, Health, HealthReport

# Every route is GET or HEAD: a body is read only to be dropped, so it may be small (a
# probe port may face the pod network, and each connection's body is held in memory).
ACTUATOR_LIMITS = Limits(max_body=1024)

JSON = "application/json"
PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"
# HEAD as well: probes and load balancers often check with it
METHODS = ("GET", "HEAD")


class ActuatorRoutes:
    """The actuator's endpoints, registered on ``self.router``."""

    def __init__(
        self,
        components: Components,
        metrics: Metrics,
        identity: dict[str, str],
        subscriptions: Callable[[], int],
        mesh: Callable[[], dict[str, Any]] | None = None,
        app: AppSubscriptions | None = None,
    ) -> None:
        self._components = components
        self._metrics = metrics
        self._identity = identity
        self._subscriptions = subscriptions
        self._mesh = mesh
        self._app = app
        self.router = Router()
        self.router.add(METHODS, "/actuator/health/liveness", self.liveness)
        self.router.add(METHODS, "/actuator/health/readiness", self.readiness)
        self.router.add(METHODS, "/actuator/health", self.readiness)
        self.router.add(METHODS, "/actuator/info", self.info)
        self.router.add(METHODS, "/metrics", self.metrics)

    def liveness(self, request: Request) -> Response:
        return _health(self._components.liveness())

    def readiness(self, request: Request) -> Response:
        return _health(self._components.readiness(self._app.health() if self._app is not None else None))

    def info(self, request: Request) -> Response:
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
        if self._mesh is not None:
            body["mesh"] = self._mesh()
        if self._app is not None:
            body["app"] = self._app.info()
        return Response(200, JSON, orjson.dumps(body))

    def metrics(self, request: Request) -> Response:
        return Response(200, PROMETHEUS, self._metrics.render())


def _health(report: HealthReport) -> Response:
    code = 200 if report.status == Health.UP else 503
    # Each entry's reason also in Layotto's place for it, details.reason, so that a probe
    # or dashboard written against Layotto's actuator reads it there.
    components = {
        name: {**entry, "details": {"reason": entry["reason"]}} if "reason" in entry else entry
        for name, entry in report.entries.items()
    }
    return Response(code, JSON, orjson.dumps({"status": report.status.value, "components": components}))
