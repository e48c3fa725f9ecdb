"""Read Dapr-format component manifests (``kind: Component``) from a folder.

A user's existing Dapr manifests work unchanged; documents of other kinds in the
same folder (Configuration, Subscription, Resiliency) are left to the features that
read them. Any problem stops start-up with the file and the field named.

A metadata item may take its value from a secret (``secretKeyRef``) of the secret
store named by the document's ``auth.secretStore``; the parser only records the
reference, the lifecycle reads it once that store has started.

Metadata item names are read whatever their case, as daprd reads them (``redisdb`` is
``redisDB``): a component asks for its canonical spelling and finds the user's. Two items
of one manifest whose names differ only in case stop start-up, naming both.

Which manifests an app loads is Dapr's rule: with the ``NAMESPACE`` variable set, one
whose ``metadata.namespace`` names another namespace is not read at all; of the rest,
one with ``scopes`` is for the app ids it lists only. Two components may share a name
as long as no app loads both (each scoped to other apps, or in other namespaces).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import yaml

from layotto_fast.errors import StartupError

log = logging.getLogger(__name__)

API_VERSION = "dapr.io/v1alpha1"

V = TypeVar("V")


class Items(Mapping[str, V]):
    """Metadata items by name, each found under any case of its name; iterated by the names
    as the manifest writes them, so messages can quote the user's spelling.

    Given two names that differ only in case, the later wins (the parser refuses such a
    manifest first; this only keeps code that merges items from double-counting one)."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, V] | None = None) -> None:
        self._items: dict[str, tuple[str, V]] = {}
        for name, value in (items or {}).items():
            self._items[name.lower()] = (name, value)

    def __getitem__(self, name: str) -> V:
        if not isinstance(name, str):
            raise KeyError(name)
        return self._items[name.lower()][1]

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def spelled(self, name: str) -> str:
        """``name`` as the manifest writes it; ``name`` itself when no item has it."""
        found = self._items.get(name.lower())
        return name if found is None else found[0]

    def __repr__(self) -> str:
        return f"Items({dict(self.items())!r})"


@dataclass(frozen=True)
class SecretRef:
    """A metadata value to read from the component's secret store (Dapr's ``secretKeyRef``)."""

    name: str  # the secret
    key: str  # the key inside it; Dapr reads the key named as the secret when none is given
    field: str  # where it was declared, for messages: ``spec.metadata[i].secretKeyRef``


@dataclass(frozen=True)
class ComponentManifest:
    name: str
    type: str
    version: str
    metadata: Mapping[str, str]  # an ``Items``: looked up whatever the case
    source: str
    ignore_errors: bool = False
    scopes: tuple[str, ...] = field(default=())
    # metadata item name -> the secret holding its value; those items are not in ``metadata``
    secret_refs: Mapping[str, SecretRef] = field(default_factory=dict)
    auth_secret_store: str = ""  # ``auth.secretStore``: the secret store the references read
    path: Path | None = None  # the file it was read from (None: made in code, e.g. the defaults)
    namespace: str = ""  # ``metadata.namespace``; empty: any namespace
    init_timeout: float | None = None  # ``spec.initTimeout`` in seconds; None: the sidecar's

    def __post_init__(self) -> None:
        # Code that fills items in (placeholders, secrets, a default consumer group) hands
        # ``replace`` a plain dict: its lookups must ignore case all the same.
        if not isinstance(self.metadata, Items):
            object.__setattr__(self, "metadata", Items(self.metadata))
        if not isinstance(self.secret_refs, Items):
            object.__setattr__(self, "secret_refs", Items(self.secret_refs))

    def metadata_field(self, name: str) -> str:
        """``spec.metadata.NAME`` for messages, NAME spelled as the manifest writes it."""
        items = self.metadata
        return f"spec.metadata.{items.spelled(name) if isinstance(items, Items) else name}"

    def loaded_by(self, app_id: str) -> bool:
        """Whether ``app_id`` loads this component: no scopes, or scopes that list it."""
        return not self.scopes or app_id in self.scopes

    @property
    def block(self) -> str:
        """The building block, the part of the type before the first dot."""
        return self.type.split(".", 1)[0]

    def with_secrets(self, values: Mapping[str, str]) -> ComponentManifest:
        """This manifest with its referenced items filled in (``values``: item name -> secret value)."""
        return replace(self, metadata={**self.metadata, **values}, secret_refs={})


