"""Cross-reference checks of a decoded config: pure, no I/O. Each problem names its path.

problems(cfg) -> [Problem(path="phases.phase_3.groups.code.rotation_pool[2]", message=...)]
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterable, Iterator

import msgspec

from schemas.base import TIERS
from schemas.cache import EMBED_MODEL
from schemas.config.models import CloudModel, LocalModel, PathSource, parse_params
from schemas.config.ops import METRICS
from schemas.config.root import OrchestraConfig
from schemas.request import VIRTUAL_MODELS

EMBEDDING_APIS = ("openai", "gemini")  # Anthropic has no embeddings API

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/+-]{0,127}$")
_HOST_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # hosts become subject tokens and consumer names


class Problem(msgspec.Struct, frozen=True):
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def problems(cfg: OrchestraConfig) -> list[Problem]:
    return [
        *_models(cfg),
        *_embedding_models(cfg),
        *_hosts(cfg),
        *_providers(cfg),
        *_phases(cfg),
        *_routes(cfg),
        *_alerts(cfg),
        *_budgets(cfg),
        *_gateway(cfg),
        *_bus(cfg),
        *_deadlines(cfg),
    ]


def _bus(cfg: OrchestraConfig) -> Iterator[Problem]:
    tls, auth = cfg.bus.tls, cfg.bus.auth
    if tls.enabled and cfg.bus.embedded.enabled and not (tls.server_cert_file and tls.server_key_file):
        yield Problem("bus.tls", "the embedded server needs server_cert_file and server_key_file for TLS")
    if tls.verify_clients and not tls.ca_file:
        yield Problem("bus.tls.verify_clients", "needs ca_file: the CA that signed the clients' certificates")
    if bool(tls.cert_file) != bool(tls.key_file):
        yield Problem("bus.tls", "cert_file and key_file go together (a client certificate for mutual TLS)")
    explicit = [name for name in ("user", "token_env", "creds_file") if getattr(auth, name)]
    if len(explicit) > 1:
        yield Problem("bus.auth", f"name one explicit identity, not {' and '.join(explicit)}")


def _refs(cfg: OrchestraConfig, names: Iterable[str], path: str, *, local: bool = False) -> Iterator[Problem]:
    for i, name in enumerate(names):
        model = cfg.models.get(name)
        if model is None:
            yield Problem(f"{path}[{i}]", f"unknown model {name!r}")
        elif local and not isinstance(model, LocalModel):
            yield Problem(f"{path}[{i}]", f"model {name!r} is not a local model")


def _models(cfg: OrchestraConfig) -> Iterator[Problem]:
    for name, model in cfg.models.items():
        path = f"models.{name}"
        if not _NAME.match(name) or name in VIRTUAL_MODELS:
            yield Problem(path, f"invalid model name {name!r} (letters, digits, . _ - : / +; not {VIRTUAL_MODELS})")
        if isinstance(model, CloudModel):
            provider = cfg.providers.get(model.provider)
            if provider is None:
                yield Problem(f"{path}.provider", f"unknown provider {model.provider!r}")
            continue
        try:
            parse_params(model.params)
        except ValueError as exc:
            yield Problem(f"{path}.params", str(exc))
        if model.engine == "ctransformers" and not model.model_type:
            yield Problem(f"{path}.model_type", "required for the ctransformers engine")
        storages = [(f"{path}.storage", model.storage)]
        if isinstance(model.source, PathSource):
            storages.append((f"{path}.source.storage", model.source.storage))
        for spath, storage in storages:
            if storage is not None and storage not in cfg.storage:
                yield Problem(spath, f"unknown storage tier {storage!r}")
        memory = 0
        for i, card in enumerate(model.cards):
            card_cfg = cfg.cards.get(card)
            if card_cfg is None:
                yield Problem(f"{path}.cards[{i}]", f"unknown card {card!r}")
                continue
            if card_cfg.reserved:
                yield Problem(f"{path}.cards[{i}]", f"card {card!r} is reserved ({card_cfg.reserved})")
            memory += card_cfg.memory
        sizes = [s for s in [model.size, *(v.size for v in model.variants)] if s is not None]
        if model.cards and sizes and memory and min(sizes) > memory:
            yield Problem(
                f"{path}.cards",
                f"cards {model.cards} hold {memory / 1e9:g} GB, smaller than the model's "
                f"smallest variant ({min(sizes) / 1e9:g} GB)",
            )


def _embedding_models(cfg: OrchestraConfig) -> Iterator[Problem]:
    for name, model in cfg.embedding_models.items():
        path = f"embedding_models.{name}"
        if not _NAME.match(name) or name in cfg.models or name in VIRTUAL_MODELS or name == EMBED_MODEL:
            yield Problem(path, f"invalid or taken embedding model name {name!r}")
        provider = cfg.providers.get(model.provider)
        if provider is None:
            yield Problem(f"{path}.provider", f"unknown provider {model.provider!r}")
        elif provider.api not in EMBEDDING_APIS:
            yield Problem(f"{path}.provider", f"provider {model.provider!r} ({provider.api}) offers no embeddings API")
        elif provider.api == "gemini" and model.max_inputs > 100:
            yield Problem(f"{path}.max_inputs", "Gemini's batchEmbedContents takes at most 100 texts")


def _hosts(cfg: OrchestraConfig) -> Iterator[Problem]:
    owner: dict[str, str] = {}
    for name, host in cfg.hosts.items():
        if not _HOST_NAME.match(name):
            yield Problem(f"hosts.{name}", "invalid host name (letters, digits, _ and - only)")
        for i, card in enumerate(host.cards):
            path = f"hosts.{name}.cards[{i}]"
            card_cfg = cfg.cards.get(card)
            if card_cfg is None:
                yield Problem(path, f"unknown card {card!r}")
            elif card_cfg.reserved:
                yield Problem(path, f"card {card!r} is reserved ({card_cfg.reserved})")
            if card in owner:
                yield Problem(path, f"card {card!r} already belongs to host {owner[card]!r}")
            owner.setdefault(card, name)


def _providers(cfg: OrchestraConfig) -> Iterator[Problem]:
    for name, provider in cfg.providers.items():
        if not _HOST_NAME.match(name):
            yield Problem(f"providers.{name}", "invalid provider name (letters, digits, _ and - only)")
        if provider.tier == "local":
            yield Problem(f"providers.{name}.tier", "a cloud provider's tier is 'together' or 'premium'")
        for model in provider.model_limits:
            if model not in cfg.models:
                yield Problem(f"providers.{name}.model_limits.{model}", f"unknown model {model!r}")


def _phases(cfg: OrchestraConfig) -> Iterator[Problem]:
    for name, phase in cfg.phases.items():
        for gname, group in phase.groups.items():
            gpath = f"phases.{name}.groups.{gname}"
            yield from _refs(cfg, group.always_loaded, f"{gpath}.always_loaded", local=True)
            yield from _refs(cfg, group.rotation_pool, f"{gpath}.rotation_pool", local=True)
            if group.rotation_pool and group.rotation_size > len(group.rotation_pool):
                yield Problem(
                    f"{gpath}.rotation_size",
                    f"{group.rotation_size} exceeds the rotation pool ({len(group.rotation_pool)} models)",
                )
            if group.rotation_pool and phase.rotation_frequency is None:
                yield Problem(f"phases.{name}.rotation_frequency", "a phase with a rotation pool needs one")
        for model in phase.keep_alive:
            if model not in cfg.models:
                yield Problem(f"phases.{name}.keep_alive.{model}", f"unknown model {model!r}")
        yield from _refs(cfg, phase.evaluators, f"phases.{name}.evaluators")
        for i, model in enumerate(phase.evaluators):  # a verdict is sampled under a JSON-schema grammar
            m = cfg.models.get(model)
            if isinstance(m, LocalModel) and m.engine != "llama_cpp":
                yield Problem(f"phases.{name}.evaluators[{i}]", f"{model!r} runs on {m.engine}: no grammar, no verdict")
        if phase.evaluate_share and not phase.evaluators:
            yield Problem(f"phases.{name}.evaluate_share", "a share to grade needs evaluators (phases.<p>.evaluators)")
    if cfg.rotator.initial_phase not in cfg.phases:
        yield Problem("rotator.initial_phase", f"unknown phase {cfg.rotator.initial_phase!r}")
    yield from _refs(cfg, cfg.rotator.scale.scale_up_models, "rotator.scale.scale_up_models", local=True)


def _routes(cfg: OrchestraConfig) -> Iterator[Problem]:
    for name, route in cfg.routes.items():
        path = f"routes.{name}"
        yield from _refs(cfg, [route.primary], f"{path}.primary")
        yield from _refs(cfg, route.fallback, f"{path}.fallback")
        yield from _refs(cfg, route.validators, f"{path}.validators")


def _alerts(cfg: OrchestraConfig) -> Iterator[Problem]:
    alerts = cfg.alerts
    for name, rule in alerts.rules.items():
        for i, cond in enumerate(rule.when):
            if cond.metric not in METRICS:
                yield Problem(
                    f"alerts.rules.{name}.when[{i}].metric",
                    f"unknown metric {cond.metric!r} (known: {', '.join(sorted(METRICS))})",
                )
        for i, channel in enumerate(rule.notify or ()):
            if channel not in alerts.notifiers:
                yield Problem(f"alerts.rules.{name}.notify[{i}]", f"unknown notifier {channel!r}")
    for severity, steps in alerts.escalation.items():
        for i, step in enumerate(steps):
            for j, channel in enumerate(step.notify):
                if channel not in alerts.notifiers:
                    yield Problem(f"alerts.escalation.{severity}[{i}].notify[{j}]", f"unknown notifier {channel!r}")
    for j, channel in enumerate(alerts.digests.notify):
        if channel not in alerts.notifiers:
            yield Problem(f"alerts.digests.notify[{j}]", f"unknown notifier {channel!r}")


def _budgets(cfg: OrchestraConfig) -> Iterator[Problem]:
    keys = {k.id for k in cfg.gateway.api_keys}
    try:
        zoneinfo.ZoneInfo(cfg.budgets.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        yield Problem("budgets.timezone", f"unknown time zone {cfg.budgets.timezone!r} (e.g. UTC, Europe/Berlin)")
    monthly = any(limit.period == "monthly" for limit in cfg.budgets.limits)
    if monthly and cfg.budgets.ledger_history < 32 * 86400:
        yield Problem("budgets.ledger_history", "monthly budgets need a ledger history of at least 32 days")
    for i, limit in enumerate(cfg.budgets.limits):
        path = f"budgets.limits[{i}].name"
        known: dict[str, Iterable[str]] = {
            "tier": TIERS,
            "provider": cfg.providers,
            "model": cfg.models,
        }
        if limit.scope == "total":
            if limit.name is not None:
                yield Problem(path, "a total budget has no name")
        elif limit.name is None:
            yield Problem(path, f"a {limit.scope} budget needs a name")
        elif limit.scope in known and limit.name not in known[limit.scope]:
            yield Problem(path, f"unknown {limit.scope} {limit.name!r}")
        elif limit.scope == "key" and keys and limit.name not in keys:
            yield Problem(path, f"unknown API key id {limit.name!r}")


def _gateway(cfg: OrchestraConfig) -> Iterator[Problem]:
    seen: set[str] = set()
    for i, key in enumerate(cfg.gateway.api_keys):
        if key.id in seen:
            yield Problem(f"gateway.api_keys[{i}].id", f"duplicate key id {key.id!r}")
        seen.add(key.id)
        chat = [m for m in key.models if m not in cfg.embedding_models and m != EMBED_MODEL]
        yield from _refs(cfg, chat, f"gateway.api_keys[{i}].models")


def _deadlines(cfg: OrchestraConfig) -> Iterator[Problem]:
    """Msg-Id dedupe must outlive every request: a request or result published again after the window
    (a redelivery, a worker's retry) would be stored a second time."""
    longest = float(cfg.router.max_deadline)
    if float(cfg.bus.streams.dedupe_window) < longest:
        yield Problem(
            "bus.streams.dedupe_window",
            f"{float(cfg.bus.streams.dedupe_window):g}s is shorter than the longest allowed request deadline "
            f"(router.max_deadline {longest:g}s): a result stored after the window could be a second outcome",
        )
    if float(cfg.gateway.request_timeout) > longest:
        yield Problem(
            "gateway.request_timeout",
            f"{float(cfg.gateway.request_timeout):g}s is longer than router.max_deadline ({longest:g}s)",
        )
