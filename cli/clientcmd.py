"""``orchestra client add|list|remove NAME``: NATS identities for training jobs.

    orchestra client add job7      # writes <data_dir>/auth/clients/job7.json (0600), tells the server
    orchestra client list
    orchestra client remove job7

A client may publish requests under its own name and read only its own results and chunks
(bus/permissions.py). The embedded server re-reads its users at once (SIGHUP to its own PID, from its
pid file); a lab's own servers get the users of ``orchestra nats-config`` (cli/natscmd.py).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any

from bus.connect import credentials_dir
from bus.credentials import AuthDir
from bus.errors import NatsServerError
from cli import upcluster
from cli.common import config_of
from cli.natscmd import embedded_for


def register(sub: Any) -> None:
    p = sub.add_parser("client", help="NATS identities for training jobs (add, list, remove)")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    add = verbs.add_parser("add", help="create a client's credentials (or show the existing ones' file)")
    add.add_argument("name")
    add.set_defaults(run=run_add)
    ls = verbs.add_parser("list", help="the clients that have credentials")
    ls.set_defaults(run=run_list)
    rm = verbs.add_parser("remove", help="delete a client's credentials; it can no longer connect")
    rm.add_argument("name")
    rm.set_defaults(run=run_remove)


def _auth(args: argparse.Namespace) -> tuple[Any, AuthDir]:
    cfg = config_of(args)
    folder = credentials_dir(cfg.bus, cfg.data_dir)
    if folder is None:
        raise NatsServerError("bus.auth.credentials_dir is off in this profile: its NATS users are managed elsewhere")
    return cfg, AuthDir(folder)


def reload_embedded(cfg: Any) -> str:
    """Rewrite the embedded server's users (or every node's, under `orchestra up --cluster`) and make it
    re-read them, if it runs."""
    told = upcluster.reload_users(cfg, credentials_dir(cfg.bus, cfg.data_dir))
    if told:
        return f"the local cluster's nats-servers (pids {', '.join(map(str, told))}) re-read their users"
    if not cfg.bus.embedded.enabled:
        return "the profile's NATS servers are external: add the user with `orchestra nats-config` there"
    server = embedded_for(cfg)
    server.write_config()
    try:
        pid = int(server.pid_path.read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError):
        return "the embedded nats-server is not running: it reads the new user when it starts"
    return f"the embedded nats-server (pid {pid}) re-read its users"


def run_add(args: argparse.Namespace) -> int:
    cfg, auth = _auth(args)
    auth.ensure()
    _creds, created = auth.add_client(args.name)
    path = auth.client_file(args.name)
    print(f"{'created' if created else 'exists'}: {path} (user client-{args.name}, mode 0600)")
    print(reload_embedded(cfg))
    print(f"use it with bus.client.OrchestraClient.connect({cfg.bus.servers[0]!r}, {str(path)!r})")
    return 0


def run_list(args: argparse.Namespace) -> int:
    _cfg, auth = _auth(args)
    names = auth.clients()
    if not names:
        print("no clients (orchestra client add NAME)")
    for name in names:
        print(f"{name:<32} {auth.client_file(name)}")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    cfg, auth = _auth(args)
    if not auth.remove_client(args.name):
        print(f"no client {args.name!r}", file=sys.stderr)
        return 1
    print(f"removed client-{args.name}; {reload_embedded(cfg)}")
    return 0
