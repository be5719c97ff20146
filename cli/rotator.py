"""``orchestra phase`` and ``orchestra rotate``: the training phase and its rotation, from the command line.

orchestra phase [show] [--json]      the current phase: since when, by whom, its groups, the rotation
                                     picks and history, every phase model's tier, the next rotation
orchestra phase list                 the phases of the profile (the current one marked)
orchestra phase set <name> [--reason R] [--wait 10]
                                     publishes SetPhase and waits for the rotator's phase.changed
orchestra rotate now [--wait 60]     publishes Rotate and waits for the rotator's rotation.planned
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import socket
import time
import uuid
from datetime import datetime
from typing import Any

from nats.aio.client import Client as NATS

from actors.rotator.actor import PHASE_KEY
from bus import subjects
from bus.errors import ConnectError
from bus.kv import TypedKV
from bus.provision import provision
from cli.common import config_of, connect_cli
from policy import phases
from schemas.codec import EVENT, Codec, encode
from schemas.commands import Command, Rotate, SetPhase
from schemas.config.root import OrchestraConfig
from schemas.events import Event, PhaseChanged, RotationPlanned
from schemas.state import PhaseState


def register(sub: Any) -> None:
    p = sub.add_parser("phase", help="show, list or set the training phase (the rotator applies it)")
    p.set_defaults(run=run_phase, phase_command="show", json=False)
    cmds = p.add_subparsers(dest="phase_command", metavar="show | list | set")
    show = cmds.add_parser("show", help="the current phase, its rotation and tiers")
    show.add_argument("--json", action="store_true")
    cmds.add_parser("list", help="the phases of the profile")
    st = cmds.add_parser("set", help="change the phase (SetPhase), wait for the rotator's phase.changed")
    st.add_argument("name")
    st.add_argument("--reason", default="", help="why (shown in the command and the logs)")
    st.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the rotator (default 10)")

    r = sub.add_parser("rotate", help="rotate the current phase's models now")
    rc = r.add_subparsers(dest="rotate_command", metavar="now", required=True)
    now = rc.add_parser("now", help="choose the next rotation picks at once (Rotate), wait for the plan")
    now.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the rotator's plan")
    r.set_defaults(run=run_rotate)


def run_phase(args: argparse.Namespace) -> int:
    return asyncio.run(_phase(args))


def run_rotate(args: argparse.Namespace) -> int:
    return asyncio.run(_rotate(args))


def _by() -> str:
    return f"operator:{getpass.getuser()}@{socket.gethostname()}"


async def _current(nc: NATS, cfg: OrchestraConfig) -> PhaseState | None:
    js = nc.jetstream()
    await provision(js, cfg.bus.streams)
    kv: TypedKV[PhaseState] = await TypedKV.open(js, subjects.KV_PHASE, Codec(PhaseState))
    return await kv.get(PHASE_KEY)


def describe(cfg: OrchestraConfig, state: PhaseState) -> dict[str, Any]:
    phase = cfg.phases[state.phase]
    tiers = phases.tiers(cfg, phase, state.rotation)
    named = set(phases.wanted_names(phase, state.rotation)) | set(phase.keep_alive)
    named |= {m for g in phase.groups.values() for m in g.rotation_pool}
    frequency = float(phase.rotation_frequency) if phase.rotation_frequency is not None else None
    return {
        "phase": state.phase,
        "purpose": phase.purpose,
        "since": _iso(state.since),
        "by": state.by,
        "tier_policy": phase.tier_policy,
        "groups": {
            g: {
                "always_loaded": c.always_loaded,
                "rotation_pool": c.rotation_pool,
                "rotation_size": c.rotation_size,
                "now": state.rotation.get(g, []),
            }
            for g, c in phase.groups.items()
        },  # fmt: skip
        "rotation_frequency_s": frequency,
        "rotations": state.rotations,
        "rotated_at": _iso(state.rotated_at) if state.rotated_at else None,
        "next_rotation": _iso(state.rotated_at + frequency) if frequency and state.rotated_at else None,
        "history": state.history[-5:],
        "tiers": {m: tiers[m] for m in sorted(named) if m in tiers},
    }


async def _phase(args: argparse.Namespace) -> int:
    from cli import CliError

    cfg = config_of(args)
    if args.phase_command == "list":
        try:
            nc = await connect_cli(cfg)
        except ConnectError:
            state = None  # no orchestra running: the phases of the profile, none marked
        else:
            try:
                state = await _current(nc, cfg)
            finally:
                await nc.close()
        for name, phase in cfg.phases.items():
            mark = "*" if state is not None and state.phase == name else " "
            every = f"rotates every {_span(float(phase.rotation_frequency))}" if phase.rotation_frequency else "fixed"
            print(f"{mark} {name}: {phase.purpose or '-'} ({every}, {phase.tier_policy})")
        return 0
    if args.phase_command == "set" and args.name not in cfg.phases:
        raise CliError(f"unknown phase {args.name!r} (phases: {', '.join(cfg.phases)})")
    nc = await connect_cli(cfg)
    try:
        state = await _current(nc, cfg)
        if args.phase_command == "show":
            if state is None:
                raise CliError("no phase is set yet: the rotator sets rotator.initial_phase when it starts")
            if state.phase not in cfg.phases:
                raise CliError(f"the current phase {state.phase!r} is not in this profile")
            info = describe(cfg, state)
            print(json.dumps(info, indent=2) if args.json else _render(info))
            return 0
        if state is not None and state.phase == args.name:
            print(f"already in phase {args.name} (since {_iso(state.since)}, by {state.by or '?'})")
            return 0
        cmd = SetPhase(phase=args.name, by=_by(), reason=args.reason, at=time.time(), command_id=uuid.uuid4().hex)
        event = await _send_and_wait(nc, cmd, subjects.event_of("phase.changed"), args.wait,
                                     lambda e: isinstance(e, PhaseChanged) and e.phase == args.name)  # fmt: skip
        if not isinstance(event, PhaseChanged):
            raise CliError(f"SetPhase {args.name} is stored, but no rotator applied it within {args.wait:g}s "
                           "(is it running? `orchestra status`)")  # fmt: skip
        print(f"phase {event.previous or '-'} -> {event.phase} (by {event.by or '?'})")
        return 0
    finally:
        await nc.close()


async def _rotate(args: argparse.Namespace) -> int:
    from cli import CliError

    cfg = config_of(args)
    nc = await connect_cli(cfg)
    try:
        state = await _current(nc, cfg)
        if state is None:
            raise CliError("no phase is set yet: is the rotator running? (`orchestra status`)")
        cmd = Rotate(phase=state.phase, by=_by(), at=time.time(), command_id=uuid.uuid4().hex)
        event = await _send_and_wait(nc, cmd, subjects.event_of("rotation.planned"), args.wait,
                                     lambda e: isinstance(e, RotationPlanned) and "rotate now" in e.reason)  # fmt: skip
        if not isinstance(event, RotationPlanned):
            raise CliError(f"Rotate is stored, but no rotator planned it within {args.wait:g}s (is it running?)")
        print(f"phase {event.phase}: {event.reason}")
        for step in event.steps or ["(nothing to change)"]:
            print(f"  {step}")
        return 0
    finally:
        await nc.close()


async def _send_and_wait(nc: NATS, cmd: Command, subject: str, wait: float, match: Any) -> Event | None:
    sub = await nc.subscribe(subject)
    try:
        await nc.flush()
        await nc.jetstream().publish(subjects.command(cmd), encode(cmd), headers={"Nats-Msg-Id": cmd.command_id})
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = await sub.next_msg(timeout=left)
            except TimeoutError:
                break
            event = EVENT.decode(msg.data)
            if match(event):
                return event
        return None
    finally:
        await sub.unsubscribe()


def _render(info: dict[str, Any]) -> str:
    lines = [f"phase {info['phase']}: {info['purpose'] or '-'}",
             f"  since {info['since']} (by {info['by'] or '?'}); tier policy {info['tier_policy']}"]  # fmt: skip
    if info["rotation_frequency_s"]:
        nxt = f"; next {info['next_rotation']}" if info["next_rotation"] else ""
        lines.append(f"  rotates every {_span(info['rotation_frequency_s'])}: {info['rotations']} rotation(s){nxt}")
    for g, c in info["groups"].items():
        pool = f"; rotating {c['now'] or '-'} of {c['rotation_pool']} ({c['rotation_size']} at a time)"
        lines.append(f"  {g}: always {c['always_loaded'] or '-'}" + (pool if c["rotation_pool"] else ""))
    if info["history"]:
        lines.append(f"  recent picks (oldest first): {info['history']}")
    lines.append("  tiers: " + ", ".join(f"{m} {t}" for m, t in info["tiers"].items()))
    return "\n".join(lines)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
