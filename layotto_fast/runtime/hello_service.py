"""The hello service behind SayHello."""

from __future__ import annotations

from layotto_fast.runtime.hello import Greeter
from layotto_fast.runtime.lifecycle import Components


class HelloService:
    def __init__(self, components: Components) -> None:
        self._components = components

    def greet(self, service_name: str, name: str) -> str:
        service: Greeter = self._components.lookup("hello", service_name, "service_name")
        return service.greet(name)
