"""Helpers for rotator tests: a profile of tiny real GGUF models on CPU "cards" sized to hold a given number
of them, and a rig that runs gpu_hosts, the rotator and (optionally) the router in this process."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NATS

from actors.gpu_host.actor import GpuHost
from actors.rotator.actor import PHASE_KEY, Rotator
from actors.router.actor import Router
from bus import subjects
from bus.kv import TypedKV
from schemas.codec import Codec
from schemas.commands import Command
from schemas.config import OrchestraConfig, load_config
from schemas.state import HostState, PhaseState
from tests.support.actors import Actors
from tests.support.events import Recorder
from tests.support.gpu_host import tiny_entry
from tests.support.profile import write_profile
from tests.support.tiny_models import write_tiny_llama_gguf
from weights.library import read_gguf

OVERHEAD = 20_000_000  # per loaded model: makes "room for N models" easy to state


def write_slow_llama_gguf(path: Path) -> Path:
    """A wider random llama (16 MB) that does not stop early: about 1000 tokens/s on one thread, so queues
    form with a handful of requests."""
    return write_tiny_llama_gguf(path, n_embd=256, n_layer=4, n_ff=1024, n_head=8, n_head_kv=4)


def tiny_models(path: Path, families: dict[str, str], **extra: Any) -> dict[str, dict[str, Any]]:
    """Library entries for a test llama under several names and families. ``size`` and the KV cache per
    token are the file's own, so the rotator's planner and the gpu_host agree to the byte."""
    info = read_gguf(path)
    return {
        name: tiny_entry(path, family=family, size=info.weights_bytes, kv_bytes_per_token=info.kv_bytes_per_token(),
                         **extra)
        for name, family in families.items()
    }  # fmt: skip


def footprint(path: Path, context: int = 256, batch: int = 4) -> int:
    info = read_gguf(path)
    return info.weights_bytes + (info.kv_bytes_per_token() or 0) * context * batch + OVERHEAD


def rig_profile(
    dest: Path,
    nats_url: str,
    *,
    models: dict[str, dict[str, Any]],
    phases: dict[str, Any],
    initial: str,
    memory: int,
    hosts: tuple[str, ...] = ("cpu0",),
    rotator: dict[str, Any] | None = None,
) -> Path:
    """The local profile with tiny models, one CPU card of ``memory`` bytes per host, and these phases."""
    overrides: dict[str, Any] = {
        "models": {"smollm2-135m": {"keep_alive": "warm"}, "gemma3-270m": {"keep_alive": "warm"}, **models},
        "cards": {h: {"device": "cpu", "memory": memory} for h in hosts},
        "hosts": {
            h: {"cards": [h], "n_threads": 1, "n_threads_batch": 1, "heartbeat": "500ms", "overhead": OVERHEAD}
            for h in hosts
        },
        "phases": phases,
        "rotator": {"initial_phase": initial, "recent_window": 1, "step_timeout": "20s", **(rotator or {})},
    }
    return write_profile(dest, nats_url, overrides=overrides)


@dataclass
class Rig:
    nc: NATS
    cfg: OrchestraConfig
    events: Recorder  # events and commands
    hosts: dict[str, GpuHost] = field(default_factory=dict)
    rotator: Rotator | None = None
    router: Router | None = None

    @classmethod
    async def start(cls, actors: Actors, profile: Path, *, router: bool = False, rotator: bool = True) -> Rig:
        """Its actors are started (and, when the test ends, stopped) by ``actors``."""
        cfg = load_config(profile)
        rig = cls(actors.nc, cfg, await Recorder.listen(actors.nc, commands=True))
        for name in cfg.hosts:
            rig.hosts[name] = await actors.start(GpuHost(cfg, host=name))
        if router:
            rig.router = await actors.start(Router(cfg))
        if rotator:
            rig.rotator = await actors.start(Rotator(cfg))
        return rig

    def loaded(self, host: str = "cpu0") -> dict[str, str]:
        """model -> keep-alive, as the host holds them now (its own state, not the KV copy)."""
        return {n: r.keep_alive for n, r in self.hosts[host].manager.residents.items() if not r.draining}

    async def phase(self) -> PhaseState | None:
        kv: TypedKV[PhaseState] = await TypedKV.open(self.nc.jetstream(), subjects.KV_PHASE, Codec(PhaseState))
        return await kv.get(PHASE_KEY)

    async def host_state(self, host: str = "cpu0") -> HostState | None:
        kv: TypedKV[HostState] = await TypedKV.open(self.nc.jetstream(), subjects.KV_HOSTS, Codec(HostState))
        return await kv.get(host)

    def of(self, kind: type[Command], **match: Any) -> list[Any]:
        return self.events.of(kind, **match)
