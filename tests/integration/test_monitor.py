"""The diversity_monitor on a real nats-server: live /metrics (checked by promtool), diversity reports
with real MiniLM embeddings, the lab's alert rules end to end with their remediation commands (OOM,
backlog, cost spike), escalation and digests to a real webhook receiver and a real SMTP server,
acknowledgement from the CLI, a restart that loses no alert, and the actor as a process."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nats.aio.client import Client as NATS

from actors.budget_guard.actor import BudgetGuard
from actors.diversity_monitor.actor import DiversityMonitor
from actors.rotator.actor import Rotator
from actors.router.actor import Router
from bus import subjects
from bus.kv import TypedKV
from bus.server import EmbeddedNats
from schemas.codec import COMMAND, Codec, encode
from schemas.commands import LoadModel, SetOverflow, SetTier, UnloadModel
from schemas.config import OrchestraConfig, load_config
from schemas.events import (
    AlertAcknowledged,
    AlertRaised,
    AlertResolved,
    BudgetThreshold,
    DiversityLow,
    DiversityReport,
    Notified,
    Oom,
    Remediation,
)
from schemas.request import ChatMessage, Requirements, make_request
from schemas.result import GenerateError, GenerateResult, Provenance, Usage
from schemas.state import CardState, HostState, LoadedModel, OverflowState, ProviderState, QueueState, TierState
from tests.support.actors import Actors
from tests.support.answers import FIB_DIVERSE, FIB_SAME, SKY_DIVERSE
from tests.support.client import ask, outcomes_stored
from tests.support.events import Recorder
from tests.support.minilm import embedder as shared_embedder
from tests.support.minilm import model_dir
from tests.support.procs import orchestra
from tests.support.profile import write_profile
from tests.support.receivers import Mailbox, Webhook, smtp_receiver, webhook_receiver
from tests.support.scripted_worker import ScriptedWorker
from tests.support.wait import eventually

FAST: dict[str, Any] = {
    "monitor": {"metrics_port": 0, "report_every": "300ms"},
    "alerts": {"evaluate_every": "200ms"},
    "router": {"attempt_timeout": "5s"},
}
LOCAL = {"cpu0": ["smollm2-135m", "gemma3-270m"]}
GB = 10**9
HOOK_ENV = "TEST_MONITOR_WEBHOOK_URL"


def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def profile_for(tmp_path: Path, server: EmbeddedNats, base: str = "local", **overrides: Any) -> Path:
    extra = merge(FAST, {"cache": {"semantic": {"model_dir": str(model_dir())}}, "bus": {"streams": {"replicas": 1}}})
    return write_profile(tmp_path / f"profile-{base}", server.url, base=base, overrides=merge(extra, overrides))


class CardsWorker(ScriptedWorker):
    """The scripted worker, reporting hosts with real card memory figures (what a gpu_host reports)."""

    def __init__(self, cfg: OrchestraConfig, *, states: dict[str, HostState], **kw: Any) -> None:
        super().__init__(cfg, hosts={h: [m.model for m in s.models] for h, s in states.items()}, **kw)
        self.states = states

    async def report(self) -> None:
        kv = await TypedKV.open(self.js, subjects.KV_HOSTS, Codec(HostState))
        for name, state in self.states.items():
            await kv.put(name, HostState(host=name, cards=state.cards, models=state.models, heartbeat_at=time.time()))
        providers = await TypedKV.open(self.js, subjects.KV_PROVIDERS, Codec(ProviderState))
        for p in self.providers:
            await providers.put(p, ProviderState(provider=p, available=True, updated_at=time.time()))


def monitor(cfg: OrchestraConfig) -> DiversityMonitor:
    return DiversityMonitor(cfg, instance="test-monitor", embedder=shared_embedder())


async def scrape(port: int) -> str:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        return await r.text()


def promtool_check(text: str) -> subprocess.CompletedProcess[str]:
    beside = Path(sys.executable).parent / "promtool"  # where `make test` puts it
    tool = str(beside) if beside.exists() else shutil.which("promtool")
    assert tool, "promtool is missing: `make test` fetches it (Debian package prometheus)"
    return subprocess.run([tool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)


def result(
    rid: str,
    text: str,
    model: str,
    family: str,
    *,
    tier: str = "local",
    task: str | None = None,
    cost: float = 0.0,
    temperature: float = 0.7,
    target: str = "cpu0",
) -> GenerateResult:
    return GenerateResult(
        request_id=rid,
        text=text,
        model=model,
        family=family,
        tier=tier,
        target=target,  # type: ignore[arg-type]
        # usage that covers the cost at any cloud model's price >= $0.50/M: the guard charges at most that
        usage=Usage(input_tokens=20 + math.ceil(cost * 2e6), output_tokens=len(text.split())),
        cost_usd=cost,
        task=task,
        provenance=Provenance(
            model=model,
            family=family,
            tier=tier,
            target=target,  # type: ignore[arg-type]
            temperature=temperature,
            top_p=0.9,
        ),
        created_at=time.time(),
    )


async def publish_result(nc: NATS, r: GenerateResult) -> None:
    """Store a result the way a worker does (orch.result.<id>, Msg-Id = id)."""
    await nc.jetstream().publish(subjects.result(r.request_id), encode(r), headers={"Nats-Msg-Id": r.request_id})


def chat(text: str = "hello", **kw: Any) -> Any:
    return make_request(messages=[ChatMessage(role="user", content=text)], timeout_s=30, **kw)


# --- metrics -------------------------------------------------------------------------------------
async def test_metrics_show_live_figures_while_requests_flow_and_pass_promtool(
    tmp_path: Path, nats_server: EmbeddedNats, nc: NATS, actors: Actors
) -> None:
    cfg = load_config(profile_for(tmp_path, nats_server))
    await actors.start(ScriptedWorker(cfg, hosts=LOCAL))
    await actors.start(Router(cfg, instance="test-router"))
    m = await actors.start(monitor(cfg))
    answered = 'orchestra_requests_total{model="smollm2-135m",outcome="answered",tier="local"}'
    sent = 0
    for total in (3, 5):  # the counters follow the requests as they come
        while sent < total:
            assert isinstance(await ask(nc, chat(task="greetings")), GenerateResult)
            sent += 1

        async def counted(n: int = total) -> bool:
            return f"{answered} {n}.0" in await scrape(m.metrics_port)

        await eventually(counted, timeout=10)
    text = await scrape(m.metrics_port)
    assert re.search(
        r'orchestra_request_latency_seconds_count\{model="smollm2-135m",route="cpu0",tier="local"\} 5\.0', text
    )
    assert (
        'orchestra_request_latency_seconds_bucket{le="+Inf",model="smollm2-135m",route="cpu0",tier="local"} 5.0' in text
    )
    assert 'orchestra_model_available{model="smollm2-135m",tier="local"} 1.0' in text
    assert 'orchestra_model_available{model="gpt-4o",tier="premium"} 0.0' in text
    assert "orchestra_hosts_up 1.0" in text and "orchestra_models_loaded 2.0" in text
    assert 'orchestra_card_memory_total_bytes{card="cpu0",host="cpu0"} 1e+10' in text
    assert 'orchestra_tokens_total{direction="input",model="smollm2-135m",tier="local"} 25.0' in text
    assert 'orchestra_tier_enabled{tier="premium"} 1.0' in text
    assert "orchestra_cache_hit_ratio 0.0" in text and "orchestra_error_ratio 0.0" in text
    assert "orchestra_alerts_firing" in text
    await eventually(lambda: "orchestra_diversity_answers 5.0" in m.metrics.exposition().decode(), timeout=10)
    checked = promtool_check(await scrape(m.metrics_port))
    assert checked.returncode == 0 and not checked.stdout.strip() and not checked.stderr.strip(), checked


# --- diversity -----------------------------------------------------------------------------------
async def test_diversity_reports_rank_a_two_family_batch_above_a_single_model_batch(
    tmp_path: Path, nats_server: EmbeddedNats, nc: NATS, actors: Actors
) -> None:
    """Real code and prose answers published as results: per-task reports with MiniLM embedding
    diversity; the one-approach task gets a diversity.low event."""
    bus = await Recorder.listen(nc, commands=True)
    cfg = load_config(profile_for(tmp_path, nats_server))
    m = await actors.start(monitor(cfg))
    families = [("smollm2-135m", "smollm"), ("gemma3-270m", "gemma")]
    for i, text in enumerate(FIB_DIVERSE + SKY_DIVERSE):
        model, family = families[i % 2]
        await publish_result(nc, result(f"div{i}", text, model, family, task="diverse", temperature=0.7 + 0.2 * i))
    for i, text in enumerate(FIB_SAME):
        await publish_result(nc, result(f"same{i}", text, "smollm2-135m", "smollm", task="single"))

    def reports() -> dict[str | None, DiversityReport]:
        out = {r.task: r for r in bus.of(DiversityReport)}
        return (
            out
            if {"diverse", "single"} <= set(out)
            and out["single"].metrics.get("answers") == 6
            and out["diverse"].metrics.get("answers") == 12
            else {}
        )

    got = await eventually(reports, timeout=15)
    diverse, single = got["diverse"].metrics, got["single"].metrics
    assert diverse["diversity_score"] > single["diversity_score"] + 0.3
    assert diverse["unique_approaches"] >= 10 and single["unique_approaches"] == 1
    assert diverse["embedding_diversity"] > single["embedding_diversity"]
    assert diverse["model_families"] == 2 and single["model_families"] == 1
    assert diverse["temperature_variance"] > 0 and single["temperature_variance"] == 0
    low = await eventually(lambda: bus.of(DiversityLow))
    assert [(e.task, e.value, e.threshold) for e in low] == [("single", 1.0, 5.0)]
    text = m.metrics.exposition().decode()
    assert 'orchestra_task_diversity_score{task="diverse"}' in text


# --- OOM ---------------------------------------------------------------------------------------------
def p40_host(name: str, cards: tuple[str, str], used: tuple[int, int], *models: LoadedModel) -> HostState:
    return HostState(
        host=name,
        cards=[CardState(card=c, total_bytes=24 * GB, used_bytes=u) for c, u in zip(cards, used, strict=True)],
        models=list(models),
    )


async def test_an_injected_oom_unloads_the_largest_model_loads_a_smaller_one_and_the_request_completes(
    tmp_path: Path, nats_server: EmbeddedNats, nc: NATS, actors: Actors
) -> None:
    """Lab profile: six OOMs on P40_0 within the hour (gpu_oom_failures) while a request for the 70B
    model is in flight: UnloadModel(llama3.1-70b) + LoadModel(llama3.1-8b) on that host, recorded
    with the alert; the request still ends with exactly one result."""
    bus = await Recorder.listen(nc, commands=True)
    cfg = load_config(profile_for(tmp_path, nats_server, base="lab"))
    seventy = LoadedModel(model="llama3.1-70b", bytes=48 * GB, cards=["P40_0", "P40_1"])
    host = p40_host("m5-p40-a", ("P40_0", "P40_1"), (24 * GB, 24 * GB), seventy)
    await actors.start(CardsWorker(cfg, states={"m5-p40-a": host}, script={"m5-p40-a/llama3.1-70b": ["slow:2"]}))
    await actors.start(Router(cfg, instance="test-router"))
    await actors.start(monitor(cfg))
    request = chat("explain attention", model="llama3.1-70b")
    answer = asyncio.ensure_future(ask(nc, request, timeout=30))
    for _ in range(6):
        oom = Oom(
            host="m5-p40-a",
            card="P40_0",
            model="llama3.1-70b",
            requested_bytes=2 * GB,
            free_bytes=GB // 2,
            total_bytes=24 * GB,
            at=time.time(),
            source="gpu_host",
        )
        await nc.jetstream().publish(subjects.event(oom), encode(oom))
    raised = (await eventually(lambda: bus.of(AlertRaised)))[0]
    assert raised.rule == "gpu_oom_failures" and raised.severity == "high"
    assert raised.context["oom_errors[1h]"] == 6
    unload = (await eventually(lambda: bus.of(UnloadModel)))[0]
    load = (await eventually(lambda: bus.of(LoadModel)))[0]
    assert (unload.host, unload.model) == ("m5-p40-a", "llama3.1-70b")
    assert (load.host, load.model) == ("m5-p40-a", "llama3.1-8b")
    assert unload.by == "diversity_monitor" and unload.command_id.startswith(raised.alert_id)
    fix = (await eventually(lambda: bus.of(Remediation)))[0]
    assert fix.alert_id == raised.alert_id and fix.action == "swap" and len(fix.commands) == 2
    stored = await nc.jetstream().get_last_msg("COMMANDS", "orch.cmd.host.m5-p40-a.load")
    assert COMMAND.decode(stored.data) == load
    outcome = await answer
    assert isinstance(outcome, GenerateResult) and outcome.model == "llama3.1-70b"
    assert await outcomes_stored(nc, request.id) == 1


# --- backlog -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("free_gb", [25.5, 0.0], ids=["memory-free", "memory-full"])
async def test_a_backlog_loads_a_fast_model_where_memory_allows_otherwise_overflows_to_together(
    free_gb: float, tmp_path: Path, nats_server: EmbeddedNats, nc: NATS, actors: Actors
) -> None:
    bus = await Recorder.listen(nc, commands=True)
    cfg = load_config(profile_for(tmp_path, nats_server, base="lab"))
    used = 48 * GB - int(free_gb * GB)
    mistral = LoadedModel(model="mistral-large", bytes=used, cards=["P40_2"])
    host = p40_host("m5-p40-b", ("P40_2", "P40_3"), (min(used, 24 * GB), max(0, used - 24 * GB)), mistral)
    await actors.start(CardsWorker(cfg, states={"m5-p40-b": host}))
    await actors.start(monitor(cfg))
    queues = await TypedKV.open(nc.jetstream(), subjects.KV_QUEUES, Codec(QueueState))
    target = "local:m5-p40-b:mistral-large"
    await queues.put(
        target, QueueState(target=target, depth=620, oldest_wait_s=700, backlog=True, updated_at=time.time())
    )
    raised = (await eventually(lambda: bus.of(AlertRaised)))[0]
    assert raised.rule == "queue_backlog_critical" and raised.severity == "critical"
    fix = (await eventually(lambda: bus.of(Remediation)))[0]
    assert fix.alert_id == raised.alert_id
    if free_gb:
        load = (await eventually(lambda: bus.of(LoadModel)))[0]
        assert (load.host, load.model, load.instances) == ("m5-p40-b", "llama3.1-8b", 1)
        assert fix.action == "load_fast_model" and not bus.of(SetOverflow)
        return
    overflow = (await eventually(lambda: bus.of(SetOverflow)))[0]
    assert (overflow.model, overflow.tier, overflow.enabled) == ("mistral-large", "together", True)
    assert fix.action == "overflow" and not bus.of(LoadModel)
    await queues.put(target, QueueState(target=target, depth=3, oldest_wait_s=1, updated_at=time.time()))
    await eventually(lambda: bus.of(AlertResolved))
    off = (await eventually(lambda: [c for c in bus.of(SetOverflow) if not c.enabled]))[0]
    assert (off.model, off.tier) == ("mistral-large", "together")


# --- cost spike --------------------------------------------------------------------------------------
@pytest.mark.parametrize("already_off", [False, True], ids=["premium-on", "premium-off"])
async def test_a_cost_spike_disables_the_premium_tier_unless_it_is_off_already(
    already_off: bool, tmp_path: Path, nats_server: EmbeddedNats, nc: NATS, actors: Actors
) -> None:
    bus = await Recorder.listen(nc, commands=True)
    cfg = load_config(profile_for(tmp_path, nats_server, base="lab"))
    seventy = LoadedModel(model="llama3.1-70b", bytes=48 * GB)
    await actors.start(CardsWorker(cfg, states={"m5-p40-a": p40_host("m5-p40-a", ("P40_0", "P40_1"), (0, 0), seventy)}))
    if already_off:
        tiers = await TypedKV.open(nc.jetstream(), subjects.KV_TIERS, Codec(TierState))
        await tiers.put("premium", TierState(tier="premium", enabled=False, reason="budget_guard: cost spike"))
    await actors.start(monitor(cfg))
    for i in range(3):
        await publish_result(
            nc, result(f"paid{i}", "an answer", "gpt-4o", "gpt", tier="premium", cost=17.5, target="openai")
        )
    raised = (await eventually(lambda: bus.of(AlertRaised)))[0]
    assert raised.rule == "cost_spike" and raised.context["daily_api_spend"] == pytest.approx(52.5)
    fix = (await eventually(lambda: bus.of(Remediation)))[0]
    assert fix.alert_id == raised.alert_id
    if already_off:
        assert fix.action == "none" and "already disabled" in fix.detail and not bus.of(SetTier)
        return
    tier = (await eventually(lambda: bus.of(SetTier)))[0]
    assert (tier.tier, tier.enabled) == ("premium", False) and tier.until is not None and tier.until > time.time()
    assert fix.action == "disable_tier"
    stored = await nc.jetstream().get_last_msg("COMMANDS", "orch.cmd.tier.premium")
    assert COMMAND.decode(stored.data) == tier


# --- escalation, acknowledgement, digests ------------------------------------------------------------
def notifiers(hook: Webhook, box: Mailbox) -> dict[str, Any]:
    smtp = {"kind": "smtp", "host": "127.0.0.1", "port": box.port, "from_addr": "orchestra@lab.test"}
    return {
        "hook": {"kind": "webhook", "url_env": HOOK_ENV},
        "mail_admin": {**smtp, "to": ["admin@lab.test"]},
        "mail_all": {**smtp, "to": ["researchers@lab.test"]},
    }


async def test_a_critical_alert_notifies_at_once_and_escalates_while_unacknowledged(
    tmp_path: Path,
    nats_server: EmbeddedNats,
    nc: NATS,
    actors: Actors,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No model loaded anywhere (all_models_offline, critical): the webhook at once, the admin's mail
    after 1 s, then mail to everyone and premium disabled, as the paper's escalation policy says. The
    webhook URL (a secret) appears in no event and no log line."""
    caplog.set_level(logging.DEBUG)
    bus = await Recorder.listen(nc, commands=True)
    async with webhook_receiver() as hook, smtp_receiver() as box:
        monkeypatch.setenv(HOOK_ENV, hook.url)
        escalation = {
            "critical": [
                {"after": "0s", "notify": ["hook"]},
                {"after": "1s", "notify": ["mail_admin"]},
                {"after": "2s", "notify": ["mail_all"], "action": "disable_premium"},
            ]
        }
        cfg = load_config(
            profile_for(
                tmp_path,
                nats_server,
                alerts={
                    "rules": {"all_models_offline": {"sustained": "0s"}},
                    "escalation": escalation,
                    "notifiers": notifiers(hook, box),
                },
            )
        )
        await actors.start(monitor(cfg))
        raised = (await eventually(lambda: bus.of(AlertRaised)))[0]
        assert raised.rule == "all_models_offline" and raised.severity == "critical"
        await eventually(lambda: hook.posts)
        assert raised.alert_id in hook.posts[0]["text"] and "CRITICAL" in hook.posts[0]["text"]
        await eventually(lambda: len(box.messages) == 2, timeout=10)
        assert box.recipients == [["admin@lab.test"], ["researchers@lab.test"]]
        assert "All models offline" in box.subjects()[0] and "escalation step 2" in box.subjects()[0]
        assert raised.alert_id in box.messages[0].get_payload()  # type: ignore[operator]
        tier = (await eventually(lambda: bus.of(SetTier)))[0]
        assert (tier.tier, tier.enabled) == ("premium", False)
        fix = (await eventually(lambda: bus.of(Remediation)))[0]
        assert fix.step == 2 and fix.alert_id == raised.alert_id
        sent = await eventually(lambda: len(bus.of(Notified)) == 3 and bus.of(Notified))
        assert [(n.channel, n.ok, n.step) for n in sent] == [
            ("hook", True, 0),
            ("mail_admin", True, 1),
            ("mail_all", True, 2),
        ]
        assert sent[1].at - raised.at >= 1.0 and sent[2].at - raised.at >= 2.0  # each waited for its step
        assert len(hook.posts) == 1
    secret = hook.url.split("/", 3)[-1]
    assert all(secret.encode() not in raw for raw in bus.raw)
    assert secret not in caplog.text


