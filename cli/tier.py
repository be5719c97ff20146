"""``orchestra tier``: operators enable and disable tiers (a ``SetTier`` command on the bus; the
budget_guard applies it to ``orch_tiers`` and the router follows).

    orchestra tier status
    orchestra tier disable premium [--until 2h|tomorrow|2026-11-23T08:00] [--reason ...]
    orchestra tier enable premium [--reason ...]
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import re
import time
import uuid
from datetime import datetime, tzinfo
from typing import Any

from actors.budget_guard.tiers import apply_command
from bus import subjects
from bus.kv import TypedKV
from bus.provision import provision
from cli.common import config_of, connect_cli
from policy.limits import Calendar
from schemas.base import TIERS
from schemas.codec import Codec, encode
from schemas.commands import SetTier
from schemas.state import TierState

_IN = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def register(sub: Any) -> None:
    p = sub.add_parser("tier", help="enable or disable a tier (local, together, premium)")
    cmds = p.add_subparsers(dest="tier_command", metavar="SUBCOMMAND", required=True)
    s = cmds.add_parser("status", help="which tiers are enabled")
    s.set_defaults(run=run)
    for verb in ("enable", "disable"):
        c = cmds.add_parser(verb, help=f"{verb} a tier")
        c.add_argument("tier", choices=TIERS)
        c.add_argument("--reason", default="", help="why (shown in events and `orchestra tier status`)")
        c.add_argument("--wait", type=float, default=5.0, help="seconds to wait for the budget_guard to apply it")
        if verb == "disable":
            c.add_argument("--until", help="re-enable then: 30m, 2h, tomorrow, or ISO time (default: until enabled)")
        c.set_defaults(run=run)


def parse_until(text: str, calendar: Calendar, now: float | None = None) -> float:
    """A time in the future: '90s', '2h', '1d' from now; 'tomorrow' (next midnight in the budgets'
    time zone); or an ISO time (in that time zone unless it says)."""
    now = time.time() if now is None else now
    text = text.strip()
    if text == "tomorrow":
        return calendar.next_day_start(now)
    m = _IN.match(text)
    if m:
        return now + float(m.group(1)) * _UNITS[m.group(2)]
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"cannot read --until {text!r}: use e.g. 30m, 2h, tomorrow or 2026-11-23T08:00") from exc
    return (when if when.tzinfo else when.replace(tzinfo=calendar.tz)).timestamp()


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_tier(args))


def _show(state: TierState | None, tier: str, tz: tzinfo) -> str:
    if state is None or state.enabled:
        reason = f" ({state.reason})" if state and state.reason else ""
        return f"{tier}: enabled{reason}"
    until = "until enabled" if state.until is None else f"until {datetime.fromtimestamp(state.until, tz).isoformat()}"
    return f"{tier}: DISABLED {until} ({state.reason})"


async def _tier(args: argparse.Namespace) -> int:
    cfg = config_of(args)
    calendar = Calendar(cfg.budgets.timezone)
    nc = await connect_cli(cfg)
    try:
        js = nc.jetstream()
        await provision(js, cfg.bus.streams)
        kv: TypedKV[TierState] = await TypedKV.open(js, subjects.KV_TIERS, Codec(TierState))
        if args.tier_command == "status":
            states = await kv.items()
            for tier in TIERS:
                print(_show(states.get(tier), tier, calendar.tz))
            return 0
        until = parse_until(args.until, calendar) if getattr(args, "until", None) else None
        cmd = SetTier(
            tier=args.tier,
            enabled=args.tier_command == "enable",
            until=until,
            reason=args.reason or f"{args.tier_command}d by an operator",
            at=time.time(),
            by=f"operator:{getpass.getuser()}",
            command_id=uuid.uuid4().hex,
        )
        before = await kv.get(args.tier)
        if apply_command(before, cmd, time.time()) is None:
            print(f"nothing to do: {_show(before, args.tier, calendar.tz)}")
            return 0
        await js.publish(subjects.command(cmd), encode(cmd), headers={"Nats-Msg-Id": cmd.command_id})
        deadline = time.monotonic() + args.wait
        while time.monotonic() < deadline:
            state = await kv.get(args.tier)
            if state is not None and state.enabled == cmd.enabled and state != before:
                print(_show(state, args.tier, calendar.tz))
                return 0
            await asyncio.sleep(0.1)
        print(f"sent; the budget_guard has not applied it within {args.wait:g}s (is it running? `orchestra status`)")
        return 0
    finally:
        await nc.close()
