"""providers: cloud APIs, their secrets (by reference only), limits, retries and cooldowns."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta

from schemas.base import Tier
from schemas.config.base import Cfg
from schemas.config.units import Duration


class VaultRef(Cfg, frozen=True, kw_only=True):
    """HashiCorp Vault KV v2: GET {addr}/v1/{mount}/data/{path}, field ``key``."""

    path: str
    key: str = "api_key"
    mount: str = "secret"
    addr_env: str = "VAULT_ADDR"
    token_env: str = "VAULT_TOKEN"


class SecretRef(Cfg, frozen=True, kw_only=True):
    """Where a secret lives. Exactly one of env, file, vault. The value never enters the config."""

    env: str | None = None
    file: str | None = None
    vault: VaultRef | None = None
    refresh: Duration = Duration(60)  # re-read this often (key rotation without restart)

    def __post_init__(self) -> None:
        given = [n for n in ("env", "file", "vault") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of `env`, `file`, `vault`")


class RateLimitCfg(Cfg, frozen=True, kw_only=True):
    rpm: Annotated[int, Meta(ge=1)] | None = None
    tpm: Annotated[int, Meta(ge=1)] | None = None
    # How much of a minute's allowance may go out at once, in seconds of it: 60 lets the whole minute
    # burst; 1 spreads it evenly (providers enforce limits over shorter windows than a minute).
    burst: Duration = Duration(60)


class RetryCfg(Cfg, frozen=True, kw_only=True):
    max_attempts: Annotated[int, Meta(ge=1, le=10)] = 3
    base_delay: Duration = Duration(0.5)
    max_delay: Duration = Duration(8)


class CooldownCfg(Cfg, frozen=True, kw_only=True):
    failures: Annotated[int, Meta(ge=1)] = 3  # consecutive failures that open the circuit
    period: Duration = Duration(30)  # then one trial request (half-open)


class ProviderCfg(Cfg, frozen=True, kw_only=True):
    api: Literal["openai", "anthropic", "gemini"]
    tier: Tier
    base_url: str
    api_key: SecretRef | None = None
    enabled: bool = True  # also disabled at start when its key is not set
    limits: RateLimitCfg = RateLimitCfg()
    model_limits: dict[str, RateLimitCfg] = {}  # per library model name
    timeout: Duration = Duration(60)
    connect_timeout: Duration = Duration(5)
    retry: RetryCfg = RetryCfg()
    cooldown: CooldownCfg = CooldownCfg()
    concurrency: Annotated[int, Meta(ge=1)] = 64
    description: str = ""
