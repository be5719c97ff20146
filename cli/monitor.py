"""``orchestra diversity`` and ``orchestra alerts``: the monitor's figures from stored history.

orchestra diversity --since 1h [--until now] [--task T] [--json] [--lexical]
    replays the stored results of the window and computes the diversity figures (overall and per
    task) with the same code as the monitor, embeddings from the cache's offline MiniLM
orchestra alerts [list] [--since 7d] [--all] [--json]
    the alerts folded from the stored alert events: open ones (or all), state, remediations
orchestra alerts ack <alert_id> [--by NAME] [--wait 5]
    publishes AckAlert and waits for the monitor's AlertAcknowledged
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import socket
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from actors.diversity_monitor.embedding import load_embedder, normalise
from actors.diversity_monitor.errors import EmbedderUnavailable
from actors.diversity_monitor.rules import Alert, Engine
from actors.diversity_monitor.window import Observations, answers_of
from bus import subjects
from bus.replay import replay
from cli.common import config_of, connect_cli, parse_when
from cli.confirm import command_confirmed
from schemas.codec import EVENT, OUTCOME
from schemas.commands import AckAlert
from schemas.errors import SchemaError

ALERT_SUBJECTS = list(subjects.ALERT_FEED)
COLUMNS = [
    ("answers", "answers", "{:.0f}"),
    ("unique_approaches", "approaches", "{:.0f}"),
    ("diversity_score", "score", "{:.3f}"),
    ("embedding_diversity", "embedding", "{:.3f}"),
    ("ast_diversity", "ast", "{:.3f}"),
    ("model_families", "families", "{:.0f}"),
    ("top_model_share", "top share", "{:.2f}"),
    ("temperature_variance", "temp var", "{:.4f}"),
]


def register(sub: Any) -> None:
    p = sub.add_parser("diversity", help="diversity of the answers in a time window (replayed results)")
    p.add_argument("--since", default="1h", help="start: 30m, 2h, 7d, today, or ISO time (default 1h)")
    p.add_argument("--until", default="now", help="end (default now)")
    p.add_argument("--task", help="only this task")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.add_argument("--lexical", action="store_true", help="group prose by word overlap (no embedding model)")
    p.set_defaults(run=run_diversity)

    a = sub.add_parser("alerts", help="list alerts, or acknowledge one")
    a.set_defaults(run=run_alerts, since="7d", all=False, json=False)
    asub = a.add_subparsers(dest="alerts_command", metavar="list | ack")
    ls = asub.add_parser("list", help="open alerts (--all: every alert in the window)")
    ls.add_argument("--since", default="7d", help="how far back to read alert history (default 7d)")
    ls.add_argument("--all", action="store_true", help="resolved alerts too")
    ls.add_argument("--json", action="store_true", help="JSON lines")
    ack = asub.add_parser("ack", help="acknowledge an alert (stops its escalation)")
    ack.add_argument("alert_id")
    ack.add_argument("--by", help="who acknowledges (default user@host)")
    ack.add_argument("--wait", type=float, default=5.0, help="seconds to wait for the monitor's confirmation")


# --- diversity -------------------------------------------------------------------------------------
def run_diversity(args: argparse.Namespace) -> int:
    return asyncio.run(_diversity(args))


async def _diversity(args: argparse.Namespace) -> int:
    cfg = config_of(args)
    since, until = parse_when(args.since), parse_when(args.until)
    nc = await connect_cli(cfg)
    try:
        records = await replay(nc.jetstream(), [subjects.RESULT_FINAL], since, until)
    finally:
        await nc.close()
    obs = Observations(horizon=(until - since).total_seconds() + 1)
    for when, _seq, _stream, _subject, data in records:
        try:
            outcome = OUTCOME.decode(data)
        except SchemaError:
            continue
        obs.add_outcome(outcome, when.timestamp())
        obs.add_answers(answers_of(outcome, when.timestamp()))
    span = (since.timestamp(), until.timestamp())
    answers = [a for a in obs.window_answers(*span) if args.task is None or a.group == args.task]
    embedded = False
    if not args.lexical and any(a.group for a in answers):
        try:
            embedder = await asyncio.to_thread(load_embedder, cfg)
            grouped = [i for i, a in enumerate(answers) if a.group is not None]  # only those are compared
            vectors = normalise(await embedder.embed([answers[i].text for i in grouped]))
            for k, i in enumerate(grouped):
                answers[i] = replace(answers[i], vector=vectors[k])
            embedded = True
        except EmbedderUnavailable as exc:
            print(f"orchestra: note: {exc}; prose grouped by word overlap", file=sys.stderr)
    summary = obs.summary(*span, task=args.task, answers=answers)
    report = {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "results": obs.total(*span).requests,
        "embeddings": "minilm" if embedded else "lexical",
        "overall": summary.overall,
        "tasks": {t: {**m.as_dict(), "families": m.families} for t, m in summary.tasks.items()},
    }
    if args.json:
        print(json.dumps(report, sort_keys=True))
        return 0
    count = len(answers) if args.task is not None else int(summary.overall.get("answers", 0))
    print(
        f"diversity {since:%Y-%m-%d %H:%M:%S} .. {until:%Y-%m-%d %H:%M:%S} UTC: {count} answers, "
        f"{len(summary.tasks)} task(s), prose grouped by {'MiniLM embeddings' if embedded else 'word overlap'}"
    )
    if not count:
        return 0
    print("overall: " + "  ".join(f"{k} {v:g}" for k, v in sorted(summary.overall.items())))
    if summary.tasks:
        width = max(4, *(len(t) for t in summary.tasks))
        print(f"{'task':<{width}}  " + "  ".join(f"{title:>10}" for _, title, _ in COLUMNS))
        for task, m in summary.tasks.items():
            figures = m.as_dict()
            cells = [fmt.format(figures[key]) if key in figures else "-" for key, _, fmt in COLUMNS]
            print(f"{task:<{width}}  " + "  ".join(f"{c:>10}" for c in cells))
    return 0


# --- alerts ----------------------------------------------------------------------------------------
def run_alerts(args: argparse.Namespace) -> int:
    return asyncio.run(_alerts(args))


async def load_alerts(nc: Any, rules: Any, since: datetime) -> Engine:
    engine = Engine(rules)
    for _when, _seq, _stream, _subject, data in await replay(nc.jetstream(), ALERT_SUBJECTS, since, datetime.now(UTC)):
        try:
            engine.restore(EVENT.decode(data))
        except SchemaError:
            continue
    return engine


def _row(a: Alert) -> dict[str, Any]:
    return {
        "alert_id": a.alert_id,
        "rule": a.rule,
        "severity": a.severity,
        "state": a.state,
        "raised_at": datetime.fromtimestamp(a.raised_at, UTC).isoformat(),
        "acked_by": a.acked_by or None,
        "remediations": a.remediations,
        "context": a.context,
    }


async def _alerts(args: argparse.Namespace) -> int:
    cfg = config_of(args)
    nc = await connect_cli(cfg)
    try:
        ack = args.alerts_command == "ack"  # no subcommand: list
        engine = await load_alerts(nc, cfg.alerts.rules, parse_when("7d" if ack else args.since))
        if ack:
            return await _ack(nc, engine, args)
    finally:
        await nc.close()
    alerts = sorted(engine.by_id.values(), key=lambda a: a.raised_at)
    shown = [a for a in alerts if args.all or a.open]
    if args.json:
        for a in shown:
            print(json.dumps(_row(a), sort_keys=True, default=str))
        return 0
    if not shown:
        print("no open alerts" if not args.all else "no alerts in the window")
        return 0
    for a in shown:
        when = datetime.fromtimestamp(a.raised_at, UTC)
        extra = f" acked by {a.acked_by}" if a.acked_at is not None and a.acked_by else ""
        fixes = f" remediation: {', '.join(a.remediations)}" if a.remediations else ""
        print(
            f"{when:%Y-%m-%d %H:%M:%S} {a.severity.upper():<8} {a.state:<12} {a.alert_id}  {a.description}"
            f"{extra}{fixes}"
        )
    return 0


async def _ack(nc: Any, engine: Engine, args: argparse.Namespace) -> int:
    from cli import CliError

    alert = engine.by_id.get(args.alert_id)
    if alert is None:
        raise CliError(f"no alert {args.alert_id!r} in the last 7 days (see `orchestra alerts list --all`)")
    if not alert.open:
        print(f"alert {alert.alert_id} is resolved already; nothing to acknowledge")
        return 0
    if alert.acked_at is not None:
        print(f"alert {alert.alert_id} was acknowledged already by {alert.acked_by or 'someone'}")
        return 0
    by = args.by or f"{getpass.getuser()}@{socket.gethostname()}"
    cmd = AckAlert(alert_id=alert.alert_id, by=by, at=time.time(), reason="orchestra alerts ack")
    confirmed = await command_confirmed(
        nc, cmd, "alert.acknowledged", lambda e: getattr(e, "alert_id", None) == alert.alert_id, wait=args.wait
    )
    if confirmed is not None:
        print(f"acknowledged {alert.alert_id} ({alert.description}) as {by}")
        return 0
    raise CliError(
        f"the acknowledgement of {alert.alert_id} is stored, but no diversity_monitor confirmed it "
        f"within {args.wait:g}s (is it running?)"
    )
