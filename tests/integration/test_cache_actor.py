"""The cache actor against a real nats-server with real embeddings: the lookup service the router calls,
results stored from orch.result.<id>, the verifier and its hard refusals, scopes (per tenant too),
policy, TTL, the size cap, restarts."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from nats.aio.client import Client as NATS
from nats.js.errors import KeyNotFoundError

from actors.cache.actor import CacheActor
from actors.cache.exact import KV_CACHE_PENDING
from bus import subjects
from bus.errors import ServiceCallError
from bus.service import call
from clients.cache import CacheClient, cache_lookup
from schemas.cache import CACHE_REPLY, CacheLookup, CacheReply
from schemas.codec import encode
from schemas.errors import ErrorInfo
from schemas.events import CacheHit
from schemas.request import CachePolicy, ChatMessage, GenerateRequest, Sampling, make_request
from schemas.result import GenerateError, GenerateResult, Provenance, Usage
from tests.support.actors import Actors
from tests.support.events import Recorder
from tests.support.minilm import model_dir
from tests.support.wait import eventually

Start = Callable[..., Awaitable[CacheActor]]


@pytest.fixture
def start_cache(actors: Actors) -> Start:
    """Start cache actors in this process on the test's nats-server (one data dir for all of them)."""
    count = iter(range(1000))

    async def start(**cache: Any) -> CacheActor:
        section: dict[str, Any] = {"semantic": {"model_dir": str(model_dir())}}
        for key, value in cache.items():
            if key == "semantic":
                section["semantic"].update(value)
            else:
                section[key] = value
        cfg = actors.config(overrides={"cache": section})
        return await actors.start(CacheActor(cfg, instance=f"test-{next(count)}"))

    return start


def ask(text: str, **fields: Any) -> GenerateRequest:
    fields.setdefault("model", "smollm2-135m")
    fields.setdefault("sampling", Sampling(temperature=0))
    return make_request(messages=[ChatMessage(role="user", content=text)], **fields)


async def lookup(nc: NATS, req: GenerateRequest) -> CacheReply:
    return await call(nc, subjects.SVC_CACHE_LOOKUP, CacheLookup(request=req), CACHE_REPLY, timeout=5)


async def answer(nc: NATS, req: GenerateRequest, text: str, **fields: Any) -> GenerateResult:
    """Publish the final result of a request the way a worker does (orch.result.<id>, Msg-Id = id)."""
    result = GenerateResult(
        request_id=req.id,
        text=text,
        model=req.model or "smollm2-135m",
        family="smollm",
        tier="local",
        target="cpu0",
        usage=Usage(input_tokens=12, output_tokens=30),
        cost_usd=0.0001,
        provenance=Provenance(model=req.model or "smollm2-135m", family="smollm", tier="local", target="cpu0"),
        **fields,
    )
    await nc.jetstream().publish(subjects.result(req.id), encode(result), headers={"Nats-Msg-Id": req.id})
    return result


async def miss_then_store(nc: NATS, actor: CacheActor, text: str, answer_text: str, **fields: Any) -> None:
    """A miss, then its result on orch.result.<id>: wait until the actor stored it."""
    req = ask(text, **fields)
    reply = await lookup(nc, req)
    assert not reply.hit and reply.remembered
    stored = actor.cache.stats["stored"] if actor.cache else 0
    await answer(nc, req, answer_text)
    await eventually(lambda: actor.cache is not None and actor.cache.stats["stored"] > stored)


async def test_a_repeated_request_is_answered_from_the_exact_layer(start_cache: Start, nc: NATS) -> None:
    """Miss -> result on orch.result.<id> -> the same prompt (case and punctuation aside) hits, for its own id."""
    actor = await start_cache()
    rec = await Recorder.listen(nc, "cache.hit")
    first = ask("What is the capital of France?")
    reply = await lookup(nc, first)
    assert (reply.hit, reply.remembered, reply.reason) == (False, True, "miss")
    original = await answer(nc, first, "Paris.")
    await eventually(lambda: actor.cache is not None and actor.cache.stats["stored"] == 1)
    again = ask("what is the capital of  france", client_key="team-b", task="geo")
    reply = await lookup(nc, again)
    assert reply.layer == "exact" and reply.similarity == 1.0
    result = reply.result
    assert result is not None
    assert result.request_id == again.id and result.text == "Paris." and result.cached and result.similarity == 1.0
    assert result.cost_usd == 0.0 and result.usage == Usage() and result.target == "cache"
    assert (result.model, result.family, result.tier, result.provenance) == (
        original.model,
        original.family,
        original.tier,
        original.provenance,
    )
    assert result.client_key == "team-b" and result.task == "geo"
    await eventually(lambda: rec.events)
    events = rec.events
    assert isinstance(events[0], CacheHit) and events[0].request_id == again.id and events[0].layer == "exact"


