"""``orchestra cost``: spend reports replayed from stored results, the budgets now, and the paper's
cost arithmetic.

    orchestra cost report --since 7d --by tier|model|key|provider|day [--until ...] [--json] [--verify]
    orchestra cost status                       budgets, spend and holds now (asks the budget_guard)
    orchestra cost simulate [--workload FILE] [--volume 100 --volume 200] [--premium gpt-4o=20] ...

``report`` replays RESULTS and charges each result exactly as the budget_guard does, then compares
with the ledger (stream LEDGER): ``ledger agrees`` or what differs (``--verify``: exit 1 on a difference).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import yaml
from nats.aio.client import Client as NATS

from actors.budget_guard import journal, report, simulate
from actors.budget_guard.charges import charge_of
from bus import subjects
from bus.replay import replay
from bus.service import call
from cli.common import config_of, connect_cli, parse_when
from policy.limits import Calendar
from policy.money import fmt_usd
from schemas.budget import LEDGER_SUMMARY, Charged, SummaryRequest
from schemas.config import load_config
from schemas.errors import SchemaError

SLACK = timedelta(minutes=10)  # results are stored shortly after they are made: replay a bit wider
# Where LEDGER's older entries are gone (compacted into the guard's snapshots, or aged out), charges are
# compared from a minute after its first stored entry: the guard charges results in the order they are stored.
HELD_MARGIN = timedelta(minutes=1)


def register(sub: Any) -> None:
    p = sub.add_parser("cost", help="spend reports, budgets, and the paper's cost simulation")
    cmds = p.add_subparsers(dest="cost_command", metavar="SUBCOMMAND", required=True)

    r = cmds.add_parser("report", help="spend replayed from stored results, checked against the ledger")
    r.add_argument("--since", default="today", help="start: 30m, 2h, 7d, today (budgets.timezone), or ISO time")
    r.add_argument("--until", default="now", help="end (default now)")
    r.add_argument("--by", choices=report.BY, default="tier", help="group by (default tier)")
    r.add_argument("--json", action="store_true")
    r.add_argument("--verify", action="store_true", help="exit 1 when the ledger differs from the replay")
    r.set_defaults(run=run_report)

    s = cmds.add_parser("status", help="budgets, spend and reservations now (from the budget_guard)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(run=run_status)

    m = cmds.add_parser(
        "simulate",
        help="the paper's monthly cost comparisons for a workload",
        description="Prices come from --config (default: the lab profile, the paper's §8 table). A profile "
        "without the paper's models prices its own (--local-model, --together-model name them).",
    )
    m.add_argument("--workload", type=Path, help="YAML file with Workload fields (tokens in millions per month)")
    m.add_argument("--volume", type=float, action="append", help="§8.1 local volume, M tokens/month (repeatable)")
    m.add_argument("--premium", action="append", metavar="MODEL=M", help="premium tokens per month (repeatable)")
    m.add_argument("--local-model", help="the local model of §8.1 (default llama3.1-70b, or the profile's best)")
    m.add_argument("--together-model", help="the Together model (default together/llama3.1-70b, or the profile's)")
    m.add_argument("--together-now", metavar="LO:HI", help="Together M tokens/month on 4x P40 (option A)")
    m.add_argument("--together-expanded", metavar="LO:HI", help="Together M tokens/month with +2 P40s (option B)")
    m.add_argument("--expansion-usd", type=float, help="price of the two extra P40s")
    m.add_argument("--electricity-now", type=float, help="USD/month today")
    m.add_argument("--electricity-expanded", type=float, help="USD/month with the extra cards")
    m.add_argument("--output-share", type=float, help="share of tokens priced at the output price (paper: 0)")
    m.add_argument("--cloud-only", metavar="LO:HI", help="cloud-only USD/month to compare with (paper: 3000:5000)")
    m.add_argument("--json", action="store_true")
    m.set_defaults(run=run_simulate)


# --- report --------------------------------------------------------------------------------------
def run_report(args: argparse.Namespace) -> int:
    return asyncio.run(_report(args))


async def collect(nc: NATS, since: datetime, until: datetime) -> tuple[list[Charged], dict[str, int], int, float]:
    """(charges replayed from RESULTS in the window, ledger charges in the window by key, undecodable,
    the time from which the two are compared: the window's start, or later where LEDGER holds nothing
    older, its older entries compacted into the guard's snapshots or aged out)."""
    since_s, until_s = since.timestamp(), until.timestamp()
    held = await journal.held_from(nc)
    compared_from = max(since_s, held + HELD_MARGIN.total_seconds()) if held is not None else since_s
    charges: dict[str, Charged] = {}
    bad = 0
    records = await replay(nc.jetstream(), [subjects.RESULT_ALL], since - SLACK, until + SLACK)
    for when, _seq, _stream, subject, data in records:
        try:
            c = charge_of(subject, data, when.timestamp())
        except SchemaError:
            bad += 1
            continue
        if since_s <= c.at <= until_s:
            charges.setdefault(c.key, c)
    ledger: dict[str, int] = {}
    async for entry in journal.read_entries(nc):
        if isinstance(entry, Charged) and compared_from <= entry.at <= until_s:
            ledger.setdefault(entry.key, entry.cost_nanos)
    return list(charges.values()), ledger, bad, compared_from


async def _report(args: argparse.Namespace) -> int:
    cfg = config_of(args)
    calendar = Calendar(cfg.budgets.timezone)
    since, until = parse_when(args.since), parse_when(args.until)
    if args.since.strip() == "today":  # the budgets' day, not UTC's
        since = datetime.now(calendar.tz).replace(hour=0, minute=0, second=0, microsecond=0)
    if since >= until:
        raise ValueError(f"--since ({since.isoformat()}) must be before --until ({until.isoformat()})")
    nc = await connect_cli(cfg)
    try:
        charges, ledger, bad, compared_from = await collect(nc, since, until)
    finally:
        await nc.close()
    lines, total = report.aggregate(charges, args.by, calendar)
    compared = {c.key: c.cost_nanos for c in charges if c.at >= compared_from}
    check = report.compare(compared, ledger, since=compared_from if compared_from > since.timestamp() else None)
    if args.json:
        out = {
            "since": since.isoformat(),
            "until": until.isoformat(),
            "by": args.by,
            "lines": [vars(x) | {"cost_usd": x.cost_nanos / 1e9} for x in lines],
            "total": vars(total) | {"cost_usd": total.cost_nanos / 1e9},
            "ledger": {
                "equal": check.equal,
                "charges": check.ledger,
                "cost_nanos": check.ledger_nanos,
                "compared_from": datetime.fromtimestamp(compared_from, since.tzinfo).isoformat(),
            },
        }
        print(json.dumps(out, indent=2))
    else:
        print(f"spend {since.isoformat(timespec='seconds')} .. {until.isoformat(timespec='seconds')} by {args.by}")
        print(report.render(lines, total, args.by))
        if bad:
            print(f"{bad} stored results could not be read (see `orchestra audit --subject 'orch.result.>'`)")
        print(check.describe())
    return 1 if args.verify and not check.equal else 0


# --- status --------------------------------------------------------------------------------------
def run_status(args: argparse.Namespace) -> int:
    return asyncio.run(_status(args))


async def _status(args: argparse.Namespace) -> int:
    cfg = config_of(args)
    nc = await connect_cli(cfg)
    try:
        summary = await call(nc, subjects.SVC_BUDGET_SUMMARY, SummaryRequest(), LEDGER_SUMMARY, timeout=3.0)
    finally:
        await nc.close()
    if args.json:
        print(msgspec.json.format(msgspec.json.encode(summary), indent=2).decode())
        return 0
    print(
        f"budget_guard {summary.instance}: {summary.charges} charges, {fmt_usd(summary.spent_nanos, 6)} retained; "
        f"{summary.open_reservations} open reservations ({summary.open_leases} leases) "
        f"holding {fmt_usd(summary.held_nanos, 6)}"
    )
    print(f"disabled tiers: {', '.join(summary.disabled_tiers) or 'none'}")
    print(f"{'limit':<28} {'period':<10} {'spent':>12} {'held':>12} {'hard cap':>12}  used")
    for lim in summary.limits:
        cap = "-" if lim.hard_usd is None else f"${lim.hard_usd:,.2f}"
        used = "" if not lim.hard_usd else f"{(lim.spent_usd + lim.held_usd) / lim.hard_usd:.0%}"
        print(f"{lim.scope:<28} {lim.period_key:<10} {lim.spent_usd:>12.6f} {lim.held_usd:>12.6f} {cap:>12}  {used}")
    return 0


# --- simulate ------------------------------------------------------------------------------------
def _pair(text: str, flag: str) -> list[float]:
    try:
        lo, hi = (float(x) for x in text.split(":", 1))
    except ValueError as exc:
        raise ValueError(f"{flag}: expected LO:HI, e.g. 10:20, not {text!r}") from exc
    return [lo, hi]


def workload_of(args: argparse.Namespace) -> simulate.Workload:
    fields: dict[str, Any] = {}
    if args.workload:
        doc = yaml.safe_load(args.workload.read_text()) or {}
        if not isinstance(doc, dict):
            raise ValueError(f"{args.workload}: expected a mapping of Workload fields")
        fields.update(doc)
    flags = {
        "volumes_m": args.volume,
        "local_model": args.local_model,
        "together_model": args.together_model,
        "expansion_usd": args.expansion_usd,
        "electricity_now_usd": args.electricity_now,
        "electricity_expanded_usd": args.electricity_expanded,
        "output_share": args.output_share,
        "together_now_m": args.together_now and _pair(args.together_now, "--together-now"),
        "together_expanded_m": args.together_expanded and _pair(args.together_expanded, "--together-expanded"),
        "cloud_only_usd": args.cloud_only and _pair(args.cloud_only, "--cloud-only"),
    }
    fields.update({k: v for k, v in flags.items() if v is not None})
    if args.premium:
        premium: dict[str, float] = {}
        for item in args.premium:
            name, _, amount = item.partition("=")
            try:
                premium[name] = float(amount)
            except ValueError as exc:
                raise ValueError(f"--premium: expected MODEL=MILLIONS, e.g. gpt-4o=20, not {item!r}") from exc
        fields["premium_m"] = premium
    try:
        return msgspec.convert(fields, simulate.Workload)
    except msgspec.ValidationError as exc:
        raise SchemaError.from_msgspec(exc) from exc


def run_simulate(args: argparse.Namespace) -> int:
    cfg = load_config(args.config or "lab")  # the paper's prices live in the lab profile
    workload = workload_of(args)
    sim = simulate.simulate(workload, cfg)
    is_paper = workload == simulate.Workload() and cfg.profile == "lab"
    if args.json:
        rows = [
            {
                "section": r.section,
                "what": r.what,
                "paper": r.paper,
                "ours": r.ours,
                "check": r.verdict if is_paper else None,
                "note": r.note,
                "value": None if r.value is None else [r.value.lo, r.value.hi],
            }
            for r in sim.rows
        ]
        doc = {"workload": msgspec.to_builtins(sim.workload), "prices": sim.prices, "rows": rows}
        print(json.dumps(doc, indent=2))
    else:
        why = "a workload other than the paper's"
        if workload == simulate.Workload() and not is_paper:
            why = f"the prices of profile {cfg.profile!r}, not the paper's"
        print(simulate.render(sim, is_paper=is_paper, why_unchecked=why))
    return 0