async def test_acknowledging_from_the_cli_stops_the_escalation(
    tmp_path: Path, nats_server: EmbeddedNats, nc: NATS, actors: Actors, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus = await Recorder.listen(nc, commands=True)
    async with webhook_receiver() as hook, smtp_receiver() as box:
        monkeypatch.setenv(HOOK_ENV, hook.url)
        escalation = {"critical": [{"after": "0s", "notify": ["hook"]}, {"after": "1m", "notify": ["mail_admin"]}]}
        profile = profile_for(
            tmp_path,
            nats_server,
            alerts={
                "rules": {"all_models_offline": {"sustained": "0s"}},
                "escalation": escalation,
                "notifiers": notifiers(hook, box),
            },
        )
        m = await actors.start(monitor(load_config(profile)))
        raised = (await eventually(lambda: bus.of(AlertRaised)))[0]
        await eventually(lambda: hook.posts)
        rc, out, err = await orchestra(profile, "alerts", "ack", raised.alert_id, "--by", "ada")
        assert rc == 0, err
        assert f"acknowledged {raised.alert_id}" in out
        acked = (await eventually(lambda: bus.of(AlertAcknowledged)))[0]
        assert acked.alert_id == raised.alert_id and acked.by == "ada"
        await m.desk.tick(raised.at + 61)  # the escalation clock, a minute on: the admin's step is due
        start = m.evaluations
        await eventually(lambda: m.evaluations > start + 3)
        assert not box.messages and len(hook.posts) == 1 and not m.desk.background
    rc, out, err = await orchestra(profile, "alerts", "list", "--json")
    assert rc == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["alert_id"], r["state"], r["acked_by"]) for r in rows] == [(raised.alert_id, "acknowledged", "ada")]
    rc, out, err = await orchestra(profile, "alerts")
    assert rc == 0 and f"CRITICAL acknowledged {raised.alert_id}  All models offline acked by ada" in out, out
    rc, out, err = await orchestra(profile, "alerts", "ack", "no-such-alert")
    assert rc == 1 and "orchestra: error: no alert 'no-such-alert'" in err and "Traceback" not in err


