"""The permission declaration: every subject, stream and bucket of the topology has an owner; the rules
of the secure bus hold in the generated allow-lists."""

from __future__ import annotations

import pytest

from bus import permissions, subjects
from bus.credentials import AuthDir, authorization_block


def _publishers(subject: str) -> set[str]:
    """The roles whose publish allow-list covers this concrete or wildcard subject."""
    return {
        role
        for role in permissions.ACTOR_ROLES
        if any(subjects.subjects_overlap(subject, p) for p in permissions.grants(role).publish)
    }


def _topology_subjects() -> list[str]:
    found = [s for spec in subjects.STREAMS for s in spec.subjects]
    found += [subjects.LEDGER_ALL, subjects.STREAM_ALL]
    found += [v for k, v in vars(subjects).items() if k.startswith("SVC_") and isinstance(v, str)]
    return found


@pytest.mark.parametrize("subject", _topology_subjects())
def test_every_subject_of_the_topology_has_an_owner(subject: str) -> None:
    assert _publishers(subject), f"{subject}: no role may publish it (a subject without an owner)"


ACTOR_BUCKETS = [subjects.KV_CACHE, subjects.KV_CACHE_PENDING, subjects.KV_LOCKS]


@pytest.mark.parametrize("bucket", [spec.bucket for spec in subjects.BUCKETS] + ACTOR_BUCKETS)
def test_every_bucket_has_exactly_one_writer_role(bucket: str) -> None:
    writers = {r for r in permissions.ACTOR_ROLES if f"$KV.{bucket}.>" in permissions.grants(r).publish}
    assert len(writers) == 1, f"{bucket}: writers {sorted(writers)}"


def test_only_the_budget_guard_appends_to_the_ledger_and_only_workers_publish_answers() -> None:
    assert _publishers("orch.ledger.charged") == {"budget_guard"}
    assert _publishers("orch.stream.gw.r1") == {"gpu_host", "cloud_proxy"}
    assert _publishers("orch.result.gw.r1.failed") == {"gpu_host", "cloud_proxy"}
    assert _publishers("orch.result.gw.r1") == {"gpu_host", "cloud_proxy", "router"}  # router: errors, cache hits
    assert _publishers("orch.dispatch.host.cpu0.m") == {"router"}
    assert _publishers("orch.request.normal.gw.r1") == {"gateway"}


def test_only_the_rotator_the_monitor_and_the_guard_send_commands() -> None:
    assert _publishers("orch.cmd.host.cpu0.unload") == {"rotator", "diversity_monitor"}
    assert _publishers("orch.cmd.tier.local") == {"diversity_monitor", "budget_guard"}
    assert _publishers("orch.cmd.phase") == {"rotator"}
    assert _publishers("orch.cmd.router.overflow") == {"rotator", "diversity_monitor"}


def test_no_actor_may_purge_delete_or_reconfigure_a_shared_stream() -> None:
    """Nor LEDGER: only its one writer, the budget_guard, purges it, and only what two of its snapshots
    cover (compaction.py); nobody deletes the stream or a message of it."""
    for role in permissions.ACTOR_ROLES:
        allowed = permissions.grants(role).publish
        for stream in (*permissions.TOPOLOGY_STREAMS, subjects.LEDGER_STREAM):
            for verb in ("PURGE", "DELETE", "MSG.DELETE"):
                if (role, stream, verb) == ("budget_guard", subjects.LEDGER_STREAM, "PURGE"):
                    continue
                assert not any(subjects.subjects_overlap(f"$JS.API.STREAM.{verb}.{stream}", p) for p in allowed)
        updates = {p.rsplit(".", 1)[-1] for p in allowed if p.startswith("$JS.API.STREAM.UPDATE.")}
        assert not updates & set(permissions.TOPOLOGY_STREAMS), role
    ledger_purge = f"$JS.API.STREAM.PURGE.{subjects.LEDGER_STREAM}"
    purgers = [r for r in permissions.ACTOR_ROLES if ledger_purge in permissions.grants(r).publish]
    assert purgers == ["budget_guard"]
    assert permissions.grants(permissions.OPERATOR).everything


def test_a_client_publishes_only_its_requests_and_reads_only_its_answers() -> None:
    g = permissions.client_grants("job7")
    assert subjects.subject_matches(subjects.request("normal", "r1", "job7"), g.publish[0])
    assert not any(subjects.subject_matches(subjects.request("normal", "r1", "gw"), p) for p in g.publish)
    assert set(g.subscribe) == {"orch.result.job7.*", "orch.stream.job7.*", "_INBOX.client-job7.>"}
    assert not g.allow_responses
    with pytest.raises(ValueError, match="client name"):
        permissions.client_grants("gw")
    with pytest.raises(ValueError, match="client name"):
        permissions.client_grants("a.b")


def test_each_role_reads_only_its_own_inbox() -> None:
    for role in permissions.ACTOR_ROLES:
        inboxes = [s for s in permissions.grants(role).subscribe if s.startswith("_INBOX")]
        assert inboxes == [f"_INBOX.{role}.>"], role


def test_generated_credentials_are_strong_private_and_never_printed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    auth = AuthDir(tmp_path / "auth")
    assert sorted(auth.ensure()) == sorted(permissions.ROLES)
    assert auth.ensure() == []  # never rewritten
    creds = auth.load("router")
    assert len(creds.password) >= 40 and creds.password not in repr(creds)
    assert (tmp_path / "auth" / "router.json").stat().st_mode & 0o777 == 0o600
    auth.add_client("job7")
    users = {u["user"] for u in authorization_block(auth.users())["users"]}  # type: ignore[index]
    assert users == {*permissions.ROLES, "client-job7"}


def test_bus_tls_and_auth_mistakes_are_config_problems() -> None:
    import msgspec

    from schemas.config import load_config
    from schemas.config.bus import NatsAuthCfg, NatsTlsCfg
    from schemas.config.check import problems

    cfg = load_config("local")
    bus = msgspec.structs.replace(
        cfg.bus,
        tls=NatsTlsCfg(enabled=True, verify_clients=True, cert_file="client.pem"),
        auth=NatsAuthCfg(user="orchestra", token_env="TOKEN"),
    )
    found = {str(p) for p in problems(msgspec.structs.replace(cfg, bus=bus))}
    assert "bus.tls: the embedded server needs server_cert_file and server_key_file for TLS" in found
    assert "bus.tls.verify_clients: needs ca_file: the CA that signed the clients' certificates" in found
    assert "bus.tls: cert_file and key_file go together (a client certificate for mutual TLS)" in found
    assert "bus.auth: name one explicit identity, not user and token_env" in found
