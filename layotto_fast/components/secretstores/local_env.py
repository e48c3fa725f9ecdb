"""``secretstores.local.env``: the sidecar's environment variables as secrets.

``prefix`` limits bulk reads (and single reads) to variables starting with it.
"""

from __future__ import annotations

import os
from typing import Self

from layotto_fast.errors import NotFound
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime import metadata
from layotto_fast.runtime.component import NoBackend


class LocalEnvSecretStore(NoBackend):
    def __init__(self, prefix: str) -> None:
        self._prefix = prefix

    @classmethod
    def from_manifest(cls, manifest: ComponentManifest) -> Self:
        return cls(metadata.text(manifest, "prefix", ""))

    async def get(self, key: str) -> dict[str, str]:
        value = os.environ.get(key) if key.startswith(self._prefix) else None
        if value is None:
            raise NotFound(f"secret key {key!r} not found in the environment")
        return {key: value}

    async def bulk_get(self) -> dict[str, dict[str, str]]:
        return {k: {k: v} for k, v in os.environ.items() if k.startswith(self._prefix)}