async def test_medium_and_low_alerts_wait_for_the_daily_and_weekly_digests(
    tmp_path: Path, nats_server: EmbeddedNats, nc: NATS, actors: Actors, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Model diversity low (medium) goes into the daily digest, single model dominating (low) into the
    weekly one; nobody is pinged before. The digests run from the apscheduler jobs."""
    bus = await Recorder.listen(nc, commands=True)
    async with webhook_receiver() as hook, smtp_receiver() as box:
        monkeypatch.setenv(HOOK_ENV, hook.url)
        alerts = {
            "rules": {
                "model_diversity_low": {"sustained": "0s", "min_samples": 3},
                "single_model_dominating": {"min_samples": 3},
            },
            "escalation": {"medium": [{"digest": "daily"}], "low": [{"digest": "weekly"}]},
            "notifiers": notifiers(hook, box),
            "digests": {"daily_at": "09:00", "weekly_at": "mon 09:00", "notify": ["hook", "mail_admin"]},
        }
        cfg = load_config(profile_for(tmp_path, nats_server, alerts=alerts))
        await actors.start(
            CardsWorker(cfg, states={"cpu0": HostState(host="cpu0", models=[LoadedModel(model="smollm2-135m")])})
        )
        m = await actors.start(monitor(cfg))
        for i in range(4):
            await publish_result(nc, result(f"one{i}", f"answer {i}", "smollm2-135m", "smollm"))
        rules = {e.rule for e in await eventually(lambda: len(bus.of(AlertRaised)) == 2 and bus.of(AlertRaised))}
        assert rules == {"model_diversity_low", "single_model_dominating"}
        start = m.evaluations
        await eventually(lambda: m.evaluations > start + 3)
        assert not hook.posts and not box.messages and not bus.of(Notified)
        jobs = {job.id: job for job in m.desk.scheduler.get_jobs()}
        assert jobs["daily"].next_run_time.strftime("%H:%M") == "09:00"
        assert jobs["weekly"].next_run_time.strftime("%a %H:%M") == "Mon 09:00"
        m.desk.run_digest_now("daily")
        await eventually(lambda: hook.posts and box.messages)
        daily = hook.posts[0]["text"]
        assert "daily digest" in daily and "model_diversity_low" in daily and "single_model_dominating-" not in daily
        assert box.subjects() == ["[orchestra] daily digest: 1 alert(s) for review"]
        m.desk.run_digest_now("weekly")
        await eventually(lambda: len(hook.posts) == 2 and len(box.messages) == 2)
        weekly = hook.posts[1]["text"]
        assert "weekly digest" in weekly and "single_model_dominating-" in weekly
        assert "2 medium" not in weekly and "1 medium, 1 low" in weekly
        assert {(n.channel, n.alert_id) for n in bus.of(Notified)} == {("hook", None), ("mail_admin", None)}


# --- restart -------------------------------------------------------------------------------------------
async def test_a_restarted_monitor_keeps_its_alerts_and_does_not_remediate_twice(
    tmp_path: Path, nats_server: EmbeddedNats, nc: NATS, actors: Actors
) -> None:
    bus = await Recorder.listen(nc, commands=True)
    cfg = load_config(profile_for(tmp_path, nats_server))
    await actors.start(
        CardsWorker(cfg, states={"cpu0": HostState(host="cpu0", models=[LoadedModel(model="gemma3-270m")])})
    )
    first = await actors.start(monitor(cfg))
    for i in range(3):
        await publish_result(nc, result(f"paid{i}", "an answer", "gpt-4o", "gpt", tier="premium", cost=20.0))
    raised = (await eventually(lambda: bus.of(AlertRaised)))[0]
    await eventually(lambda: bus.of(SetTier))
    await actors.stop(first, grace=0.5)
    second = await actors.start(monitor(cfg))
    assert raised.alert_id in second.engine.by_id and second.engine.by_id[raised.alert_id].open
    assert second.engine.by_id[raised.alert_id].remediations == ["disable_tier"]
    assert second.obs.daily_spend(time.time()) == pytest.approx(60.0)
    start = second.evaluations
    await eventually(lambda: second.evaluations > start + 3)
    assert len(bus.of(AlertRaised)) == 1 and len(bus.of(SetTier)) == 1 and len(bus.of(Remediation)) == 1


# --- the CLI and the process -------------------------------------------------------------------------
async def test_orchestra_diversity_replays_stored_results(tmp_path: Path, nats_server: EmbeddedNats, nc: NATS) -> None:
    profile = profile_for(tmp_path, nats_server)
    from bus.provision import provision

    await provision(nc.jetstream(), load_config(profile).bus.streams)
    families = [("smollm2-135m", "smollm"), ("gemma3-270m", "gemma")]
    for i, text in enumerate(FIB_DIVERSE):
        await publish_result(nc, result(f"cli{i}", text, *families[i % 2], task="fib"))
    for i, text in enumerate(FIB_SAME[:3]):
        await publish_result(nc, result(f"one{i}", text, "smollm2-135m", "smollm", task="fib-one"))
    rc, out, err = await orchestra(profile, "diversity", "--since", "10m", "--task", "fib", "--json")
    assert rc == 0, err
    report = json.loads(out)
    assert report["embeddings"] == "minilm" and list(report["tasks"]) == ["fib"]
    fib = report["tasks"]["fib"]
    assert fib["answers"] == 6 and fib["unique_approaches"] == 6 and fib["code_answers"] == 6
    assert fib["families"] == {"smollm": 3, "gemma": 3} and fib["embedding_diversity"] > 0.2
    rc, text, err = await orchestra(profile, "diversity", "--since", "10m", "--lexical")
    assert rc == 0, err
    assert "9 answers, 2 task(s), prose grouped by word overlap" in text
    rows = {line.split()[0]: line.split() for line in text.splitlines()[2:]}
    assert rows["fib"][1:3] == ["6", "6"] and rows["fib-one"][1:3] == ["3", "1"]


@pytest.mark.slow
async def test_the_monitor_process_serves_metrics_and_diversity_while_requests_flow(
    tmp_path: Path, nats_server: EmbeddedNats, nc: NATS, actors: Actors
) -> None:
    """``python -m actors.diversity_monitor`` with the MiniLM it loads itself: /metrics (promtool) and
    ``orchestra diversity`` follow diverse requests answered through the router; SIGTERM exits 0."""
    profile = profile_for(tmp_path, nats_server)
    cfg = load_config(profile)
    answers = {"smollm2-135m": FIB_DIVERSE[0], "gemma3-270m": FIB_DIVERSE[1]}
    await actors.start(ScriptedWorker(cfg, hosts=LOCAL, answers=answers))
    await actors.start(Router(cfg, instance="test-router"))
    proc = await actors.process("actors.diversity_monitor", profile, ready="diversity_monitor started")
    port = int(re.findall(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", proc.output())[0])
    assert "embeddings: the cache's MiniLM" in proc.output()
    for _ in range(2):
        outcome = await ask(nc, chat("write fib", model="diverse", mode="diverse", task="fib"), timeout=30)
        assert isinstance(outcome, GenerateResult) and len(outcome.responses) == 4

    async def live() -> str:
        text = await scrape(port)
        return (
            text
            if 'orchestra_task_diversity_score{task="fib"}' in text and "orchestra_diversity_answers 8.0" in text
            else ""
        )

    text = await eventually(live, timeout=20)
    assert 'orchestra_requests_total{model="gemma3-270m",outcome="answered",tier="local"} 4.0' in text
    assert "orchestra_diversity_model_families 2.0" in text and "orchestra_diversity_unique_approaches 2.0" in text
    checked = promtool_check(text)
    assert checked.returncode == 0, checked
    rc, out, err = await orchestra(profile, "diversity", "--since", "5m", "--json")
    assert rc == 0, err
    fib = json.loads(out)["tasks"]["fib"]
    assert fib["answers"] == 8 and fib["model_families"] == 2 and fib["unique_approaches"] == 2
    assert proc.terminate() == 0


async def test_after_the_overflow_remediation_the_router_sends_local_work_to_together(
    tmp_path: Path, nats_server: EmbeddedNats, nc: NATS, actors: Actors
) -> None:
    """Local profile, the one CPU card full: the backlog alert's SetOverflow reaches the router (the rotator,
    the one writer of orch_overflow, stores it; the router watches it), and the next request for the
    backlogged model's work is answered by the Together tier."""
    bus = await Recorder.listen(nc, commands=True)
    cfg = load_config(profile_for(tmp_path, nats_server))
    full = HostState(
        host="cpu0",
        cards=[CardState(card="cpu0", total_bytes=int(1.5 * GB), used_bytes=int(1.5 * GB))],
        models=[LoadedModel(model="smollm2-135m"), LoadedModel(model="gemma3-270m")],
    )
    worker = await actors.start(CardsWorker(cfg, states={"cpu0": full}, providers=["together"]))
    router = await actors.start(Router(cfg, instance="test-router"))
    await actors.start(Rotator(cfg, instance="test-rotator"))
    await actors.start(monitor(cfg))
    before = await ask(nc, chat())
    assert isinstance(before, GenerateResult) and before.tier == "local"
    queues = await TypedKV.open(nc.jetstream(), subjects.KV_QUEUES, Codec(QueueState))
    target = f"local:cpu0:{before.model}"
    await queues.put(
        target, QueueState(target=target, depth=800, oldest_wait_s=900, backlog=True, updated_at=time.time())
    )
    overflow = (await eventually(lambda: bus.of(SetOverflow)))[0]
    assert (overflow.model, overflow.tier) == (before.model, "together")
    await eventually(lambda: router.view.overflow.tiers() == {before.model: "together"})
    stored = await TypedKV.open(nc.jetstream(), subjects.KV_OVERFLOW, Codec(OverflowState))
    switch = await stored.get(before.model)
    assert switch is not None and switch.enabled_by == ["diversity_monitor"]

    async def routed_to_together() -> GenerateResult | None:
        outcome = await ask(nc, chat())
        return outcome if isinstance(outcome, GenerateResult) and outcome.tier == "together" else None

    after = await eventually(routed_to_together, timeout=10, interval=0.2)
    assert after.model == "together/llama3.1-70b"
    assert worker.seen[-1].where == "together"