def for_app(manifests: list[ComponentManifest], app_id: str, environ: Mapping[str, str]) -> list[ComponentManifest]:
    """The manifests of this app's namespace, in order; a name shared by two that ``app_id``
    loads stops start-up, naming both files.

    As daprd reads a folder: with ``NAMESPACE`` set (and not empty), a manifest whose
    ``metadata.namespace`` names another namespace is dropped; one without a namespace is
    kept. The manifests scoped to other app ids stay in the list (the lifecycle leaves them
    out, ``check`` validates them), but their names are not this app's: a shared folder may
    declare ``statestore`` once for ``billing`` and once for ``orders``.
    """
    current = environ.get("NAMESPACE", "")
    kept: list[ComponentManifest] = []
    seen: dict[str, str] = {}
    for manifest in manifests:
        if current and manifest.namespace and manifest.namespace != current:
            log.info(
                "%s: component %s is in namespace %s, not %s: not loaded",
                manifest.source,
                manifest.name,
                manifest.namespace,
                current,
            )
            continue
        kept.append(manifest)
        if not manifest.loaded_by(app_id):
            continue
        if manifest.name in seen:
            raise StartupError(
                manifest.source,
                "metadata.name",
                f"{manifest.name!r} is already declared in {seen[manifest.name]}",
            )
        seen[manifest.name] = manifest.source
    return kept


def with_placeholders(
    manifests: list[ComponentManifest], app_id: str, environ: Mapping[str, str]
) -> list[ComponentManifest]:
    """The manifests with Dapr's placeholders in metadata values filled in, as daprd fills
    them: ``{uuid}`` a new random UUID at each place, ``{podName}`` the POD_NAME variable (a
    manifest naming it without one stops start-up), ``{namespace}`` NAMESPACE (``default``
    when unset) and the app id as ``<namespace>.<app id>``, ``{appID}`` the app id. So a
    ``consumerID: "{podName}"`` gives every replica its own group, as in Dapr. A manifest
    scoped to other app ids is left as it is: this app does not load it."""
    namespace = f"{environ.get('NAMESPACE', 'default')}.{app_id}"
    pod_name = environ.get("POD_NAME", "")
    filled = []
    for manifest in manifests:
        if not manifest.loaded_by(app_id):
            filled.append(manifest)
            continue
        metadata = dict(manifest.metadata)
        for name, value in manifest.metadata.items():
            if "{" not in value:
                continue
            while "{uuid}" in value:
                value = value.replace("{uuid}", str(uuid.uuid4()), 1)
            if "{podName}" in value:
                if not pod_name:
                    raise StartupError(manifest.source, f"spec.metadata.{name}",
                                       "refers to {podName}, but the POD_NAME variable is not set")  # fmt: skip
                value = value.replace("{podName}", pod_name)
            metadata[name] = value.replace("{namespace}", namespace).replace("{appID}", app_id)
        filled.append(replace(manifest, metadata=metadata) if metadata != manifest.metadata else manifest)
    return filled


def load_folder(folder: Path) -> list[ComponentManifest]:
    """Every component manifest of the folder's YAML files, in file order, whatever its
    scopes or namespace: which of them an app loads, and whether two of those share a
    name, depends on the app (``for_app``)."""
    if not folder.is_dir():
        raise StartupError(str(folder), "resources-path", "is not a folder")
    manifests: list[ComponentManifest] = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in (".yaml", ".yml") and path.is_file():  # as daprd: StateStore.YAML too
            manifests.extend(load_file(path))
    return manifests


class _YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key written twice in one mapping: PyYAML keeps the
    last silently (two pasted snippets lose the first's routes without a word), where Go's
    YAML, which reads Dapr's manifests, refuses the file."""


def _mapping_once(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Iterator[dict[Any, Any]]:
    first_lines: dict[tuple[str, str], int] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue  # a merge ("<<") may be overridden by the keys beside it
        key = (key_node.tag, key_node.value)
        if key in first_lines:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping", node.start_mark,
                f"found the key {key_node.value!r} twice (first on line {first_lines[key] + 1})", key_node.start_mark,
            )  # fmt: skip
        first_lines[key] = key_node.start_mark.line
    yield from loader.construct_yaml_map(node)


_YamlLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_once)


def load_yaml(text: str) -> Any:
    """One YAML document, read safely; a key twice in one mapping is an error."""
    return yaml.load(text, Loader=_YamlLoader)  # a SafeLoader subclass: safe


