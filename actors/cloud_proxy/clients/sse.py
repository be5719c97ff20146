"""Server-sent events (the WHATWG ``text/event-stream`` format), decoded incrementally. Pure.

    decoder = SseDecoder()
    for event in decoder.feed(chunk_bytes): ...   # events completed by this chunk
    decoder.close()                               # an event left unterminated at end of stream

Lines end with LF, CRLF or CR; ``data:`` lines of one event are joined with LF; ``:`` starts a
comment; a blank line dispatches the event. Chunks may split lines and UTF-8 characters anywhere.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str
    data: str


class SseDecoder:
    __slots__ = ("_buffer", "_data", "_event", "_utf8", "_cr")

    def __init__(self) -> None:
        self._buffer = ""
        self._data: list[str] = []
        self._event = ""
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self._cr = False  # the last chunk ended with CR: a LF at the start of the next one belongs to it

    def feed(self, chunk: bytes) -> list[SseEvent]:
        text = self._utf8.decode(chunk)
        if self._cr and text.startswith("\n"):
            text = text[1:]
        self._cr = text.endswith("\r")
        self._buffer += text
        if "\n" not in self._buffer and "\r" not in self._buffer:
            return []
        lines = self._buffer.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        self._buffer = lines.pop()  # the unterminated rest
        events: list[SseEvent] = []
        for line in lines:
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def close(self) -> list[SseEvent]:
        events = self.feed(b"\n\n") if self._buffer or self._data else []
        return events

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            event = SseEvent(self._event or "message", "\n".join(self._data))
            self._data, self._event = [], ""
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        return None
