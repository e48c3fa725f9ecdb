"""Manifest and settings parsing: every problem names the file and the field."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from layotto_fast import settings
from layotto_fast.components.secretstores.local_file import LocalFileSecretStore
from layotto_fast.errors import StartupError
from layotto_fast.manifest import ComponentManifest, SecretRef, load_file, load_folder, load_yaml
from layotto_fast.runtime import metadata
from layotto_fast.runtime.lifecycle import Components, Health

GOOD = """apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: store
spec:
  type: state.in-memory
  version: v1
  metadata:
    - name: port
      value: 6379
    - name: enabled
      value: true
"""


def test_multi_document_file_skips_other_kinds(tmp_path: Path) -> None:
    path = tmp_path / "all.yaml"
    path.write_text(GOOD + "---\napiVersion: dapr.io/v1alpha1\nkind: Subscription\nmetadata: {name: s}\n---\n")
    [manifest] = load_file(path)
    assert manifest.name == "store" and manifest.block == "state"
    assert manifest.metadata == {"port": "6379", "enabled": "true"}


def test_a_folder_s_yaml_that_is_no_manifest_is_skipped_and_upper_case_extensions_are_read(
    tmp_path: Path,
) -> None:
    """A linter's YAML in a ./components folder (no kind, or a list) stopped start-up, where
    daprd skips it; StateStore.YAML was never read, where daprd reads it."""
    (tmp_path / ".eslintrc.yml").write_text("extends: standard\nrules: {semi: error}\n")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    (tmp_path / "StateStore.YAML").write_text(GOOD)
    [manifest] = load_folder(tmp_path)
    assert manifest.name == "store"


@pytest.mark.parametrize("version", ['""', "v0", "V1", "v1"])
def test_the_versions_daprd_takes_for_a_first_version_are_v1(tmp_path: Path, version: str) -> None:
    """daprd takes "", v0 and v1 in any case as a component's first version; they stopped start-up."""
    path = tmp_path / "m.yaml"
    path.write_text(GOOD.replace("version: v1", f"version: {version}"))
    [manifest] = load_file(path)
    assert manifest.version == "v1"


