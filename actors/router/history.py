"""What RESULTS already holds for a request the router (re)takes: its stored outcome, its last failed attempt.

await stored_outcome(js, request_id, origin)  -> Outcome | None   (a redelivery, an attempt's timeout)
await last_failed_attempt(js, request)        -> int (-1: none)   (after a restart: resume after it)
"""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from bus import subjects
from schemas.codec import ATTEMPT_FAILED, OUTCOME
from schemas.errors import SchemaError
from schemas.request import GenerateRequest
from schemas.result import Outcome


async def stored_outcome(js: JetStreamContext, request_id: str, origin: str) -> Outcome | None:
    """The outcome stored for a request, if any (an undecodable one counts as none)."""
    try:
        msg = await js.get_last_msg("RESULTS", subjects.result(request_id, origin))
    except NotFoundError:
        return None
    try:
        return OUTCOME.decode(msg.data or b"")
    except SchemaError:
        return None


async def last_failed_attempt(js: JetStreamContext, request: GenerateRequest) -> int:
    """The number of the request's last failed attempt (-1: none, or it cannot be read now)."""
    try:
        msg = await js.get_last_msg("RESULTS", subjects.attempt_failed(request.id, request.origin))
        return ATTEMPT_FAILED.decode(msg.data or b"").attempt
    except Exception:
        return -1
