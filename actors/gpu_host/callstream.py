"""A tools-constrained generation as it streams (pure): text pieces, or OpenAI-style call deltas.

With tools, the grammar (tools.py) lets the model write either plain text (``auto``) or one call
``{"name": "<tool>", "arguments": {...}}``, name first. The first non-blank character decides:

    "{"        a call: nothing goes out until ``{"name": "...", "arguments":`` is complete, then one
               delta with the call's id and name (arguments ""), then the arguments as they come,
               less a held-back tail of blanks and ``}`` (the last ``}`` closes the call, not them)
    otherwise  text, passed through as it comes

    cs = CallStream(sampling, call_id)
    for piece in generation: out = cs.feed(piece)     # [str | ToolCallDelta, ...]
    out = cs.close()                                  # what was held back
    cs.arguments                                      # the streamed arguments, whole

The head is matched only while it is incomplete (a few dozen characters: the grammar writes it
first), so a piece costs time linear in its own length.
"""

from __future__ import annotations

import json
import re

from schemas.request import Sampling
from schemas.result import ToolCallDelta

_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')
_TAIL = " \t\r\n}"
MAX_HEAD = 4096  # a head longer than this is no call head (names are short): give up streaming it

Piece = str | ToolCallDelta


class CallStream:
    def __init__(self, s: Sampling, call_id: str) -> None:
        self.active = s.calls_tools
        self.call_id = call_id
        self.mode: str | None = None  # None (undecided), "text", "call"
        self.buffer = ""  # before the head is complete
        self.args = ""  # the arguments' text so far, held-back tail included
        self.sent = 0  # characters of ``args`` sent
        self.name: str | None = None

    @property
    def calling(self) -> bool:
        """A call's head went out: the client has a tool call in progress."""
        return self.name is not None

    @property
    def arguments(self) -> str:
        final = self.args.strip()
        return final[:-1].rstrip() if final.endswith("}") else final

    def feed(self, piece: str) -> list[Piece]:
        if not self.active or self.mode == "text":
            return [piece] if piece else []
        if self.name is not None:
            self.args += piece
            return self._flush(self._safe_end())
        self.buffer += piece
        if self.mode is None:
            start = self.buffer.lstrip()
            if not start:
                return []
            if start[0] != "{":
                self.mode, text, self.buffer = "text", self.buffer, ""
                return [text]
            self.mode = "call"
        m = _HEAD.match(self.buffer)
        if m is None:
            if len(self.buffer) > MAX_HEAD:
                self.mode, text, self.buffer = "text", self.buffer, ""
                return [text]
            return []
        try:
            self.name = json.loads(f'"{m.group(1)}"')
        except ValueError:
            self.name = m.group(1)
        self.args, self.buffer = self.buffer[m.end() :], ""
        head = ToolCallDelta(index=0, id=self.call_id, name=self.name, arguments="")
        return [head, *self._flush(self._safe_end())]

    def close(self) -> list[Piece]:
        """The held-back rest: the arguments less the call's closing brace, or text never decided."""
        if self.name is not None:
            return self._flush(len(self.arguments))
        text, self.buffer = self.buffer, ""
        return [text] if text else []

    def _safe_end(self) -> int:
        """Where the held-back tail (blanks and braces at the end) begins; scans only that tail."""
        end = len(self.args)
        while end > self.sent and self.args[end - 1] in _TAIL:
            end -= 1
        return end

    def _flush(self, end: int) -> list[Piece]:
        if self.sent == 0 and self.args[:1].isspace():  # blanks before the arguments: none of theirs
            self.args = self.args.lstrip()
            end = self._safe_end() if end else 0
        if end <= self.sent:
            return []
        fragment, self.sent = self.args[self.sent : end], end
        return [ToolCallDelta(index=0, arguments=fragment)]