async def test_a_paraphrase_is_answered_from_the_semantic_layer(start_cache: Start, nc: NATS) -> None:
    """A reworded prompt hits with its cosine similarity: the verifier accepts it."""
    actor = await start_cache()
    await miss_then_store(nc, actor, "How do I reverse a list in Python?", "Use reversed() or list.reverse().")
    paraphrase = ask("How can I reverse a list in Python")
    reply = await lookup(nc, paraphrase)
    assert reply.hit and reply.layer == "semantic" and reply.result is not None
    assert reply.similarity is not None and 0.9 <= reply.similarity < 1.0
    assert reply.result.similarity == reply.similarity and reply.result.cached
    assert reply.result.text == "Use reversed() or list.reverse()." and reply.result.request_id == paraphrase.id


@pytest.mark.parametrize(
    "rewording",
    [
        "Hi! Could you please tell me how to reverse a list in Python? Thanks a lot.",  # politeness
        "In Python, how do I reverse a list?",  # reordering
    ],
)
async def test_rewordings_hit_through_the_verifier(start_cache: Start, nc: NATS, rewording: str) -> None:
    """Politeness and a moved clause (refused by the old word lists) are answered from the semantic layer."""
    actor = await start_cache()
    assert actor.verifier is not None
    await miss_then_store(nc, actor, "How do I reverse a list in Python?", "Use reversed() or list.reverse().")
    reply = await lookup(nc, ask(rewording))
    assert reply.hit and reply.layer == "semantic" and reply.result is not None
    assert reply.result.text == "Use reversed() or list.reverse()."


@pytest.mark.parametrize(
    "near_miss",
    [
        "How do I not enable two-factor authentication on GitHub?",  # negation
        "How do I enable three-factor authentication on GitHub?",  # another number
        "How do I enable two-factor authentication on GitHub for a non-admin user?",  # "non-" and a constraint
    ],
)
async def test_near_duplicates_that_mean_something_else_do_not_hit(
    start_cache: Start, nc: NATS, near_miss: str
) -> None:
    """Negation, other numbers and "non-" miss, even when the embedding is close."""
    actor = await start_cache()
    await miss_then_store(nc, actor, "How do I enable two-factor authentication on GitHub?", "Settings > Security.")
    reply = await lookup(nc, ask(near_miss))
    assert not reply.hit and reply.reason == "miss"


async def test_swapped_roles_do_not_hit(start_cache: Start, nc: NATS) -> None:
    """ "5 miles to kilometers" does not answer "5 kilometers to miles" (cosine 0.99): the guard refuses."""
    actor = await start_cache()
    await miss_then_store(nc, actor, "Convert 5 miles to kilometers", "8.05 km")
    assert not (await lookup(nc, ask("Convert 5 kilometers to miles"))).hit
    assert actor.cache is not None and actor.cache.stats["guard_refused"] >= 1


async def test_per_tenant_scope_keeps_each_client_keys_answers_its_own(start_cache: Start, nc: NATS) -> None:
    """With cache.per_tenant, another client key misses the same and a reworded prompt; the owner hits both."""
    actor = await start_cache(per_tenant=True)
    await miss_then_store(nc, actor, "How do I reverse a list in Python?", "reversed()", client_key="team-a")
    for text in ("How do I reverse a list in Python?", "How can I reverse a list in Python"):
        assert not (await lookup(nc, ask(text, client_key="team-b"))).hit
        assert not (await lookup(nc, ask(text))).hit
        mine = await lookup(nc, ask(text, client_key="team-a"))
        assert mine.hit and mine.result is not None and mine.result.text == "reversed()"


async def test_without_per_tenant_scope_client_keys_share_answers(start_cache: Start, nc: NATS) -> None:
    """The default shares answers between client keys (one lab, one cache)."""
    actor = await start_cache()
    await miss_then_store(nc, actor, "How do I reverse a list in Python?", "reversed()", client_key="team-a")
    reply = await lookup(nc, ask("How do I reverse a list in Python?", client_key="team-b"))
    assert reply.hit and reply.layer == "exact"


