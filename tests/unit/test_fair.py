"""Per-key fair queueing (bus/fair.py): the order slots are granted in, the per-key waiting bound,
and a waiter that gives up; plus the gateway's early refusal of a prompt no model of the key could take."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import SimpleNamespace

import msgspec
import pytest

from bus.fair import HEAVY_EVERY, FairGate, FairQueue, GateFull, no_slot
from clients import cache as cache_client
from policy import keys as kp
from schemas.cache import CacheReply
from schemas.config import load_config
from schemas.request import ChatMessage, GenerateRequest, Sampling


def test_keys_take_turns_whatever_their_backlog() -> None:
    """A key with five items waiting and two keys with one each: the others do not wait for the five."""
    queue: FairQueue[str] = FairQueue()
    for i in range(5):
        queue.push("flood", f"f{i}")
    queue.push("alice", "a0")
    queue.push("bob", "b0")
    queue.push("alice", "a1")
    order = []
    while (turn := queue.pop()) is not None:
        order.append(turn[1])
    assert order == ["f0", "a0", "b0", "f1", "a1", "f2", "f3", "f4"]
    assert len(queue) == 0


def test_removed_item_is_not_served() -> None:
    """A waiter that gave up leaves the queue; its key leaves the turn when it was the last."""
    queue: FairQueue[str] = FairQueue()
    queue.push("a", "x")
    queue.push("b", "y")
    assert queue.remove("a", "x")
    assert not queue.remove("a", "x")
    assert queue.waiting("a") == 0
    assert queue.pop() == ("b", "y")
    assert queue.pop() is None


async def test_gate_grants_the_next_slot_to_the_key_whose_turn_it_is() -> None:
    """One slot, held by the flood: its three queued requests and a later one of another key; when the
    slot frees, the other key's request is served second, not fourth."""
    gate = FairGate(slots=1, max_waiting=10)
    await gate.acquire("flood")
    served: list[str] = []

    async def one(key: str, name: str) -> None:
        async with gate.slot(key):
            served.append(name)
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(one("flood", f"f{i}")) for i in range(3)]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(one("alice", "a0")))
    await asyncio.sleep(0)
    assert gate.queue.waiting("flood") == 3 and gate.queue.waiting("alice") == 1
    gate.release()
    await asyncio.gather(*tasks)
    assert served == ["f0", "a0", "f1", "f2"]
    assert gate.busy == 0


async def test_gate_refuses_a_key_beyond_its_waiting_bound() -> None:
    """A key with max_waiting requests waiting is refused (GateFull), another key is not."""
    gate = FairGate(slots=1, max_waiting=2)
    await gate.acquire("flood")
    waiters = [asyncio.create_task(gate.acquire("flood")) for _ in range(2)]
    await asyncio.sleep(0)
    assert gate.full("flood") and not gate.full("alice")
    with pytest.raises(GateFull):
        await gate.acquire("flood")
    other = asyncio.create_task(gate.acquire("alice"))
    await asyncio.sleep(0)
    assert gate.queue.waiting("alice") == 1
    for task in [*waiters, other]:
        task.cancel()
    await asyncio.gather(*waiters, other, return_exceptions=True)
    assert len(gate.queue) == 0


def taking_turns(gate: FairGate, served: list[str]) -> Callable[[str, str, bool], Awaitable[None]]:
    """A request of ``key`` (heavy or light) that records its ``name`` in ``served`` once it holds a slot."""

    async def one(key: str, name: str, heavy: bool) -> None:
        async with gate.slot(key, heavy):
            served.append(name)
            await asyncio.sleep(0)

    return one


async def test_a_light_request_is_granted_before_a_waiting_heavy_one() -> None:
    """One slot held; a heavy request (a megabyte body) waits, then a light one of another key arrives:
    the light one is served first, the heavy one next; both count against their key's waiting bound."""
    gate = FairGate(slots=1, max_waiting=1)
    await gate.acquire("x")
    served: list[str] = []
    one = taking_turns(gate, served)

    heavy = asyncio.create_task(one("flood", "heavy", True))
    await asyncio.sleep(0)
    light = asyncio.create_task(one("alice", "light", False))
    await asyncio.sleep(0)
    assert gate.heavy.waiting("flood") == 1 and gate.queue.waiting("alice") == 1
    assert gate.full("flood") and gate.full("alice") and not gate.full("bob")
    gate.release()
    await asyncio.gather(heavy, light)
    assert served == ["light", "heavy"]
    assert gate.busy == 0 and len(gate.heavy) == 0


async def test_a_heavy_request_is_not_starved_by_a_stream_of_light_ones() -> None:
    """Light requests keep arriving: the waiting heavy one is granted after HEAVY_EVERY of them."""
    gate = FairGate(slots=1, max_waiting=100)
    await gate.acquire("x")
    served: list[str] = []
    one = taking_turns(gate, served)

    tasks = [asyncio.create_task(one("flood", "heavy", True))]
    await asyncio.sleep(0)
    tasks += [asyncio.create_task(one(f"k{i}", f"l{i}", False)) for i in range(HEAVY_EVERY + 3)]
    await asyncio.sleep(0)
    gate.release()
    await asyncio.gather(*tasks)
    assert served.index("heavy") == HEAVY_EVERY and len(served) == HEAVY_EVERY + 4


