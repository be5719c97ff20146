"""The budget_guard as a real process (``python -m actors.budget_guard``): kill -9 in the middle of
traffic, a restart, and the rebuilt ledger checked against the stored results; the cost CLI."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from bus.actor import Actor
from bus.errors import ServiceCallError
from clients.budget import BudgetClient
from schemas.budget import LEDGER_ENTRY, Reserved
from schemas.config import load_config
from schemas.config.root import OrchestraConfig
from schemas.dispatch import Target
from schemas.request import ChatMessage, Sampling, make_request
from tests.support.actors import Actors
from tests.support.budget import (
    MODEL,
    PROVIDER,
    digest,
    failure,
    publish_failure,
    publish_result,
    replayed_charges,
    reserve,
    result,
    settled,
    summary,
)
from tests.support.procs import REPO, ActorProcess
from tests.support.wait import eventually

ORCHESTRA = str(Path(sys.executable).parent / "orchestra")


def orchestra(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ORCHESTRA, *args], cwd=REPO, capture_output=True, text=True, timeout=60)


class LeaseHolder(Actor):
    """The router's budget side alone: a real BudgetClient (leases and per-attempt reservations)."""

    name = "lease_holder"

    def __init__(self, cfg: OrchestraConfig) -> None:
        super().__init__(cfg, instance="k9")
        self.budget = BudgetClient(self)


class Traffic:
    """Clients playing router + worker until stopped: reserve the worst case before a paid target,
    sometimes fail an attempt first, store the result; without a reservation (the guard is down or
    denies) the request goes to the local tier, as the router's fallback does. Lease clients hold
    through the router's own BudgetClient: most attempts draw from a lease, also while the guard is
    down, and their results carry the lease and the draw."""

    def __init__(self, nc: NATS, seed: int, holder: LeaseHolder) -> None:
        self.nc, self.rng, self.holder = nc, random.Random(seed), holder
        self.done = 0
        self.unreserved = 0  # paid requests that found no guard
        self.drawn = 0  # attempts that drew from a lease
        self.tiers: dict[str, int] = {}
        self.running = True

    async def client(self, leases: bool = False) -> None:
        while self.running:
            rid = f"k9r{self.done}-{self.rng.getrandbits(32):08x}"
            await (self.leased(rid) if leases else self.one(rid))
            self.done += 1
            await asyncio.sleep(0.01)

    async def leased(self, rid: str) -> None:
        tier = self.rng.choice(["premium", "together"])
        request = make_request(
            id=rid,
            messages=[ChatMessage(role="user", content="x" * self.rng.randint(3, 300))],
            timeout_s=3,
            sampling=Sampling(max_tokens=self.rng.randint(16, 512)),
        )
        target = Target(tier=tier, model=MODEL[tier], provider=PROVIDER[tier])  # type: ignore[arg-type]
        held = await self.holder.budget.reserve(request, target, 0)
        if not isinstance(held, tuple):
            self.unreserved += held is None
            await publish_result(self.nc, result(rid, 0.000001, tier="local"))
            self.tiers["local"] = self.tiers.get("local", 0) + 1
            return
        self.drawn += held[0].startswith("lease-")
        cost = round(held[1] * self.rng.uniform(0.2, 0.99)) / 1e9
        if self.rng.random() < 0.2:
            await publish_failure(self.nc, failure(rid, cost, tier=tier, drawn=held))
        else:
            await publish_result(self.nc, result(rid, cost, tier=tier, drawn=held))
        self.tiers[tier] = self.tiers.get(tier, 0) + 1

    async def one(self, rid: str) -> None:
        rng = self.rng
        tier = rng.choice(["premium", "together", "local"])
        worst = round(rng.uniform(0.001, 0.05), 6)
        attempt = 0
        if tier != "local" and rng.random() < 0.2:
            await publish_failure(self.nc, failure(rid, round(worst * rng.random() / 10, 6), tier=tier))
            attempt = 1
        if tier != "local":
            try:
                reply = await reserve(
                    self.nc, rid, worst, tier=tier, attempt=attempt, deadline=time.time() + 3, timeout=1
                )
                granted = reply.granted
            except ServiceCallError:
                self.unreserved += 1
                granted = False
            if not granted:
                tier, attempt = "local", attempt + 1
        cost = round(worst * rng.uniform(0.2, 1.0), 6) if tier != "local" else 0.000001 * rng.randint(1, 400)
        await publish_result(self.nc, result(rid, cost, tier=tier, attempt=attempt))
        self.tiers[tier] = self.tiers.get(tier, 0) + 1