@pytest.mark.parametrize(
    "other",
    [
        {"model": "gemma3-270m"},
        {"sampling": Sampling(temperature=0, max_tokens=32)},
        {"sampling": Sampling(temperature=0, seed=42)},
        {"sampling": Sampling(temperature=0.7), "cache": CachePolicy(allow_sampled=True)},
    ],
)
async def test_entries_are_scoped_by_model_and_sampling(start_cache: Start, nc: NATS, other: dict[str, Any]) -> None:
    """The same prompt for another model or other sampling parameters is another question."""
    actor = await start_cache()
    await miss_then_store(nc, actor, "Name a prime number", "7")
    assert (await lookup(nc, ask("Name a prime number"))).hit
    reply = await lookup(nc, ask("Name a prime number", **other))
    assert not reply.hit and reply.remembered


async def test_another_conversation_context_is_another_scope(start_cache: Start, nc: NATS) -> None:
    """The last user turn is compared by meaning only within the same earlier turns (system prompt)."""
    actor = await start_cache()
    base = [ChatMessage(role="system", content="Answer in one word.")]
    req = make_request(
        messages=[*base, ChatMessage(role="user", content="What colour is the sky?")],
        model="smollm2-135m",
        sampling=Sampling(temperature=0),
    )
    await lookup(nc, req)
    await answer(nc, req, "Blue")
    await eventually(lambda: actor.cache is not None and actor.cache.stats["stored"] == 1)
    same = [*base, ChatMessage(role="user", content="what colour is the sky")]
    other = [
        ChatMessage(role="system", content="Answer like a poet."),
        ChatMessage(role="user", content="What colour is the sky?"),
    ]
    assert (await lookup(nc, make_request(messages=same, model="smollm2-135m", sampling=Sampling(temperature=0)))).hit
    assert not (
        await lookup(nc, make_request(messages=other, model="smollm2-135m", sampling=Sampling(temperature=0)))
    ).hit


async def test_uncacheable_requests_never_hit_or_store(start_cache: Start, nc: NATS) -> None:
    """Sampled without opt-in, diverse/ensemble, no_store: not remembered, their answers never stored;
    no_cache: not answered even when stored."""
    actor = await start_cache()
    assert actor.cache is not None
    sampled = ask("Tell me a story", sampling=Sampling(temperature=0.8))
    reply = await lookup(nc, sampled)
    assert not reply.hit and not reply.remembered and "allow_sampled" in reply.reason
    diverse = ask("Tell me a story", mode="diverse", sampling=Sampling(temperature=0))
    assert "diverse" in (await lookup(nc, diverse)).reason
    no_store = ask("Tell me a story", cache=CachePolicy(no_store=True))
    reply = await lookup(nc, no_store)
    assert not reply.hit and not reply.remembered and reply.reason == "no_store"
    for req in (sampled, diverse, no_store):
        await answer(nc, req, "Once upon a time...")
    await miss_then_store(nc, actor, "Tell me a joke", "Why did the GPU cross the road?")  # a later result is stored
    assert actor.cache.stats["stored"] == 1
    assert not (await lookup(nc, ask("Tell me a story"))).hit
    reply = await lookup(nc, ask("Tell me a joke", cache=CachePolicy(no_cache=True)))
    assert not reply.hit and reply.remembered and reply.reason == "no_cache"
    assert (await lookup(nc, ask("Tell me a joke"))).hit


async def test_a_result_without_a_remembered_miss_is_not_looked_up(start_cache: Start, nc: NATS) -> None:
    """A result whose Dispatch said the cache keeps nothing (cache_store False: no_store, sampled) is passed
    over without a KV round trip for a pending entry; a remembered one is stored as before."""
    actor = await start_cache()
    assert actor.cache is not None
    sampled = ask("Tell me a riddle", sampling=Sampling(temperature=0.8))
    assert not (await lookup(nc, sampled)).remembered
    await answer(nc, sampled, "What has keys but no locks?", cache_store=False)
    await eventually(lambda: actor.cache is not None and actor.cache.stats["not_remembered"] == 1)
    await miss_then_store(nc, actor, "Tell me a fact", "Honey never spoils.")
    assert actor.cache.stats["stored"] == 1 and actor.cache.stats["not_remembered"] == 1


