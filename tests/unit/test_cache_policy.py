"""Cache policy with plain data: normalisation, keys and scopes, what may be cached, LRU eviction."""

from __future__ import annotations

from pathlib import Path

import pytest

from actors.cache.actor import read_secret
from actors.cache.errors import CacheError
from actors.cache.keys import request_keys
from actors.cache.normalize import clean, normalize
from policy.caching import Lru, decide, storable
from schemas.config.providers import SecretRef, VaultRef
from schemas.request import CachePolicy, ChatMessage, GenerateRequest, Requirements, Sampling
from schemas.result import GenerateResult, Response


def req(*turns: tuple[str, str], **fields: object) -> GenerateRequest:
    messages = [ChatMessage(role=role, content=text) for role, text in turns]  # type: ignore[arg-type]
    fields.setdefault("model", "smollm2-135m")
    fields.setdefault("sampling", Sampling(temperature=0))
    return GenerateRequest(id="r1", messages=messages, **fields)  # type: ignore[arg-type]


def user(text: str, **fields: object) -> GenerateRequest:
    return req(("user", text), **fields)


def result(**fields: object) -> GenerateResult:
    base: dict[str, object] = {"request_id": "r1", "text": "an answer", "model": "m", "family": "f", "tier": "local"}
    return GenerateResult(target="cpu0", **{**base, **fields})  # type: ignore[arg-type]


# --- normalisation -------------------------------------------------------------------------------
def test_normalize_folds_case_whitespace_and_trailing_punctuation() -> None:
    """Case, runs of whitespace and trailing punctuation do not make a prompt different."""
    assert normalize("  What is the capital of   France?! ") == "what is the capital of france"
    assert normalize("What\u2019s up\u2026") == "what's up"
    assert normalize("Explain recursion.") == normalize("explain recursion")


def test_normalize_keeps_code_verbatim() -> None:
    """Code is case- and space-sensitive: fenced blocks and inline code are not folded."""
    text = "Why does `Foo  Bar` fail?\n```py\nX = 1\n```"
    assert normalize(text) == "why does `Foo  Bar` fail? ```py\nX = 1\n```"
    assert normalize("rename `Foo`") != normalize("rename `foo`")


def test_clean_keeps_case() -> None:
    """The guard's text keeps capitals (names) but drops the rest of the noise."""
    assert clean("Is  Python faster than Java??") == "Is Python faster than Java"


# --- keys ----------------------------------------------------------------------------------------
def test_exact_key_ignores_surface_differences() -> None:
    """Two prompts that normalise the same share the exact key."""
    a, b = user("What is the capital of France?"), user("what is the capital of  france")
    assert request_keys(a).key == request_keys(b).key


@pytest.mark.parametrize(
    "other",
    [
        {"model": "gemma3-270m"},
        {"sampling": Sampling(temperature=0, max_tokens=64)},
        {"sampling": Sampling(temperature=0, seed=7)},
        {"sampling": Sampling(temperature=0, stop=["\n"])},
        {"sampling": Sampling(temperature=0, top_p=0.5)},
    ],
)
def test_exact_key_and_scope_depend_on_model_and_sampling(other: dict[str, object]) -> None:
    """Another model or any sampling parameter (seed included) is another key and another scope."""
    a, b = request_keys(user("hello there")), request_keys(user("hello there", **other))
    assert a.key != b.key and a.scope != b.scope


def test_virtual_model_scopes_by_requirements() -> None:
    """For auto routing the requirements choose the model, so they are part of the key."""
    a = request_keys(user("hi", model=None))
    b = request_keys(user("hi", model=None, requirements=Requirements(strategy="quality")))
    assert a.key != b.key and a.scope != b.scope
    assert request_keys(user("hi", model="auto")).key == a.key


def test_scope_is_the_conversation_without_its_last_user_turn() -> None:
    """Paraphrased last turns share a scope; another system prompt or history does not."""
    a = request_keys(req(("system", "Be brief."), ("user", "How do I reverse a list?")))
    b = request_keys(req(("system", "Be brief."), ("user", "How can I reverse a list?")))
    c = request_keys(req(("system", "Answer in French."), ("user", "How do I reverse a list?")))
    assert a.scope == b.scope and a.key != b.key
    assert a.scope != c.scope
    assert a.text == "how do i reverse a list" and a.guard_text == "How do I reverse a list"


def test_prompt_and_chat_requests_do_not_share_keys() -> None:
    """A raw completion prompt and a chat turn with the same text are different requests."""
    chat = request_keys(user("hello"))
    raw = request_keys(GenerateRequest(id="r2", prompt="hello", model="smollm2-135m", sampling=Sampling(temperature=0)))
    assert chat.key != raw.key and chat.scope != raw.scope and raw.text == "hello"


def test_request_ending_with_an_assistant_turn_has_no_semantic_text() -> None:
    """Only a last user turn is compared by meaning; anything else is exact-only."""
    keys = request_keys(req(("user", "hi"), ("assistant", "Hello! How can I")))
    assert keys.text is None and keys.guard_text is None


# --- what may be cached --------------------------------------------------------------------------
def test_greedy_requests_may_be_looked_up_and_stored() -> None:
    """Temperature 0 is deterministic: lookup and store."""
    assert decide(user("hi")) == decide(user("hi", sampling=Sampling(temperature=0, seed=3)))
    assert decide(user("hi")).lookup and decide(user("hi")).store