async def test_the_monitors_cost_spike_remediation_takes_premium_away_from_the_router_and_nothing_is_lost(
    tmp_path: Path, nats_server: EmbeddedNats, nc: NATS, actors: Actors
) -> None:
    """End to end on the bus: API spend past the lab rule's $50 -> the monitor's cost_spike alert -> its
    SetTier command -> the budget_guard (the one writer of orch_tiers) disables premium -> the router, from
    its KV watch, sends nothing more to premium. The guard's own spike limit is set out of reach, so the
    monitor's path is the one under test. Requests asked while it happens each end in exactly one outcome."""
    bus = await Recorder.listen(nc, commands=True)
    budgets = {"limits": [], "spike": {"daily_usd": 1e6, "velocity_usd_per_hour": None}}
    cfg = load_config(profile_for(tmp_path, nats_server, budgets=budgets))
    await actors.start(BudgetGuard(cfg))
    worker = await actors.start(ScriptedWorker(cfg, hosts=LOCAL, providers=["openai", "together"]))
    router = await actors.start(Router(cfg, instance="test-router"))
    await eventually(lambda: router.view.hosts.data and router.view.providers.data)
    await actors.start(monitor(cfg))
    either = Requirements(tiers=["premium", "together"], strategy="quality")
    first = await ask(nc, chat(model="gpt-4o"))
    assert isinstance(first, GenerateResult) and first.tier == "premium"

    asked = [chat(f"while it happens {i}", requirements=either) for i in range(12)]
    traffic = asyncio.gather(*(ask(nc, r) for r in asked))
    for i in range(3):  # $52.50 of premium spend today
        await publish_result(
            nc, result(f"paid{i}", "an answer", "gpt-4o", "gpt", tier="premium", cost=17.5, target="openai")
        )
    raised = (await eventually(lambda: bus.of(AlertRaised)))[0]
    assert raised.rule == "cost_spike"
    fix = (await eventually(lambda: bus.of(Remediation)))[0]
    assert fix.alert_id == raised.alert_id and fix.action == "disable_tier"
    (command,) = await eventually(lambda: bus.of(SetTier))
    assert (command.tier, command.enabled) == ("premium", False)
    tiers = await TypedKV.open(nc.jetstream(), subjects.KV_TIERS, Codec(TierState))

    async def premium_off() -> bool:
        entry = await tiers.get("premium")
        return entry is not None and not entry.enabled

    await eventually(premium_off)  # written by the guard's tierkeeper
    await eventually(lambda: not router.view.tiers.data["premium"].enabled)

    outcomes = await traffic
    assert all(isinstance(o, GenerateResult) for o in outcomes)
    for r in asked:
        assert await outcomes_stored(nc, r.id) == 1
    refused = await ask(nc, chat(model="gpt-4o"))
    assert isinstance(refused, GenerateError) and refused.error.code == "unavailable"
    fallback = await ask(nc, chat("after the spike", requirements=either))
    assert isinstance(fallback, GenerateResult) and fallback.tier == "together"
    dispatched = len([s for s in worker.seen if s.model == "gpt-4o"])
    assert dispatched == 1 + sum(1 for o in outcomes if isinstance(o, GenerateResult) and o.tier == "premium")


