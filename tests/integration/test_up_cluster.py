"""`orchestra up --cluster 3`: three nats-servers as one JetStream cluster on loopback (fresh free ports,
node configs rendered by the code behind `orchestra deploy render`), streams at three replicas, every
actor given the three URLs. A question is answered; one node is killed by its PID (the supervisor
restarts it) and the next question is answered too; Ctrl-C stops every process."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from pathlib import Path

import nats
import pytest

from bus.cluster import LocalCluster
from bus.procman import ProcLine
from cli.upcluster import environment, node_lines, with_nodes
from tests.support.procs import REPO
from tests.support.profile import write_profile
from tests.support.wait import eventually

ORCHESTRA = str(Path(sys.executable).parent / "orchestra")
PROCFILE = """\
nats: exec orchestra nats-server
router: exec python -m actors.router
gpu_host: exec python -m actors.gpu_host --host cpu0
rotator: exec python -m actors.rotator
"""


def test_the_nodes_take_the_place_of_the_procfile_nats_line(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path / "c", size=3, fresh_ports=True)
    nodes = node_lines(cluster, None)
    lines = with_nodes([ProcLine("nats", "x"), ProcLine("router", "y")], nodes)
    assert [line.name for line in lines] == ["nats-1", "nats-2", "nats-3", "router"]
    assert all(line.command.startswith("exec env GOMAXPROCS=1 ") and "--config" in line.command for line in nodes)
    env = environment(cluster)
    assert env["ORCHESTRA_NATS_URL"].split(",") == cluster.urls and env["ORCHESTRA_NATS_REPLICAS"] == "3"
    assert len({n.client_port for n in cluster.nodes} | {n.cluster_port for n in cluster.nodes}) == 6


async def _orchestra(profile: Path, *args: str, timeout: float = 150) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        ORCHESTRA, "--config", str(profile), *args, cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRA_")},
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode()


async def _status(profile: Path) -> dict[str, object] | None:
    rc, out = await _orchestra(profile, "status", "--json", timeout=30)
    return json.loads(out) if rc == 0 else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
async def test_up_cluster_answers_through_the_loss_of_a_node_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    # a host counts as down after 3 missed heartbeats: they must outlast a raft election (4-9 s here)
    overrides = {
        "bus": {"embedded": {"enabled": True}, "auth": {"credentials_dir": "auth"}},
        "hosts": {"cpu0": {"heartbeat": "4s"}},
        "gateway": {"port": 0},
    }
    profile = write_profile(tmp_path / "p", "nats://127.0.0.1:1", data_dir=tmp_path / "data", overrides=overrides)
    procfile = tmp_path / "Procfile"
    procfile.write_text(PROCFILE)
    lines: list[str] = []
    up = await asyncio.create_subprocess_exec(
        ORCHESTRA, "--config", str(profile), "up", "--cluster", "3", "--procfile", str(procfile),
        "--backoff", "0.3", "--grace", "5", cwd=REPO, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, start_new_session=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRA_")},
    )  # fmt: skip

    async def read() -> None:
        assert up.stdout is not None
        async for raw in up.stdout:
            lines.append(raw.decode(errors="replace").rstrip("\n"))

    reader = asyncio.create_task(read())
    pids: dict[str, int] = {}
    try:

        async def ready() -> dict[str, object] | None:
            report = await _status(profile)
            if not report or not report.get("cluster"):
                return None
            streams = {s["name"]: s for s in report["streams"]}  # type: ignore[attr-defined]
            hosts = report["state"]["orch_hosts"] or {}  # type: ignore[index]
            loaded = any(m for h in hosts.values() for m in h.get("models", []))
            replicated = streams.get("REQUESTS", {}).get("replicas") == 3
            return report if loaded and replicated else None

        report = await eventually(ready, timeout=240, interval=1.0)
        nodes = report["cluster"]  # type: ignore[index]
        assert [n["name"] for n in nodes] == ["nats-1", "nats-2", "nats-3"] and all(n["alive"] for n in nodes)
        rc, out = await _orchestra(profile, "status")
        assert rc == 0 and "NATS CLUSTER (orchestra up --cluster 3)" in out, out
        assert re.search(r"nats-2: up pid=\d+ client=127\.0\.0\.1:\d+", out), out

        rc, out = await _orchestra(profile, "ask", "--model", "smollm2-135m", "--max-tokens", "8", "--json", "Hi")
        assert rc == 0, out
        assert json.loads(out)["text"], out

        leader = next(n for n in nodes if "REQUESTS" in n["leads"])  # the hardest node to lose
        os.kill(leader["pid"], signal.SIGKILL)
        rc, out = await _orchestra(profile, "ask", "--model", "smollm2-135m", "--max-tokens", "8", "--json", "Again")
        assert rc == 0, out
        assert json.loads(out)["text"], out
        await eventually(lambda: any(f"{leader['name']}" in ln and "exited with -9" in ln for ln in lines), timeout=30)
        restarted = await eventually(_status_restarted(profile, leader["name"]), timeout=60, interval=1.0)
        assert restarted["processes"]["processes"][leader["name"]]["restarts"] == 1

        rc, out = await _orchestra(profile, "client", "add", "job9")  # every node re-reads its users
        assert rc == 0 and "local cluster's nats-servers" in out, out
        job = json.loads((tmp_path / "data" / "auth" / "clients" / "job9.json").read_text())
        urls = [f"nats://{n['client']}" for n in nodes]

        async def job_connects() -> bool:
            try:
                conn = await nats.connect(servers=urls, user=job["user"], password=job["password"],
                                          allow_reconnect=False, connect_timeout=2)  # fmt: skip
            except Exception:
                return False  # a node has not re-read its users yet
            await conn.close()
            return True

        await eventually(job_connects, timeout=30, interval=0.5)

        started = (re.search(r"(\S+) +\| started \(pid (\d+)\)", line) for line in list(lines))
        pids = {m.group(1): int(m.group(2)) for m in started if m}  # the latest pid of each process
        assert {"nats-1", "nats-2", "nats-3", "router", "gpu_host", "rotator"} <= set(pids)
        up.send_signal(signal.SIGINT)  # Ctrl-C
        assert await asyncio.wait_for(up.wait(), 60) == 0
        await reader
    finally:
        if up.returncode is None:
            os.killpg(up.pid, signal.SIGKILL)
            await up.wait()
        reader.cancel()
    still = [name for name, pid in pids.items() if _alive(pid)]
    assert not still, f"still running after Ctrl-C: {still}"
    assert not (tmp_path / "data" / "up" / "cluster.json").exists()


def _status_restarted(profile: Path, name: str):  # type: ignore[no-untyped-def]
    async def check() -> dict[str, object] | None:
        report = await _status(profile)
        if not report:
            return None
        node = next((n for n in report.get("cluster") or [] if n["name"] == name), None)  # type: ignore[attr-defined]
        return report if node and node["alive"] and report["processes"]["processes"][name]["restarts"] else None  # type: ignore[index]

    return check
