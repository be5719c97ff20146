"""The review queue end to end: a real router process escalates an ensemble whose answers disagree, a real
diversity_monitor process queues it, and ``orchestra review`` lists, shows and accepts it; the decision is
an event, the list is empty afterwards and the models' quality records hold the credit and the debit.
Only the operator may decide: a worker's or the gateway's forged decision is refused by the server."""

from __future__ import annotations

import json

import nats
import pytest
from nats.aio.client import Client as NATS

from bus import subjects
from bus.kv import TypedKV
from bus.provision import provision
from bus.server import EmbeddedNats
from schemas.codec import Codec, encode
from schemas.commands import DecideReview
from schemas.config import load_config
from schemas.config.bus import StreamsCfg
from schemas.events import ReviewDecided
from schemas.request import make_request
from schemas.result import GenerateResult
from schemas.review import ModelQuality, ReviewItem
from tests.support.actors import Actors
from tests.support.client import ask
from tests.support.events import Recorder
from tests.support.procs import orchestra
from tests.support.scripted_worker import ScriptedWorker
from tests.support.wait import eventually

ANSWERS = {"smollm2-135m": "Paris", "gemma3-270m": "London"}


async def queued(nc: NATS, request_id: str) -> ReviewItem | None:
    return await (await TypedKV.open(nc.jetstream(), subjects.KV_REVIEWS, Codec(ReviewItem))).get(request_id)


@pytest.mark.slow
async def test_an_escalation_is_listed_shown_accepted_from_the_cli_and_leaves_the_queue(
    nc: NATS, actors: Actors
) -> None:
    profile = actors.profile(overrides={"router": {"attempt_timeout": "10s"}})
    monitor = await actors.process("actors.diversity_monitor", profile)
    await actors.process("actors.router", profile, ready="router started")
    await monitor.until_logged("diversity_monitor started", 60)
    await actors.start(ScriptedWorker(load_config(profile), hosts={"cpu0": list(ANSWERS)}, answers=ANSWERS))
    heard = await Recorder.listen(nc, "review.decided")
    rc, out, err = await orchestra(profile, "review", "list")
    assert rc == 0 and out.strip() == "no reviews pending", err

    request = make_request(prompt="The capital of France is", mode="ensemble", timeout_s=30)
    result = await ask(nc, request)
    assert isinstance(result, GenerateResult) and result.consensus is not None and result.consensus.escalated
    item = await eventually(lambda: queued(nc, request.id), timeout=20)
    assert item.status == "pending" and {r.text for r in item.responses} == {"Paris", "London"}

    rc, out, err = await orchestra(profile, "review", "list", "--json")
    assert rc == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["request_id"], r["status"]) for r in rows] == [(request.id, "pending")]
    assert sorted(rows[0]["models"]) == sorted(ANSWERS)
    rc, out, err = await orchestra(profile, "review", "show", request.id)
    assert rc == 0 and "The capital of France is" in out and "Paris" in out and "London" in out, err

    paris = next(n for n, r in enumerate(item.responses) if r.text == "Paris")
    rc, out, err = await orchestra(profile, "review", "accept", request.id, "--answer", str(paris), "--by", "ada")
    assert rc == 0, err
    assert f"accepted {request.id}: credited smollm2-135m; debited gemma3-270m" in out
    (event,) = await eventually(lambda: heard.events)
    assert isinstance(event, ReviewDecided)
    assert (event.request_id, event.verdict, event.answer, event.by) == (request.id, "accept", paris, "ada")
    assert event.credited == ["smollm2-135m"] and event.debited == ["gemma3-270m"]

    rc, out, err = await orchestra(profile, "review", "list")
    assert rc == 0 and out.strip() == "no reviews pending", err
    rc, out, err = await orchestra(profile, "review", "accept", request.id)
    assert rc == 0 and "was accepted already by ada" in out
    rc, out, err = await orchestra(profile, "review", "show", "no-such-request")
    assert rc == 1 and "orchestra: error: no review 'no-such-request'" in err and "Traceback" not in err

    quality = await TypedKV.open(nc.jetstream(), subjects.KV_QUALITY, Codec(ModelQuality))
    smol, gemma = await quality.get("smollm2-135m"), await quality.get("gemma3-270m")
    assert smol is not None and (smol.accepted, smol.recent) == (1, [1.0])
    assert gemma is not None and (gemma.rejected, gemma.recent) == (1, [0.0])
    rc, out, err = await orchestra(profile, "review", "quality")
    assert rc == 0 and "smollm2-135m: measured 10.0 over 1 check(s)" in out, err


@pytest.mark.expect_violations
@pytest.mark.parametrize("role", ["gateway", "gpu_host", "router"])
async def test_only_the_operator_may_decide_a_review_or_write_the_queue(
    role: str, nats_server: EmbeddedNats, nc: NATS
) -> None:
    """A decision or a queue entry forged by another role: refused by the server, nothing stored."""
    await provision(nc.jetstream(), StreamsCfg())
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    options = nats_server.connect_options(role)
    peer = await nats.connect(nats_server.url, error_cb=on_error, allow_reconnect=False, **options)
    try:
        cmd = DecideReview(request_id="e1", verdict="accept", by=role)
        await peer.publish(subjects.command(cmd), encode(cmd))
        await peer.publish(f"$KV.{subjects.KV_REVIEWS}.e1", b"{}")
        await peer.publish(f"$KV.{subjects.KV_QUALITY}.smollm2-135m", b"{}")
        await peer.flush()
        await eventually(lambda: sum("permissions violation" in e.lower() for e in errors) >= 3, timeout=5)
    finally:
        await peer.close()
    assert any(subjects.command(cmd) in e for e in errors)
    info = await nc.jetstream().stream_info("COMMANDS", subjects_filter=subjects.REVIEW_COMMANDS)
    assert info.state.messages == 0
    assert await queued(nc, "e1") is None
