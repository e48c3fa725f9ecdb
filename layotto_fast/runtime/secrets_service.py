"""The secrets service: validation and store lookup for GetSecret and GetBulkSecret."""

from __future__ import annotations

from layotto_fast.errors import require
from layotto_fast.runtime.lifecycle import Components
from layotto_fast.runtime.secrets import SecretStore


class SecretsService:
    def __init__(self, components: Components) -> None:
        self._components = components

    async def get(self, store_name: str, key: str) -> dict[str, str]:
        store: SecretStore = self._components.lookup("secretstores", store_name, "store_name")
        require(key, "key")
        return await store.get(key)

    async def bulk_get(self, store_name: str) -> dict[str, dict[str, str]]:
        store: SecretStore = self._components.lookup("secretstores", store_name, "store_name")
        return await store.bulk_get()
