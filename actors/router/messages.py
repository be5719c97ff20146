"""Everything the router reacts to, as one union: ``Router.handle`` matches on it.

RequestArrived(d)           a request from REQUESTS (held until its outcome is stored)
RequestDeadLettered(d, why) a request the consumer gave up on: its client still gets a typed error
OutcomeSeen(msg)            orch.result.<origin>.<id>: an outcome was stored (every instance hears it)
AttemptFailedSeen(msg)      orch.result.<origin>.<id>.failed: a worker's attempt failed
AttemptTimedOut(p, attempt) an attempt's timer went off
DeadlinePassed(p)           a request's deadline timer went off
HostsTick()                 every second: fail over attempts on gpu_hosts that stopped heartbeating
QueuesTick()                every 2 s: queue depths, backlog marks, QueueState in KV
LeasesTick()                retire budget leases out of their window
"""

from __future__ import annotations

import msgspec
from nats.aio.msg import Msg

from actors.router.pending import Pending
from bus.consumer import Delivery


class RequestArrived(msgspec.Struct, frozen=True):
    d: Delivery


class RequestDeadLettered(msgspec.Struct, frozen=True):
    d: Delivery
    reason: str


class OutcomeSeen(msgspec.Struct, frozen=True):
    msg: Msg


class AttemptFailedSeen(msgspec.Struct, frozen=True):
    msg: Msg


class AttemptTimedOut(msgspec.Struct, frozen=True):
    p: Pending
    attempt: int


class DeadlinePassed(msgspec.Struct, frozen=True):
    p: Pending


class HostsTick(msgspec.Struct, frozen=True):
    pass


class QueuesTick(msgspec.Struct, frozen=True):
    pass


class LeasesTick(msgspec.Struct, frozen=True):
    pass


RouterMsg = (
    RequestArrived
    | RequestDeadLettered
    | OutcomeSeen
    | AttemptFailedSeen
    | AttemptTimedOut
    | DeadlinePassed
    | HostsTick
    | QueuesTick
    | LeasesTick
)
