"""``orchestra ask``: publish one GenerateRequest on NATS and print the answer (streamed or whole)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from typing import Any

import msgspec
import nats

from bus import subjects
from bus.provision import provision
from bus.publish import store
from cli import evaluate
from cli.common import config_of, connect_cli
from schemas.base import CAPABILITIES, PRIORITIES, STRATEGIES, TIERS
from schemas.codec import CHUNK, OUTCOME, encode
from schemas.errors import SchemaError
from schemas.request import CachePolicy, ChatMessage, GenerateRequest, Requirements, Sampling, make_request
from schemas.result import GenerateError, GenerateResult, Outcome


def register(sub: Any) -> None:
    p = sub.add_parser("ask", help="send one request through the orchestra and print the answer")
    p.add_argument("prompt", help="the prompt ('-' reads stdin)")
    p.add_argument("--model", help="a library model, or auto / diverse / ensemble (default auto)")
    p.add_argument("--system", help="system message (chat)")
    p.add_argument("--completion", action="store_true", help="send a raw completion prompt instead of a chat")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int)
    p.add_argument("--stop", action="append", default=[], help="stop sequence (repeatable)")
    p.add_argument("--stream", action="store_true", help="print tokens as they come")
    p.add_argument("--capability", choices=CAPABILITIES)
    p.add_argument("--strategy", choices=STRATEGIES)
    p.add_argument("--tier", action="append", choices=TIERS, help="allowed tier (repeatable)")
    p.add_argument("--route", help="a declarative route from routes.yaml")
    p.add_argument("--fanout", type=int, help="diverse / ensemble: number of answers")
    p.add_argument("--priority", default="normal", choices=PRIORITIES)
    p.add_argument("--task", help="task id (groups requests for diversity metrics)")
    p.add_argument("--no-cache", action="store_true", help="do not answer from the cache")
    p.add_argument("--no-store", action="store_true", help="do not store the answer in the cache")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds (the request's deadline)")
    p.add_argument("--json", action="store_true", help="print the whole result as JSON")
    p.add_argument(
        "--evaluate",
        nargs="?",
        const="",
        metavar="MODEL",
        help="grade every answer with an evaluator (default: the current phase's first evaluator)",
    )
    p.set_defaults(run=run)


def build_request(args: argparse.Namespace) -> GenerateRequest:
    text = sys.stdin.read() if args.prompt == "-" else args.prompt
    mode = args.model if args.model in ("diverse", "ensemble") else "single"
    messages = None
    prompt = None
    if args.completion:
        prompt = text
    else:
        messages = ([ChatMessage(role="system", content=args.system)] if args.system else []) + [
            ChatMessage(role="user", content=text)
        ]
    try:
        return make_request(
            messages=messages,
            prompt=prompt,
            model=args.model,
            mode=mode,
            stream=args.stream,
            timeout_s=args.timeout,
            priority=args.priority,
            task=args.task,
            sampling=Sampling(
                temperature=args.temperature,
                top_p=args.top_p,
                max_tokens=args.max_tokens,
                seed=args.seed,
                stop=args.stop,
            ),
            requirements=Requirements(
                capability=args.capability,
                strategy=args.strategy or "auto",
                tiers=args.tier or [],
                route=args.route,
                fanout=args.fanout,
            ),
            cache=CachePolicy(no_cache=args.no_cache, no_store=args.no_store),
        )
    except SchemaError:
        raise
    except (TypeError, ValueError) as exc:
        raise SchemaError(str(exc)) from exc


def summary(result: GenerateResult) -> str:
    u = result.usage
    parts = [
        result.model,
        result.family,
        f"{result.tier}/{result.target}",
        f"{u.input_tokens}+{u.output_tokens} tokens",
        f"${result.cost_usd:.6f}",
        f"{result.timings.total_ms:.0f} ms",
    ]
    if result.cached:
        parts.append(f"cached (similarity {result.similarity or 1.0:.3f})")
    if result.consensus:
        parts.append(
            f"consistency {result.consensus.consistency:.2f}" + (" ESCALATED" if result.consensus.escalated else "")
        )
    return "[" + " · ".join(parts) + "]"


async def ask(args: argparse.Namespace) -> Outcome | None:
    cfg = config_of(args)
    request = build_request(args)
    nc = await connect_cli(cfg)
    outcome: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
    streamed = False

    async def on_result(msg: Any) -> None:
        if not outcome.done():
            outcome.set_result(OUTCOME.decode(msg.data))

    async def on_chunk(msg: Any) -> None:
        nonlocal streamed
        chunk = CHUNK.decode(msg.data)
        if chunk.text:
            streamed = True
            sys.stdout.write(chunk.text)
            sys.stdout.flush()

    try:
        await nc.subscribe(subjects.result(request.id), cb=on_result)
        if request.stream and not args.json:
            await nc.subscribe(subjects.chunks(request.id), cb=on_chunk)
        js = nc.jetstream()
        with contextlib.suppress(nats.errors.Error, TimeoutError):  # no leader this second: the publish waits
            await provision(js, cfg.bus.streams)
        await store(  # retried through a cluster's leader election: stored once (Msg-Id)
            js, subjects.request(request.priority, request.id), encode(request),
            headers={"Nats-Msg-Id": request.id}, timeout=args.timeout,
        )  # fmt: skip
        try:
            result = await asyncio.wait_for(outcome, args.timeout + 2)
        except TimeoutError:
            return None
        graded = await _evaluate(nc, js, cfg, args, request, result)
    finally:
        await nc.close()
    if args.json:
        print(msgspec.json.format(encode(result), indent=2).decode())
    elif isinstance(result, GenerateResult):
        if streamed:
            print()
        else:
            print(result.text)
            for r in result.responses:
                print(f"\n--- {r.provenance.model} ({r.provenance.family}, T={r.provenance.temperature}) ---\n{r.text}")
        print(summary(result), file=sys.stderr)
    for line in graded:
        print(line)
    return result


async def _evaluate(
    nc: Any, js: Any, cfg: Any, args: argparse.Namespace, request: GenerateRequest, result: Outcome
) -> list[str]:
    """``--evaluate``: every answer graded by the evaluator (cli/evaluate.py); lines to print."""
    if getattr(args, "evaluate", None) is None or not isinstance(result, GenerateResult):
        return []
    model = await evaluate.evaluator_for(js, cfg, args.evaluate or None)
    if model is None:
        return ["--- no evaluator: the current phase names none (phases.<phase>.evaluators) ---"]
    task_text = request.prompt if request.prompt is not None else (request.messages or [])[-1].content
    return evaluate.report(model, await evaluate.grade(nc, task_text, result, model, args.timeout))


def run(args: argparse.Namespace) -> int:
    result = asyncio.run(ask(args))
    if result is None:
        hint = "is a router running? see `orchestra status`"
        print(f"orchestra: error: timeout: no result within {args.timeout:g}s ({hint})", file=sys.stderr)
        return 1
    if isinstance(result, GenerateError):
        field = f" (field {result.error.field})" if result.error.field else ""
        print(f"orchestra: error: {result.error.code}: {result.error.message}{field}", file=sys.stderr)
        return 1
    return 0
