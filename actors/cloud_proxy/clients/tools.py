"""Function calling in the three wire formats (pure): OpenAI's ``tools`` / ``tool_calls`` are the
orchestra's own shape (passed through); Anthropic takes ``tools`` with ``input_schema`` and answers with
``tool_use`` blocks (results go back as ``tool_result`` blocks in a user turn); Gemini takes
``functionDeclarations`` with a ``functionCallingConfig`` and answers with ``functionCall`` parts (results
go back as ``functionResponse`` parts). Streamed calls become OpenAI-style deltas (``CallDeltas``):
OpenAI's ``delta.tool_calls`` pass through, Anthropic's ``tool_use`` block start and ``input_json_delta``
fragments are translated, Gemini sends each ``functionCall`` whole (one delta with all its arguments).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from schemas.base import ToolCall
from schemas.request import ChatMessage, Sampling
from schemas.result import ToolCallDelta


def _params(text: str) -> Any:
    return json.loads(text or "{}")


def _args(text: str) -> Any:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def new_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


# --- OpenAI -----------------------------------------------------------------------------------------
def openai_message(m: ChatMessage) -> dict[str, Any]:
    if m.role == "tool":
        return {"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content}
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["content"] = m.content or None
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in m.tool_calls
        ]
    return out


def openai_tools(s: Sampling) -> dict[str, Any]:
    if not s.tools:
        return {}
    out: dict[str, Any] = {
        "tools": [
            {
                "type": "function",
                "function": {"name": t.name, "description": t.description, "parameters": _params(t.parameters)},
            }
            for t in s.tools
        ]
    }
    if s.tool_choice in ("auto", "none", "required"):
        out["tool_choice"] = s.tool_choice
    else:
        out["tool_choice"] = {"type": "function", "function": {"name": s.tool_choice}}
    if s.parallel_tool_calls is not None:
        out["parallel_tool_calls"] = s.parallel_tool_calls
    return out


def openai_calls(message: Any) -> list[ToolCall]:
    calls = []
    for c in (message or {}).get("tool_calls") or []:
        fn = c.get("function") or {}
        calls.append(
            ToolCall(id=str(c.get("id") or new_id()), name=str(fn.get("name")), arguments=fn.get("arguments") or "{}")
        )
    return calls


# --- Anthropic --------------------------------------------------------------------------------------
def anthropic_messages(chat: list[ChatMessage]) -> list[dict[str, Any]]:
    """User and assistant turns; tool results become tool_result blocks of a user turn (consecutive ones
    merged: the API wants the roles to alternate)."""
    out: list[dict[str, Any]] = []
    for m in chat:
        if m.role == "system":
            continue
        if m.role == "tool":
            block = {"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.content}
            if out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list):
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
        elif m.tool_calls:
            blocks: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
            blocks += [
                {"type": "tool_use", "id": c.id, "name": c.name, "input": _args(c.arguments)} for c in m.tool_calls
            ]
            out.append({"role": "assistant", "content": blocks})
        else:
            out.append({"role": m.role, "content": m.content})
    return out


def anthropic_tools(s: Sampling) -> dict[str, Any]:
    if not s.tools:
        return {}
    tools = [{"name": t.name, "description": t.description, "input_schema": _params(t.parameters)} for t in s.tools]
    choice: dict[str, Any]
    if s.tool_choice == "auto":
        choice = {"type": "auto"}
    elif s.tool_choice == "none":
        choice = {"type": "none"}
    elif s.tool_choice == "required":
        choice = {"type": "any"}
    else:
        choice = {"type": "tool", "name": s.tool_choice}
    if s.parallel_tool_calls is False and choice["type"] != "none":
        choice["disable_parallel_tool_use"] = True
    return {"tools": tools, "tool_choice": choice}


def anthropic_calls(content: Any) -> list[ToolCall]:
    return [
        ToolCall(id=str(b.get("id") or new_id()), name=str(b.get("name")), arguments=json.dumps(b.get("input") or {}))
        for b in content or []
        if isinstance(b, dict) and b.get("type") == "tool_use"
    ]


# --- Gemini -----------------------------------------------------------------------------------------
def gemini_contents(chat: list[ChatMessage]) -> list[dict[str, Any]]:
    names = {c.id: c.name for m in chat for c in m.tool_calls}
    out: list[dict[str, Any]] = []
    for m in chat:
        if m.role == "system":
            continue
        if m.role == "tool":
            try:
                response = json.loads(m.content)
            except ValueError:
                response = m.content
            if not isinstance(response, dict):
                response = {"content": response}
            part = {"functionResponse": {"name": names.get(m.tool_call_id or "", "function"), "response": response}}
            if out and out[-1]["role"] == "user" and "functionResponse" in out[-1]["parts"][0]:
                out[-1]["parts"].append(part)
            else:
                out.append({"role": "user", "parts": [part]})
        elif m.tool_calls:
            parts: list[dict[str, Any]] = [{"text": m.content}] if m.content else []
            parts += [{"functionCall": {"name": c.name, "args": _args(c.arguments)}} for c in m.tool_calls]
            out.append({"role": "model", "parts": parts})
        else:
            out.append({"role": "model" if m.role == "assistant" else "user", "parts": [{"text": m.content}]})
    return out


def gemini_tools(s: Sampling) -> dict[str, Any]:
    if not s.tools:
        return {}
    declarations = [
        {"name": t.name, "description": t.description, "parameters": _params(t.parameters)} for t in s.tools
    ]
    mode = {"auto": "AUTO", "none": "NONE", "required": "ANY"}.get(s.tool_choice, "ANY")
    config: dict[str, Any] = {"mode": mode}
    if s.tool_choice not in ("auto", "none", "required"):
        config["allowedFunctionNames"] = [s.tool_choice]
    return {"tools": [{"functionDeclarations": declarations}], "toolConfig": {"functionCallingConfig": config}}


def gemini_calls(parts: Any) -> list[ToolCall]:
    return [
        ToolCall(
            id=new_id(),
            name=str(p["functionCall"].get("name")),
            arguments=json.dumps(p["functionCall"].get("args") or {}),
        )
        for p in parts or []
        if isinstance(p, dict) and isinstance(p.get("functionCall"), dict)
    ]


class CallDeltas:
    """Function calls of a stream as they come: deltas for the client (``take``), the calls whole at the
    end (``calls``). Calls are numbered 0, 1, ... in the order they start."""

    def __init__(self) -> None:
        self._calls: list[list[str]] = []  # [id, name, arguments so far]
        self._by_key: dict[object, int] = {}  # the provider's index (or block index) -> our index
        self._pending: list[ToolCallDelta] = []

    def start(self, key: object, call_id: str | None, name: str, arguments: str = "") -> None:
        index = self._by_key.setdefault(key, len(self._calls))
        if index == len(self._calls):
            self._calls.append([call_id or new_id(), name, ""])
        self._calls[index][2] += arguments
        call = self._calls[index]
        self._pending.append(ToolCallDelta(index=index, id=call[0], name=call[1], arguments=arguments))

    def add(self, key: object, fragment: str) -> None:
        index = self._by_key.get(key)
        if index is None or not fragment:
            return
        self._calls[index][2] += fragment
        self._pending.append(ToolCallDelta(index=index, arguments=fragment))

    def known(self, key: object) -> bool:
        return key in self._by_key

    def take(self) -> list[ToolCallDelta]:
        out, self._pending = self._pending, []
        return out

    def calls(self) -> list[ToolCall]:
        return [ToolCall(id=i, name=n, arguments=a or "{}") for i, n, a in self._calls]
