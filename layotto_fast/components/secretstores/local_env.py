"""``secretstores.local.env``: the sidecar's environment variables as secrets, as Dapr reads them.

``prefix`` (empty by default) is put before the name asked for: with ``prefix: MYAPP_``,
the secret ``DB_PASS`` is the variable ``MYAPP_DB_PASS``, and a bulk read returns only the
variables starting with the prefix, named without it (a variable named just the prefix is
left out). Names are case-sensitive.

Whatever the prefix, a variable whose full name is ``APP_API_TOKEN`` or starts with
``DAPR_`` (in any case) is never handed out: reading one is answered as a missing secret
(and logged at WARNING), and a bulk read leaves it out. These are the names Dapr's
component withholds (sidecar and app API tokens, the sidecar's certificates).

A missing variable is NotFound here; Dapr's component answers it with an empty value.

The embedded default store ``secret_env`` (``components/secrets-env.yaml``) has
``prefix: LAYOTTO_SECRET_``, so that only the variables an operator names for it are
secrets: with no prefix, a bulk read hands every client the whole environment, credentials
included.
"""

from __future__ import annotations

import logging
import os
from typing import Self

from layotto_fast.errors import NotFound
from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime import metadata
from layotto_fast.runtime.component import NoBackend

log = logging.getLogger(__name__)

WITHHELD_NAME = "APP_API_TOKEN"
WITHHELD_PREFIX = "DAPR_"


def readable(variable: str) -> bool:
    """Whether the variable (its full name, the prefix included) may be handed out."""
    upper = variable.upper()
    return upper != WITHHELD_NAME and not upper.startswith(WITHHELD_PREFIX)


class LocalEnvSecretStore(NoBackend):
    def __init__(self, prefix: str) -> None:
        self._prefix = prefix

    @classmethod
    def from_manifest(cls, manifest: ComponentManifest) -> Self:
        return cls(metadata.text(manifest, "prefix", ""))

    async def get(self, key: str) -> dict[str, str]:
        variable = self._prefix + key
        if not readable(variable):
            log.warning("secret %r: the environment variable %r is withheld from secret stores", key, variable)
            raise NotFound(
                f"secret key {key!r} not found: the environment variable {variable!r} is withheld "
                f"({WITHHELD_NAME} and names starting with {WITHHELD_PREFIX} are never handed out)"
            )
        value = os.environ.get(variable)
        if value is None:
            where = f" (looked for {variable!r})" if self._prefix else ""
            raise NotFound(f"secret key {key!r} not found in the environment{where}")
        return {key: value}

    async def bulk_get(self) -> dict[str, dict[str, str]]:
        prefix = self._prefix
        start = len(prefix)
        return {
            name[start:]: {name[start:]: value}
            for name, value in os.environ.items()
            if len(name) > start and name.startswith(prefix) and readable(name)
        }