def test_sampled_requests_need_the_opt_in() -> None:
    """Temperature > 0 is cached only with cache.allow_sampled."""
    sampled = decide(user("hi", sampling=Sampling(temperature=0.7)))
    assert not sampled.lookup and not sampled.store and "allow_sampled" in sampled.reason
    opted = decide(user("hi", sampling=Sampling(temperature=0.7), cache=CachePolicy(allow_sampled=True)))
    assert opted.lookup and opted.store


@pytest.mark.parametrize(
    "fields", [{"mode": "diverse"}, {"mode": "ensemble"}, {"model": "diverse"}, {"model": "ensemble"}]
)
def test_diverse_and_ensemble_requests_never_touch_the_cache(fields: dict[str, object]) -> None:
    """Diversity is the point of fan-out requests: no lookup, no store, even with the opt-in."""
    d = decide(user("hi", cache=CachePolicy(allow_sampled=True), **fields))
    assert not d.lookup and not d.store and "mode" in d.reason


def test_no_cache_and_no_store_are_separate() -> None:
    """no_cache skips the lookup but may store; no_store looks up but does not store."""
    no_cache = decide(user("hi", cache=CachePolicy(no_cache=True)))
    no_store = decide(user("hi", cache=CachePolicy(no_store=True)))
    assert (no_cache.lookup, no_cache.store) == (False, True)
    assert (no_store.lookup, no_store.store) == (True, False)
    assert decide(user("hi"), enabled=False) == decide(user("hi"), enabled=False)
    assert not decide(user("hi"), enabled=False).lookup


def test_only_fresh_single_answers_are_stored() -> None:
    """Cached, fan-out, cancelled and empty results are not stored."""
    assert storable(result()) is None
    assert storable(result(cached=True)) == "already a cached answer"
    fan = Response(request_id="c1", text="x", provenance={"model": "m", "family": "f", "tier": "local", "target": "t"})  # type: ignore[arg-type]
    assert storable(result(responses=[fan])) == "a fan-out answer"
    assert storable(result(parent_id="p1")) == "a fan-out child"
    assert storable(result(finish_reason="cancelled")) == "cancelled"
    assert storable(result(text="  ")) == "empty text"


# --- LRU -----------------------------------------------------------------------------------------
def test_lru_evicts_the_least_recently_used_beyond_the_cap() -> None:
    """A hit moves an entry to the back; the front is evicted first."""
    lru = Lru(3)
    assert lru.add("a", 1) == [] and lru.add("b", 2) == [] and lru.add("c", 3) == []
    lru.touch("a")
    assert lru.add("d", 4) == ["b"]
    assert lru.keys() == ["c", "a", "d"]
    assert lru.add("a", 5) == [] and lru.keys() == ["c", "d", "a"]


def test_lru_lists_expired_entries_and_loads_oldest_first() -> None:
    """Entries older than the TTL are listed; loading more than the cap returns the oldest."""
    lru = Lru(2)
    assert lru.load([("new", 30.0), ("old", 10.0), ("mid", 20.0)]) == ["old"]
    assert lru.expired(now=45.0, ttl=20.0) == ["mid"]
    lru.discard("mid")
    assert "mid" not in lru and len(lru) == 1
    with pytest.raises(ValueError, match="cap"):
        Lru(0)


# --- the Qdrant API key --------------------------------------------------------------------------
def test_qdrant_key_comes_from_env_or_file_and_is_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """env and file sources are read (and registered for masking); vault and an unset variable are clear errors."""
    monkeypatch.setenv("TEST_QDRANT_KEY", "qdrant-secret-123")
    assert read_secret(SecretRef(env="TEST_QDRANT_KEY")) == "qdrant-secret-123"
    (tmp_path / "key").write_text("from-a-file-456\n")
    assert read_secret(SecretRef(file=str(tmp_path / "key"))) == "from-a-file-456"
    with pytest.raises(CacheError, match="TEST_QDRANT_UNSET is not set"):
        read_secret(SecretRef(env="TEST_QDRANT_UNSET"))
    with pytest.raises(CacheError, match="not `vault`"):
        read_secret(SecretRef(vault=VaultRef(path="orchestra/qdrant")))


def test_per_tenant_keys_and_scopes_include_the_client_key() -> None:
    """With per_tenant, two client keys get other keys and scopes for one prompt; without, they share them."""
    a, b = user("How do I reverse a list?", client_key="team-a"), user("How do I reverse a list?", client_key="team-b")
    shared_a, shared_b = request_keys(a), request_keys(b)
    assert (shared_a.key, shared_a.scope) == (shared_b.key, shared_b.scope)
    own_a, own_b = request_keys(a, per_tenant=True), request_keys(b, per_tenant=True)
    assert own_a.key != own_b.key and own_a.scope != own_b.scope
    assert own_a.text == own_b.text and request_keys(a, per_tenant=True).key == own_a.key


def test_the_embedded_text_leaves_greetings_and_thanks_out() -> None:
    """Politeness around the question is not embedded; the exact key still sees the whole prompt."""
    polite = request_keys(user("Hi! What causes thunder? Thanks a lot."))
    plain = request_keys(user("What causes thunder?"))
    assert polite.text == plain.text == "what causes thunder"
    assert polite.key != plain.key
