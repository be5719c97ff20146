"""The paper's diversity claim, measured: one model at four temperatures vs ``diverse`` over two families.

    .venv/bin/python -m bench.diversity [--tasks 20] [--max-tokens 96] [--samples 4]

Starts a real orchestra on this machine (an embedded nats-server with auth, one gpu_host holding
SmolLM2 135M and Gemma 3 270M from PyPI on llama.cpp, the router and the gateway) and, for each of at
least 20 programming tasks, asks through the gateway with the official openai SDK:

  (a) single:  SmolLM2 alone at temperatures 0.2 / 0.5 / 0.8 / 1.1, ``--samples`` answers each
               (16 answers, task ``tNN-single``);
  (b) diverse: ``model="diverse"`` with n = the same number of answers (task ``tNN-diverse``): the
               router spreads them over both families, temperatures, top_p and prompt variants;
  (c) control: the same ``diverse`` request restricted to SmolLM2's family (``orchestra.family``, task
               ``tNN-onefamily``): what the prompt variants and sampling give without a second family.

The figures are the diversity_monitor's own: ``orchestra diversity --json`` over the run's window
(unique approaches by normalised AST for code and MiniLM embeddings for prose, AST diversity, embedding
diversity, families), not a re-implementation. Prints a table and writes
bench/results/diversity-<time>.json with every figure and every answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openai

from actors.diversity_monitor.diversity import Answer, metrics, structure
from bus.server import EmbeddedNats
from policy.consensus.code import code_of
from tests.support.cloud import free_port
from tests.support.procs import ActorProcess
from tests.support.profile import register_server, write_profile

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
SINGLE_MODEL = "smollm2-135m"
TEMPERATURES = (0.2, 0.5, 0.8, 1.1)
TASKS = [
    "Write a Python function to reverse a string.",
    "Write a Python function that checks whether a string is a palindrome.",
    "Write a Python function that returns the n-th Fibonacci number.",
    "Write a Python function that computes the factorial of n.",
    "Write a Python function that checks whether a number is prime.",
    "Write a Python function that counts the vowels in a string.",
    "Write a Python function that removes duplicates from a list, keeping the order.",
    "Write a Python function that returns the largest element of a list.",
    "Write a Python function that merges two sorted lists into one sorted list.",
    "Write a Python function that performs binary search on a sorted list.",
    "Write a Python function that sorts a list with bubble sort.",
    "Write a Python function that flattens a nested list.",
    "Write a Python function that counts how often each word occurs in a text.",
    "Write a Python function that checks whether two strings are anagrams.",
    "Write a Python function that computes the greatest common divisor of two numbers.",
    "Write a Python function that converts a decimal number to binary.",
    "Write a Python function that returns the sum of the digits of an integer.",
    "Write a Python function that transposes a matrix given as a list of lists.",
    "Write a Python function that checks whether brackets in a string are balanced.",
    "Write a Python function that splits a list into chunks of size k.",
    "Write a Python function that capitalises the first letter of every word.",
    "Write a Python function that returns the second largest number in a list.",
]
COLUMNS = ("answers", "unique_approaches", "code_answers", "ast_diversity", "embedding_diversity", "model_families")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} vCPU, load average {os.getloadavg()[0]:.1f}, Python {platform.python_version()}"


def start_orchestra(tmp: Path, key: str) -> tuple[EmbeddedNats, list[ActorProcess], Path, int]:
    from weights.minilm import build_model

    server = EmbeddedNats(store_dir=tmp / "nats", port=0, auth_dir=tmp / "auth").start()
    register_server(server)
    data = tmp / "data"
    data.mkdir()
    (data / "keys.txt").write_text(f"bench:{key}\n")
    build_model(data / "minilm")  # the monitor's embedder (the cache's offline MiniLM)
    port = free_port()
    profile = write_profile(
        tmp / "profile",
        server.url,
        data_dir=data,
        overrides={
            "gateway": {"port": port, "api_keys_file": "keys.txt", "request_timeout": "600s"},
            "router": {"attempt_timeout": "600s"},
            "rotator": {"initial_phase": "phase_4_production"},  # both families loaded
            "cache": {"enabled": False},
        },
    )
    procs = []
    for module, args in (("actors.gpu_host", ["--host", "cpu0"]), ("actors.router", []), ("actors.gateway", [])):
        procs.append(ActorProcess(module, profile, *args).start())
    for proc in procs:
        proc.wait_log("started", timeout=180)
    return server, procs, profile, port


async def wait_ready(sdk: openai.AsyncOpenAI) -> None:
    deadline = time.monotonic() + 180
    while True:
        try:
            for model in ("smollm2-135m", "gemma3-270m"):
                await sdk.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=2
                )
            return
        except openai.APIError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)


async def single_arm(sdk: openai.AsyncOpenAI, task: str, tag: str, samples: int, max_tokens: int) -> list[str]:
    calls = [
        sdk.chat.completions.create(
            model=SINGLE_MODEL,
            messages=[{"role": "user", "content": task}],
            temperature=t,
            max_tokens=max_tokens,
            extra_body={"orchestra": {"task": tag}},
        )
        for t in TEMPERATURES
        for _ in range(samples)
    ]
    return [r.choices[0].message.content or "" for r in await asyncio.gather(*calls)]


async def diverse_arm(
    sdk: openai.AsyncOpenAI, task: str, tag: str, n: int, max_tokens: int, family: str | None = None
) -> list[dict[str, Any]]:
    """``diverse`` with n answers; ``family`` restricts it to one family (the control arm: the same
    temperatures, top_p and prompt variants, one family)."""
    ext: dict[str, Any] = {"task": tag, "tiers": ["local"]}
    if family:
        ext["family"] = family
    reply = await sdk.chat.completions.create(
        model="diverse",
        messages=[{"role": "user", "content": task}],
        n=n,
        max_tokens=max_tokens,
        extra_body={"orchestra": ext},
    )
    return [{**(c.model_extra or {})["orchestra"], "text": c.message.content or ""} for c in reply.choices]


def monitor_figures(profile: Path, since: datetime) -> dict[str, Any]:
    """The diversity_monitor's own figures: `orchestra diversity --json` over the run's window."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from cli import main; main()",
            "--config",
            str(profile),
            "diversity",
            "--json",
            "--since",
            since.isoformat(),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if out.returncode != 0:
        raise RuntimeError(f"orchestra diversity failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout)


def table(tasks: dict[str, dict[str, Any]], n_tasks: int, arms: list[str]) -> tuple[list[str], dict[str, Any]]:
    """One row per task: per arm unique approaches / code answers / AST diversity / embedding diversity."""
    head = " | ".join(f"{arm + ': approaches code AST emb':>36}" for arm in arms)
    lines = [f"{'task':<5} | {head}"]
    sums: dict[str, list[float]] = {}

    def cell(m: dict[str, Any], k: str, fmt: str) -> str:
        return fmt.format(m[k]) if k in m else "-"

    for i in range(n_tasks):
        cells = []
        for arm in arms:
            m = tasks.get(f"t{i:02d}-{arm}", {})
            cells.append(
                f"{cell(m, 'unique_approaches', '{:.0f}'):>18} {cell(m, 'code_answers', '{:.0f}'):>5} "
                f"{cell(m, 'ast_diversity', '{:.3f}'):>5} {cell(m, 'embedding_diversity', '{:.3f}'):>5}"
            )
            for k in COLUMNS:
                if k in m:
                    sums.setdefault(f"{arm}.{k}", []).append(float(m[k]))
        lines.append(f"t{i:02d}   | " + " | ".join(f"{c:>36}" for c in cells))
    summary = {
        k: {
            "total": round(sum(v), 3),
            "median": round(statistics.median(v), 4),
            "mean": round(statistics.mean(v), 4),
            "tasks": len(v),
        }
        for k, v in sorted(sums.items())
    }
    for arm in arms:
        a, code = summary.get(f"{arm}.unique_approaches", {}), summary.get(f"{arm}.code_answers", {})
        ast_d, emb = summary.get(f"{arm}.ast_diversity", {}), summary.get(f"{arm}.embedding_diversity", {})
        lines.append(
            f"{arm:<10} approaches {a.get('total', 0):.0f} (median/task {a.get('median', 0):g}); "
            f"code answers {code.get('total', 0):.0f}; AST diversity median {ast_d.get('median', float('nan')):.3f} "
            f"({ast_d.get('tasks', 0)} tasks); embedding diversity median {emb.get('median', float('nan')):.3f}"
        )
    return lines, summary


def code_only(rows: list[dict[str, Any]], arms: list[str]) -> dict[str, Any]:
    """Per arm: answers that are Python code and their unique approaches, by the monitor's own functions
    (``diversity.metrics`` over the code answers of each task: its AST clustering, nothing re-implemented).
    Prose answers count as approaches in the monitor's figure; this separates code from prose."""
    out: dict[str, Any] = {}
    for arm in arms:
        per_task = []
        for row in rows:
            texts = [a if isinstance(a, str) else a["text"] for a in row.get(arm, [])]
            shapes = [structure(code_of(t)) for t in texts]
            code = [
                Answer(at=0.0, request_id=str(k), model="", family="", shape=sh) for k, sh in enumerate(shapes) if sh
            ]
            per_task.append(metrics(code).unique_approaches if code else 0)
            out.setdefault(f"{arm}.code_answers", []).append(len(code))
        out[f"{arm}.code_approaches"] = per_task
    return {k: {"total": sum(v), "median": statistics.median(v), "per_task": v} for k, v in sorted(out.items()) if v}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    key = "sk-bench-" + secrets.token_hex(12)
    tasks = TASKS[: args.tasks]
    answers_per_task = len(TEMPERATURES) * args.samples
    with tempfile.TemporaryDirectory(prefix="bench-diversity-") as tmpdir:
        tmp = Path(tmpdir)
        server, procs, profile, port = start_orchestra(tmp, key)
        try:
            sdk = openai.AsyncOpenAI(api_key=key, base_url=f"http://127.0.0.1:{port}/v1", max_retries=0, timeout=900)
            await wait_ready(sdk)
            started = datetime.now(UTC)
            load_before = os.getloadavg()[0]
            rows: list[dict[str, Any]] = []
            for i, task in enumerate(tasks):
                t0 = time.monotonic()
                single = await single_arm(sdk, task, f"t{i:02d}-single", args.samples, args.max_tokens)
                t1 = time.monotonic()
                diverse = await diverse_arm(sdk, task, f"t{i:02d}-diverse", answers_per_task, args.max_tokens)
                t2 = time.monotonic()
                row = {"task": task, "single": single, "diverse": diverse, "single_s": t1 - t0, "diverse_s": t2 - t1}
                if args.control:
                    tag, fam = f"t{i:02d}-onefamily", "smollm"
                    row["onefamily"] = await diverse_arm(sdk, task, tag, answers_per_task, args.max_tokens, fam)
                    row["onefamily_s"] = time.monotonic() - t2
                rows.append(row)
                print(f"t{i:02d} single {t1 - t0:.0f}s diverse {t2 - t1:.0f}s: {task}", flush=True)
            await sdk.close()
            figures = monitor_figures(profile, started)
        finally:
            for proc in reversed(procs):
                proc.stop()
            server.stop()
    arms = ["single", "diverse", *(["onefamily"] if args.control else [])]
    lines, summary = table(figures["tasks"], len(tasks), arms)
    code = code_only(rows, arms)
    lines += [
        f"{arm:<10} code only: {code[f'{arm}.code_answers']['total']} code answers, "
        f"{code[f'{arm}.code_approaches']['total']} unique code approaches "
        f"(median/task {code[f'{arm}.code_approaches']['median']:g})"
        for arm in arms
    ]
    return {
        "when": started.isoformat(),
        "machine": machine(),
        "load_average_at_start": load_before,
        "max_tokens": args.max_tokens,
        "answers_per_task_and_arm": answers_per_task,
        "single": {"model": SINGLE_MODEL, "temperatures": TEMPERATURES, "samples": args.samples},
        "monitor": {k: v for k, v in figures.items() if k != "tasks"},
        "per_task": figures["tasks"],
        "summary": summary,
        "code_only": code,
        "table": lines,
        "runs": rows,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--tasks", type=int, default=20, help=f"programming tasks (at most {len(TASKS)}; default 20)")
    p.add_argument("--samples", type=int, default=4, help="answers per temperature in the single arm (default 4)")
    p.add_argument("--max-tokens", type=int, default=96)
    p.add_argument(
        "--no-control",
        dest="control",
        action="store_false",
        help="skip the control arm (diverse restricted to SmolLM2: same sampling and prompt variants, one family)",
    )
    args = p.parse_args(argv)
    args.tasks = min(args.tasks, len(TASKS))
    report = asyncio.run(run(args))
    print("\n".join(report["table"]))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"diversity-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
