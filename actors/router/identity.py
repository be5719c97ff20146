"""Who asked: a request's origin and client identity come from its subject, never from its body.

    orch.request.<priority>.<origin>.<id>

NATS permissions (bus/permissions.py) let the gateway publish only under origin ``gw``, the operator
under ``op`` and a client only under its own name, so the subject is authenticated and the body is not:
a client that writes another ``client_key`` or ``origin`` into its request changes nothing. Pure.
"""

from __future__ import annotations

import msgspec

from bus import subjects
from schemas.errors import ErrorInfo
from schemas.request import GenerateRequest


def admit(request: GenerateRequest, subject: str) -> GenerateRequest | ErrorInfo:
    """The request with its authenticated origin and client identity, or why it is refused."""
    where = subjects.parse_request(subject)
    if where is None:
        return ErrorInfo.of("bad_request", "a request must be published on orch.request.<priority>.<origin>.<id>")
    if where.request_id != request.id:
        return ErrorInfo.of("bad_request", "the request id differs from the id in its subject", field="id")
    if where.priority != request.priority:
        return ErrorInfo.of("bad_request", "the priority differs from the one in its subject", field="priority")
    if where.origin in subjects.RESERVED_ORIGINS:
        client_key = request.client_key  # the gateway checked the HTTP key; the operator is trusted
    else:
        client_key = where.origin  # a client with its own NATS identity is that identity
    if request.origin == where.origin and request.client_key == client_key:
        return request
    return msgspec.structs.replace(request, origin=where.origin, client_key=client_key)
