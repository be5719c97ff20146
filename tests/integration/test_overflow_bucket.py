"""The overflow switches' one writer, under the generated permissions: the rotator, connected as itself,
folds the monitor's SetOverflow commands into orch_overflow; another role writing the bucket is refused."""

from __future__ import annotations

from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS

from actors.rotator.actor import Rotator
from bus import subjects
from bus.kv import TypedKV
from bus.server import EmbeddedNats
from schemas.codec import Codec, encode
from schemas.commands import SetOverflow
from schemas.config import load_config
from schemas.state import OverflowState
from tests.support.profile import write_profile
from tests.support.wait import eventually

pytestmark = pytest.mark.expect_violations  # the router's forged write below
SWITCH: Codec[OverflowState] = Codec(OverflowState)


async def test_the_rotator_alone_writes_the_overflow_switches(
    tmp_path: Path, nats_server: EmbeddedNats, nc: NATS
) -> None:
    """A monitor's switch on and off lands in orch_overflow through the rotator (its own identity, no
    violation of its own); the router may read the bucket but its write is refused and stores nothing."""
    cfg = load_config(write_profile(tmp_path / "profile", nats_server.url))
    as_rotator = await nats.connect(nats_server.url, **nats_server.connect_options("rotator"))
    as_monitor = await nats.connect(nats_server.url, **nats_server.connect_options("diversity_monitor"))
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    as_router = await nats.connect(
        nats_server.url, error_cb=on_error, allow_reconnect=False, **nats_server.connect_options("router")
    )
    rotator = Rotator(cfg, instance="test-rotator")
    try:
        await rotator.start(as_rotator)
        switches: TypedKV[OverflowState] = await TypedKV.open(nc.jetstream(), subjects.KV_OVERFLOW, SWITCH)
        on = SetOverflow(model="gemma3-270m", tier="together", by="diversity_monitor", reason="backlog")
        await as_monitor.jetstream().publish(subjects.command(on), encode(on))
        stored = await eventually(lambda: switches.get("gemma3-270m"))
        assert (stored.tier, stored.enabled_by, stored.reason) == ("together", ["diversity_monitor"], "backlog")

        forged = encode(OverflowState(model="smollm2-135m", tier="premium", by="router"))
        await as_router.publish(f"$KV.{subjects.KV_OVERFLOW}.smollm2-135m", forged)
        await eventually(lambda: any(subjects.KV_OVERFLOW in e for e in errors), timeout=5)
        assert await switches.get("smollm2-135m") is None
        readable: TypedKV[OverflowState] = await TypedKV.open(as_router.jetstream(), subjects.KV_OVERFLOW, SWITCH)
        assert await readable.get("gemma3-270m") == stored

        off = SetOverflow(model="gemma3-270m", enabled=False, by="diversity_monitor")
        await as_monitor.jetstream().publish(subjects.command(off), encode(off))

        async def gone() -> bool:
            return await switches.get("gemma3-270m") is None

        await eventually(gone)
        await eventually(lambda: rotator.overflow == {})  # its own view follows its write
        assert nats_server.violations and all("user:router" in v for v in nats_server.violations)
    finally:
        await rotator.stop(grace=0.5)
        for conn in (as_rotator, as_monitor, as_router):
            await conn.close()