@pytest.mark.slow
async def test_kill_9_mid_traffic_the_rebuilt_ledger_equals_the_replayed_results(nc: NATS, actors: Actors) -> None:
    """Eight clients send requests before, during and after a SIGKILL of the guard and its restart,
    half of them drawing from budget leases: afterwards its ledger (rebuilt from LEDGER, leases
    included, then caught up on RESULTS) holds exactly the charges that replaying RESULTS gives, key
    by key and to the nano-dollar: none twice, none lost. Holds the dead guard granted (and leases
    that could not be given back) expire at their deadline; `orchestra cost report --verify` agrees."""
    budgets = {
        "limits": [{"scope": "total", "period": "daily", "hard_usd": 1000.0}],
        "reservation_grace": 0,
        "leases": {"window": "2s", "idle": "1s", "backoff": "1s"},
    }
    profile = actors.profile(overrides={"budgets": budgets})
    first = await actors.process("actors.budget_guard", profile, ready="budget_guard started", timeout=30)
    holder = await actors.start(LeaseHolder(load_config(profile)))
    traffic = Traffic(nc, seed=9, holder=holder)
    clients = [asyncio.create_task(traffic.client(leases=n % 2 == 1)) for n in range(8)]
    await eventually(lambda: traffic.done >= 100, timeout=60)
    await asyncio.to_thread(first.kill)
    down_at = traffic.done
    await eventually(lambda: traffic.unreserved >= 10, timeout=30)  # traffic while the guard is dead
    second = await actors.process("actors.budget_guard", profile, ready="budget_guard started", timeout=30)
    up_at = traffic.done
    await eventually(lambda: traffic.done >= up_at + 100, timeout=60)
    traffic.running = False
    await asyncio.gather(*clients)
    await actors.stop(holder)  # its leases are retired: what was not drawn goes back
    await eventually(lambda: settled(nc), timeout=60)
    assert up_at > down_at > 0 and traffic.tiers.get("premium", 0) > 10
    assert traffic.drawn > 50 and await ledger_leases(nc) < traffic.drawn / 4

    replayed = await replayed_charges(nc)
    state = await summary(nc)
    assert state.charges == len(replayed) >= traffic.done
    assert state.spent_nanos == sum(replayed.values())
    assert state.digest == digest(replayed)
    assert state.entries_replayed > 0 and "ledger rebuilt from" in second.output()
    await eventually(lambda: _no_holds(nc), timeout=15)  # granted, never settled: expire at the deadline

    out = await asyncio.to_thread(orchestra, "--config", str(profile), "cost", "report", "--since", "1h", "--verify")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"ledger agrees: {len(replayed)} charges" in out.stdout


async def ledger_leases(nc: NATS) -> int:
    js = nc.jetstream()
    info = await js.stream_info("LEDGER")
    leases = 0
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        entry = LEDGER_ENTRY.decode((await js.get_msg("LEDGER", seq)).data or b"")
        leases += isinstance(entry, Reserved) and entry.lease
    return leases


async def _no_holds(nc: NATS) -> bool:
    state = await summary(nc)
    return state.open_reservations == 0 and state.held_nanos == 0


