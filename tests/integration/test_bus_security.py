"""The bus closed to strangers: each forgery of the secure-bus issue, tried against a real nats-server that
runs the generated users and permissions (bus/permissions.py), is refused by the server or has no effect.

Refusals are checked twice: the offending connection hears the server's permissions violation, and the
server logs it (the fixture's ``violations``); stored subjects are checked to hold nothing of the forgery.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NATS

from actors.budget_guard import journal
from actors.budget_guard.actor import BudgetGuard
from bus import subjects
from bus.client import OrchestraClient
from bus.credentials import AuthDir, read_credentials
from bus.provision import provision
from bus.server import EmbeddedNats
from schemas.budget import LEDGER_ENTRY, RESERVE_REPLY, Charged, ReserveRequest
from schemas.codec import encode
from schemas.commands import SetPhase, SetTier, UnloadModel
from schemas.config import load_config
from schemas.config.bus import StreamsCfg
from schemas.request import make_request
from schemas.result import GenerateResult, Usage
from tests.support.actors import Actors
from tests.support.budget import reserve, settled, summary
from tests.support.profile import write_profile
from tests.support.scripted_worker import ScriptedWorker
from tests.support.wait import eventually

pytestmark = pytest.mark.expect_violations


@pytest.fixture(autouse=True)
async def topology(nc: NATS) -> None:
    """The streams and buckets exist, as the embedded server's launcher makes them."""
    await provision(nc.jetstream(), StreamsCfg())


class Peer:
    """A connection as one role, with the permission errors the server sent it."""

    def __init__(self, nc: NATS, errors: list[str]) -> None:
        self.nc, self.errors = nc, errors

    async def refused(self, subject: str) -> bool:
        """Wait until the server has refused this connection something on ``subject``."""
        await eventually(lambda: any(subject.lower() in e.lower() for e in self.errors), timeout=5)
        return True


async def connect_as(server: EmbeddedNats, role: str) -> Peer:
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    nc = await nats.connect(server.url, error_cb=on_error, allow_reconnect=False, **server.connect_options(role))
    return Peer(nc, errors)


@pytest.fixture
async def peers(nats_server: EmbeddedNats) -> AsyncIterator[Callable[[str], Awaitable[Peer]]]:
    opened: list[Peer] = []

    async def open_(role: str) -> Peer:
        peer = await connect_as(nats_server, role)
        opened.append(peer)
        return peer

    yield open_
    for peer in opened:
        await peer.nc.close()


def add_client(server: EmbeddedNats, name: str) -> Path:
    assert server.auth is not None
    server.auth.add_client(name)
    server.reload()
    return server.auth.client_file(name)


async def client_of(server: EmbeddedNats, name: str) -> OrchestraClient:
    path = add_client(server, name)

    creds = AuthDir(path.parent.parent).add_client(path.stem)[0]
    await eventually(lambda: _accepts(server.url, creds.user, creds.password), timeout=10)  # users re-read
    return await OrchestraClient.connect(server.url, path, allow_reconnect=False, connect_timeout=2)


async def _accepts(url: str, user: str, password: str) -> bool:
    return await try_connect(url, user=user, password=password) is None


