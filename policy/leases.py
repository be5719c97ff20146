"""The router's lease book (pure: no I/O, no clock of its own; ``now`` is epoch seconds passed in).

Per key (tier, provider, model, client key) it keeps the current lease, a hold the budget_guard granted
this router, and what is left undrawn of it. An attempt with worst case ``w`` and request deadline ``D``
draws from it locally when the lease is inside its draw window, ``D`` is not past the lease's deadline
and at least ``w`` is left::

    draw(key, w, D, now)        -> (lease id, w) | None      None: ask for a lease, or reserve alone
    ask(key, w, D, now)         -> Ask | None                 the lease to ask for (None: reserve alone)
    granted(key, ask, ...)      -> Lease | None               the lease it replaces (retire it)
    denied(key, ask, remaining, now)                         reserve per attempt for a while
    due(now)                    -> [Lease]                    out of their window or idle: retire them
    retire(scope=None)          -> [Lease]                    all of them (or those counting in a scope)

Retiring a lease releases ``lease.left`` (what was not drawn) and nothing else: what was drawn stays
held by the guard until each draw is settled by its result, or the lease expires.

Sizing: a key's first lease holds ``initial_draws`` worst cases; a lease used up inside its window
doubles the next one, a lease retired mostly undrawn halves it; always within [``min_usd``,
``max_usd``] and never more than ``fraction`` of what the guard last said is left under the tightest
hard cap of the key (a lease that cannot hold two attempts is not asked for: reserve per attempt).
"""

from __future__ import annotations

from dataclasses import dataclass

from policy.limits import scopes_of
from policy.money import to_nanos
from schemas.config.ops import LeaseCfg

Key = tuple[str, str | None, str, str | None]  # (tier, provider, model, client_key)


@dataclass(frozen=True)
class LeasePolicy:
    window: float
    idle: float
    initial_draws: int
    min_nanos: int
    max_nanos: int
    fraction: float
    backoff: float

    @classmethod
    def of(cls, cfg: LeaseCfg) -> LeasePolicy:
        return cls(
            window=float(cfg.window),
            idle=float(cfg.idle),
            initial_draws=cfg.initial_draws,
            min_nanos=to_nanos(cfg.min_usd),
            max_nanos=to_nanos(cfg.max_usd),
            fraction=cfg.fraction,
            backoff=float(cfg.backoff),
        )


@dataclass
class Lease:
    id: str  # its reservation id (= the request id it was asked under)
    key: Key
    amount: int  # granted, nano-dollars
    deadline: float  # the latest request deadline it serves
    granted_at: float
    drawn: int = 0
    draws: int = 0
    last_draw: float = 0.0

    @property
    def left(self) -> int:
        return self.amount - self.drawn


@dataclass(frozen=True)
class Ask:
    request_id: str
    amount: int  # nano-dollars
    deadline: float


@dataclass
class _KeyState:
    lease: Lease | None = None
    size: int = 0  # the next lease's amount; 0: not sized yet
    remaining: int | None = None  # under the tightest hard cap, as the guard last said (None: no cap)
    denied_until: float = 0.0


class LeaseBook:
    def __init__(self, policy: LeasePolicy, prefix: str) -> None:
        self.policy = policy
        self.prefix = prefix  # "lease-<router>-<run nonce>": ids never repeat across restarts
        self._n = 0
        self._keys: dict[Key, _KeyState] = {}

    def leases(self) -> list[Lease]:
        return [k.lease for k in self._keys.values() if k.lease is not None]

    def usable(self, lease: Lease, w: int, deadline: float, now: float) -> bool:
        return now < lease.granted_at + self.policy.window and deadline <= lease.deadline and lease.left >= w

    def draw(self, key: Key, w: int, deadline: float, now: float) -> tuple[str, int] | None:
        state = self._keys.get(key)
        lease = state.lease if state is not None else None
        if lease is None or not self.usable(lease, w, deadline, now):
            return None
        lease.drawn += w
        lease.draws += 1
        lease.last_draw = now
        return lease.id, w

    def ask(self, key: Key, w: int, deadline: float, now: float) -> Ask | None:
        """The lease to ask for, when :meth:`draw` found none to draw from; None: reserve per attempt."""
        state = self._keys.setdefault(key, _KeyState())
        if now < state.denied_until:
            return None
        p = self.policy
        size = state.size or w * p.initial_draws
        lease = state.lease
        if lease is not None and lease.left < w and now < lease.granted_at + p.window:
            size = max(size, 2 * lease.amount)  # used up inside its window: grants come easily, grow
        size = min(max(size, p.min_nanos), p.max_nanos)
        if state.remaining is not None:
            size = min(size, int(state.remaining * p.fraction))
        if size < 2 * w or size <= 0:
            return None  # a lease for fewer than two attempts saves nothing
        state.size = size
        self._n += 1
        return Ask(request_id=f"{self.prefix}-{self._n}", amount=size, deadline=deadline + p.window)

    def granted(self, key: Key, ask: Ask, amount: int, remaining: int | None, now: float) -> Lease | None:
        """The guard granted ``ask`` (``amount`` nanos): it is the key's lease now. Returns the lease it
        replaces, to be retired."""
        state = self._keys.setdefault(key, _KeyState())
        state.remaining = remaining
        old, state.lease = state.lease, Lease(ask.request_id, key, amount, ask.deadline, now, last_draw=now)
        return old

    def denied(self, key: Key, ask: Ask, remaining: int | None, now: float) -> None:
        """The lease was denied (or no answer came): per-attempt reservations, exact as without
        leases, for ``backoff``; the next lease is half as large (and sized under ``remaining``)."""
        state = self._keys.setdefault(key, _KeyState())
        if remaining is not None:
            state.remaining = remaining
        state.size = ask.amount // 2
        state.denied_until = now + self.policy.backoff

    def reported(self, key: Key, remaining: int | None) -> None:
        """What a per-attempt reservation's reply said is left under the key's tightest hard cap."""
        state = self._keys.get(key)
        if state is not None:
            state.remaining = remaining

    def due(self, now: float) -> list[Lease]:
        """Leases past their draw window, or not drawn from for ``idle``: taken out, to be retired."""
        p, out = self.policy, []
        for state in self._keys.values():
            lease = state.lease
            if lease is None:
                continue
            if now >= lease.granted_at + p.window or now - lease.last_draw >= p.idle:
                if lease.drawn * 4 < lease.amount:  # mostly undrawn: smaller next time
                    state.size = max(p.min_nanos, lease.amount // 2)
                state.lease = None
                out.append(lease)
        return out

    def retire(self, scope: str | None = None) -> list[Lease]:
        """Take out every lease (or those of keys counting in ``scope``, e.g. ``tier:premium``)."""
        out = []
        for key, state in self._keys.items():
            if state.lease is not None and (scope is None or scope in scopes_of(*key)):
                out.append(state.lease)
                state.lease = None
        return out
