"""``orchestra deploy render``: a lab's deployment files from its profile (bus/deploy.py): the NATS
cluster's node configs, systemd units, Kubernetes manifests. Files holding secrets are written 0600."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from bus.connect import credentials_dir
from bus.credentials import AuthDir
from bus.deploy import SECRET_FILES, Install, render
from bus.errors import NatsServerError
from cli.common import config_of


def register(sub: Any) -> None:
    p = sub.add_parser("deploy", help="deployment files for a lab, rendered from its profile")
    verbs = p.add_subparsers(dest="verb", required=True)
    r = verbs.add_parser("render", help="write the NATS cluster configs, systemd units and Kubernetes manifests")
    r.add_argument("--out", required=True, help="directory to write into")
    r.add_argument("--auth-dir", help="the credentials directory (default: the profile's bus.auth.credentials_dir)")
    r.add_argument("--prefix", default=Install.prefix, help="the checkout on each machine (systemd)")
    r.add_argument("--image", default=Install.image, help="the orchestra image (Kubernetes)")
    r.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_of(args)
    folder = Path(args.auth_dir) if args.auth_dir else credentials_dir(cfg.bus, cfg.data_dir)
    if folder is None:
        raise NatsServerError("bus.auth.credentials_dir is off in this profile: pass --auth-dir")
    auth = AuthDir(folder)
    auth.ensure()
    files = render(cfg, auth.users(), Install(prefix=args.prefix, image=args.image), route=auth.route())
    out = Path(args.out)
    for rel, text in sorted(files.items()):
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        secret = any(rel.startswith(p) for p in SECRET_FILES)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        if secret:
            os.chmod(path, 0o600)
    print(f"{len(files)} files written under {out} (credentials from {folder})", file=sys.stderr)
    return 0
