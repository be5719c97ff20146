"""The dashboard in a real browser: Debian's headless chromium (tests/support/browser.py) loads the page of
a diversity_monitor process on a real nats-server, with a router, a budget_guard and a worker reporting
real card figures, while requests and a paid result flow. The page must show what /metrics and the CLI
(`orchestra status`, `orchestra cost status`, `orchestra alerts`) show, draw its charts, acknowledge an
alert as an AckAlert command, link a request to its audit timeline, and say so when its charting
library is missing. A screenshot goes to bench/results/dashboard.png for a person to look at."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nats.aio.client import Client as NATS
from prometheus_client.parser import text_string_to_metric_families

from actors.budget_guard.actor import BudgetGuard
from actors.router.actor import Router
from bus import subjects
from bus.kv import TypedKV
from bus.server import EmbeddedNats
from policy.pricing import cloud_cost
from schemas.codec import Codec, encode
from schemas.config import load_config
from schemas.config.models import CloudModel
from schemas.events import AlertAcknowledged, Escalated
from schemas.request import ChatMessage, make_request
from schemas.result import GenerateError, GenerateResult, Usage
from schemas.state import CardState, HostState, LoadedModel, PhaseState
from tests.integration.test_monitor import CardsWorker, profile_for
from tests.support.actors import Actors
from tests.support.browser import Chromium
from tests.support.client import ask
from tests.support.events import Recorder
from tests.support.grafana import exposed, metrics_of, queries
from tests.support.procs import REPO, orchestra
from tests.support.wait import eventually

pytestmark = pytest.mark.slow
MB = 10**6
PAID_MODEL = "together/llama3.1-70b"
PHASE = "phase_1_subject_expertise"
SCREENSHOT = REPO / "bench" / "results" / "dashboard.png"


def card_state() -> HostState:
    return HostState(
        host="cpu0",
        cards=[CardState(card="cpu0", total_bytes=1500 * MB, used_bytes=560 * MB)],
        models=[
            LoadedModel(model="smollm2-135m", bytes=180 * MB, cards=["cpu0"], keep_alive="hot", tokens_per_s=41.5),
            LoadedModel(model="gemma3-270m", bytes=330 * MB, cards=["cpu0"], keep_alive="warm", tokens_per_s=23.0),
        ],
    )


async def cli(profile: Path, *args: str, lines: bool = False) -> Any:
    """The command's JSON output: one document, or (``lines``) a list of JSON lines."""
    rc, text, err = await orchestra(profile, *args)
    assert rc == 0, err
    return [json.loads(line) for line in text.splitlines() if line.strip()] if lines else json.loads(text)


async def exposition(port: int) -> str:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/metrics") as r:
        return await r.text()


async def scrape(port: int) -> dict[str, float]:
    text = await exposition(port)
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


