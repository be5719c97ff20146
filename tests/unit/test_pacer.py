"""Work-conserving pacing of heavy requests (bus/pacer.py Pacer), on a clock the test moves: heavy requests
run at once while no light request is around, one at a time and spaced while one is."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from bus.fair import GateFull
from bus.pacer import LightTurn, Pacer
from schemas.config.actors import GatewayCfg


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _pacer(share: float = 0.25) -> tuple[Pacer, Clock]:
    clock = Clock()
    return Pacer(share, quiet_s=0.1, max_held_s=1.0, clock=clock), clock


async def _lit(share: float) -> tuple[Pacer, Clock, LightTurn]:
    """A pacer with a light request in flight (its turn returned: the test ends it)."""
    pacer, clock = _pacer(share)
    light = pacer.light()
    await light.__aenter__()
    return pacer, clock, light


async def _settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)  # let granted waiters run (no time passes on the test's clock)


async def test_heavy_requests_run_at_once_side_by_side_when_no_light_request_is_around() -> None:
    """No light traffic: nothing waits, whatever ran before (the stack is free: work-conserving)."""
    pacer, clock = _pacer()
    first = pacer.turn("flood")
    await first.__aenter__()
    clock.now += 0.5
    await first.__aexit__()  # next_at is now 1.5 s ahead: it does not matter without light traffic
    turns = [pacer.turn("flood") for _ in range(3)]
    await asyncio.wait_for(asyncio.gather(*(t.__aenter__() for t in turns)), timeout=5)
    assert pacer.running == 3
    for t in turns:
        await t.__aexit__()
    assert pacer.running == 0


async def test_a_heavy_request_waits_while_a_light_one_is_in_flight_and_goes_when_it_ends() -> None:
    """A heavy request that ran 0.2 s spaces the next by 0.6 s (share 0.25) while a light one is in
    flight; when the light traffic ends (and stays away quiet_s), the waiting one goes before its time."""
    pacer, clock, light = await _lit(0.25)
    first = pacer.turn("flood")
    await first.__aenter__()  # the first heavy one: nothing ran yet, it goes
    clock.now += 0.2
    await first.__aexit__()
    second = asyncio.create_task(pacer.turn("flood").__aenter__())
    await _settle()
    assert not second.done()
    await light.__aexit__()  # the light request ended: around for quiet_s more
    clock.now += 0.05
    pacer.wake()
    await _settle()
    assert not second.done()
    clock.now += 0.06  # 0.11 s after the light one: none around, 0.49 s before the paced moment
    pacer.wake()
    await asyncio.wait_for(second, timeout=5)
    assert pacer.running == 1


async def test_while_light_requests_are_around_heavy_ones_are_spaced_by_their_share() -> None:
    """Light traffic never stops: the next heavy request starts at held x (1 - share) / share after the
    previous one ended, not before."""
    pacer, clock, light = await _lit(0.25)
    first = pacer.turn("flood")
    await first.__aenter__()
    clock.now += 0.1
    await first.__aexit__()  # the next may start 0.3 s from now
    second = asyncio.create_task(pacer.turn("flood").__aenter__())
    clock.now += 0.29
    pacer.wake()
    await _settle()
    assert not second.done()
    clock.now += 0.02
    pacer.wake()
    await asyncio.wait_for(second, timeout=5)
    await light.__aexit__()


async def test_while_light_requests_are_around_heavy_ones_go_one_at_a_time_keys_in_turn() -> None:
    """Three heavy requests of a flood and then one of another key, light traffic around: one runs at a
    time, and the other key's is granted before the flood's third (keys in turn), not after it."""
    pacer, clock, light = await _lit(0.5)  # one at a time; no spacing: no time passes
    order: list[str] = []
    release: dict[str, asyncio.Event] = {}

    async def one(key: str, name: str) -> None:
        release[name] = asyncio.Event()
        async with pacer.turn(key):
            order.append(name)
            await release[name].wait()

    tasks = [asyncio.create_task(one("flood", f"f{i}")) for i in range(3)]
    await _settle()
    tasks.append(asyncio.create_task(one("alice", "a0")))
    await _settle()
    for expected in ("f0", "f1", "a0", "f2"):
        assert order[-1] == expected and pacer.running == 1
        release[expected].set()
        await _settle()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=5)
    assert pacer.running == 0
    await light.__aexit__()


async def test_a_cancelled_heavy_waiter_leaves_and_a_granted_one_passes_its_turn_on() -> None:
    """A waiting heavy request whose client went away is not granted; the one after it is."""
    pacer, clock, light = await _lit(0.5)
    first = pacer.turn("a")
    await first.__aenter__()
    gone = asyncio.create_task(pacer.turn("b").__aenter__())
    after = asyncio.create_task(pacer.turn("c").__aenter__())
    await _settle()
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    await first.__aexit__()
    await asyncio.wait_for(after, timeout=5)
    assert pacer.running == 1 and len(pacer.queue) == 0
    await light.__aexit__()


async def test_a_long_generation_counts_at_most_max_held_s() -> None:
    """A heavy request held for a minute (a generation, not the stack's work) spaces the next by
    max_held_s x (1 - share) / share, not by three minutes."""
    pacer, clock, light = await _lit(0.25)
    first = pacer.turn("a")
    await first.__aenter__()
    clock.now += 60.0
    await first.__aexit__()
    assert pacer.next_at == clock.now + 3.0
    await light.__aexit__()


async def test_the_model_s_time_is_not_the_stacks_and_an_early_release_is_charged_at_the_end() -> None:
    """A heavy request whose 60 s were 59.9 s of a model's generation spaces the next by its 0.1 s of the
    stack's time only; given back at max_held_s (the timer), it frees the turn at once and is charged
    what it cost when it ends."""
    pacer, clock, light = await _lit(0.25)
    first = pacer.turn("a")
    await first.__aenter__()
    clock.now += 60.0
    first.model_s = 59.9
    await first.__aexit__()
    assert pacer.next_at == pytest.approx(clock.now + 0.3)

    clock.now += 1.0
    second = pacer.turn("a")
    await second.__aenter__()
    second._expire()  # what the max_held_s timer does
    assert pacer.running == 0 and pacer.next_at <= clock.now  # the others may go; nothing charged yet
    clock.now += 30.0
    second.model_s = 29.8
    await second.__aexit__()
    assert pacer.next_at == pytest.approx(clock.now + 0.6)  # its 0.2 s of the stack's time, charged at the end
    await second.__aexit__()  # once
    assert pacer.running == 0 and pacer.next_at == pytest.approx(clock.now + 0.6)
    await light.__aexit__()


def test_the_pacing_config_has_defaults_and_refuses_a_share_outside_0_to_1() -> None:
    """gateway.heavy_share in (0, 1], gateway.heavy_prompt at least 1024 characters."""
    cfg = msgspec.convert({}, GatewayCfg)
    assert 0 < cfg.heavy_share <= 1 and cfg.heavy_prompt >= 1024
    for bad in ({"heavy_share": 0}, {"heavy_share": 1.5}, {"heavy_prompt": 10}):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert(bad, GatewayCfg)


async def test_share_1_turns_pacing_off() -> None:
    """heavy_share 1.0: heavy requests run at once, side by side, light traffic or not."""
    pacer, clock, light = await _lit(1.0)
    turns = [pacer.turn("flood") for _ in range(3)]
    await asyncio.wait_for(asyncio.gather(*(t.__aenter__() for t in turns)), timeout=5)
    assert pacer.running == 3
    for t in turns:
        await t.__aexit__()
    await light.__aexit__()


async def test_a_key_with_max_waiting_heavy_requests_waiting_is_refused() -> None:
    """The pacer's queue is bounded per key like the gateway's slots (GateFull: a 429), other keys still wait."""
    clock = Clock()
    pacer = Pacer(0.5, max_waiting=2, quiet_s=0.1, clock=clock)
    light = pacer.light()
    await light.__aenter__()
    first = pacer.turn("flood")
    await first.__aenter__()
    waiting = [asyncio.create_task(pacer.turn("flood").__aenter__()) for _ in range(2)]
    await _settle()
    with pytest.raises(GateFull):
        await pacer.turn("flood").__aenter__()
    other = asyncio.create_task(pacer.turn("alice").__aenter__())
    await _settle()
    assert pacer.queue.waiting("alice") == 1 and not other.done()
    for task in [*waiting, other]:
        task.cancel()
    await asyncio.gather(*waiting, other, return_exceptions=True)
    await first.__aexit__()
    await light.__aexit__()
    assert len(pacer.queue) == 0 and pacer.running == 0
