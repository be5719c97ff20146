"""The ``orchestra`` command. Each subcommand lives in its own module and registers itself.

Errors are one clear line on stderr (``orchestra: error: ...``), never a traceback, unless --debug.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from types import ModuleType

from bus.errors import BusError
from bus.log import setup_logging
from cli import ask, audit, clientcmd, configcmd, cost, deploycmd, model, natscmd, status, tier, up, watch
from cli import monitor as monitor_cli
from cli import review as review_cli
from cli import rotator as rotator_cli
from schemas.config import ConfigError
from schemas.errors import SchemaError

MODULES: list[ModuleType] = [up, natscmd, ask, watch, audit, status, configcmd, cost, tier, clientcmd, deploycmd]
MODULES.append(model)  # orchestra model quantize / variants
MODULES.append(monitor_cli)  # orchestra diversity / alerts (the diversity_monitor's)
MODULES.append(review_cli)  # orchestra review (the diversity_monitor's review queue and measured quality)
MODULES.append(rotator_cli)  # orchestra phase / rotate (the rotator's)


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestra", description="LLM Orchestra: one front door to a lab's LLMs.")
    parser.add_argument(
        "--config", help="profile directory, file, or name under configs/ (default: $ORCHESTRA_CONFIG or local)"
    )
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        sys.exit(run(args) or 0)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:  # `orchestra audit | head`: the reader went away, like any unix tool
        sys.stderr.close()
        sys.exit(0)
    except ConfigError as exc:
        for line in exc.problems:
            print(f"orchestra: config error: {line}", file=sys.stderr)
        sys.exit(2)
    except (TimeoutError, CliError, BusError, OSError, SchemaError, ValueError) as exc:
        if args.debug:
            logging.getLogger("orchestra").exception("failed")
        print(f"orchestra: error: {exc or type(exc).__name__}", file=sys.stderr)
        sys.exit(1)