async def stored(nc: NATS, stream: str, subject: str) -> int:
    info = await nc.jetstream().stream_info(stream, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


# --- who may connect at all ----------------------------------------------------------------------------
async def try_connect(url: str, **options: object) -> str | None:
    """None when the server accepts the connection, else what it said."""
    nc = NATS()
    try:
        await nc.connect(url, allow_reconnect=False, connect_timeout=2, max_reconnect_attempts=0, **options)
    except nats.errors.Error as exc:
        return str(exc)
    except (ConnectionResetError, BrokenPipeError) as exc:  # the server dropped it mid-reload (SIGHUP): not in
        return f"connection lost: {exc}"
    finally:
        await nc.close()
    return None


async def test_an_anonymous_connection_is_refused(nats_server: EmbeddedNats) -> None:
    assert "Authorization Violation" in (await try_connect(nats_server.url) or "")


async def test_a_wrong_password_is_refused(nats_server: EmbeddedNats) -> None:
    opts = nats_server.connect_options("router") | {"password": "not-the-secret"}
    assert "Authorization Violation" in (await try_connect(nats_server.url, **opts) or "")
    assert await try_connect(nats_server.url, **nats_server.connect_options("router")) is None


def test_credential_files_and_the_server_config_are_private(nats_server: EmbeddedNats) -> None:
    assert nats_server.auth is not None
    assert nats_server.auth.path.stat().st_mode & 0o777 == 0o700
    for path in [*nats_server.auth.path.glob("*.json"), nats_server.config_path]:
        assert path.stat().st_mode & 0o777 == 0o600, path


# --- commands: only the rotator, the monitor and the operator ---------------------------------------------
@pytest.mark.parametrize("role", ["gateway", "router", "gpu_host", "cloud_proxy", "cache"])
async def test_commands_from_other_roles_are_refused(
    role: str, peers: Callable[[str], Awaitable[Peer]], nc: NATS
) -> None:
    """tier.set, unload and phase.set forged by an actor that may not command: refused, nothing stored."""
    peer = await peers(role)
    forged = (SetTier(tier="local", enabled=False), UnloadModel(host="cpu0", model="smollm2-135m"), SetPhase(phase="x"))
    for cmd in forged:
        await peer.nc.publish(subjects.command(cmd), encode(cmd))
        await peer.refused(subjects.command(cmd))
    assert await stored(nc, "COMMANDS", subjects.COMMAND_ALL) == 0


async def test_a_client_can_ask_but_cannot_command_read_prompts_or_forge_answers(
    nats_server: EmbeddedNats, nc: NATS, actors: Actors
) -> None:
    """A training job's identity: its requests go through and come back to it; a command, a
    subscription to every prompt, a forged result or a KV write is refused."""
    await actors.start(ScriptedWorker(actors.config(), answers={"smollm2-135m": "the answer"}))
    job = await client_of(nats_server, "job7")
    errors: list[str] = []
    job.nc._error_cb = _collect(errors)  # the client's own connection: hear its refusals
    try:
        # a request published straight onto DISPATCH would skip the router: refused
        await job.nc.publish(subjects.dispatch_host("cpu0", "smollm2-135m"), b"{}")
        await job.nc.subscribe(subjects.REQUEST_ALL)
        forged = GenerateResult(request_id="victim1", text="forged", model="gpt-4o", family="gpt", tier="premium",
                                target="openai", cost_usd=1000.0)  # fmt: skip
        await job.nc.publish(subjects.result("victim1", subjects.ORIGIN_GATEWAY), encode(forged))
        await job.nc.publish(f"$KV.{subjects.KV_CACHE}.poison", b"{}")
        await job.nc.publish(subjects.command(SetTier(tier="local", enabled=False)), b"{}")
        await job.nc.subscribe(subjects.results_of("job8"))  # another client's answers
        for subject in ("orch.dispatch.host", "orch.request.>", "orch.result.gw.victim1", "$KV.orch_cache",
                        "orch.cmd.tier", "orch.result.job8"):  # fmt: skip
            await eventually(lambda s=subject: any(s.lower() in e.lower() for e in errors), timeout=5)
        assert await stored(nc, "RESULTS", subjects.RESULT_ALL) == 0
        assert await stored(nc, "DISPATCH", subjects.DISPATCH_ALL) == 0
    finally:
        await job.close()


def _collect(errors: list[str]) -> Callable[[Exception], Awaitable[None]]:
    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    return on_error


async def test_a_client_gets_its_answer_under_its_own_identity_whatever_it_writes(
    nats_server: EmbeddedNats, actors: Actors
) -> None:
    """A client's request through a real router: answered on its own subjects, and the identity the
    router (and so the budget_guard) uses is the authenticated one, not the client_key it wrote."""
    profile = actors.profile()
    worker = ScriptedWorker(
        load_config(profile),
        hosts={"cpu0": ["smollm2-135m"]},
        script={"cpu0/smollm2-135m": ["ok", "stream"]},
        answers={"smollm2-135m": "hello job"},
    )
    await actors.start(worker)
    await actors.process("actors.router", profile, ready="router started")
    job = await client_of(nats_server, "job7")
    try:
        request = make_request(prompt="hi", model="smollm2-135m", client_key="someone-else", origin="gw")
        outcome = await job.ask(request)
        assert isinstance(outcome, GenerateResult) and outcome.text == "hello job"
        assert outcome.client_key == "job7"  # per-key budgets and allow-lists see the real identity
        streamed = [piece async for piece in job.stream(make_request(prompt="hi", model="smollm2-135m"))]
        assert "".join(streamed).strip() == "hello job"
    finally:
        await job.close()


# --- the budget: only the guard writes LEDGER; charges and holds are bounded ---------------------------
async def test_ledger_writes_and_purges_by_anyone_but_the_guard_are_refused(
    peers: Callable[[str], Awaitable[Peer]], nc: NATS
) -> None:
    """A forged (negative) ledger entry and a purge of LEDGER from the router, a message of LEDGER deleted
    by the guard itself: refused. Only the operator may purge or delete a stream, and the guard purge its
    own LEDGER (what two of its snapshots cover: compaction.py)."""
    await nc.jetstream().add_stream(name=journal.STREAM, subjects=[subjects.LEDGER_ALL])
    router = await peers("router")
    entry = Charged(at=time.time(), key="forged", outcome="result", request_id="x", cost_nanos=0)
    await router.nc.publish(journal.subject_of(entry), encode(entry).replace(b'"cost_nanos":0', b'"cost_nanos":-1'))
    await router.refused("orch.ledger.charged")
    with pytest.raises(nats.errors.TimeoutError):
        await router.nc.request(f"$JS.API.STREAM.PURGE.{journal.STREAM}", b"", timeout=1)
    await router.refused("$JS.API.STREAM.PURGE.LEDGER")
    guard = await peers("budget_guard")
    with pytest.raises(nats.errors.TimeoutError):
        await guard.nc.request(f"$JS.API.STREAM.MSG.DELETE.{journal.STREAM}", b'{"seq": 1}', timeout=1)
    await guard.refused("$JS.API.STREAM.MSG.DELETE.LEDGER")
    with pytest.raises(nats.errors.TimeoutError):
        await guard.nc.request("$JS.API.STREAM.DELETE.RESULTS", b"", timeout=1)
    await guard.refused("$JS.API.STREAM.DELETE.RESULTS")
    assert await stored(nc, journal.STREAM, subjects.LEDGER_ALL) == 0


async def test_an_undecodable_or_negative_ledger_entry_is_dead_lettered_not_fatal(
    nats_server: EmbeddedNats, nc: NATS, tmp_path: Path, actors: Actors
) -> None:
    """Junk and a negative charge in LEDGER (as a compromised writer could leave): the guard starts,
    skips both, dead-letters them with an event, and its ledger is not below zero."""
    profile = write_profile(tmp_path / "profile", nats_server.url)
    cfg = load_config(profile)
    js = nc.jetstream()
    await js.add_stream(name=journal.STREAM, subjects=[subjects.LEDGER_ALL])
    good = Charged(at=time.time(), key="good1", outcome="result", request_id="good1", tier="premium",
                   model="gpt-4o", cost_nanos=5_000)  # fmt: skip
    await js.publish(journal.subject_of(good), encode(good))
    await js.publish("orch.ledger.junk", b"\x00not json")
    negative = encode(Charged(at=time.time(), key="neg", outcome="result", request_id="neg", cost_nanos=1))
    await js.publish("orch.ledger.charged", negative.replace(b'"cost_nanos":1', b'"cost_nanos":-1000000000000000'))
    guard = await actors.start(BudgetGuard(cfg))
    assert guard.replayed == 1
    state = await summary(nc)
    assert state.spent_nanos == 5_000
    assert await stored(nc, "DEADLETTER", subjects.dead_letter(journal.STREAM)) == 2
    await actors.stop(guard)
    with pytest.raises(Exception, match=">= 0"):
        LEDGER_ENTRY.decode(negative.replace(b'"cost_nanos":1', b'"cost_nanos":-1'))


async def test_a_result_cannot_charge_more_than_its_usage_at_the_configured_price_nor_its_hold(
    nats_server: EmbeddedNats, nc: NATS, tmp_path: Path
) -> None:
    """Results stored by a worker identity claiming $1000: charged at the usage's price (no hold) and
    at most the hold (with one); the premium tier is not disabled by them."""
    profile = write_profile(tmp_path / "profile", nats_server.url, overrides={"budgets": {"limits": [
        {"scope": "tier", "name": "premium", "period": "daily", "hard_usd": 5.0}]}})  # fmt: skip
    guard = BudgetGuard(load_config(profile))
    await guard.start(nc)
    worker = await connect_as(nats_server, "cloud_proxy")
    try:
        held = await reserve(nc, "held1", 0.01)
        assert held.granted
        usage = Usage(input_tokens=1000, output_tokens=1000)  # gpt-4o: $0.0011 + $0.0044
        for rid, reservation in (("free1", None), ("held1", held.reservation_id)):
            res = GenerateResult(request_id=rid, text="x", model="gpt-4o", family="gpt", tier="premium",
                                 target="openai", usage=usage if rid == "free1" else Usage(input_tokens=10**9),
                                 cost_usd=1000.0, created_at=time.time(), reservation_id=reservation)  # fmt: skip
            await worker.nc.jetstream().publish(subjects.result(rid), encode(res), headers={"Nats-Msg-Id": rid})
        await eventually(lambda: settled(nc, "free1", "held1"), timeout=15)
        state = await summary(nc)
        assert state.charges == 2
        assert state.spent_nanos == 5_500_000 + 10_000_000  # the usage's price, and the $0.01 hold
        assert "premium" not in state.disabled_tiers
    finally:
        await worker.nc.close()
        await guard.stop(grace=1)


async def test_a_hold_is_bounded_in_time_and_size(nats_server: EmbeddedNats, nc: NATS, tmp_path: Path) -> None:
    """A reservation asked until the year 2100 expires within budgets.max_hold; one larger than
    budgets.max_hold_usd is refused."""
    profile = write_profile(tmp_path / "profile", nats_server.url, overrides={"budgets": {
        "max_hold": "10m", "max_hold_usd": 2.0,
        "limits": [{"scope": "tier", "name": "premium", "period": "daily", "hard_usd": 5.0}]}})  # fmt: skip
    guard = BudgetGuard(load_config(profile))
    await guard.start(nc)
    try:
        year_2100 = 4_102_444_800.0
        from bus.service import call

        reply = await call(nc, subjects.SVC_BUDGET_RESERVE, ReserveRequest(request_id="long1", tier="premium",
                           model="gpt-4o", amount_usd=1.0, deadline=year_2100), RESERVE_REPLY)  # fmt: skip
        assert reply.granted and reply.expires_at <= time.time() + 600 + float(guard.cfg.budgets.reservation_grace)
        big = await call(nc, subjects.SVC_BUDGET_RESERVE, ReserveRequest(request_id="big1", tier="premium",
                         model="gpt-4o", amount_usd=4.9), RESERVE_REPLY)  # fmt: skip
        assert not big.granted and big.reason == "hold_too_large"
    finally:
        await guard.stop(grace=1)


async def test_a_client_added_while_the_server_runs_connects_and_a_removed_one_cannot(
    nats_server: EmbeddedNats,
) -> None:
    job = await client_of(nats_server, "job9")
    await job.close()
    assert nats_server.auth is not None
    saved = nats_server.auth.path.parent / "job9-saved.json"  # what a job that kept its file still holds
    saved.write_bytes(nats_server.auth.client_file("job9").read_bytes())
    assert AuthDir(nats_server.auth.path).remove_client("job9")
    nats_server.reload()

    creds = read_credentials(saved)
    assert await eventually(lambda: _refused(nats_server.url, creds.user, creds.password), timeout=10)


async def _refused(url: str, user: str, password: str) -> bool:
    return "Authorization Violation" in (await try_connect(url, user=user, password=password) or "")