def test_metadata_item_without_name(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(GOOD.replace("- name: enabled", "- nome: enabled"))
    with pytest.raises(StartupError) as raised:
        load_file(path)
    assert raised.value.field == "spec.metadata[1].name" and str(path) in str(raised.value)


PLACEHOLDERS = GOOD.replace("value: 6379", 'value: "{uuid}|{uuid}"').replace(
    "value: true", 'value: "{podName}/{namespace}/{appID}"'
)


def test_an_env_ref_reads_the_sidecars_environment_as_dapr_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dapr's envRef: it was read as no value at all, and a component got an empty password."""
    monkeypatch.setenv("REDIS_PASS", "s3cret")
    monkeypatch.delenv("UNSET_HERE", raising=False)
    path = tmp_path / "m.yaml"
    env_items = "    - name: redisPassword\n      envRef: REDIS_PASS\n    - name: other\n      envRef: UNSET_HERE\n"
    path.write_text(GOOD.replace("    - name: port", env_items + "    - name: port"))
    [manifest] = load_file(path)
    assert (manifest.metadata["redisPassword"], manifest.metadata["other"]) == ("s3cret", "")  # unset: "", as in Dapr
    for ref, problem in (("DAPR_API_TOKEN", "withheld"), ("APP_API_TOKEN", "withheld"), ("A B", "must name")):
        path.write_text(GOOD.replace("    - name: port", f"    - name: x\n      envRef: {ref}\n    - name: port"))
        with pytest.raises(StartupError) as raised:
            load_file(path)
        assert raised.value.field == "spec.metadata[0].envRef" and problem in raised.value.problem


def test_dapr_placeholders_in_metadata_are_filled_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """consumerID: "{podName}" (each replica its own group) and the like were taken literally:
    every replica shared one group named '{podName}'."""
    from layotto_fast import server

    (tmp_path / "m.yaml").write_text(PLACEHOLDERS)
    monkeypatch.setenv("POD_NAME", "web-7f9")
    monkeypatch.setenv("NAMESPACE", "shop")
    [manifest] = server.load_manifests(settings.load(None, {"resources_path": str(tmp_path), "app_id": "cart"}))
    first, second = manifest.metadata["port"].split("|")
    assert first != second and len(first) == 36 and first.count("-") == 4  # a UUID each
    assert manifest.metadata["enabled"] == "web-7f9/shop.cart/cart"
    monkeypatch.delenv("NAMESPACE")
    [manifest] = server.load_manifests(settings.load(None, {"resources_path": str(tmp_path), "app_id": "cart"}))
    assert manifest.metadata["enabled"] == "web-7f9/default.cart/cart"


def test_a_placeholder_in_a_manifest_scoped_to_another_app_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shared folder's component for app 'billing' with {podName} stopped 'shop' from starting
    where POD_NAME is unset, though 'shop' never loads it."""
    from layotto_fast import server

    (tmp_path / "m.yaml").write_text(PLACEHOLDERS.replace("spec:\n", "scopes: [billing]\nspec:\n", 1))
    monkeypatch.delenv("POD_NAME", raising=False)
    [manifest] = server.load_manifests(settings.load(None, {"resources_path": str(tmp_path), "app_id": "shop"}))
    assert manifest.scopes == ("billing",) and manifest.metadata["enabled"] == "{podName}/{namespace}/{appID}"


def test_a_pod_name_placeholder_without_pod_name_stops_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from layotto_fast import server

    (tmp_path / "m.yaml").write_text(PLACEHOLDERS)
    monkeypatch.delenv("POD_NAME", raising=False)
    with pytest.raises(StartupError) as raised:
        server.load_manifests(settings.load(None, {"resources_path": str(tmp_path)}))
    assert raised.value.field == "spec.metadata.enabled" and "POD_NAME" in raised.value.problem
    assert str(tmp_path / "m.yaml") in raised.value.source


def test_missing_folder() -> None:
    with pytest.raises(StartupError) as raised:
        load_folder(Path("/nonexistent-folder"))
    assert raised.value.field == "resources-path"


def test_settings_precedence(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("grpc-port: 1000\nactuator_port: 2000\nresources_path: comps\n")
    loaded = settings.load(str(config), {"grpc_port": 3000, "actuator_port": None})
    assert loaded.grpc_port == 3000 and loaded.actuator_port == 2000
    assert loaded.components_folders() == [tmp_path / "comps"]  # in the file: relative to the file
    assert settings.load(None, {}).grpc_port == 34904
    # The file's own folder may hold a comma; the value's commas separate folders.
    odd = tmp_path / "app,v2"
    odd.mkdir()
    (odd / "c.yaml").write_text(f"resources_path: comps, {tmp_path / 'shared'}\n")
    assert settings.load(str(odd / "c.yaml"), {}).components_folders() == [odd / "comps", tmp_path / "shared"]
    flagged = settings.load(str(odd / "c.yaml"), {"resources_path": "here"})
    assert flagged.components_folders() == [Path("here")], "a flag's is relative to where it started"


def test_settings_reject_bool_as_port(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("grpc_port: true\n")
    with pytest.raises(StartupError) as raised:
        settings.load(str(config), {})
    assert raised.value.field == "grpc_port"


@pytest.mark.parametrize(
    ("line", "field", "problem"),
    [
        ("component_init_timeout_seconds: 0", "component_init_timeout_seconds", "must be more than 0"),
        ("health_check_interval_seconds: 0", "health_check_interval_seconds", "must be more than 0"),
        ("health_check_interval_seconds: .nan", "health_check_interval_seconds", "must be a non-negative number"),
        ("shutdown_grace_seconds: .inf", "shutdown_grace_seconds", "must be a non-negative number"),
        ("app_keepalive_seconds: -1", "app_keepalive_seconds", "must be a non-negative number"),
    ],
)
def test_settings_refuse_durations_that_break_the_sidecar(tmp_path: Path, line: str, field: str, problem: str) -> None:
    """An init timeout of 0 left every component DOWN; an interval of 0 or NaN turned health checks
    off; an infinite grace never let a stop finish."""
    config = tmp_path / "c.yaml"
    config.write_text(line + "\n")
    with pytest.raises(StartupError) as raised:
        settings.load(str(config), {})
    assert (raised.value.source, raised.value.field) == (str(config), field)
    assert problem in raised.value.problem


def test_a_bad_flag_is_named_as_a_flag_not_blamed_on_the_file(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("grpc_port: 1000\n")
    with pytest.raises(StartupError) as raised:
        settings.load(str(config), {"grpc_port": 70000})
    assert (raised.value.source, raised.value.field) == ("command line", "--grpc-port")
    with pytest.raises(StartupError) as raised:
        settings.load(str(config), {"shutdown_grace_seconds": float("inf")})
    assert raised.value.field == "--shutdown-grace-seconds"


@pytest.mark.parametrize(
    ("in_file", "given", "where"),
    [
        ("app_id: shop\n", {"listen_address": "999.1.1.1"}, ("command line", "--listen-address")),
        ("app_id: shop\n", {"grpc_uds": "/nonexistent-folder/x.sock"}, ("command line", "--grpc-uds")),
        ("app_id: shop\n", {"actuator_port": 34904}, ("command line", "--actuator-port")),  # the default grpc_port
        ("app_id: shop\n", {"grpc_port": 34999}, ("command line", "--grpc-port")),  # the default actuator_port
        ("grpc_port: 40000\n", {"actuator_port": 40000}, ("command line", "--actuator-port")),
        ("grpc_port: 34999\n", {}, ("c.yaml", "actuator_port")),
        ("listen_address: nowhere\n", {}, ("c.yaml", "listen_address")),
        ("actuator_listen_address: pod\n", {}, ("c.yaml", "actuator_listen_address")),
        ("app_id: shop\n", {"actuator_listen_address": "1.2.3"}, ("command line", "--actuator-listen-address")),
    ],
)
def test_a_setting_that_clashes_is_blamed_where_it_was_given(
    tmp_path: Path, in_file: str, given: dict[str, object], where: tuple[str, str]
) -> None:
    """A flag's value was blamed on the --config file, which does not hold it."""
    config = tmp_path / "c.yaml"
    config.write_text(in_file)
    with pytest.raises(StartupError) as raised:
        settings.load(str(config), given)
    source, field = raised.value.source, raised.value.field
    assert (source.rpartition("/")[2], field) == where, raised.value


def test_files_that_are_not_utf8_are_named(tmp_path: Path) -> None:
    """A traceback (exit 1) before; now the file and what is wrong with it (exit 2)."""
    manifest, config = tmp_path / "m.yaml", tmp_path / "c.yaml"
    manifest.write_bytes(GOOD.encode().replace(b"store", b"st\xffore"))
    config.write_bytes(b"app_id: \xe9t\xe9\n")
    for path, load in ((manifest, load_file), (config, lambda p: settings.load(str(p), {}))):
        with pytest.raises(StartupError) as raised:
            load(path)
        assert (raised.value.source, raised.value.field) == (str(path), "file")
        assert "is not UTF-8 text" in raised.value.problem


def test_a_date_that_is_no_real_one_is_named_not_a_traceback(tmp_path: Path) -> None:
    """PyYAML raises a bare ValueError for an unquoted ``2020-13-01``: a traceback at start-up
    before, and a SIGHUP reload of such a mesh config escaped the reload's refusal."""
    manifest, config = tmp_path / "m.yaml", tmp_path / "c.yaml"
    since = "    - name: since\n      value: 2020-13-01\n"
    manifest.write_text(GOOD.replace("    - name: port", since + "    - name: port"))
    config.write_text("app_id: 2020-13-01\n")
    for path, load in ((manifest, load_file), (config, lambda p: settings.load(str(p), {}))):
        with pytest.raises(StartupError) as raised:
            load(path)
        assert (raised.value.source, raised.value.field) == (str(path), "yaml")
        assert "not valid YAML: month must be in 1..12" in raised.value.problem


def test_a_key_written_twice_in_one_mapping_stops_start_up_naming_it(tmp_path: Path) -> None:
    """PyYAML keeps the last of two equal keys without a word: a mesh config with ``routes``
    twice lost the first list's routes, a manifest with ``type`` twice ran the other store."""
    manifest, config = tmp_path / "m.yaml", tmp_path / "c.yaml"
    manifest.write_text(GOOD.replace("  version: v1\n", "  version: v1\n  type: state.redis\n"))
    config.write_text("app_id: a\nmax_connections: 5\napp_id: b\n")
    for path, load, key, first in (
        (manifest, load_file, "type", 6),
        (config, lambda p: settings.load(str(p), {}), "app_id", 1),
    ):
        with pytest.raises(StartupError) as raised:
            load(path)
        assert (raised.value.source, raised.value.field) == (str(path), "yaml")
        assert f"found the key '{key}' twice (first on line {first})" in raised.value.problem
    # a merge key may be overridden beside it, as YAML allows
    config.write_text("base: &b {x: 1}\nother:\n  <<: *b\n  x: 2\n")
    assert load_yaml(config.read_text()) == {"base": {"x": 1}, "other": {"x": 2}}


@pytest.mark.parametrize("key", ["config_stamp", "config_file", "flags", "mesh_x"])
def test_what_the_loading_records_is_no_setting_of_the_file(tmp_path: Path, key: str) -> None:
    """``config_stamp: x`` in the file passed the known-keys check and then clashed with the
    stamp the loading adds: a TypeError traceback, exit 1."""
    config = tmp_path / "c.yaml"
    config.write_text(f"{key}: x\n")
    with pytest.raises(StartupError, match="unknown setting") as raised:
        settings.load(str(config), {})
    assert raised.value.field == key
    assert "config_stamp" not in raised.value.problem


def test_an_app_port_that_is_the_sidecar_s_own_is_refused() -> None:
    """The sidecar dialled itself: ListTopicSubscriptions answered UNIMPLEMENTED, read as an app
    subscribing to nothing, readiness UP and nothing ever delivered. daprd refuses it too."""
    with pytest.raises(StartupError, match="34904 is also the grpc_port: the sidecar would take itself") as raised:
        settings.load(None, {"app_port": 34904})
    assert (raised.value.source, raised.value.field) == ("command line", "--app-port")
    with pytest.raises(StartupError, match="7000 is also the --actuator-port"):
        settings.load(None, {"app_port": 7000, "actuator_port": 7000})
    assert settings.load(None, {"app_port": 34904, "app_host": "10.0.0.8"}).app_port == 34904  # another host's


def test_the_log_level_flag_takes_the_settings_levels_daprd_s_warn_and_fatal_too() -> None:
    """daprd's --log-level warn was refused ("invalid choice")."""
    from layotto_fast import cli

    serve = next(
        action.choices["serve"]
        for action in cli.parser()._actions
        if isinstance(action.choices, dict) and "serve" in action.choices
    )
    flag_levels = next(a.choices for a in serve._actions if "--log-level" in a.option_strings)
    assert tuple(flag_levels) == settings.LOG_LEVELS
    for level in ("warn", "fatal", "WARNING"):
        assert settings.load(None, {"log_level": level}).log_level == level


def test_one_setting_spelt_two_ways_in_the_file_is_refused(tmp_path: Path) -> None:
    """app-id and app_id are two YAML keys and one setting: the first was lost without a word."""
    config = tmp_path / "c.yaml"
    config.write_text("app-id: a\napp_id: b\n")
    with pytest.raises(StartupError, match="is 'app-id' again") as raised:
        settings.load(str(config), {})
    assert raised.value.field == "app_id"


def test_durations_with_non_ascii_digits_are_refused(tmp_path: Path) -> None:
    """``"²".isdigit()`` is true and ``int("²")`` raises: a traceback before."""
    assert metadata.parse_duration("\u00b2") is None
    assert metadata.parse_duration("\u0663") is None  # an Arabic-Indic three: int() would take it
    assert metadata.parse_duration("15") == pytest.approx(0.015)
    assert not metadata.is_host_port("localhost:\u00b2")


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("1m30s", 90.0),
        ("1h0m", 3600.0),
        ("2h45m", 9900.0),
        ("1.5h", 5400.0),
        ("250us", 0.00025),
        ("250\u00b5s", 0.00025),  # the micro sign
        ("250\u03bcs", 0.00025),  # the Greek mu
        ("100ns", 1e-7),
        ("1h2m3s4ms5us6ns", 3723.004005006),
        (".5s", 0.5),
        ("1.s", 1.0),
        ("1.0000000001s", 1.0),  # below a nanosecond: cut, as Go does
        ("+5s", 5.0),
        ("-1.5s", -1.5),  # read; a caller that needs a length of time refuses it
        ("0", 0.0),
        ("-0", 0.0),
        ("2562047h47m16.854775807s", 9223372036.854775807),  # Go's longest
        ("300ms", 0.3),
        ("15", 0.015),  # plain digits: milliseconds
    ],
)
def test_durations_are_read_as_go_reads_them(raw: str, seconds: float) -> None:
    """Go's time.ParseDuration, which Dapr and Layotto read these fields with: only one
    number and one of ms, s, m, h was taken, so ``1m30s`` or ``250us`` was refused."""
    assert metadata.parse_duration(raw) == seconds


