"""``hello.helloworld``: answers with the configured greeting (metadata ``hello``)."""

from __future__ import annotations

from typing import Self

from layotto_fast.manifest import ComponentManifest
from layotto_fast.runtime import metadata
from layotto_fast.runtime.component import NoBackend


class HelloWorld(NoBackend):
    def __init__(self, greeting: str) -> None:
        self._greeting = greeting

    @classmethod
    def from_manifest(cls, manifest: ComponentManifest) -> Self:
        return cls(metadata.text(manifest, "hello", "greetings"))

    def greet(self, name: str) -> str:
        return f"{self._greeting}, {name}" if name else self._greeting
