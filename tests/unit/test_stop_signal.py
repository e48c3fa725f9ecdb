"""The sidecar's answer to stop signals: the first drains, a second exits at once."""

from __future__ import annotations

import signal

import pytest

from layotto_fast import server, settings


def test_the_first_signal_drains_even_when_the_sidecar_is_already_stopping_by_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stop of its own (the grpcio server ended) set the same flag a signal sets, so the
    platform's first SIGTERM was taken for a second one: exit 143 at once, the drain cut."""
    exits: list[int] = []
    monkeypatch.setattr(server.os, "_exit", exits.append)
    sidecar = server.Sidecar(settings.load(None, {"app_port": 0}), [])
    sidecar.failure = "the gRPC server (grpcio transport) ended by itself"
    sidecar._stop.set()  # as _stop_if_grpcio_ends does
    sidecar._on_stop_signal(signal.SIGTERM)
    assert exits == []
    sidecar._on_stop_signal(signal.SIGINT)
    assert exits == [128 + signal.SIGINT]
