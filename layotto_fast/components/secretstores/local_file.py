"""``secretstores.local.file``: secrets from a JSON file, nested keys flattened.

``{"db": {"user": "u"}}`` becomes the secret ``db:user`` (separator from
``nestedSeparator``), and an array's elements are named by their index, as in Dapr's
store (which Layotto reuses): ``{"hosts": ["a", "b"]}`` is ``hosts:0`` and ``hosts:1``.
With ``multiValued: true`` the top-level keys are the secrets and their (flattened)
children their values, as in Dapr; there a top-level array is no secret (Dapr skips it
silently; here the log names it), while an array inside an object is flattened as above.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Self

import orjson

from layotto_fast.errors import NotFound, StartupError
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime import metadata
from layotto_fast.runtime.component import NoBackend

log = logging.getLogger(__name__)


class LocalFileSecretStore(NoBackend):
    def __init__(self, path: Path, separator: str, multi_valued: bool, source: str) -> None:
        self._path = path
        self._separator = separator
        self._multi_valued = multi_valued
        self._source = source
        self._secrets: dict[str, dict[str, str]] = {}

    @classmethod
    def from_manifest(cls, manifest: ComponentManifest) -> Self:
        raw = metadata.text(manifest, "secretsFile", "")
        if not raw:
            raise StartupError(manifest.source, manifest.metadata_field("secretsFile"), "is required")
        path = Path(raw)
        if not path.is_absolute() and manifest.path is not None:
            beside = manifest.path.parent / path
            path = beside if beside.exists() else path
        if not path.is_file():
            raise StartupError(manifest.source, manifest.metadata_field("secretsFile"), f"{str(path)!r} does not exist")
        separator = metadata.text(manifest, "nestedSeparator", "") or ":"  # empty is the default, as in Dapr
        return cls(path, separator, metadata.boolean(manifest, "multiValued", False), manifest.source)

    async def init(self) -> None:
        try:
            document = orjson.loads(self._path.read_bytes())
        except OSError as exc:
            raise RuntimeError(f"secretsFile {str(self._path)!r} cannot be read: {exc.strerror}") from exc
        except orjson.JSONDecodeError as exc:
            raise RuntimeError(f"secretsFile {str(self._path)!r} is not valid JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise RuntimeError(f"secretsFile {str(self._path)!r} must hold a JSON object")
        if self._multi_valued:
            skipped = [key for key, value in document.items() if isinstance(value, list)]
            if skipped:
                log.warning(
                    "%s: multiValued: top-level arrays are no secrets (as in Dapr), skipped: %s",
                    self._source,
                    ", ".join(skipped),
                )
            self._secrets = {
                key: self._flatten(value, "") if isinstance(value, dict) else {key: _text(value)}
                for key, value in document.items()
                if not isinstance(value, list)
            }
        else:
            self._secrets = {key: {key: value} for key, value in self._flatten(document, "").items()}

    def _flatten(self, node: dict[str, Any] | list[Any], prefix: str) -> dict[str, str]:
        """Every plain value under ``node``, named by its path: object members by their
        name, array elements by their index, joined with the separator."""
        flat: dict[str, str] = {}
        members = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in members:
            name = f"{prefix}{self._separator}{key}" if prefix else str(key)
            if isinstance(value, dict | list):
                flat.update(self._flatten(value, name))
            else:
                flat[name] = _text(value)
        return flat

    async def get(self, key: str) -> dict[str, str]:
        try:
            return self._secrets[key]
        except KeyError:
            # The file's name only: where the sidecar is installed is not the caller's business.
            raise NotFound(f"secret key {key!r} not found in the secrets file {self._path.name!r}") from None

    async def bulk_get(self) -> dict[str, dict[str, str]]:
        return dict(self._secrets)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()
