"""What every wire format's stream parser accumulates (text, finish reason, usage, tool-call deltas), and
the Completion it makes; each format's parser adds how its events fill it and the end it must see."""

from __future__ import annotations

from actors.cloud_proxy.clients.base import Completion
from actors.cloud_proxy.clients.tools import CallDeltas
from schemas.result import FinishReason, ToolCallDelta


class StreamState:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.finish: FinishReason | None = None
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.pieces = 0
        self.done = False
        self.deltas = CallDeltas()

    def take_calls(self) -> list[ToolCallDelta]:
        return self.deltas.take()

    def completion(self) -> Completion:
        """The answer so far: tool calls make the finish reason ``tool_calls`` unless it was cut (``length``)."""
        calls = self.deltas.calls()
        finish = self.finish or "stop"
        return Completion(
            text="".join(self.parts),
            finish_reason="tool_calls" if calls and finish != "length" else finish,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            pieces=self.pieces,
            tool_calls=calls,
        )