def load_yaml_all(text: str) -> list[Any]:
    return list(yaml.load_all(text, Loader=_YamlLoader))


def unreadable_yaml(exc: ValueError) -> str:
    """Why PyYAML could not read a document that parsed: a plain scalar shaped like a date or
    time that is no real one (``2020-13-01``), which it raises as a bare ValueError."""
    return f"not valid YAML: {exc} (a value shaped like a date or time that is none; quote it to mean text)"


def load_file(path: Path) -> list[ComponentManifest]:
    source = str(path)
    try:
        documents = load_yaml_all(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise StartupError(source, "yaml", f"not valid YAML: {exc}") from exc
    except OSError as exc:
        raise StartupError(source, "file", f"cannot be read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise StartupError(source, "file", f"is not UTF-8 text (byte {exc.start})") from None
    except ValueError as exc:  # PyYAML's reading of an unquoted date or time that is no real one
        raise StartupError(source, "yaml", unreadable_yaml(exc)) from None
    manifests = []
    for index, document in enumerate(documents):
        if document is None:
            continue
        where = source if len(documents) == 1 else f"{source} (document {index + 1})"
        manifest = parse_document(document, where)
        if manifest is not None:
            manifests.append(replace(manifest, path=path))
    return manifests


# What daprd takes as a component's first version (its IsInitialVersion), in any case.
_INITIAL_VERSIONS = ("", "v0", "v1")


def parse_document(document: Any, source: str) -> ComponentManifest | None:
    # YAML that is no Kubernetes-style document (a linter's config in a ./components folder)
    # is skipped, as daprd skips it; only a Component is held to the rules below.
    if not isinstance(document, dict):
        log.warning("%s: skipped: not a mapping, so no component manifest", source)
        return None
    kind = document.get("kind")
    if kind != "Component":
        if not isinstance(kind, str):
            log.warning("%s: skipped: no kind, so no component manifest", source)
        else:
            log.debug("%s: skipping a document of kind %s", source, kind)
        return None
    api_version = document.get("apiVersion")
    if api_version != API_VERSION:
        raise StartupError(source, "apiVersion", f"must be {API_VERSION!r}, got {api_version!r}")
    meta = _mapping(document.get("metadata"), source, "metadata")
    name = meta.get("name")
    if name is None or name == "":
        raise StartupError(source, "metadata.name", "is missing or empty")
    if not isinstance(name, str):
        raise StartupError(source, "metadata.name", f"must be a string, got {type(name).__name__} {name!r}")
    namespace = meta.get("namespace")
    if namespace is None:
        namespace = ""
    elif not isinstance(namespace, str):
        raise StartupError(source, "metadata.namespace", f"must be a string, got {namespace!r}")
    spec = _mapping(document.get("spec"), source, "spec")
    type_ = spec.get("type")
    if not isinstance(type_, str) or "." not in type_:
        raise StartupError(source, "spec.type", f"must be a component type such as 'state.redis', got {type_!r}")
    version = spec.get("version", "v1")
    if not isinstance(version, str):
        raise StartupError(source, "spec.version", f"must be a string such as 'v1', got {version!r}")
    if version.lower() in _INITIAL_VERSIONS:
        version = "v1"
    ignore_errors = spec.get("ignoreErrors", False)
    if not isinstance(ignore_errors, bool):
        raise StartupError(source, "spec.ignoreErrors", f"must be true or false, got {ignore_errors!r}")
    init_timeout = _init_timeout(spec.get("initTimeout"), source)
    scopes = document.get("scopes") or []
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise StartupError(source, "scopes", "must be a list of app ids")
    metadata, secret_refs = _metadata_items(spec.get("metadata"), source)
    secret_store = _auth_secret_store(document.get("auth"), source)
    if secret_refs:
        where = next(iter(secret_refs.values())).field
        if type_.startswith("secretstores."):
            # Secret stores start before every other component, all at once: one would wait for
            # another here (Dapr waits; the local stores here need no secrets of their own).
            raise StartupError(source, where, "a secret store cannot take its metadata from a secret store here")
        if not secret_store:
            raise StartupError(source, "auth.secretStore", f"is required: {where} names a secret to read from it")
    return ComponentManifest(
        name=name,
        type=type_,
        version=version,
        metadata=metadata,
        source=source,
        ignore_errors=ignore_errors,
        scopes=tuple(scopes),
        secret_refs=secret_refs,
        auth_secret_store=secret_store,
        namespace=namespace,
        init_timeout=init_timeout,
    )


def _init_timeout(raw: Any, source: str) -> float | None:
    """``spec.initTimeout``: how long this component's init may take (Dapr's Go duration)."""
    if raw is None or raw == "":
        return None
    from layotto_fast.runtime.metadata import DURATION_EXAMPLES, parse_duration  # it imports this module

    seconds = parse_duration(raw) if isinstance(raw, str) and not raw.strip().isdigit() else None
    if seconds is None or seconds <= 0:
        raise StartupError(source, "spec.initTimeout", f"must be {DURATION_EXAMPLES}, longer than 0, got {raw!r}")
    return seconds


def _mapping(value: Any, source: str, field_name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise StartupError(source, field_name, "is missing or not a mapping")
    return value


def _auth_secret_store(auth: Any, source: str) -> str:
    if auth is None:
        return ""
    if not isinstance(auth, dict):
        raise StartupError(source, "auth", "must be a mapping such as {secretStore: NAME}")
    store = auth.get("secretStore", "")
    if not isinstance(store, str):
        raise StartupError(source, "auth.secretStore", f"must be a component name, got {store!r}")
    return store


def _metadata_items(items: Any, source: str) -> tuple[Items[str], Items[SecretRef]]:
    """The plain values, and the items whose value is a secret reference; a later item of
    the same name wins. Names that differ only in case are one name to Dapr, so two such
    items are refused: which one a component got would depend on their order."""
    if items is None:
        return Items(), Items()
    if not isinstance(items, list):
        raise StartupError(source, "spec.metadata", "must be a list of {name, value} items")
    values: dict[str, str] = {}
    refs: dict[str, SecretRef] = {}
    seen: dict[str, tuple[str, str]] = {}  # lower-cased name -> (the name as written, where)
    for position, item in enumerate(items):
        where = f"spec.metadata[{position}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise StartupError(source, f"{where}.name", "is missing")
        name = item["name"]
        first = seen.setdefault(name.lower(), (name, where))
        if first[0] != name:
            raise StartupError(
                source,
                f"{where}.name",
                f"{name!r} and {first[0]!r} ({first[1]}) are one item: metadata names are read "
                "whatever their case, as in Dapr; keep one of them",
            )
        # A bare ``value:`` (YAML null) is no value, as in Dapr: it reads as "".
        value = item.get("value")
        if "envRef" in item:
            if value is not None or "secretKeyRef" in item:
                raise StartupError(source, where, "has envRef beside value or secretKeyRef: give one")
            value = _env_value(item["envRef"], source, f"{where}.envRef")
        if "secretKeyRef" in item:
            if value is not None:
                raise StartupError(source, where, "has both value and secretKeyRef: give one")
            refs[name] = _secret_ref(item["secretKeyRef"], source, f"{where}.secretKeyRef")
            values.pop(name, None)
            continue
        if value is None:
            value = ""
        elif isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (int, float, str)):
            value = str(value)
        else:
            raise StartupError(source, f"{where}.value", f"must be a scalar, got {type(value).__name__}")
        values[name] = value
        refs.pop(name, None)
    return Items(values), Items(refs)


def _env_value(name: Any, source: str, where: str) -> str:
    """Dapr's ``envRef``: the value of the sidecar's environment variable ``name`` ("" when it
    is not set, as Dapr reads it), except the ones Dapr withholds from components."""
    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        raise StartupError(source, where, f"must name an environment variable, got {name!r}")
    if name.upper() == "APP_API_TOKEN" or name.upper().startswith("DAPR_"):
        raise StartupError(source, where, f"{name!r} is withheld from components (APP_API_TOKEN, DAPR_*), as in Dapr")
    return os.environ.get(name, "")


def _secret_ref(ref: Any, source: str, where: str) -> SecretRef:
    if not isinstance(ref, dict):
        raise StartupError(source, where, "must be a mapping {name: SECRET, key: KEY}")
    name = ref.get("name")
    if not isinstance(name, str) or not name:
        raise StartupError(source, f"{where}.name", "is missing: the secret to read")
    key = ref.get("key")
    if key is None or key == "":
        key = name  # Dapr's rule: without a key, the key named as the secret
    if not isinstance(key, str):
        raise StartupError(source, f"{where}.key", f"must be a string, got {key!r}")
    return SecretRef(name=name, key=key, field=where)
