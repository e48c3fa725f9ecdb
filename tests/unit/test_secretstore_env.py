"""``secretstores.local.env`` reads the environment as Dapr's component does: the prefix is put
before the name asked for and taken off the names a bulk read returns, and the variables
Dapr withholds (``APP_API_TOKEN``, ``DAPR_*``) are never handed out."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from layotto_fast.errors import NotFound
from layotto_fast.manifest import ComponentManifest, load_file
from layotto_fast.runtime import registry
from layotto_fast.runtime.secrets import SecretStore

SOURCE = str(Path(__file__))
REPO = Path(__file__).resolve().parents[2]


def store(**metadata: str) -> SecretStore:
    component = registry.build(ComponentManifest("env", "secretstores.local.env", "v1", metadata, SOURCE))
    assert isinstance(component, SecretStore)
    return component


def get(secrets: SecretStore, key: str) -> dict[str, str]:
    return asyncio.run(secrets.get(key))


def bulk(secrets: SecretStore) -> dict[str, dict[str, str]]:
    return asyncio.run(secrets.bulk_get())


def test_the_prefix_is_put_before_the_name_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LFTEST_APP_DB_PASS", "pw")
    monkeypatch.setenv("DB_PASS", "not-this-one")
    secrets = store(prefix="LFTEST_APP_")
    assert get(secrets, "DB_PASS") == {"DB_PASS": "pw"}
    # The full name is not a secret of the store: it would be LFTEST_APP_LFTEST_APP_DB_PASS.
    with pytest.raises(NotFound, match=r"'LFTEST_APP_DB_PASS' not found.*looked for 'LFTEST_APP_LFTEST_APP_DB_PASS'"):
        get(secrets, "LFTEST_APP_DB_PASS")


def test_a_bulk_read_returns_only_the_prefixed_variables_without_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LFTEST_APP_A", "1")
    monkeypatch.setenv("LFTEST_APP_B", "2")
    monkeypatch.setenv("LFTEST_APP_", "just the prefix")
    monkeypatch.setenv("LFTEST_OTHER", "3")
    assert bulk(store(prefix="LFTEST_APP_")) == {"A": {"A": "1"}, "B": {"B": "2"}}


def test_without_a_prefix_names_are_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LFTEST_PLAIN", "x")
    secrets = store()
    assert get(secrets, "LFTEST_PLAIN") == {"LFTEST_PLAIN": "x"}
    assert bulk(secrets)["LFTEST_PLAIN"] == {"LFTEST_PLAIN": "x"}
    with pytest.raises(NotFound, match=r"'LFTEST_NO_SUCH' not found in the environment$"):
        get(secrets, "LFTEST_NO_SUCH")


WITHHELD = ("APP_API_TOKEN", "app_api_token", "DAPR_API_TOKEN", "DAPR_CERT_KEY", "dapr_notallowed")


def test_dapr_tokens_and_certificates_are_never_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in WITHHELD:
        monkeypatch.setenv(name, "secret-of-the-platform")
    monkeypatch.setenv("LFTEST_FOO", "bar")
    secrets = store()
    for name in WITHHELD:
        with pytest.raises(NotFound, match=rf"{name!r} not found: the environment variable {name!r} is withheld"):
            get(secrets, name)
    everything = bulk(secrets)
    assert not set(WITHHELD) & set(everything)
    assert everything["LFTEST_FOO"] == {"LFTEST_FOO": "bar"}


def test_the_withheld_names_are_judged_with_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    # The full variable name is what counts: under MYAPP_ the name DAPR_X is MYAPP_DAPR_X,
    # readable; a prefix starting with DAPR_ withholds everything.
    monkeypatch.setenv("LFTEST_DAPR_X", "ok")
    assert get(store(prefix="LFTEST_"), "DAPR_X") == {"DAPR_X": "ok"}
    monkeypatch.setenv("DAPR_LFTEST_Y", "no")
    dapr_prefixed = store(prefix="DAPR_")
    with pytest.raises(NotFound, match="withheld"):
        get(dapr_prefixed, "LFTEST_Y")
    assert bulk(dapr_prefixed) == {}
    monkeypatch.setenv("APP_API_TOKEN", "no")
    with pytest.raises(NotFound, match="withheld"):
        get(store(prefix="APP_"), "API_TOKEN")


def embedded_secret_env() -> SecretStore:
    # components/ is the source of the embedded set (the build copies it to layotto_fast/defaults/).
    (manifest,) = load_file(REPO / "components" / "secrets-env.yaml")
    assert (manifest.name, manifest.type) == ("secret_env", "secretstores.local.env")
    component = registry.build(manifest)
    assert isinstance(component, SecretStore)
    return component


def test_the_embedded_secret_env_hands_out_only_layotto_secret_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAYOTTO_SECRET_LFTEST_DB", "pw")
    monkeypatch.setenv("LFTEST_CLOUD_CREDENTIAL", "must-not-leak")
    secrets = embedded_secret_env()
    assert get(secrets, "LFTEST_DB") == {"LFTEST_DB": "pw"}
    with pytest.raises(NotFound):
        get(secrets, "LFTEST_CLOUD_CREDENTIAL")
    everything = bulk(secrets)
    assert everything["LFTEST_DB"] == {"LFTEST_DB": "pw"}
    expected = {name.removeprefix("LAYOTTO_SECRET_") for name in os.environ if name.startswith("LAYOTTO_SECRET_")}
    assert set(everything) == expected - {""}
    assert "LFTEST_CLOUD_CREDENTIAL" not in everything and "PATH" not in everything