async def test_sampled_requests_are_cached_with_the_opt_in(start_cache: Start, nc: NATS) -> None:
    """allow_sampled stores and answers a temperature > 0 request (within its own sampling scope)."""
    actor = await start_cache()
    opt_in = {"sampling": Sampling(temperature=0.7), "cache": CachePolicy(allow_sampled=True)}
    await miss_then_store(nc, actor, "Suggest a name for a cat", "Whiskers", **opt_in)
    reply = await lookup(nc, ask("suggest a name for a cat", **opt_in))
    assert reply.hit and reply.result is not None and reply.result.text == "Whiskers"


async def test_entries_expire_after_the_ttl(start_cache: Start, nc: NATS) -> None:
    """Past cache.ttl neither layer answers, and the sweep forgets the entry."""
    actor = await start_cache(ttl="2s")
    await miss_then_store(nc, actor, "What is the speed of light?", "299,792 km/s")
    assert (await lookup(nc, ask("What is the speed of light?"))).hit
    assert (await lookup(nc, ask("What's the speed of light?"))).hit  # semantic, while fresh
    await eventually(lambda: _missed(nc, ask("What is the speed of light?")), timeout=10, interval=0.2)
    assert not (await lookup(nc, ask("What's the speed of light?"))).hit
    assert actor.cache is not None
    await eventually(lambda: _swept(actor), timeout=10, interval=0.2)


async def _missed(nc: NATS, req: GenerateRequest) -> bool:
    return not (await lookup(nc, req)).hit


async def _swept(actor: CacheActor) -> bool:
    assert actor.cache is not None and actor.index is not None
    return len(actor.cache.lru) == 0 and await actor.index.count() == 0


async def test_the_size_cap_evicts_the_least_recently_used(start_cache: Start, nc: NATS) -> None:
    """With max_entries 3, a fourth answer evicts the entry used longest ago (a hit counts as a use)."""
    actor = await start_cache(max_entries=3)
    prompts = ["What is DNS?", "What is TCP?", "What is HTTP?", "What is TLS?"]
    for p in prompts[:3]:
        await miss_then_store(nc, actor, p, f"answer: {p}")
    assert (await lookup(nc, ask("What is DNS?"))).hit  # DNS is now the most recently used
    await miss_then_store(nc, actor, prompts[3], "answer: TLS")
    hits = {p: (await lookup(nc, ask(p))).hit for p in prompts}
    assert hits == {"What is DNS?": True, "What is TCP?": False, "What is HTTP?": True, "What is TLS?": True}
    assert actor.cache is not None and actor.cache.stats["evicted"] == 1
    assert actor.index is not None and await actor.index.count() == 3


async def test_an_exact_hit_stored_here_runs_no_model(start_cache: Start, nc: NATS) -> None:
    """A prompt this instance stored is answered by the exact get alone: no embedding is started beside it."""
    actor = await start_cache()
    await miss_then_store(nc, actor, "What is the speed of light?", "299,792 km/s")
    assert actor.embedder is not None
    actor.embedder.recent.clear()  # no vector to reuse: a model run would show
    runs = actor.embedder.runs
    reply = await lookup(nc, ask("what is the speed of light"))
    assert reply.layer == "exact" and actor.embedder.runs == runs


async def test_a_prompt_over_the_token_bound_uses_the_exact_layer_only(start_cache: Start, nc: NATS) -> None:
    """semantic.max_tokens: a longer last turn is neither embedded nor a semantic hit; its exact repeat hits."""
    actor = await start_cache(semantic={"max_tokens": 12})
    long = "How do I reverse a linked list in place in Python without using any extra memory at all?"
    assert actor.embedder is not None
    runs = actor.embedder.runs
    await miss_then_store(nc, actor, long, "Walk it once, flipping each next pointer.")
    reworded = await lookup(
        nc, ask("In Python, how do I reverse a linked list in place without using any extra memory?")
    )
    assert not reworded.hit and actor.embedder.runs == runs
    again = await lookup(nc, ask(long.upper()))
    assert again.layer == "exact" and actor.embedder.runs == runs
    await miss_then_store(nc, actor, "How do I reverse a list in Python?", "reversed()")  # short: still semantic
    assert (await lookup(nc, ask("How can I reverse a list in Python"))).layer == "semantic"