async def test_a_soft_budget_threshold_crossed_at_the_budget_guard_raises_an_alert(
    tmp_path: Path, nats_server: EmbeddedNats, nc: NATS, actors: Actors
) -> None:
    """Soft thresholds raise alerts: $6 of a $10 daily budget with a soft threshold at 50% -> the guard's
    budget.threshold event -> the monitor's budget_threshold alert, naming the budget; no hard-cap alert."""
    bus = await Recorder.listen(nc, commands=True)
    budgets = {"limits": [{"scope": "total", "period": "daily", "hard_usd": 10.0, "soft": [0.5]}]}
    cfg = load_config(profile_for(tmp_path, nats_server, budgets=budgets))
    await actors.start(BudgetGuard(cfg))
    await actors.start(monitor(cfg))
    await publish_result(nc, result("spent", "an answer", "gpt-4o", "gpt", tier="premium", cost=6.0, target="openai"))
    (threshold,) = await eventually(lambda: bus.of(BudgetThreshold))
    assert threshold.fraction == 0.5 and threshold.spent_usd == pytest.approx(6.0) and not threshold.hard
    raised = (await eventually(lambda: [a for a in bus.of(AlertRaised) if a.rule == "budget_threshold"]))[0]
    assert raised.severity == "medium"
    assert raised.context["budget_used_fraction[1d]"] == 0.5
    assert raised.context["budget_used_fraction[1d] detail"] == threshold.scope
    await asyncio.sleep(0.5)  # a few evaluations later
    assert not [a for a in bus.of(AlertRaised) if a.rule == "budget_hard_cap"]
