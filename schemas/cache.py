"""The cache service (``orch.svc.cache.lookup``) and the records the cache actor keeps in JetStream KV.

    router --CacheLookup{request}--> cache --CacheReply{hit, result, layer, similarity, reason}--> router

On a hit, ``result`` is a ``GenerateResult`` for the NEW request id, ``cached=True``, ``cost_usd=0``,
``target="cache"``, ``similarity`` set (1.0 for the exact layer), and the original model, family, tier
and provenance: the router publishes it as the final outcome. On a miss the cache remembers the request
(``remembered``) and stores the final result that later appears on ``orch.result.<id>``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta

from schemas.base import Message, RequestId
from schemas.codec import Codec
from schemas.request import GenerateRequest
from schemas.result import GenerateResult

CacheLayer = Literal["exact", "semantic"]


class CacheLookup(Message, frozen=True, kw_only=True):
    request: GenerateRequest


class CacheReply(Message, frozen=True, kw_only=True):
    hit: bool
    result: GenerateResult | None = None  # set on a hit: the answer for the request's own id
    layer: CacheLayer | None = None
    similarity: float | None = None  # cosine similarity of the prompts (1.0 on an exact hit)
    remembered: bool = False  # a miss whose final result will be stored
    reason: str = ""  # why it missed or was skipped ("miss", "no_cache", "sampled", "diverse mode", ...)


class CacheEntry(Message, frozen=True, kw_only=True):
    """A stored answer (KV bucket ``orch_cache``, key = the request's exact key)."""

    key: str
    scope: str  # the semantic scope: target, sampling, earlier turns
    guard_text: str | None = None  # the prompt the meaning guard compares (None: exact layer only)
    result: GenerateResult
    stored_at: float


class PendingStore(Message, frozen=True, kw_only=True):
    """A missed request waiting for its final result (KV bucket ``orch_cache_pending``, key = request id)."""

    request_id: RequestId
    key: str
    scope: str
    guard_text: str | None = None
    vector: bytes | None = None  # float32 embedding of the normalised prompt (semantic layer)
    deadline: float  # a result published after this is not stored
    at: float


EMBED_MODEL = "all-minilm-l6-v2"  # the name /v1/embeddings and /v1/models give it
MAX_EMBED_INPUTS = 128


class EmbedRequest(Message, frozen=True, kw_only=True):
    """Texts to embed with the cache's MiniLM (``orch.svc.cache.embed``)."""

    texts: Annotated[list[Annotated[str, Meta(max_length=65_536)]], Meta(min_length=1, max_length=MAX_EMBED_INPUTS)]


class EmbedReply(Message, frozen=True, kw_only=True):
    vectors: list[list[float]]  # one L2-normalised 384-float vector per text, in order
    tokens: int  # the tokens MiniLM read (its own tokenizer, special tokens included)


CACHE_LOOKUP: Codec[CacheLookup] = Codec(CacheLookup)
EMBED_REQUEST: Codec[EmbedRequest] = Codec(EmbedRequest)
EMBED_REPLY: Codec[EmbedReply] = Codec(EmbedReply)
CACHE_REPLY: Codec[CacheReply] = Codec(CacheReply)
CACHE_ENTRY: Codec[CacheEntry] = Codec(CacheEntry)
PENDING_STORE: Codec[PendingStore] = Codec(PendingStore)
