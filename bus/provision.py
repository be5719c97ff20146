"""Streams and KV buckets from the topology in :mod:`bus.subjects`: created when missing, updated in
place when their configuration changed (never deleted and recreated), refused when subjects overlap.

Only the operator may reconfigure a shared stream (bus/permissions.py): an actor updates only what it
declares itself (``may_update``) and leaves a differing shared stream as it is, with a warning; the
embedded server's launcher provisions the whole topology as the operator at each start."""

from __future__ import annotations

import logging
from collections.abc import Collection

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, KeyValueConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BucketNotFoundError, NotFoundError

from bus.errors import ProvisionError
from bus.subjects import BUCKETS, STREAMS, KVSpec, StreamSpec, find_overlaps
from schemas.config.bus import StreamsCfg

log = logging.getLogger(__name__)

# Fields we own; anything else on an existing stream (set by an operator) is left alone.
_COMPARED = (
    "subjects",
    "max_age",
    "duplicate_window",
    "num_replicas",
    "max_bytes",
    "max_msgs_per_subject",
    "discard",
)


def max_bytes(spec: StreamSpec, cfg: StreamsCfg) -> int:
    """The stream's share of ``bus.streams.max_bytes`` (-1: no limit)."""
    if not cfg.max_bytes or spec.share is None:
        return -1
    return max(1 << 20, int(float(cfg.max_bytes) * spec.share))


def stream_config(spec: StreamSpec, cfg: StreamsCfg) -> StreamConfig:
    return StreamConfig(
        name=spec.name,
        description=spec.description or None,
        subjects=list(spec.subjects),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE if cfg.storage == "file" else StorageType.MEMORY,
        max_age=float(cfg.history if spec.max_age is None else spec.max_age),
        duplicate_window=float(cfg.dedupe_window),
        num_replicas=cfg.replicas,
        max_bytes=max_bytes(spec, cfg),
        max_msgs_per_subject=spec.max_msgs_per_subject,
        discard=DiscardPolicy.NEW if spec.discard == "new" else DiscardPolicy.OLD,
        allow_direct=True,
    )


def _differs(current: StreamConfig, wanted: StreamConfig) -> list[str]:
    changed = []
    for name in _COMPARED:
        a, b = getattr(current, name), getattr(wanted, name)
        if name == "subjects":
            a, b = sorted(a or []), sorted(b or [])
        elif name in ("max_age", "duplicate_window"):
            a, b = round(float(a or 0), 3), round(float(b or 0), 3)
        elif name in ("max_bytes", "max_msgs_per_subject"):
            a, b = a if a is not None else -1, b if b is not None else -1
        if a != b:
            changed.append(name)
    return changed


async def ensure_stream(js: JetStreamContext, spec: StreamSpec, cfg: StreamsCfg, may_update: bool = True) -> str:
    """Create or update one stream. Returns "created", "updated", "unchanged" or "differs" (not ours to
    update)."""
    wanted = stream_config(spec, cfg)
    try:
        info = await js.stream_info(spec.name)
    except NotFoundError:
        try:
            await js.add_stream(wanted)
        except Exception as exc:
            raise ProvisionError(f"cannot create stream {spec.name}: {exc}") from exc
        log.info("created stream %s %s", spec.name, spec.subjects)
        return "created"
    changed = _differs(info.config, wanted)
    if not changed:
        return "unchanged"
    if not may_update:
        log.warning("stream %s differs from the profile (%s): the operator updates it", spec.name, ", ".join(changed))
        return "differs"
    try:
        await js.update_stream(wanted)
    except Exception as exc:
        raise ProvisionError(f"cannot update stream {spec.name} ({', '.join(changed)}): {exc}") from exc
    log.info("updated stream %s: %s", spec.name, ", ".join(changed))
    return "updated"


async def ensure_bucket(js: JetStreamContext, spec: KVSpec, cfg: StreamsCfg, may_update: bool = True) -> str:
    try:
        kv = await js.key_value(spec.bucket)
    except (BucketNotFoundError, NotFoundError):
        config = KeyValueConfig(
            bucket=spec.bucket,
            description=spec.description or None,
            history=spec.history,
            ttl=spec.ttl,
            storage=StorageType.FILE if cfg.storage == "file" else StorageType.MEMORY,
            replicas=cfg.replicas,
        )
        try:
            await js.create_key_value(config)
        except Exception as exc:
            raise ProvisionError(f"cannot create KV bucket {spec.bucket}: {exc}") from exc
        log.info("created KV bucket %s", spec.bucket)
        return "created"
    status = await kv.status()
    current = status.stream_info.config
    want_age = float(spec.ttl or 0)
    if round(float(current.max_age or 0), 3) != round(want_age, 3) or current.max_msgs_per_subject != spec.history:
        if not may_update:
            log.warning("KV bucket %s differs from the profile (ttl, history): the operator updates it", spec.bucket)
            return "differs"
        updated = StreamConfig.from_response(current.as_dict())
        updated.max_age = want_age
        updated.max_msgs_per_subject = spec.history
        try:
            await js.update_stream(updated)
        except Exception as exc:
            raise ProvisionError(f"cannot update KV bucket {spec.bucket}: {exc}") from exc
        log.info("updated KV bucket %s", spec.bucket)
        return "updated"
    return "unchanged"


async def provision(
    js: JetStreamContext,
    cfg: StreamsCfg,
    streams: list[StreamSpec] | None = None,
    buckets: list[KVSpec] | None = None,
    may_update: Collection[str] | None = None,
) -> dict[str, str]:
    """Ensure every stream and bucket exists with the declared configuration (idempotent).
    ``may_update``: the names (streams, ``KV_<bucket>``) this caller may reconfigure; None: all."""
    streams = STREAMS if streams is None else streams
    buckets = BUCKETS if buckets is None else buckets
    overlaps = find_overlaps(streams)
    if overlaps:
        a, sa, b, sb = overlaps[0]
        raise ProvisionError(f"streams {a} ({sa}) and {b} ({sb}) overlap; JetStream refuses overlapping streams")
    outcome = {}
    for spec in streams:
        mine = may_update is None or spec.name in may_update
        outcome[spec.name] = await ensure_stream(js, spec, cfg, mine)
    for kv in buckets:
        mine = may_update is None or f"KV_{kv.bucket}" in may_update
        outcome[f"KV_{kv.bucket}"] = await ensure_bucket(js, kv, cfg, mine)
    return outcome
