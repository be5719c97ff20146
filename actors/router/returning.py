"""Waiting for a gpu_host that is coming back. Pure: plain data in, plain data out.

A host that stopped heartbeating without saying goodbye (its state still says ``up``: kill -9, a crash,
a machine cut off) is expected back: its supervisor (`orchestra up`, systemd, Kubernetes) restarts it, and
the dispatches it had not acknowledged wait for it in DISPATCH, redelivered to the restarted process. So
when no live target can take a request, the router does not fail it with "unavailable": it plans the
request on such a host as if it were back (``plan_or_wait``), and an attempt already dispatched to it
stays there (``keep_waiting``) — within the attempt's timeout and the request's deadline, which still end
it with a typed error if the host never returns. Whenever a live target exists (another host, a cloud
tier), the request moves there instead. A host that stopped cleanly (``up`` false) is not waited for."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import msgspec

from policy.routing import Plan, plan_request
from policy.targets import Snapshot, host_up
from schemas.config import OrchestraConfig
from schemas.dispatch import Target
from schemas.errors import ErrorInfo
from schemas.request import GenerateRequest


def returning_hosts(cfg: OrchestraConfig, snap: Snapshot) -> set[str]:
    """Hosts whose heartbeat stopped while their state still says up."""
    return {h for h, s in snap.hosts.items() if h in cfg.hosts and s.up and not host_up(cfg, snap, h)}


def assuming_back(snap: Snapshot, hosts: set[str]) -> Snapshot:
    """The snapshot with these hosts' last heartbeat now: to plan as if they were back."""
    fresh = {h: msgspec.structs.replace(snap.hosts[h], heartbeat_at=snap.now) for h in hosts}
    return dataclasses.replace(snap, hosts={**snap.hosts, **fresh})


def plan_or_wait(request: GenerateRequest, cfg: OrchestraConfig, snap: Snapshot) -> Plan | ErrorInfo:
    """``plan_request``; when nothing live can answer, the plan on hosts that are coming back."""
    plan = plan_request(request, cfg, snap)
    if not isinstance(plan, ErrorInfo) or plan.code != "unavailable":
        return plan
    hosts = returning_hosts(cfg, snap)
    if not hosts:
        return plan
    again = plan_request(request, cfg, assuming_back(snap, hosts))
    if isinstance(again, ErrorInfo):
        return plan
    return dataclasses.replace(again, reason=f"waiting for gpu_host {', '.join(sorted(hosts))} to return")


def keep_waiting(target: Target, rest: list[Target], returning: set[str], alive: Callable[[str], bool]) -> bool:
    """An attempt on ``target``'s host, which stopped heartbeating: stay (True) when that host is coming
    back and no later target of the plan is live (a cloud target counts as live: its tier decides)."""
    if not target.host or target.host not in returning:
        return False
    return not any(t.host is None or alive(t.host) for t in rest)
