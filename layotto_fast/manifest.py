"""Read Dapr-format component manifests (``kind: Component``) from a folder.

A user's existing Dapr manifests work unchanged; documents of other kinds in the
same folder (Configuration, Subscription, Resiliency) are left to the features that
read them. Any problem stops start-up with the file and the field named.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from layotto_fast.errors import StartupError

log = logging.getLogger(__name__)

API_VERSION = "dapr.io/v1alpha1"


@dataclass(frozen=True)
class ComponentManifest:
    name: str
    type: str
    version: str
    metadata: dict[str, str]
    source: str
    ignore_errors: bool = False
    scopes: tuple[str, ...] = field(default=())

    @property
    def block(self) -> str:
        """The building block, the part of the type before the first dot."""
        return self.type.split(".", 1)[0]


def load_folder(folder: Path) -> list[ComponentManifest]:
    if not folder.is_dir():
        raise StartupError(str(folder), "resources-path", "is not a folder")
    manifests: list[ComponentManifest] = []
    for path in sorted(folder.iterdir()):
        if path.suffix in (".yaml", ".yml") and path.is_file():
            manifests.extend(load_file(path))
    seen: dict[str, str] = {}
    for manifest in manifests:
        if manifest.name in seen:
            raise StartupError(
                manifest.source,
                "metadata.name",
                f"{manifest.name!r} is already declared in {seen[manifest.name]}",
            )
        seen[manifest.name] = manifest.source
    return manifests


def load_file(path: Path) -> list[ComponentManifest]:
    source = str(path)
    try:
        documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    except yaml.YAMLError as exc:
        raise StartupError(source, "yaml", f"not valid YAML: {exc}") from exc
    except OSError as exc:
        raise StartupError(source, "file", f"cannot be read: {exc.strerror}") from exc
    manifests = []
    for index, document in enumerate(documents):
        if document is None:
            continue
        where = source if len(documents) == 1 else f"{source} (document {index + 1})"
        manifest = parse_document(document, where)
        if manifest is not None:
            manifests.append(manifest)
    return manifests


def parse_document(document: Any, source: str) -> ComponentManifest | None:
    if not isinstance(document, dict):
        raise StartupError(source, "(document)", "must be a mapping")
    kind = document.get("kind")
    if kind != "Component":
        if not isinstance(kind, str):
            raise StartupError(source, "kind", "is missing")
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
    spec = _mapping(document.get("spec"), source, "spec")
    type_ = spec.get("type")
    if not isinstance(type_, str) or "." not in type_:
        raise StartupError(source, "spec.type", f"must be a component type such as 'state.redis', got {type_!r}")
    version = spec.get("version", "v1")
    if not isinstance(version, str) or not version:
        raise StartupError(source, "spec.version", f"must be a string such as 'v1', got {version!r}")
    ignore_errors = spec.get("ignoreErrors", False)
    if not isinstance(ignore_errors, bool):
        raise StartupError(source, "spec.ignoreErrors", f"must be true or false, got {ignore_errors!r}")
    scopes = document.get("scopes") or []
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise StartupError(source, "scopes", "must be a list of app ids")
    return ComponentManifest(
        name=name,
        type=type_,
        version=version,
        metadata=_metadata_items(spec.get("metadata"), source),
        source=source,
        ignore_errors=ignore_errors,
        scopes=tuple(scopes),
    )


def _mapping(value: Any, source: str, field_name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise StartupError(source, field_name, "is missing or not a mapping")
    return value


def _metadata_items(items: Any, source: str) -> dict[str, str]:
    if items is None:
        return {}
    if not isinstance(items, list):
        raise StartupError(source, "spec.metadata", "must be a list of {name, value} items")
    result: dict[str, str] = {}
    for position, item in enumerate(items):
        where = f"spec.metadata[{position}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise StartupError(source, f"{where}.name", "is missing")
        if "secretKeyRef" in item:
            raise StartupError(source, f"{where}.secretKeyRef", "secret references are not supported yet")
        value = item.get("value", "")
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (int, float, str)):
            value = str(value)
        else:
            raise StartupError(source, f"{where}.value", f"must be a scalar, got {type(value).__name__}")
        result[item["name"]] = value
    return result
