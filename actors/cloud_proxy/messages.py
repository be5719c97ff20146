"""What the cloud proxy handles: the one union its ``handle`` matches on.

DispatchArrived(d)            orch.dispatch.cloud.<provider>.<model> from its DISPATCH consumer: call, answer
Embed(req)                    orch.svc.cloud.embed: held, called, charged (the reply is returned)
ProviderChanged(name, event)  a provider's state changed (a cooldown, a key): event, then KV at once
KeysTick(name)                every ``api_key.refresh`` seconds: re-read the provider's key (rotation)
StateTick()                   every 5 s: refresh the KV records whose figures (latency) moved
"""

from __future__ import annotations

from dataclasses import dataclass

from bus.consumer import Delivery
from schemas.embeddings import CloudEmbedRequest
from schemas.events import ProviderCooldown


@dataclass(frozen=True)
class DispatchArrived:
    d: Delivery


@dataclass(frozen=True)
class Embed:
    req: CloudEmbedRequest


@dataclass(frozen=True)
class ProviderChanged:
    name: str
    event: ProviderCooldown | None


@dataclass(frozen=True)
class KeysTick:
    name: str


@dataclass(frozen=True)
class StateTick:
    pass


CloudMsg = DispatchArrived | Embed | ProviderChanged | KeysTick | StateTick
