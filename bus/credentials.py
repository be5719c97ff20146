"""Each role's NATS credentials: generated once under the data dir, read by the role itself.

    <data_dir>/auth/                 0700
        router.json ...              0600  {"user": "router", "password": "<43 random characters>"}
        operator.json                0600  the orchestra CLI
        clients/<name>.json          0600  a training job (``orchestra client add NAME``)
        cluster-route.json           0600  what the nodes of a NATS cluster present to each other (routes)

``AuthDir.ensure()`` writes what is missing (never rewrites a secret); ``AuthDir.users()`` lists every
user with its permissions from :mod:`bus.permissions`, for the nats-server config; ``AuthDir.load(role)``
is what a connection uses. A lab copies to each machine only the files of the roles that run there.
The secrets are written only to these files and to the server's config (0600), never to a log.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from bus import permissions
from bus.errors import ConnectError


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str

    def __repr__(self) -> str:  # never the secret, whatever prints it
        return f"Credentials(user={self.user!r})"


@dataclass(frozen=True)
class User:
    credentials: Credentials
    grants: permissions.Grants


def _write_secret_file(path: Path, content: str) -> None:
    """Create ``path`` with mode 0600 from the start (no moment where it is readable by others)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(content)
    os.replace(tmp, path)


def read_credentials(path: Path) -> Credentials:
    try:
        doc = json.loads(path.read_text())
        return Credentials(user=str(doc["user"]), password=str(doc["password"]))
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConnectError(f"cannot read NATS credentials from {path}: {type(exc).__name__}") from exc


def write_credentials(path: Path, user: str) -> Credentials:
    creds = Credentials(user=user, password=secrets.token_urlsafe(32))
    _write_secret_file(path, json.dumps({"user": creds.user, "password": creds.password}) + "\n")
    return creds


ROUTE_USER = "orchestra-route"


class AuthDir:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def role_file(self, role: str) -> Path:
        return self.path / f"{role}.json"

    def client_file(self, name: str) -> Path:
        return self.path / "clients" / f"{name}.json"

    def ensure(self) -> list[str]:
        """Create the credentials of every role that has none yet; returns the roles created."""
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.path, 0o700)
        made = []
        for role in permissions.ROLES:
            if not self.role_file(role).exists():
                write_credentials(self.role_file(role), role)
                made.append(role)
        return made

    def add_client(self, name: str) -> tuple[Credentials, bool]:
        """A training job's credentials (created, or the existing ones): (credentials, created)."""
        user = permissions.client_user(name)
        path = self.client_file(name)
        if path.exists():
            return read_credentials(path), False
        return write_credentials(path, user), True

    def remove_client(self, name: str) -> bool:
        path = self.client_file(permissions.client_user(name)[len(permissions.CLIENT_PREFIX) :])
        if not path.exists():
            return False
        path.unlink()
        return True

    def clients(self) -> list[str]:
        folder = self.path / "clients"
        return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []

    def route(self) -> Credentials:
        """The cluster's route credentials (made on first use): only nats-server nodes hold them."""
        path = self.path / "cluster-route.json"
        if not path.exists():
            self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
            return write_credentials(path, ROUTE_USER)
        return read_credentials(path)

    def load(self, role: str) -> Credentials:
        """The credentials of an actor role or of the operator."""
        return read_credentials(self.role_file(role))

    def users(self) -> list[User]:
        """Every user the server knows: the roles, then the clients."""
        found = [User(self.load(role), permissions.grants(role)) for role in permissions.ROLES]
        for name in self.clients():
            creds = read_credentials(self.client_file(name))
            found.append(User(creds, permissions.client_grants(name)))
        return found


def authorization_block(users: list[User]) -> dict[str, object]:
    """The nats-server ``authorization`` section for these users (plain secrets: the file is 0600)."""
    entries = []
    for u in users:
        entry: dict[str, object] = {"user": u.credentials.user, "password": u.credentials.password}
        perms = u.grants.as_config()
        if perms:
            entry["permissions"] = perms
        entries.append(entry)
    return {"users": entries}
