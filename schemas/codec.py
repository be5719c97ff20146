"""Encoders and decoders, built once and reused (JSON on the wire: readable in audits, fast enough).

``Codec[T].decode`` raises :class:`schemas.errors.SchemaError` naming the offending field.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import msgspec

from schemas.commands import AnyCommand
from schemas.dispatch import Dispatch
from schemas.errors import ErrorInfo, SchemaError
from schemas.events import AnyEvent
from schemas.request import GenerateRequest
from schemas.result import AttemptFailed, Outcome, StreamChunk

T = TypeVar("T")

_ENCODER = msgspec.json.Encoder()


def encode(obj: Any) -> bytes:
    return _ENCODER.encode(obj)


class Codec(Generic[T]):
    __slots__ = ("type", "_decoder")

    def __init__(self, type_: Any) -> None:
        self.type = type_
        self._decoder: msgspec.json.Decoder[T] = msgspec.json.Decoder(type_)

    def decode(self, data: bytes | bytearray | memoryview | str) -> T:
        try:
            return self._decoder.decode(data)
        except msgspec.DecodeError as exc:  # ValidationError is a subclass
            raise SchemaError.from_msgspec(exc) from exc

    @staticmethod
    def encode(obj: Any) -> bytes:
        return _ENCODER.encode(obj)


REQUEST: Codec[GenerateRequest] = Codec(GenerateRequest)
DISPATCH: Codec[Dispatch] = Codec(Dispatch)
OUTCOME: Codec[Outcome] = Codec(Outcome)
ATTEMPT_FAILED: Codec[AttemptFailed] = Codec(AttemptFailed)
CHUNK: Codec[StreamChunk] = Codec(StreamChunk)
EVENT: Codec[AnyEvent] = Codec(AnyEvent)
COMMAND: Codec[AnyCommand] = Codec(AnyCommand)
ERROR_INFO: Codec[ErrorInfo] = Codec(ErrorInfo)


class ServiceReply(msgspec.Struct, frozen=True, kw_only=True):
    """Envelope of every request/reply service answer: ``ok`` with a body, or a typed error."""

    ok: bool
    body: msgspec.Raw = msgspec.Raw(b"null")
    error: ErrorInfo | None = None


SERVICE_REPLY: Codec[ServiceReply] = Codec(ServiceReply)


def to_builtins(obj: Any) -> Any:
    return msgspec.to_builtins(obj)
