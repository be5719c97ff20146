"""Run candidate code on examples in a subprocess with a time limit, a memory limit and no network (I/O).

    runs = await run_candidates([code_a, code_b], ["reverse('abc')"], Limits())
    runs[0].results   # ["ok:'cba'"], or "error:<ExceptionType>" / "timeout" per example
    runs[0].failure   # None, or why the whole run failed ("timeout", "exit -9", ...)

What isolates a candidate (defence in depth for answers from our own models, not a jail for hostile code):
- a fresh process: ``python -I -S -B`` (no site, no user site, no PYTHON* variables, no .pyc written), an
  empty environment,
  a new empty working directory that is removed afterwards;
- when the kernel lets unprivileged users do it (probed once), ``unshare -rn``: a new user and network
  namespace, in which no interface but a down loopback exists — no network at all;
- limits the process sets on itself before any candidate code runs, which it cannot raise again:
  RLIMIT_AS (address space: a memory hog gets MemoryError), RLIMIT_CPU, RLIMIT_FSIZE = 0 (no file
  grows), RLIMIT_NPROC = 0 (no fork, so no shell or helper process), RLIMIT_CORE = 0;
- a PEP 578 audit hook, which cannot be removed once added, refusing sockets, subprocesses, exec,
  fork, signals to other processes, ctypes (the way around the hook) and opening files for writing;
- a timer per example (SIGALRM) and a wall-clock limit on the whole run: the parent kills the
  process group of a candidate that ignores the timer (an infinite loop that catches everything).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

RESULT_MARK = "\x00orchestra-sandbox\x00"

RUNNER = r"""
import io, json, resource, signal, sys
data = json.loads(sys.stdin.read())
mem, cpu = data["memory_bytes"], data["cpu_s"]
for limit, value in ((resource.RLIMIT_AS, mem), (resource.RLIMIT_CPU, cpu), (resource.RLIMIT_FSIZE, 0),
                     (resource.RLIMIT_NPROC, 0), (resource.RLIMIT_CORE, 0)):
    hard = resource.getrlimit(limit)[1]
    value = value if hard == resource.RLIM_INFINITY else min(value, hard)
    resource.setrlimit(limit, (value, value))
REFUSED = ("socket.", "subprocess.", "os.system", "os.exec", "os.fork", "os.forkpty", "os.posix_spawn",
           "os.spawn", "os.kill", "os.killpg", "signal.pthread_kill", "ctypes.", "pty.", "os.remove",
           "os.unlink", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.truncate", "shutil.", "webbrowser.")
def hook(event, args):
    if event.startswith(REFUSED):
        raise PermissionError("sandbox refuses " + event)
    if event == "import" and args[0].split(".")[0] in ("ctypes", "_ctypes"):
        raise PermissionError("sandbox refuses ctypes")
    if event == "open" and ((isinstance(args[1], str) and any(c in args[1] for c in "wax+")) or (args[2] or 0) & 3):
        raise PermissionError("sandbox refuses writing files")
class Timeout(BaseException):
    pass
def alarm(signum, frame):
    raise Timeout()
signal.signal(signal.SIGALRM, alarm)
real_stdout = sys.stdout
sys.addaudithook(hook)
def run(fn):
    sink = io.StringIO()
    sys.stdout = sink
    signal.setitimer(signal.ITIMER_REAL, data["example_s"])
    try:
        return "ok:" + repr(fn())[:500]
    except Timeout:
        return "timeout"
    except BaseException as exc:
        return "error:" + type(exc).__name__
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        sys.stdout = real_stdout
ns = {"__name__": "candidate"}
loaded = run(lambda: exec(compile(data["code"], "<candidate>", "exec"), ns))
results = []
if loaded.startswith("ok:"):
    funcs = [v for k, v in ns.items() if callable(v) and getattr(v, "__module__", None) == "candidate"]
    for expr in data["examples"]:
        code = compile(expr, "<example>", "eval")
        missing = [n for n in code.co_names if n not in ns and not hasattr(__builtins__, n)]
        if missing and len(funcs) == 1:
            ns[missing[0]] = funcs[0]  # the prompt's name for the one function the candidate wrote
        results.append(run(lambda: eval(code, ns)))
else:
    results = [loaded] * len(data["examples"])
real_stdout.write(MARK + json.dumps(results))
real_stdout.flush()
"""


@dataclass(frozen=True)
class Limits:
    memory_bytes: int = 256 * 1024 * 1024
    cpu_s: int = 5
    example_s: float = 1.0
    wall_s: float = 10.0


DEFAULT_LIMITS = Limits()


@dataclass
class Run:
    results: list[str] = field(default_factory=list)
    failure: str | None = None


@functools.cache
def network_namespace() -> bool:
    """Whether ``unshare -rn`` works here (user namespaces allowed); probed once per process."""
    exe = shutil.which("unshare")
    if exe is None:
        return False
    try:
        done = subprocess.run([exe, "-rn", "true"], capture_output=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def command() -> list[str]:
    python = [sys.executable, "-I", "-S", "-B", "-c", RUNNER.replace("MARK", repr(RESULT_MARK))]
    return ["unshare", "-rn", *python] if network_namespace() else python


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, 9)


async def run_candidate(code: str, examples: list[str], limits: Limits = DEFAULT_LIMITS) -> Run:
    payload = {
        "code": code,
        "examples": examples,
        "memory_bytes": limits.memory_bytes,
        "cpu_s": limits.cpu_s,
        "example_s": limits.example_s,
    }
    workdir = tempfile.mkdtemp(prefix="orch-sandbox-")
    try:
        proc = await asyncio.create_subprocess_exec(
            *command(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env={},
            cwd=workdir,
            start_new_session=True,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(json.dumps(payload).encode()), limits.wall_s)
        except TimeoutError:
            _kill(proc.pid)
            await proc.wait()
            return Run(results=["timeout"] * len(examples), failure="timeout")
        except BaseException:  # cancelled (the router is stopping): no candidate outlives its judge
            _kill(proc.pid)
            with contextlib.suppress(BaseException):  # reap it, so that no transport outlives the loop
                await asyncio.wait_for(proc.wait(), 5)
            raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    text = out.decode("utf-8", "replace")
    if RESULT_MARK not in text:
        return Run(results=[f"exit {proc.returncode}"] * len(examples), failure=f"exit {proc.returncode}")
    try:
        results = json.loads(text.rsplit(RESULT_MARK, 1)[1])
    except ValueError:
        return Run(results=["garbled"] * len(examples), failure="garbled output")
    return Run(results=[str(r) for r in results])


async def run_candidates(codes: list[str], examples: list[str], limits: Limits = DEFAULT_LIMITS) -> list[Run]:
    """One sandboxed process per candidate, side by side."""
    return list(await asyncio.gather(*(run_candidate(c, examples, limits) for c in codes)))
