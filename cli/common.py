"""Shared by the subcommands: loading the config, connecting with a clear error, time parsing."""

from __future__ import annotations

import argparse
import os
import re
from datetime import UTC, datetime, timedelta

from nats.aio.client import Client as NATS

from bus.connect import connect
from bus.errors import ConnectError
from cli.upcluster import discover
from schemas.config import OrchestraConfig, load_config


def config_of(args: argparse.Namespace) -> OrchestraConfig:
    """The profile; while `orchestra up --cluster N` runs on its data dir (and no ORCHESTRA_NATS_URL
    says otherwise), pointed at that local cluster's nodes."""
    cfg = load_config(getattr(args, "config", None))
    if os.environ.get("ORCHESTRA_NATS_URL"):
        return cfg
    found = discover(cfg.data_dir)
    if not found:
        return cfg
    os.environ.update(found)
    return load_config(getattr(args, "config", None))


async def connect_cli(cfg: OrchestraConfig, *, wait: float = 3.0) -> NATS:
    try:
        return await connect(
            cfg.bus, name="orchestra-cli", role="operator", data_dir=cfg.data_dir, wait=wait, quiet=True
        )
    except ConnectError as exc:
        if "refused the credentials" in str(exc):
            raise
        raise ConnectError(f"{exc}; is the orchestra running? (`orchestra up` or `make run`)") from exc


_REL = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_when(text: str, *, now: datetime | None = None) -> datetime:
    """'90s', '15m', '2h', '7d' ago; 'now'; 'today'; or an ISO date/time (UTC unless it says)."""
    now = now or datetime.now(UTC)
    text = text.strip()
    if text == "now":
        return now
    if text == "today":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    m = _REL.match(text)
    if m:
        return now - timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"cannot read time {text!r}: use e.g. 30m, 2h, 7d, today or 2026-11-22T09:00") from exc
    return when if when.tzinfo else when.replace(tzinfo=UTC)
