"""Every runtime service, built once over the components; each front translates to these."""

from __future__ import annotations

from dataclasses import dataclass

from layotto_fast.runtime.configuration_service import ConfigurationService
from layotto_fast.runtime.hello_service import HelloService
from layotto_fast.runtime.invoke_service import InvokeService
from layotto_fast.runtime.lifecycle import Components
from layotto_fast.runtime.lock_service import LockService
from layotto_fast.runtime.pubsub_service import PubSubService
from layotto_fast.runtime.secrets_service import SecretsService
from layotto_fast.runtime.sequencer_service import SequencerService
from layotto_fast.runtime.state_service import StateService


@dataclass(frozen=True)
class Services:
    hello: HelloService
    state: StateService
    lock: LockService
    sequencer: SequencerService
    secrets: SecretsService
    configuration: ConfigurationService
    invoke: InvokeService
    pubsub: PubSubService

    @classmethod
    def over(cls, components: Components, app_id: str, invoke: InvokeService | None = None) -> Services:
        return cls(
            hello=HelloService(components),
            state=StateService(components, app_id),
            lock=LockService(components, app_id),
            sequencer=SequencerService(components, app_id),
            secrets=SecretsService(components),
            configuration=ConfigurationService(components, app_id),
            invoke=invoke or InvokeService({}),
            pubsub=PubSubService(components, app_id),
        )
