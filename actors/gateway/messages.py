"""What the gateway hears from the bus, as one union: ``Gateway.handle`` matches on it.

    ResultSeen(request_id, data)   orch.result.gw.<id>: the outcome of a request it published
    ChunkSeen(request_id, data)    orch.stream.gw.<id>: a chunk of a streamed answer
    KeysTick()                     every KEY_REFRESH_S: re-read the API keys file

HTTP requests are not messages: each one is an aiohttp handler (handlers.py) that waits on its own queue
of ``Answer``s, filled by ``handle``.
"""

from __future__ import annotations

import msgspec


class ResultSeen(msgspec.Struct, frozen=True):
    request_id: str
    data: bytes


class ChunkSeen(msgspec.Struct, frozen=True):
    request_id: str
    data: bytes


class KeysTick(msgspec.Struct, frozen=True):
    pass


Answer = ResultSeen | ChunkSeen
GatewayMsg = ResultSeen | ChunkSeen | KeysTick
