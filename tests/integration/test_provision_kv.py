"""Provisioning from the one declaration, and KV live views, against a real nats-server."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from nats.aio.client import Client as NATS

from bus.errors import ProvisionError
from bus.kv import LiveView, TypedKV
from bus.provision import provision
from bus.server import EmbeddedNats
from bus.subjects import BUCKETS, KV_HOSTS, STREAMS, StreamSpec
from schemas.codec import Codec
from schemas.config.bus import StreamsCfg
from schemas.config.units import Duration
from schemas.state import HostState
from tests.support.wait import eventually

HOSTS = Codec(HostState)


async def test_provisioning_is_idempotent(nc: NATS) -> None:
    """The first run creates every stream and bucket; the second changes nothing."""
    js = nc.jetstream()
    first = await provision(js, StreamsCfg())
    assert set(first.values()) == {"created"} and len(first) == len(STREAMS) + len(BUCKETS)
    second = await provision(js, StreamsCfg())
    assert set(second.values()) == {"unchanged"}


async def test_a_changed_stream_config_is_updated_in_place_keeping_messages(nc: NATS) -> None:
    """Changing the history age updates the stream; stored messages survive (no recreate)."""
    js = nc.jetstream()
    await provision(js, StreamsCfg(history=Duration(3600)))
    await js.publish("orch.event.test", b"{}")
    outcome = await provision(js, StreamsCfg(history=Duration(7200)))
    assert outcome["EVENTS"] == "updated"
    info = await js.stream_info("EVENTS")
    assert info.config.max_age == 7200 and info.state.messages == 1


async def test_overlapping_streams_are_refused_before_touching_the_server(nc: NATS) -> None:
    with pytest.raises(ProvisionError, match="overlap"):
        await provision(nc.jetstream(), StreamsCfg(), [*STREAMS, StreamSpec("ALSO_EVENTS", ["orch.event.model.>"])])
    names = [s.config.name for s in await nc.jetstream().streams_info()]
    assert names == []


async def test_live_view_follows_puts_and_deletes(nc: NATS) -> None:
    """A LiveView mirrors the bucket: current values first, then every change."""
    js = nc.jetstream()
    await provision(js, StreamsCfg())
    kv = await TypedKV.open(js, KV_HOSTS, HOSTS)
    await kv.put("cpu0", HostState(host="cpu0", heartbeat_at=1.0))
    changes: list[tuple[str, object]] = []
    view = LiveView(js, KV_HOSTS, HOSTS, on_change=lambda k, v: changes.append((k, v)))
    task = asyncio.create_task(view.run())
    try:
        await asyncio.wait_for(view.ready.wait(), 5)
        assert view.get("cpu0") == HostState(host="cpu0", heartbeat_at=1.0)
        await kv.put("gpu.1", HostState(host="gpu.1"))
        await eventually(lambda: view.get("gpu.1"))
        await kv.delete("cpu0")
        await eventually(lambda: view.get("cpu0") is None)
        assert [k for k, _ in changes] == ["gpu.1", "cpu0"]
    finally:
        task.cancel()


async def test_live_view_keeps_following_after_a_nats_server_restart(nats_server: EmbeddedNats, nc: NATS) -> None:
    """The watch resumes after kill -9 and restart of nats-server on the same store."""
    js = nc.jetstream()
    await provision(js, StreamsCfg())
    kv = await TypedKV.open(js, KV_HOSTS, HOSTS)
    await kv.put("cpu0", HostState(host="cpu0", heartbeat_at=1.0))
    view = LiveView(js, KV_HOSTS, HOSTS)
    task = asyncio.create_task(view.run())
    try:
        await asyncio.wait_for(view.ready.wait(), 5)
        nats_server.kill()
        await asyncio.sleep(0.5)
        nats_server.start()
        await eventually(lambda: nc.is_connected, timeout=10)

        async def updated() -> bool:
            try:
                await kv.put("cpu0", HostState(host="cpu0", heartbeat_at=2.0))
            except Exception:
                return False
            state = view.get("cpu0")
            return state is not None and state.heartbeat_at == 2.0

        await eventually(updated, timeout=30, interval=0.5)
    finally:
        task.cancel()


def test_typed_kv_values_are_structs() -> None:
    assert msgspec.json.decode(msgspec.json.encode(HostState(host="h")), type=HostState).host == "h"
