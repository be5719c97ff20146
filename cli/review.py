"""``orchestra review``: the review queue (escalated requests) and the measured quality, as the operator.

orchestra review [list] [--all] [--json]          pending escalations, newest last (--all: decided too)
orchestra review show <request_id> [--json]        the prompt and every answer, numbered
orchestra review accept <request_id> [--answer N]  the answer is right (default: the vote's winner)
orchestra review reject <request_id> [--answer N|TEXT] [--text TEXT]
                                                    the vote's answer is wrong; N names the right one
                                                    among the others, TEXT writes it
orchestra review quality [--json]                  measured quality per model (premium agreement, reviews,
                                                   evaluator verdicts)

A decision is a ``review.decide`` command (only the operator may publish it); the diversity_monitor
records it, credits and debits the models, and confirms with a ``review.decided`` event, which the
command waits for (``--wait``).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import socket
import time
from datetime import UTC, datetime
from typing import Any

from nats.js.errors import BucketNotFoundError

from bus import subjects
from bus.kv import TypedKV
from cli.common import config_of, connect_cli
from cli.confirm import command_confirmed
from schemas.codec import Codec
from schemas.commands import DecideReview
from schemas.events import ReviewDecided
from schemas.review import ModelQuality, ReviewItem


def register(sub: Any) -> None:
    r = sub.add_parser("review", help="the review queue: escalated requests to accept or reject")
    r.set_defaults(run=run_review, review_command="list", all=False, json=False)
    rsub = r.add_subparsers(dest="review_command", metavar="list | show | accept | reject | quality")
    ls = rsub.add_parser("list", help="pending escalations (--all: decided ones too)")
    ls.add_argument("--all", action="store_true")
    ls.add_argument("--json", action="store_true", help="JSON lines")
    show = rsub.add_parser("show", help="one escalation: the prompt and every answer")
    show.add_argument("request_id")
    show.add_argument("--json", action="store_true")
    for verb, helptext in (("accept", "the answer is right"), ("reject", "the vote's answer is wrong")):
        p = rsub.add_parser(verb, help=helptext)
        p.add_argument("request_id")
        more = " (default: the vote's winner)" if verb == "accept" else ", or its text"
        p.add_argument("--answer", help="the right answer's number" + more)
        if verb == "reject":
            p.add_argument("--text", help="the right answer, written (also when it is a number)")
        p.add_argument("--by", help="who decides (default user@host)")
        p.add_argument("--wait", type=float, default=5.0, help="seconds to wait for the monitor's confirmation")
    q = rsub.add_parser("quality", help="measured quality per model")
    q.add_argument("--json", action="store_true")


def run_review(args: argparse.Namespace) -> int:
    return asyncio.run(_review(args))


async def _review(args: argparse.Namespace) -> int:
    cfg = config_of(args)
    nc = await connect_cli(cfg)
    try:
        js = nc.jetstream()
        if args.review_command == "quality":
            return show_quality(await _items(js, subjects.KV_QUALITY, ModelQuality), args.json)
        items = await _items(js, subjects.KV_REVIEWS, ReviewItem)
        if args.review_command == "list":
            return show_list(items, args.all, args.json)
        item = items.get(args.request_id)
        if item is None:
            raise _error(f"no review {args.request_id!r} (see `orchestra review list --all`)")
        if args.review_command == "show":
            return show_item(item, args.json)
        return await _decide(nc, item, args)
    finally:
        await nc.close()


def _error(text: str) -> Exception:
    from cli import CliError

    return CliError(text)


async def _items(js: Any, bucket: str, kind: type[Any]) -> dict[str, Any]:
    try:
        return await (await TypedKV.open(js, bucket, Codec(kind))).items()
    except BucketNotFoundError:
        return {}  # the bucket is made when an actor first starts: nothing recorded yet


def _when(at: float) -> str:
    return f"{datetime.fromtimestamp(at, UTC):%Y-%m-%d %H:%M:%S}"


def _models(item: ReviewItem) -> str:
    return ", ".join(r.provenance.model for r in item.responses)


def show_list(items: dict[str, ReviewItem], everything: bool, as_json: bool) -> int:
    shown = sorted((i for i in items.values() if everything or i.status == "pending"), key=lambda i: i.queued_at)
    if as_json:
        for i in shown:
            print(json.dumps({**_row(i), "status": i.status}, sort_keys=True))
        return 0
    if not shown:
        print("no reviews pending" if not everything else "no reviews")
        return 0
    for i in shown:
        prompt = " ".join(i.prompt.split())[:60]
        print(
            f"{_when(i.queued_at)} {i.status:<8} {i.request_id}  consistency {i.consistency:.2f} < "
            f"{i.threshold:.2f}  [{_models(i)}]  {prompt}"
        )
    return 0


def _row(i: ReviewItem) -> dict[str, Any]:
    return {
        "request_id": i.request_id,
        "queued_at": _when(i.queued_at),
        "consistency": i.consistency,
        "threshold": i.threshold,
        "models": [r.provenance.model for r in i.responses],
        "prompt": i.prompt,
    }


def show_item(i: ReviewItem, as_json: bool) -> int:
    if as_json:
        row = {**_row(i), "status": i.status, "winner": i.winner, "answer": i.answer, "text": i.text}
        row["answers"] = [
            {"model": r.provenance.model, "family": r.provenance.family, "text": r.text} for r in i.responses
        ]
        print(json.dumps(row, sort_keys=True))
        return 0
    print(f"review {i.request_id} ({i.status}), queued {_when(i.queued_at)} UTC")
    print(f"consistency {i.consistency:.2f} under the threshold {i.threshold:.2f}")
    print(f"prompt:\n  {i.prompt}")
    for n, r in enumerate(i.responses):
        mark = " (the vote's answer)" if n == i.winner else ""
        print(f"[{n}] {r.provenance.model} ({r.provenance.family}){mark}:\n  {r.text.strip()}")
    if i.status != "pending":
        chosen = f"answer {i.answer}" if i.answer is not None else "no answer"
        print(f"{i.status} by {i.decided_by or '?'}: {chosen}" + (f"; written answer: {i.text}" if i.text else ""))
    return 0


def show_quality(records: dict[str, ModelQuality], as_json: bool) -> int:
    rows = sorted(records.values(), key=lambda q: q.model)
    if as_json:
        for q in rows:
            print(json.dumps({f: getattr(q, f) for f in q.__struct_fields__ if f != "recent"} | {"samples": q.samples}))
        return 0
    if not rows:
        print("no measured quality yet")
        return 0
    for q in rows:
        measured = f"{q.measured:.1f}" if q.measured is not None else "-"
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(q.skipped.items())) or "none"
        print(
            f"{q.model}: measured {measured} over {q.samples} check(s); premium agreed {q.agreed}/{q.compared}; "
            f"reviews accepted {q.accepted}, rejected {q.rejected}; evaluator approved {q.approved}/{q.evaluated}; "
            f"validations skipped: {skipped}"
        )
    return 0


def _command(item: ReviewItem, args: argparse.Namespace) -> DecideReview:
    answer, text = None, getattr(args, "text", None)
    if args.answer is not None and text is not None:
        raise _error("--answer or --text, not both")
    if args.answer is not None:
        if args.answer.strip().isdigit():
            answer = int(args.answer)
        elif args.review_command == "reject":
            text = args.answer
        else:
            raise _error(f"--answer: a number 0..{len(item.responses) - 1} to accept")
    if answer is not None and not 0 <= answer < len(item.responses):
        raise _error(f"review {item.request_id} has answers 0..{len(item.responses) - 1}, not {answer}")
    if args.review_command == "accept" and answer is None and item.winner is None:
        raise _error(f"review {item.request_id} has no vote winner: name the answer with --answer N")
    by = args.by or f"{getpass.getuser()}@{socket.gethostname()}"
    return DecideReview(
        request_id=item.request_id, verdict=args.review_command, answer=answer, text=text, by=by, at=time.time()
    )


async def _decide(nc: Any, item: ReviewItem, args: argparse.Namespace) -> int:
    if item.status != "pending":
        print(f"review {item.request_id} was {item.status} already by {item.decided_by or 'someone'}")
        return 0
    cmd = _command(item, args)
    ev = await command_confirmed(
        nc,
        cmd,
        "review.decided",
        lambda e: isinstance(e, ReviewDecided) and e.request_id == item.request_id,
        wait=args.wait,
    )
    if isinstance(ev, ReviewDecided):
        print(
            f"{cmd.verdict}ed {item.request_id}: credited {', '.join(ev.credited) or 'no model'}; "
            f"debited {', '.join(ev.debited) or 'no model'}"
        )
        return 0
    raise _error(
        f"the decision on {item.request_id} is stored, but no diversity_monitor confirmed it within "
        f"{args.wait:g}s (is it running?)"
    )
