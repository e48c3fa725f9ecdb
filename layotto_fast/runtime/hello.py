"""The hello building block behind SayHello (Layotto's smoke test and load-test target)."""

from __future__ import annotations

from typing import Protocol

from layotto_fast.runtime.component import Component


class Greeter(Component, Protocol):
    def greet(self, name: str) -> str: ...