def test_cost_simulate_prints_the_papers_comparisons() -> None:
    """The default workload is the paper's: its right figures are reproduced, its wrong ones flagged."""
    out = orchestra("cost", "simulate")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for expected in ("$88.00", "$176.00", "$0.30", "6.8 months", "3.4 months", "$52.50", "$142.50-$192.50"):
        assert expected in text
    lines = text.splitlines()
    assert any("local llama3.1-70b @ 200M" in x and "$0.40" in x and "$0.60" in x and "WRONG" in x for x in lines)
    assert any("monthly savings of option B" in x and "$30.00-$70.00" in x and "WRONG" in x for x in lines)
    assert "8.6-20.0 months" in text and "93.6-97.8%" in text and "95.9-97.8%" in text
    assert "13 of the paper's figures do not follow from its own numbers" in text


def test_cost_simulate_takes_a_workload_from_flags_and_a_file(tmp_path: Path) -> None:
    workload = tmp_path / "workload.yaml"
    workload.write_text("volumes_m: [300]\npremium_m: {gpt-4o: 40}\n")
    out = orchestra("cost", "simulate", "--workload", str(workload), "--expansion-usd", "900", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    values = {r["what"]: r["value"] for r in doc["rows"]}
    assert values["together/llama3.1-70b @ 300M tokens/month"] == pytest.approx([264.0, 264.0])
    assert values["ROI of +2 P40s @ 300M tokens/month"][0] == pytest.approx(900 / 264)
    assert values["gpt-4o @ 40M tokens"] == pytest.approx([44.0, 44.0])
    assert all(r["check"] is None for r in doc["rows"])  # not the paper's workload: no verdicts
    bad = orchestra("cost", "simulate", "--together-now", "lots")
    assert bad.returncode == 1 and "--together-now: expected LO:HI" in bad.stderr


def test_cost_simulate_runs_on_the_local_profile_with_its_own_models() -> None:
    """`--config local` has no llama3.1-70b: SmolLM2 stands in (no checks: not the paper's prices);
    naming a model the profile lacks says which flag and which models it has."""
    out = orchestra("--config", "local", "cost", "simulate")
    assert out.returncode == 0, out.stderr
    assert "local smollm2-135m @ 100M tokens/month" in out.stdout
    assert "(the prices of profile 'local', not the paper's: no checks)" in out.stdout
    gemma = orchestra("--config", "local", "cost", "simulate", "--local-model", "gemma3-270m", "--json")
    assert gemma.returncode == 0 and json.loads(gemma.stdout)["workload"]["local_model"] == "gemma3-270m"
    bad = orchestra("--config", "local", "cost", "simulate", "--local-model", "llama3.1-70b")
    assert bad.returncode == 1 and "--local-model: 'llama3.1-70b' is not a local model" in bad.stderr


@pytest.mark.slow
async def test_two_guards_started_together_never_both_serve_and_the_standby_takes_over(
    nc: NATS, actors: Actors
) -> None:
    """Two budget_guard processes at once: one holds the writer lease and serves, the other stands by.
    kill -9 of the leader: the standby takes over after the lease lapses, rebuilds the leader's hold
    from LEDGER and counts it once; the cap still holds."""
    budgets = {"writer_lease": "3s", "limits": [{"scope": "tier", "name": "premium", "period": "daily",
                                                 "hard_usd": 1.0}]}  # fmt: skip
    profile = actors.profile(overrides={"budgets": budgets})
    pair = [await actors.process("actors.budget_guard", profile) for _ in range(2)]

    def started() -> list[ActorProcess]:
        return [p for p in pair if "budget_guard started" in p.output()]

    leaders = await eventually(started, timeout=30)
    standby = next(p for p in pair if p is not leaders[0])
    await eventually(lambda: "standing by" in standby.output(), timeout=10)
    assert (await reserve(nc, "before1", 0.60)).granted
    assert started() == leaders  # still one serving
    leaders[0].kill()
    await eventually(lambda: "budget_guard started" in standby.output(), timeout=30)
    state = await summary(nc)
    assert state.held_nanos == 600_000_000 and state.open_reservations == 1  # its hold, once
    assert not (await reserve(nc, "after1", 0.60)).granted  # 0.60 + 0.60 > the $1.00 cap
    assert (await reserve(nc, "after2", 0.30)).granted