async def test_a_cancelled_heavy_waiter_leaves_its_queue() -> None:
    gate = FairGate(slots=1, max_waiting=10)
    await gate.acquire("a")
    waiter = asyncio.create_task(gate.acquire("b", heavy=True))
    await asyncio.sleep(0)
    assert gate.heavy.waiting("b") == 1
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert len(gate.heavy) == 0
    gate.release()
    assert gate.busy == 0


async def test_cancelled_waiter_passes_its_slot_on() -> None:
    """A waiter cancelled in the moment it was granted a slot hands the slot to the next in turn."""
    gate = FairGate(slots=1, max_waiting=10)
    await gate.acquire("a")
    first = asyncio.create_task(gate.acquire("b"))
    second = asyncio.create_task(gate.acquire("c"))
    await asyncio.sleep(0)
    gate.release()  # granted to b ...
    first.cancel()  # ... which gives up before it runs
    await asyncio.gather(first, return_exceptions=True)
    await asyncio.wait_for(second, 1.0)
    assert gate.busy == 1 and len(gate.queue) == 0


def test_prompt_no_model_of_the_key_could_take_is_refused_up_front() -> None:
    """The gateway's context check: the router's estimate against the longest context the key may use
    (a key limited to Gemma 3 270M cannot send a 30,000-character prompt anywhere)."""
    cfg = load_config("local")
    assert kp.largest_context(kp.policy_for(cfg, None), cfg) == max(m.context_length for m in cfg.models.values())
    policy = kp.KeyPolicy(frozenset({"gemma3-270m"}), kp.KeyLimits())
    largest = kp.largest_context(policy, cfg)
    assert largest == cfg.models["gemma3-270m"].context_length
    short = GenerateRequest(id="r", messages=[ChatMessage(role="user", content="hi")])
    assert kp.context_error(short, largest) is None
    huge = msgspec.structs.replace(short, messages=[ChatMessage(role="user", content="7" * (3 * largest + 3))])
    refused = kp.context_error(huge, largest)
    assert refused is not None and refused.code == "context_too_long" and refused.field == "messages"
    tight = msgspec.structs.replace(short, sampling=Sampling(max_tokens=largest))
    assert kp.context_error(tight, largest) is not None


def test_prompt_length_is_the_routers_without_building_the_text() -> None:
    """The gateway's count of prompt characters equals len(prompt_text()), the router's basis."""
    chat = GenerateRequest(
        id="r",
        messages=[ChatMessage(role="system", content="be brief"), ChatMessage(role="user", content="日本 hi")],
    )
    prompt = GenerateRequest(id="p", prompt="x" * 1000)
    for request in (chat, prompt):
        assert kp.prompt_chars(request) == len(request.prompt_text())


async def test_a_slot_given_back_early_is_given_back_once() -> None:
    """The gateway's heavy lane is released when the body is published, before the block ends: the gate
    counts it once; a Slot of no gate waits for nothing."""
    gate = FairGate(slots=1, max_waiting=10)
    async with gate.slot("a") as slot:
        assert gate.busy == 1
        slot.release()
        assert gate.busy == 0
        async with gate.slot("b"):  # the next one gets in while the first block still runs
            assert gate.busy == 1
    assert gate.busy == 0
    async with no_slot() as nothing:
        nothing.release()
    assert gate.busy == 0


async def test_router_cache_lookups_take_turns_by_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The router's cache client with one lookup slot: a flooding key's four queued lookups do not go to
    the cache ahead of another key's (the cache's replies are held by the test, so the order is the
    client's, not a race)."""
    base = load_config("local")
    cfg = msgspec.structs.replace(base, cache=msgspec.structs.replace(base.cache, lookup_slots=1, lookup_timeout=30.0))
    asked: list[str] = []
    answer: dict[str, asyncio.Event] = {}

    async def cache_lookup(nc: object, request: GenerateRequest, *, timeout: float) -> CacheReply:
        asked.append(request.id)
        answer[request.id] = asyncio.Event()
        await answer[request.id].wait()
        return CacheReply(hit=False)

    monkeypatch.setattr(cache_client, "cache_lookup", cache_lookup)
    client = cache_client.CacheClient(SimpleNamespace(cfg=cfg, nc=None))  # type: ignore[arg-type]

    def ask(rid: str, key: str) -> GenerateRequest:
        return GenerateRequest(
            id=rid, client_key=key, messages=[ChatMessage(role="user", content=rid)], sampling=Sampling(temperature=0)
        )

    async def asked_count(n: int) -> None:
        for _ in range(1000):
            if len(asked) >= n:
                return
            await asyncio.sleep(0)
        raise AssertionError(f"{n} lookups expected, {asked} asked")

    tasks = [asyncio.create_task(client.lookup(ask(f"f{i}", "flood"))) for i in range(5)]
    await asked_count(1)
    tasks.append(asyncio.create_task(client.lookup(ask("a0", "alice"))))
    await asyncio.sleep(0)
    answer["f0"].set()  # the slot frees: the flood's turn (it waited first) ...
    await asked_count(2)
    answer[asked[1]].set()  # ... then the other key's, ahead of the flood's three still waiting
    await asked_count(3)
    assert asked == ["f0", "f1", "a0"]
    while len(asked) < 6:  # the rest, in their turns
        answer[asked[-1]].set()
        await asked_count(len(asked) + 1)
    answer[asked[-1]].set()
    assert await asyncio.gather(*tasks) == [None] * 6
    assert asked[3:] == ["f2", "f3", "f4"]
