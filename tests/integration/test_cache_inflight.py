"""Answers on their way (actors/cache/inflight.py): a lookup that misses but matches a miss of the same cache
instance whose answer has not been stored yet waits for it, instead of missing in the moments between a
result reaching the client and the cache storing it (a rewording asked right after its original)."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client as NATS

from actors.cache.actor import CacheActor
from tests.integration.test_cache_actor import Start, answer, ask, lookup, start_cache
from tests.support.wait import eventually

__all__ = ["start_cache"]  # the fixture, shared with the cache actor's own tests


def waiting(actor: CacheActor) -> int:
    assert actor.cache is not None
    return sum(a.waiting for a in actor.cache.inflight._by_id.values())


async def test_a_rewording_asked_before_its_original_is_stored_waits_and_hits(start_cache: Start, nc: NATS) -> None:
    actor = await start_cache(coalesce_wait=30)  # long: the test decides when the answer arrives
    original = ask("How do I reverse a list in Python?")
    first = await lookup(nc, original)
    assert not first.hit and first.remembered
    rewording = asyncio.ensure_future(lookup(nc, ask("How can I reverse a list in Python")))
    await eventually(lambda: waiting(actor) == 1)  # matched the original's answer on its way, and waits
    assert not rewording.done()
    await answer(nc, original, "Use reversed() or list.reverse().")
    reply = await rewording
    assert reply.hit and reply.layer == "semantic" and reply.result is not None
    assert reply.result.text == "Use reversed() or list.reverse()." and reply.similarity is not None
    assert 0.9 <= reply.similarity < 1.0
    assert actor.cache is not None and actor.cache.stats["coalesced"] == 1 and len(actor.cache.inflight) == 0


async def test_the_same_prompt_in_flight_twice_is_answered_once(start_cache: Start, nc: NATS) -> None:
    actor = await start_cache(coalesce_wait=30)
    original = ask("What is the capital of France?")
    assert (await lookup(nc, original)).remembered
    again = asyncio.ensure_future(lookup(nc, ask("what is the capital of france")))
    await eventually(lambda: waiting(actor) == 1)
    await answer(nc, original, "Paris.")
    reply = await again
    assert reply.hit and reply.layer == "exact" and reply.similarity == 1.0
    assert reply.result is not None and reply.result.text == "Paris."


async def test_a_near_miss_does_not_wait_for_an_answer_on_its_way(start_cache: Start, nc: NATS) -> None:
    actor = await start_cache(coalesce_wait=30)
    assert (await lookup(nc, ask("Write a Dockerfile for a Flask app that runs as root."))).remembered
    other = await lookup(nc, ask("Write a Dockerfile for a Flask app that runs as a non-root user."))
    assert not other.hit and other.remembered  # answered at once: the verifier refuses the match
    assert actor.cache is not None and actor.cache.stats["coalesced"] == 0


async def test_an_answer_that_never_comes_ends_the_wait_with_a_miss(start_cache: Start, nc: NATS) -> None:
    actor = await start_cache(coalesce_wait=0.2)
    assert (await lookup(nc, ask("How do I sort a dict by value?"))).remembered
    reply = await lookup(nc, ask("how do i sort a dict by value"))
    assert not reply.hit and reply.remembered  # waited its coalesce_wait, then missed (and is remembered)
    assert actor.cache is not None and actor.cache.stats["coalesced"] == 0 and len(actor.cache.inflight) == 2
