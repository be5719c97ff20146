"""``orchestra config check|show``: validate profiles (every problem, with its file and path)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec

from schemas.config import ConfigError, load_config
from schemas.config.load import REPO_CONFIGS, resolve_profile
from schemas.config.units import enc_hook


def register(sub: Any) -> None:
    p = sub.add_parser("config", help="check or show a configuration profile")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = csub.add_parser("check", help="validate profiles; exit 1 on any problem")
    check.add_argument("profiles", nargs="*", help="profile names or paths; 'all' = every profile under configs/")
    check.set_defaults(run=run_check)
    show = csub.add_parser("show", help="print the resolved profile as JSON (secrets are references only)")
    show.set_defaults(run=run_show)


def describe(path: str | None) -> str:
    cfg = load_config(path)
    local = len(cfg.local_models())
    return (
        f"{len(cfg.models)} models ({local} local, {len(cfg.models) - local} cloud), {len(cfg.cards)} cards, "
        f"{len(cfg.hosts)} hosts, {len(cfg.providers)} providers, {len(cfg.phases)} phases, {len(cfg.routes)} routes, "
        f"{len(cfg.alerts.rules)} alert rules, {len(cfg.budgets.limits)} budgets"
    )


def run_check(args: argparse.Namespace) -> int:
    profiles: list[str | None] = list(args.profiles) or [args.config]
    if profiles == ["all"]:
        profiles = [str(p) for p in sorted(REPO_CONFIGS.iterdir()) if p.is_dir()]
    failed = 0
    for profile in profiles:
        shown = str(resolve_profile(profile))
        try:
            print(f"ok: {shown}: {describe(profile)}")
        except ConfigError as exc:
            failed += 1
            print(f"FAILED: {shown}", file=sys.stderr)
            for line in exc.problems:
                print(f"  {line}", file=sys.stderr)
    return 1 if failed else 0


def run_show(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    print(msgspec.json.format(msgspec.json.encode(cfg, enc_hook=enc_hook), indent=2).decode())
    return 0
