"""The subject map: reversible escaping, overlap detection, command routing."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from bus import render, subjects
from schemas.codec import encode
from schemas.commands import LoadModel, SetPhase, SetTier, UnloadModel
from schemas.events import ModelKeepAlive


@given(st.text(min_size=1, max_size=60))
def test_token_escaping_is_reversible_and_subject_safe(name: str) -> None:
    tok = subjects.token(name)
    assert subjects.untoken(tok) == name
    assert not set(tok) & set(". *>\t\r\n")


@given(st.text(min_size=1, max_size=60))
def test_kv_key_escaping_is_reversible_and_key_safe(name: str) -> None:
    key = subjects.kv_key(name)
    assert subjects.un_kv_key(key) == name
    assert all(c.isascii() and (c.isalnum() or c in "-_.=") for c in key)


def test_model_names_with_dots_become_one_token() -> None:
    subject = subjects.dispatch_host("cpu0", "llama3.1-70b")
    assert subject == "orch.dispatch.host.cpu0.llama3~2e1-70b"
    assert subjects.subject_matches(subject, subjects.dispatch_host_all("cpu0"))


def test_the_topology_has_no_overlapping_streams() -> None:
    assert subjects.find_overlaps(subjects.STREAMS) == []


def test_overlap_detection_with_wildcards() -> None:
    assert subjects.subjects_overlap("a.>", "a.b.c")
    assert subjects.subjects_overlap("a.*.c", "a.b.>")
    assert not subjects.subjects_overlap("a.*", "a.b.c")
    assert not subjects.subjects_overlap("orch.result.*", "orch.result.*.failed")
    found = subjects.find_overlaps([subjects.StreamSpec("A", ["x.>"]), subjects.StreamSpec("B", ["x.y"])])
    assert found == [("A", "x.>", "B", "x.y")]


def test_final_results_and_failed_attempts_do_not_match_each_other() -> None:
    """A client waiting on orch.result.<id> never sees the router-only failure messages."""
    assert subjects.subject_matches(subjects.result("r1"), subjects.RESULT_FINAL)
    assert not subjects.subject_matches(subjects.attempt_failed("r1"), subjects.RESULT_FINAL)
    assert subjects.subject_matches(subjects.attempt_failed("r1"), subjects.RESULT_FAILED)


def test_commands_are_routed_by_their_target() -> None:
    assert subjects.command(LoadModel(host="cpu0", model="m")) == "orch.cmd.host.cpu0.load"
    assert subjects.command(UnloadModel(host="cpu0", model="m")) == "orch.cmd.host.cpu0.unload"
    assert subjects.command(SetTier(tier="premium", enabled=False)) == "orch.cmd.tier.premium"
    assert subjects.command(SetPhase(phase="p")) == "orch.cmd.phase"


def test_a_keep_alive_change_is_a_model_event_that_watch_prints() -> None:
    """model.keep_alive goes to orch.event.model.keep_alive: stored in EVENTS, followed by the rotator with the
    other model events, and printed by ``orchestra watch`` with both tiers."""
    ev = ModelKeepAlive(host="cpu0", model="gemma3-270m", keep_alive="warm", previous="hot", reason="rotation")
    subject = subjects.event(ev)
    assert subject == "orch.event.model.keep_alive"
    assert subjects.subject_matches(subject, subjects.EVENT_ALL)
    assert subjects.subject_matches(subject, subjects.EVENT_MODEL)
    line = render.line(datetime(2025, 1, 1, tzinfo=UTC), subject, encode(ev))
    assert line.startswith("2025-01-01 00:00:00.000 model.keep_alive ")
    assert "host=cpu0 model=gemma3-270m keep_alive=warm previous=hot reason=rotation" in line


def test_every_stream_has_byte_limits_and_the_ledger_is_never_trimmed_for_space() -> None:
    """Each stream takes a share of bus.streams.max_bytes (together at most all of it); at its limit a
    history stream drops its oldest messages, the LEDGER and its snapshots refuse new writes instead."""
    from actors.budget_guard import journal, snapstore
    from bus.provision import stream_config
    from schemas.config.bus import StreamsCfg
    from schemas.config.ops import BudgetsCfg
    from schemas.config.units import ByteSize

    ledger, snaps = journal.ledger_stream(BudgetsCfg()), snapstore.snapshot_stream()
    specs = [*subjects.STREAMS, ledger, snaps]
    assert all(spec.share for spec in specs)
    assert sum(spec.share or 0 for spec in specs) <= 1.0
    cfg = StreamsCfg(max_bytes=ByteSize(10 * 2**30))
    assert stream_config(ledger, cfg).discard == "new" and stream_config(snaps, cfg).discard == "new"
    assert stream_config(snaps, cfg).max_age == 0  # snapshots outlive LEDGER's retention
    assert all(stream_config(spec, cfg).discard == "old" for spec in subjects.STREAMS)
    assert stream_config(subjects.STREAMS[0], cfg).max_bytes == int(10 * 2**30 * subjects.STREAMS[0].share)
    assert stream_config(ledger, StreamsCfg(max_bytes=None)).max_bytes == -1


def test_subject_parsers_read_what_the_builders_write() -> None:
    """area, is_dispatch, is_chunks, is_attempt_failed and answer_id agree with the subject builders."""
    rid = "req-1"
    assert subjects.area(subjects.request("high", rid)) == "request"
    assert subjects.area(subjects.dispatch_host("cpu0", "llama3.1-8b")) == "dispatch"
    assert subjects.area("other.result.x") == "" and subjects.area("orch") == ""
    assert subjects.is_dispatch(subjects.dispatch_cloud("openai", "gpt-4o"))
    assert not subjects.is_dispatch(subjects.host_commands("cpu0"))
    assert subjects.is_chunks(subjects.chunks(rid, "gw")) and not subjects.is_chunks(subjects.result(rid, "gw"))
    assert subjects.is_attempt_failed(subjects.attempt_failed(rid)) and not subjects.is_attempt_failed(
        subjects.result(rid)
    )
    assert subjects.answer_id(subjects.result(rid, "gw")) == rid == subjects.answer_id(subjects.chunks(rid, "job7"))
    assert subjects.event_of("phase.changed") == "orch.event.phase.changed"
    assert all(subjects.subject_matches(s, subjects.EVENT_ALL) for s in subjects.ALERT_FEED)
    assert subjects.subject_matches(subjects.ledger("charged"), subjects.LEDGER_ALL)
    assert subjects.subject_matches(subjects.ROUTER_OVERFLOW, subjects.ROUTER_COMMANDS)
    assert subjects.subject_matches(subjects.ALERT_ACK, subjects.ALERT_COMMANDS)
