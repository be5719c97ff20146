"""Cache keys (pure): what makes two requests share an answer.

    exact key   SHA-256 over the target (model, or route + requirements when the model is virtual), the
                mode, every sampling parameter (seed included) and the normalised messages
    scope       the same without the last user turn: a semantic hit needs an identical scope, and only
                the last user turn is compared by meaning (embedding + verifier)
    tenant      with ``per_tenant`` (config ``cache.per_tenant``), the request's client key joins both
    text        the normalised last user turn without greetings and thanks around it, to embed; None when
                there is none (exact layer only)

Keys are hex, safe as JetStream KV keys and as Qdrant payload values.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import msgspec

from actors.cache.diff import strip_social
from actors.cache.normalize import clean, normalize
from schemas.request import VIRTUAL_MODELS, GenerateRequest

KEY_VERSION = 1  # bump when the key layout changes: old entries then simply stop matching


@dataclass(frozen=True)
class RequestKeys:
    key: str
    scope: str
    text: str | None  # normalised last user turn (embedded)
    guard_text: str | None  # the same turn with its case kept (for the meaning guard)


def _digest(doc: Any) -> str:
    return hashlib.sha256(msgspec.json.encode(doc)).hexdigest()


def target_of(req: GenerateRequest) -> dict[str, Any]:
    """What decides which model answers: a named model, or the virtual model with its requirements."""
    model = req.model or "auto"
    if model in VIRTUAL_MODELS:
        return {"model": model, "requirements": msgspec.to_builtins(req.requirements)}
    return {"model": model}


def request_keys(req: GenerateRequest, *, per_tenant: bool = False) -> RequestKeys:
    """``per_tenant``: the request's client key joins the key and the scope, so one tenant's answers never
    answer (nor reveal what was asked by) another."""
    head: dict[str, Any] = {
        "v": KEY_VERSION,
        "target": target_of(req),
        "mode": req.mode,
        "sampling": msgspec.to_builtins(req.sampling),
    }
    if per_tenant:
        head["tenant"] = req.client_key or ""
    if req.prompt is not None:
        turns: list[tuple[str, str]] = [("prompt", req.prompt)]
    else:
        turns = [(m.role, m.content) for m in req.messages or ()]
    normalised = [[role, normalize(content)] for role, content in turns]
    key = _digest({**head, "turns": normalised})
    role, last = turns[-1]
    if role in ("user", "prompt"):
        scope = _digest({**head, "kind": role, "context": normalised[:-1]})
        text = strip_social(normalised[-1][1])
        return RequestKeys(key=key, scope=scope[:32], text=text or None, guard_text=clean(last) or None)
    return RequestKeys(key=key, scope=key[:32], text=None, guard_text=None)