async def test_the_dashboard_shows_in_chromium_what_metrics_and_the_cli_show(
    tmp_path: Path, nats_server: EmbeddedNats, nc: NATS, actors: Actors
) -> None:
    """Cards, loaded models, spend against budgets, the open alert, the review queue, live charts and the
    event tail in a real browser, the same figures as /metrics and the CLI; acknowledging from the page
    reaches the monitor; a request id opens its audit timeline; without uPlot the page says so."""
    # one alert on purpose (a soft budget): the few answers of this test must not also raise approaches_low
    overrides = {"monitor": {"dashboard": {"refresh": "300ms", "rate_window": "30s"}, "min_unique_approaches": 0}}
    profile = profile_for(tmp_path, nats_server, **overrides)
    cfg = load_config(profile)
    await actors.start(CardsWorker(cfg, states={"cpu0": card_state()}))
    await actors.start(Router(cfg, instance="test-router"))
    await actors.start(BudgetGuard(cfg, instance="test-guard"))
    monitor = await actors.process("actors.diversity_monitor", profile, ready="diversity_monitor started")
    found = re.findall(r"dashboard on http://127\.0\.0\.1:(\d+)/dashboard", monitor.output())
    assert found, monitor.output()
    port = int(found[0])
    heard = await Recorder.listen(nc)

    # the rotator's record of the phase; traffic: local answers through the router, a request for a
    # model nobody has, and one large paid result that crosses a soft budget
    phases = await TypedKV.open(nc.jetstream(), subjects.KV_PHASE, Codec(PhaseState))
    now = time.time()
    rotation = {"primary": ["smollm2-135m"]}
    await phases.put("current", PhaseState(phase=PHASE, since=now - 900, rotation=rotation, rotated_at=now - 600))
    for i in range(6):
        request = make_request(messages=[ChatMessage(role="user", content=f"hi {i}")], task="greet", timeout_s=30)
        outcome = await ask(nc, request)
        assert isinstance(outcome, GenerateResult) and outcome.tier == "local"
    lost = make_request(messages=[ChatMessage(role="user", content="hi")], model="no-such-model", timeout_s=5)
    assert isinstance(await ask(nc, lost), GenerateError)
    paid = cfg.models[PAID_MODEL]
    assert isinstance(paid, CloudModel)
    usage = Usage(input_tokens=3_000_000, output_tokens=10_000)
    bill = GenerateResult(
        request_id="paid-1", text="ok", model=PAID_MODEL, family="llama", tier="together", target="together",
        usage=usage, cost_usd=cloud_cost(paid, usage), created_at=time.time(),
    )  # fmt: skip
    await nc.jetstream().publish(subjects.result(bill.request_id), encode(bill), headers={"Nats-Msg-Id": "paid-1"})
    # an ensemble the router escalated: the review queue's card shows it
    escalated = Escalated(request_id="esc-1", consistency=0.5, threshold=0.7, prompt="2+2?", at=time.time())
    await nc.jetstream().publish(subjects.event(escalated), encode(escalated))

    async def settled() -> dict[str, float] | None:
        m = await scrape(port)
        firing = [k for k in m if k.startswith("orchestra_alerts_firing{")]
        return m if firing and m.get("orchestra_spend_today_usd", 0) > 2.6 else None

    metrics = await eventually(settled, timeout=30)
    alerts = await cli(profile, "alerts", "list", "--json", lines=True)
    status = await cli(profile, "status", "--json")
    cost = await cli(profile, "cost", "status", "--json")
    loaded = sum(len(h["models"]) for h in status["state"][subjects.KV_HOSTS].values())
    daily = next(lim for lim in cost["limits"] if lim["scope"] == "total:daily")
    assert loaded == metrics["orchestra_models_loaded"] == 2
    assert len(alerts) == sum(1 for k in metrics if k.startswith("orchestra_alerts_firing{")) == 1
    alert_id = alerts[0]["alert_id"]
    names = exposed(await exposition(port))  # the lab's Grafana dashboard queries only what is exposed
    assert not {m for exprs in queries().values() for e in exprs for m in metrics_of(e)} - names

    async with Chromium.open(f"http://127.0.0.1:{port}/dashboard", tmp_path) as page:
        await page.wait_for("document.body.dataset.charts === 'ready' && document.body.dataset.live === 'live'")
        series = "document.querySelector('[data-chart=tokens]').dataset.series"
        await page.wait_for(f"{series} === 'gemma3-270m,smollm2-135m'")
        await page.wait_for("Number(document.querySelector('[data-chart=requests]').dataset.points) >= 3")
        figure = "document.querySelector('[data-figure={}]').dataset.value"
        shown = {k: await page.evaluate(figure.format(k)) for k in ("models_loaded", "alerts_open", "spend_today_usd")}
        assert float(shown["models_loaded"]) == loaded
        assert int(shown["alerts_open"]) == len(alerts)
        assert float(shown["spend_today_usd"]) == pytest.approx(metrics["orchestra_spend_today_usd"], rel=1e-9)
        spent = "Number(document.querySelector('[data-scope=\"total:daily\"]')?.dataset.spent)"
        budget = await page.wait_for(f"(v => Math.abs(v - {daily['spent_usd']}) < 1e-9 ? v : null)({spent})")
        assert budget == pytest.approx(daily["spent_usd"])  # the budget_guard's figure, as `orchestra cost status`
        models = await page.evaluate("[...document.querySelectorAll('#models tbody tr')].map(r => r.dataset.model)")
        assert sorted(models) == ["gemma3-270m", "smollm2-135m"]
        card = await page.evaluate("document.querySelector('[data-card=\"cpu0/cpu0\"]').innerText")
        assert "560 MB of 1.50 GB" in card
        assert await page.evaluate("document.querySelectorAll('.chart canvas').length") >= 7
        assert alert_id in await page.evaluate("document.querySelector('#alerts').innerText")
        await page.wait_for("document.querySelector('#reviews-pending').innerText === '1'")
        assert await page.evaluate("document.querySelector('[data-review=\"esc-1\"]').innerText.includes('0.50')")
        assert await page.evaluate("document.querySelector('#phase').innerText") == f"phase: {PHASE}"
        assert "next rotation in 11.8h" in await page.evaluate("document.querySelector('#rotation').innerText")
        await page.wait_for("document.querySelector('[data-chart=families]').dataset.series !== ''")
        await page.screenshot(SCREENSHOT)

        # acknowledge from the page: an AckAlert command, confirmed by the monitor's event and shown
        await page.evaluate(f"document.querySelector('[data-alert=\"{alert_id}\"] button').click()")
        ack = (await eventually(lambda: heard.of(AlertAcknowledged), timeout=15))[0]
        assert ack.alert_id == alert_id and ack.by == "dashboard@127.0.0.1"
        await page.wait_for(f"document.querySelector('[data-alert=\"{alert_id}\"]').innerText.includes('acked by')")

        # the live tail links a request id to its audit timeline
        link = f"document.querySelector('#tail a[href*=\"{lost.id}\"]')?.href"
        href = await page.wait_for(link)
        async with aiohttp.ClientSession() as s, s.get(href) as r:
            timeline = await r.text()
        assert r.status == 200 and f"request <code>{lost.id}</code>" in timeline
        assert "<td>request</td>" in timeline and "<td>result.error</td>" in timeline

        # without its charting library the page still shows the figures and says why there are no charts
        await page.send("Network.enable")
        await page.send("Network.setBlockedURLs", urls=["*/dashboard/vendor/*"])
        await page.send("Page.reload", ignoreCache=True)
        await page.wait_for("document.body.dataset.charts === 'missing'")
        notice = await page.evaluate("document.querySelector('#notice').innerText")
        assert "charting library (uPlot) is not installed" in notice
        await page.wait_for("document.querySelector('[data-figure=models_loaded]').dataset.value === '2'")

        # the monitor stops while the page is open: it exits cleanly and the page says it lost the stream
        assert monitor.terminate() == 0
        await page.wait_for("document.body.dataset.live === 'down'")
    assert SCREENSHOT.stat().st_size > 20_000
