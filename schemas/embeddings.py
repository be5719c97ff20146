"""Cloud embeddings (``orch.svc.cloud.embed``, served by the cloud_proxy, called by the gateway).

    CloudEmbedRequest -> EmbedReply (schemas.cache: the vectors in order and the tokens read)

The cloud_proxy holds the worst case through the budget_guard before the call and stores a result
(``orch.result.<origin>.<request_id>``, empty text, the tokens and their cost) that the budget_guard
charges like any other, so embeddings count in every budget, report and ledger.
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

from schemas.base import Message, RequestId
from schemas.codec import Codec

MAX_CLOUD_INPUTS = 2048  # OpenAI's own limit per request


class CloudEmbedRequest(Message, frozen=True, kw_only=True):
    request_id: RequestId
    model: str  # a name of ``embedding_models``
    texts: Annotated[list[Annotated[str, Meta(max_length=65_536)]], Meta(min_length=1, max_length=MAX_CLOUD_INPUTS)]
    dimensions: Annotated[int, Meta(ge=1, le=65_536)] | None = None
    client_key: str | None = None
    origin: str = "gw"  # where the charging result is stored (the caller's answers)
    deadline: float = 0.0  # epoch seconds; 0: 30 s from now


CLOUD_EMBED_REQUEST: Codec[CloudEmbedRequest] = Codec(CloudEmbedRequest)