async def test_an_exact_hit_stored_by_another_instance_is_answered(start_cache: Start, nc: NATS) -> None:
    """An instance that did not store the key embeds while it asks KV, and still answers from the exact layer."""
    first, second = await start_cache(), await start_cache()
    assert first.cache is not None and second.cache is not None and second.embedder is not None
    req = ask("How many moons does Mars have?")
    assert (await first.cache.lookup(req)).remembered
    result = GenerateResult(
        request_id=req.id, text="Two.", model="smollm2-135m", family="smollm", tier="local", target="cpu0"
    )
    assert await first.cache.store(result, published_at=time.time()) == "stored"
    again = ask("how many moons does mars have")
    reply = await second.cache.lookup(again)
    assert reply.layer == "exact" and reply.result is not None and reply.result.text == "Two."
    assert len(second.cache.lru) == 0  # it answered from KV, not from what it stored itself


async def test_a_restart_keeps_the_cache(start_cache: Start, nc: NATS, actors: Actors) -> None:
    """A new actor on the same data dir and bus answers both layers (KV + the file-backed index)."""
    first = await start_cache()
    await miss_then_store(nc, first, "How do I undo the last git commit?", "git reset --soft HEAD~1")
    await actors.stop(first, grace=1)
    second = await start_cache()
    assert second.cache is not None and len(second.cache.lru) == 1
    exact = await lookup(nc, ask("how do I undo the last git commit"))
    semantic = await lookup(nc, ask("How can I undo the last git commit?"))
    assert exact.hit and exact.layer == "exact"
    assert semantic.hit and semantic.layer == "semantic" and semantic.result is not None
    assert semantic.result.text == "git reset --soft HEAD~1"


async def test_a_result_after_the_deadline_or_an_error_is_not_stored(start_cache: Start, nc: NATS) -> None:
    """A miss is remembered until its deadline; an error outcome forgets it at once."""
    actor = await start_cache()
    late = ask("What is the tallest mountain?", timeout_s=0.001)
    assert (await lookup(nc, late)).remembered
    await answer(nc, late, "Everest")
    failed = ask("What is the deepest lake?")
    assert (await lookup(nc, failed)).remembered
    error = GenerateError(request_id=failed.id, error=ErrorInfo.of("timeout", "too slow"))
    await nc.jetstream().publish(subjects.result(failed.id), encode(error), headers={"Nats-Msg-Id": failed.id})
    kv = await nc.jetstream().key_value(KV_CACHE_PENDING)
    await eventually(lambda: _pending_gone(kv, failed.id, late.id))
    assert actor.cache is not None and actor.cache.stats["stored"] == 0
    assert not (await lookup(nc, ask("What is the tallest mountain?"))).hit


async def _pending_gone(kv: Any, *keys: str) -> bool:
    for key in keys:
        try:
            entry = await kv.get(key)
        except KeyNotFoundError:
            continue
        if entry.value:
            return False
    return True


async def test_bad_lookup_input_gets_a_typed_error(start_cache: Start, nc: NATS) -> None:
    """A lookup that is not a CacheLookup is answered with bad_request; the actor keeps serving."""
    await start_cache()
    with pytest.raises(ServiceCallError) as err:
        await call(nc, subjects.SVC_CACHE_LOOKUP, b'{"request": {"id": "bad id!"}}', CACHE_REPLY, timeout=5)
    assert err.value.info.code == "bad_request"
    started = time.monotonic()
    assert not (await lookup(nc, ask("still there?"))).hit
    assert time.monotonic() - started < 15  # served, not stuck (a bound for a hang, not a speed)


async def test_the_router_client_returns_the_cached_result_or_none(
    start_cache: Start, nc: NATS, actors: Actors
) -> None:
    """CacheClient.lookup: the cached result on a hit, None on a miss or when no cache answers."""
    actor = await start_cache()
    client = CacheClient(actor)
    assert await client.lookup(ask("What is the capital of Italy?")) is None  # a miss, remembered
    await miss_then_store(nc, actor, "What is the capital of Spain?", "Madrid")
    hit = await client.lookup(ask("what is the capital of spain"))
    assert hit is not None and hit.cached and hit.text == "Madrid"
    await actors.stop(actor, grace=1)
    started = time.monotonic()
    assert await client.lookup(ask("What is the capital of Spain?")) is None
    assert time.monotonic() - started < 15  # cache.lookup_timeout bounds the wait (a hang, not a speed)
    with pytest.raises(ServiceCallError) as err:
        await cache_lookup(nc, ask("anyone?"), timeout=0.5)
    assert err.value.info.code in ("unavailable", "timeout")
