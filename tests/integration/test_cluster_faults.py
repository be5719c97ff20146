"""The lab's shape on loopback: three nats-servers as one JetStream cluster (node configs from
bus/clusterconf.py, as `orchestra deploy render` writes a lab's), streams and KV at three replicas, the
router and a scripted worker given all three URLs. kill -9 of the node they are connected to, under a
steady load of requests: none lost, none answered twice, none failed; the node returns and catches up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from actors.router.actor import Router
from bus import subjects
from bus.cluster import LocalCluster
from schemas.codec import OUTCOME, encode
from schemas.config import OrchestraConfig
from schemas.request import ChatMessage, GenerateRequest, make_request
from schemas.result import GenerateResult
from tests.support.faultload import percentile, record
from tests.support.profile import register_server, test_config
from tests.support.scripted_worker import ScriptedWorker
from tests.support.wait import eventually

REQUESTS = 200
RATE = 40.0  # requests per second: the load lasts 5 s
KILL_AT = 60  # the node goes down after this many requests were sent
LOCAL = {"cpu0": ["smollm2-135m", "gemma3-270m"]}


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    c = LocalCluster(tmp_path / "cluster", size=3, auth_dir=tmp_path / "auth").start()
    for server in c.servers:
        register_server(server)
    try:
        await c.ready(**c.servers[0].connect_options())
        yield c
    finally:
        c.stop()
    assert not c.violations, "permission violations on the bus:\n" + "\n".join(c.violations[:10])


async def connect_all(c: LocalCluster) -> NATS:
    return await nats.connect(
        servers=c.urls, max_reconnect_attempts=-1, reconnect_time_wait=0.2, **c.servers[0].connect_options()
    )


async def publish_request(nc: NATS, request: GenerateRequest) -> None:
    """As a client must: retried with the same Msg-Id (stored once) while the cluster elects a leader."""
    deadline = time.monotonic() + 30
    while True:
        try:
            await nc.jetstream().publish(
                subjects.request(request.priority, request.id), encode(request),
                headers={"Nats-Msg-Id": request.id}, timeout=2,
            )  # fmt: skip
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def stored_outcome(nc: NATS, request_id: str) -> tuple[object, float] | None:
    try:
        msg = await nc.jetstream().get_last_msg("RESULTS", subjects.result(request_id))
    except NotFoundError:
        return None
    except Exception:  # the stream has no leader right now: ask again on the next round
        return None
    return OUTCOME.decode(msg.data or b""), (msg.time.timestamp() if msg.time else time.time())


async def stored_counts(nc: NATS, request_ids: list[str], settle: float = 30.0) -> dict[str, int]:
    """Final outcomes stored per request id (under any origin; exactly one is the rule), in one look at
    RESULTS. The reply may come from a replica a few messages behind the leader (a node that has just
    caught up, a follower answering while it sees no leader), so a count of 0 is looked at again until
    ``settle`` has passed; a count only grows, so 2 or more is final."""
    wanted = f"{subjects.PREFIX}.result.*.*"
    deadline = time.monotonic() + settle
    while True:
        counts = dict.fromkeys(request_ids, 0)
        try:
            info = await nc.jetstream().stream_info("RESULTS", subjects_filter=wanted)
        except Exception:  # no leader right now: look again
            info = None
        for subject, n in (info.state.subjects or {}).items() if info else ():
            request_id = subject.rsplit(".", 1)[-1]
            if request_id in counts:
                counts[request_id] += n
        if (info is not None and all(counts.values())) or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(0.5)


@pytest.fixture
def ccfg(tmp_path: Path, cluster: LocalCluster) -> OrchestraConfig:
    # A host counts as down after 3 missed heartbeats; on a cluster, a stream whose leader died is
    # unwritable for a raft election (4-9 s here), so a heartbeat window must outlast it: 4 s beats.
    hosts = {"cpu0": {"cards": ["cpu0"], "machine": "localhost", "heartbeat": "4s"}}
    return test_config(
        tmp_path / "profile",
        cluster.urls[0],
        overrides={"bus": {"servers": cluster.urls, "streams": {"replicas": 3}}, "hosts": hosts},
    )


@pytest.mark.slow
async def test_kill_9_of_one_cluster_node_under_load_loses_fails_and_duplicates_nothing(
    cluster: LocalCluster, ccfg: OrchestraConfig
) -> None:
    actors_nc, client = await connect_all(cluster), await connect_all(cluster)
    worker = ScriptedWorker(ccfg, hosts=LOCAL, script={"*": ["slow:0.2"]})
    router = Router(ccfg, instance="cluster-router")
    await worker.start(actors_nc)
    await router.start(actors_nc)
    info = await actors_nc.jetstream().stream_info("REQUESTS")
    assert info.config.num_replicas == 3 and len(info.cluster.replicas or []) == 2  # leader + 2 replicas
    await eventually(lambda: router.view.hosts.data)
    sent: dict[str, float] = {}
    got: dict[str, tuple[object, float]] = {}

    async def on_result(msg: Msg) -> None:
        if msg.subject.endswith(".failed"):
            return
        outcome = OUTCOME.decode(msg.data)
        got.setdefault(outcome.request_id, (outcome, time.time()))

    await client.subscribe(subjects.result("*"), cb=on_result)
    victim = next(i for i, url in enumerate(cluster.urls) if actors_nc.connected_url and str(
        actors_nc.connected_url.port) in url)  # fmt: skip
    killed_at = 0.0
    try:
        start = time.monotonic()
        publishing = []
        for i in range(REQUESTS):
            await asyncio.sleep(max(0.0, start + i / RATE - time.monotonic()))  # the load's pace
            if i == KILL_AT:
                cluster.kill(victim)  # the node the router and the worker are connected to
                killed_at = time.time()
            request = make_request(messages=[ChatMessage(role="user", content=f"q{i}")], timeout_s=120)
            sent[request.id] = time.time()
            publishing.append(asyncio.ensure_future(publish_request(client, request)))
        await asyncio.gather(*publishing)

        async def all_answered() -> bool:
            for rid in [r for r in sent if r not in got]:  # a result published while the client reconnected
                stored = await stored_outcome(client, rid)
                if stored is not None:
                    got[rid] = stored
            return len(got) == len(sent)

        await eventually(all_answered, timeout=90, interval=0.5)
        cluster.start_node(victim)  # the node returns ...

        async def caught_up() -> bool:  # ... and every replica of every stream is current again
            for name in ("REQUESTS", "DISPATCH", "RESULTS"):
                si = await client.jetstream().stream_info(name)
                peers = si.cluster.replicas or [] if si.cluster else []
                if len(peers) != 2 or not all(p.current and not p.offline for p in peers):
                    return False
            return True

        await eventually(caught_up, timeout=60, interval=0.5)
        failed = [o for o, _ in got.values() if not isinstance(o, GenerateResult)]
        counts = await stored_counts(client, list(sent))
        lost = [rid for rid, n in counts.items() if n == 0]
        duplicated = [rid for rid, n in counts.items() if n > 1]
        lat = sorted((got[rid][1] - t) * 1000 for rid, t in sent.items())
        during = sorted((got[rid][1] - t) * 1000 for rid, t in sent.items() if killed_at <= t <= killed_at + 5)
        report = {
            "fault": "cluster node kill -9 (3 nodes)", "sent": len(sent), "answered": len(got) - len(failed),
            "failed": len(failed), "lost": len(lost), "duplicated": len(duplicated), "sent_during_fault": len(during),
            "p50_ms": round(percentile(lat, 0.5)), "p99_ms": round(percentile(lat, 0.99)),
            "p99_during_fault_ms": round(percentile(during, 0.99)), "max_ms": round(lat[-1]),
        }  # fmt: skip
        record(report)
        assert not failed, failed[:3]
        assert not lost, lost[:3]
        assert not duplicated, duplicated[:3]
        assert len(got) == len(sent) == REQUESTS
    finally:
        await router.stop(grace=0.5)
        await worker.stop(grace=0.5)
        await actors_nc.close()
        await client.close()
