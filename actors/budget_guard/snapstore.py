"""Ledger snapshots in the budget_guard's own stream LEDGER_SNAPSHOTS.

    orch.ledgersnap.part    the snapshot's bytes (snapshot.py), in parts of at most PART bytes
    orch.ledgersnap.done    then a manifest: {id, covers_seq, first_part_seq, parts, bytes, entries, at}

A snapshot counts once its manifest is stored; a restart reads the last manifest and its parts (direct
gets by sequence: the guard is the one writer, its parts are consecutive). After a new snapshot, the
ones before the previous are purged: two are kept, so a snapshot that turns out unreadable leaves one
(``manifests`` lists them, oldest first; a rebuild falls back to the one before).
Limits: no age (the latest snapshot is the ledger's history beyond LEDGER's retention), its share of
``bus.streams.max_bytes``, discard ``new`` (full: the new snapshot fails, loudly; the old ones stay).
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from dataclasses import dataclass

import msgspec
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError

from bus import subjects
from bus.subjects import StreamSpec

STREAM = subjects.LEDGER_SNAP_STREAM
PART = 512 * 1024  # under any server's max_payload (1 MiB by default)


def snapshot_stream() -> StreamSpec:
    return StreamSpec(
        STREAM,
        [subjects.LEDGER_SNAP_ALL],
        "budget_guard's ledger snapshots: the fold of LEDGER up to a sequence (one writer)",
        max_age=0.0,  # kept until purged by the guard: they outlive LEDGER's own retention
        share=subjects.LEDGER_SNAP_SHARE,
        discard="new",
    )


class Manifest(msgspec.Struct, frozen=True):
    id: str
    covers_seq: int  # the LEDGER sequence the snapshot is the fold up to
    first_part_seq: int
    parts: int
    bytes: int
    entries: int  # entries the fold has applied, all told
    at: float


@dataclass(frozen=True)
class Snapshot:
    manifest: Manifest
    data: bytes


class SnapshotMissing(Exception):
    """A manifest whose parts are gone or do not match: rebuild from LEDGER instead."""


async def write(nc: NATS, data: bytes, *, covers_seq: int, entries: int, timeout: float = 30.0) -> Manifest:
    js = nc.jetstream()
    sid = uuid.uuid4().hex
    previous = await latest_manifest(nc)
    first = 0
    parts = [data[i : i + PART] for i in range(0, len(data), PART)] or [b""]
    for i, part in enumerate(parts):
        ack = await js.publish(
            subjects.LEDGER_SNAP_PART,
            part,
            headers={"Orch-Snapshot": sid, "Orch-Part": str(i), "Nats-Msg-Id": f"snap:{sid}:{i}"},
            timeout=timeout,
        )
        first = first or ack.seq
    manifest = Manifest(
        id=sid, covers_seq=covers_seq, first_part_seq=first, parts=len(parts), bytes=len(data), entries=entries,
        at=time.time(),
    )  # fmt: skip
    await js.publish(subjects.LEDGER_SNAP_DONE, msgspec.json.encode(manifest), timeout=timeout)
    if previous is not None:  # keep this one and the one before it
        await nc.request(f"$JS.API.STREAM.PURGE.{STREAM}", json.dumps({"seq": previous.first_part_seq}).encode(), 5)
    return manifest


async def latest_manifest(nc: NATS) -> Manifest | None:
    try:
        msg = await nc.jetstream().get_last_msg(STREAM, subjects.LEDGER_SNAP_DONE)
    except NotFoundError:
        return None
    try:
        return msgspec.json.decode(msg.data or b"", type=Manifest)
    except msgspec.DecodeError:
        return None


async def manifests(nc: NATS) -> list[Manifest]:
    """Every snapshot's manifest still stored, oldest first (normally two; none before the first)."""
    js = nc.jetstream()
    found: list[Manifest] = []
    seq = 1
    while True:
        try:
            msg = await js.get_msg(STREAM, seq, subject=subjects.LEDGER_SNAP_DONE, next=True)
        except NotFoundError:
            return found
        with contextlib.suppress(msgspec.DecodeError):
            found.append(msgspec.json.decode(msg.data or b"", type=Manifest))
        seq = (msg.seq or seq) + 1


async def read(nc: NATS, manifest: Manifest) -> Snapshot:
    """The snapshot a manifest names. Raises SnapshotMissing when its parts are not all there."""
    js = nc.jetstream()
    chunks = []
    for i in range(manifest.parts):
        try:
            msg = await js.get_msg(STREAM, manifest.first_part_seq + i, direct=True)
        except NotFoundError as exc:
            raise SnapshotMissing(f"snapshot {manifest.id}: part {i} is gone") from exc
        headers = msg.headers or {}
        if headers.get("Orch-Snapshot") != manifest.id or headers.get("Orch-Part") != str(i):
            raise SnapshotMissing(f"snapshot {manifest.id}: part {i} does not match")
        chunks.append(msg.data or b"")
    data = b"".join(chunks)
    if len(data) != manifest.bytes:
        raise SnapshotMissing(f"snapshot {manifest.id}: {len(data)} bytes, the manifest says {manifest.bytes}")
    return Snapshot(manifest, data)