@pytest.mark.parametrize(
    "raw",
    ["", "-", "+", "s", ".s", "1.5", "1m5", "1d", "1S", "1 s", " 1s", "1..5s", "--1s", "1s-1s", "infs", "nans",
     "1e3s", "1_000s", "\u0661s", "2562047h47m16.854775808s", "9" * 30 + "h", "1" * 5000 + "s",
     "1" * 5000],
)  # fmt: skip
def test_what_go_does_not_read_as_a_duration_is_refused(raw: str) -> None:
    assert metadata.parse_duration(raw) is None


def test_a_manifest_duration_may_be_any_go_duration_but_not_negative() -> None:
    manifest = ComponentManifest(
        "r", "state.redis", "v1", {"readTimeout": "1m30s", "dialTimeout": "-1s", "idleTimeout": "soon"}, "m.yaml"
    )
    assert metadata.duration(manifest, "readTimeout", 3.0) == 90.0
    with pytest.raises(StartupError, match=r"must not be negative, got '-1s'"):
        metadata.duration(manifest, "dialTimeout", 5.0)
    with pytest.raises(StartupError, match=r"must be a duration such as .*'1m30s', got 'soon'"):
        metadata.duration(manifest, "idleTimeout", 5.0)


# --- secretKeyRef ----------------------------------------------------------------------------------

VAULT = """apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: vault
spec:
  type: secretstores.local.file
  metadata:
    - name: secretsFile
      value: secrets.json
{extra}"""

GREETER = """apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: greeter
spec:
  type: hello.helloworld
  metadata:
    - name: hello
{item}
{auth}"""


def greeter(item: str, auth: str = "auth:\n  secretStore: vault\n") -> str:
    return GREETER.format(item=item, auth=auth)


def test_secret_key_ref_is_kept_with_its_store(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(greeter("      secretKeyRef:\n        name: db\n        key: password"))
    [manifest] = load_file(path)
    assert manifest.auth_secret_store == "vault"
    assert manifest.secret_refs == {"hello": SecretRef("db", "password", "spec.metadata[0].secretKeyRef")}
    assert "hello" not in manifest.metadata  # only the resolved value goes there
    assert manifest.with_secrets({"hello": "hi"}).metadata == {"hello": "hi"}


def test_secret_key_ref_without_key_reads_the_key_named_as_the_secret(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(greeter("      secretKeyRef: {name: db-password}"))
    [manifest] = load_file(path)
    assert manifest.secret_refs["hello"].key == "db-password"


@pytest.mark.parametrize(
    ("document", "field", "words"),
    [
        (greeter("      secretKeyRef: db"), "spec.metadata[0].secretKeyRef", ["mapping"]),
        (greeter("      secretKeyRef: {key: k}"), "spec.metadata[0].secretKeyRef.name", ["missing"]),
        (greeter("      secretKeyRef: {name: db, key: [k]}"), "spec.metadata[0].secretKeyRef.key", ["string"]),
        (greeter("      value: hi\n      secretKeyRef: {name: db}"), "spec.metadata[0]", ["both", "value"]),
        (greeter("      secretKeyRef: {name: db}", auth=""), "auth.secretStore", ["spec.metadata[0].secretKeyRef"]),
        (greeter("      secretKeyRef: {name: db}", auth="auth: vault\n"), "auth", ["mapping"]),
        (
            VAULT.format(
                extra="    - name: nestedSeparator\n      secretKeyRef: {name: sep}\nauth: {secretStore: other}\n"
            ),
            "spec.metadata[1].secretKeyRef",
            ["secret store cannot"],
        ),
    ],
)
def test_bad_secret_key_ref_names_file_and_field(tmp_path: Path, document: str, field: str, words: list[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(document)
    with pytest.raises(StartupError) as raised:
        load_file(path)
    assert raised.value.source == str(path) and raised.value.field == field, raised.value
    assert all(word in raised.value.problem for word in words), raised.value


def components_in(
    folder: Path, greeter_item: str, secrets: str = '{"db": {"password": "from-the-vault"}}'
) -> Components:
    folder.mkdir(exist_ok=True)
    (folder / "secrets.json").write_text(secrets)
    (folder / "vault.yaml").write_text(VAULT.format(extra=""))
    (folder / "greeter.yaml").write_text(greeter(greeter_item))
    return Components(load_folder(folder))


def test_the_secret_reaches_the_component(tmp_path: Path) -> None:
    components = components_in(tmp_path, '      secretKeyRef: {name: "db:password"}')
    assert components.readiness().status == Health.INIT
    asyncio.run(components.init_all())
    assert components.readiness().status == Health.UP
    assert components.lookup("hello", "greeter", "service_name").greet("") == "from-the-vault"


def test_an_unknown_secret_store_is_refused_before_anything_starts(tmp_path: Path) -> None:
    (tmp_path / "g.yaml").write_text(greeter("      secretKeyRef: {name: db}", auth="auth: {secretStore: nope}\n"))
    with pytest.raises(StartupError) as raised:
        Components(load_folder(tmp_path))
    assert raised.value.field == "spec.metadata[0].secretKeyRef" and "g.yaml" in raised.value.source
    assert "'nope'" in raised.value.problem and "auth.secretStore" in raised.value.problem


@pytest.mark.parametrize(
    ("item", "secrets", "words"),
    [
        ("      secretKeyRef: {name: nosuch}", '{"db": "x"}', ["'nosuch'", "not found"]),
        ("      secretKeyRef: {name: db, key: other}", '{"db": "x"}', ["'db'", "no key 'other'", "keys: db"]),
        ("      secretKeyRef: {name: db}", "not json", ["'vault' did not start", "not valid JSON"]),
    ],
)
def test_an_unresolvable_reference_stops_start_up(tmp_path: Path, item: str, secrets: str, words: list[str]) -> None:
    components = components_in(tmp_path, item, secrets)
    with pytest.raises(StartupError) as raised:
        asyncio.run(components.init_all())
    assert raised.value.source == str(tmp_path / "greeter.yaml"), raised.value
    assert raised.value.field == "spec.metadata[0].secretKeyRef"
    assert all(word in raised.value.problem for word in words), raised.value


def test_an_optional_component_s_unresolvable_reference_makes_it_down_not_the_sidecar(tmp_path: Path) -> None:
    """ignoreErrors: true (a component whose failure does not make readiness DOWN): a secret it
    could not read stopped start-up all the same; Dapr logs it and goes on."""
    components_in(tmp_path, "      secretKeyRef: {name: nosuch}", '{"db": "x"}')
    path = tmp_path / "greeter.yaml"
    optional = "  type: hello.helloworld\n  ignoreErrors: true\n"
    path.write_text(path.read_text().replace("  type: hello.helloworld\n", optional))
    components = Components(load_folder(tmp_path))
    asyncio.run(components.init_all())
    report = components.readiness()
    entry = report.entries["greeter"]
    assert report.status == Health.UP and entry["status"] == "DOWN" and entry["required"] is False
    assert "spec.metadata[0].secretKeyRef" in str(entry["reason"]) and "'nosuch'" in str(entry["reason"])
    asyncio.run(components.check_all())  # a retry keeps the reason
    assert "'nosuch'" in str(components.readiness().entries["greeter"]["reason"])


def test_a_relative_secrets_file_is_found_beside_its_manifest_in_a_multi_document_file(tmp_path: Path) -> None:
    folder = tmp_path / "components"
    folder.mkdir()
    (folder / "secrets.json").write_text('{"db": "pw"}')
    path = folder / "all.yaml"
    path.write_text(GOOD + "---\n" + VAULT.format(extra=""))
    [_, vault] = load_file(path)
    assert vault.path == path and "(document 2)" in vault.source
    store = LocalFileSecretStore.from_manifest(vault)
    asyncio.run(store.init())
    assert asyncio.run(store.get("db")) == {"db": "pw"}


# --- which manifests an app loads ------------------------------------------------------------------


def declare(folder: Path, file: str, name: str, extra: str = "", namespace: str = "") -> Path:
    """A state.in-memory component ``name`` in ``folder/file``, with ``extra`` top-level lines."""
    path = folder / file
    meta = f"  name: {name}\n" + (f"  namespace: {namespace}\n" if namespace else "")
    path.write_text(
        f"apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n{meta}spec:\n  type: state.in-memory\n{extra}"
    )
    return path


def load_for(folder: Path, app_id: str) -> list[tuple[str, str]]:
    """What ``serve --app-id APP_ID`` reads: (name, file) of every manifest kept."""
    from layotto_fast import server

    manifests = server.load_manifests(settings.load(None, {"resources_path": str(folder), "app_id": app_id}))
    return [(m.name, Path(m.source).name) for m in manifests]


def test_a_name_declared_for_different_apps_is_not_a_duplicate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A shared folder declaring ``statestore`` for billing in a.yaml and for orders in b.yaml
    stopped every app (exit 2, "already declared in a.yaml"): names were compared before
    scopes were applied. In Dapr each app reads its own."""
    monkeypatch.delenv("NAMESPACE", raising=False)
    a = declare(tmp_path, "a.yaml", "statestore", "scopes: [billing]\n")
    b = declare(tmp_path, "b.yaml", "statestore", "scopes: [orders]\n")
    for app_id in ("orders", "billing", "cart"):
        # Every manifest is still there (check validates them all); the lifecycle picks by scope.
        assert load_for(tmp_path, app_id) == [("statestore", "a.yaml"), ("statestore", "b.yaml")]
    manifests = load_folder(tmp_path)
    loaded = Components(manifests, app_id="orders").manifests("state")
    assert loaded["statestore"].source == str(b)

    # Two that one app loads are still refused, naming both files; an app loading one is not.
    c = declare(tmp_path, "c.yaml", "statestore")
    for app_id, first in (("orders", b), ("billing", a)):
        with pytest.raises(StartupError) as raised:
            load_for(tmp_path, app_id)
        assert (raised.value.source, raised.value.field) == (str(c), "metadata.name")
        assert raised.value.problem == f"'statestore' is already declared in {first}"
    assert load_for(tmp_path, "cart") == [("statestore", name) for name in ("a.yaml", "b.yaml", "c.yaml")]


def test_a_manifest_of_another_namespace_is_not_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As daprd reads a folder: with NAMESPACE set, a manifest naming another namespace is
    dropped before names are compared; one naming none is kept. Without NAMESPACE every
    namespace is read, so the same two are one name declared twice."""
    declare(tmp_path, "a.yaml", "statestore", namespace="shop")
    declare(tmp_path, "b.yaml", "statestore", namespace="staging")
    declare(tmp_path, "c.yaml", "cache")
    monkeypatch.setenv("NAMESPACE", "shop")
    assert load_for(tmp_path, "orders") == [("statestore", "a.yaml"), ("cache", "c.yaml")]
    monkeypatch.setenv("NAMESPACE", "staging")
    assert load_for(tmp_path, "orders") == [("statestore", "b.yaml"), ("cache", "c.yaml")]
    for unset in (lambda: monkeypatch.delenv("NAMESPACE"), lambda: monkeypatch.setenv("NAMESPACE", "")):
        unset()
        with pytest.raises(StartupError) as raised:
            load_for(tmp_path, "orders")
        assert raised.value.source == str(tmp_path / "b.yaml") and "a.yaml" in raised.value.problem

    declare(tmp_path, "d.yaml", "other", namespace="[shop]")
    with pytest.raises(StartupError) as raised:
        load_file(tmp_path / "d.yaml")
    assert raised.value.field == "metadata.namespace"


def test_a_bare_metadata_value_is_the_empty_string(tmp_path: Path) -> None:
    """``- name: redisPassword`` with a bare ``value:`` (YAML null) stopped start-up ("must be a
    scalar, got NoneType"); Dapr reads a null value as no value, the empty string."""
    path = tmp_path / "m.yaml"
    path.write_text(GOOD.replace("value: 6379", "value:").replace("value: true", "value: ~"))
    [manifest] = load_file(path)
    assert manifest.metadata == {"port": "", "enabled": ""}
    # No value, so a secretKeyRef beside a bare value: is the item's one source.
    path.write_text(greeter("      value:\n      secretKeyRef: {name: db}"))
    [manifest] = load_file(path)
    assert manifest.secret_refs["hello"].name == "db" and "hello" not in manifest.metadata
