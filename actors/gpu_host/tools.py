"""Function calling on local models (pure): the tools are described in a system turn, the output is
constrained by a grammar to a call ``{"name": ..., "arguments": {...}}`` whose arguments follow the
declared JSON Schema (``required`` / a named tool), or to a call or plain text (``auto``), and a call in
the output becomes a ToolCall.

Chat templates of small models know no tool turns: an assistant turn that called functions is shown as
the call's JSON, a tool result as a user turn that names the call it answers.
"""

from __future__ import annotations

import json
import uuid

import msgspec

from actors.gpu_host.errors import BadRequest
from actors.gpu_host.grammar import schema_grammar
from schemas.base import ToolCall
from schemas.request import ChatMessage, GenerateRequest, Sampling, Tool

_INSTRUCTIONS = (
    "You can call these functions:\n{tools}\n\n"
    'To call one, answer with only a JSON object: {{"name": <function name>, "arguments": <arguments object>}}.'
)
_AUTO = " If no function is needed, answer in plain text instead."
TEXT_RULE = "text ::= [^{] [^\\x00]*"


def chosen(s: Sampling) -> list[Tool]:
    """The tools the model may call under ``tool_choice``."""
    if s.tool_choice in ("auto", "required"):
        return list(s.tools)
    picked = [t for t in s.tools if t.name == s.tool_choice]
    if not picked:
        raise BadRequest(f"tool_choice names {s.tool_choice!r}, which is not among the tools")
    return picked


def _parameters(tool: Tool) -> object:
    try:
        return json.loads(tool.parameters)
    except ValueError as exc:
        raise BadRequest(f"tools: the parameters of {tool.name!r} are not JSON") from exc


def call_schema(tools: list[Tool]) -> str:
    """A JSON Schema for one call of one of ``tools`` (JSON text)."""
    options = [
        {
            "type": "object",
            "properties": {"name": {"const": t.name}, "arguments": _parameters(t)},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for t in tools
    ]
    # "name" before "arguments": the grammar keeps this order, so a stream can announce the call first
    return json.dumps(options[0] if len(options) == 1 else {"anyOf": options})


def tool_grammar(s: Sampling) -> str | None:
    """GBNF for the output: a call (``required`` or a named tool), a call or text (``auto``), None without
    tools or with ``none``."""
    if not s.calls_tools:
        return None
    call = schema_grammar(call_schema(chosen(s)))
    if s.tool_choice != "auto":
        return call
    renamed = call.replace("root ::=", "call ::=", 1)
    return f"root ::= call | text\n{renamed}\n{TEXT_RULE}\n"


def tool_messages(messages: list[ChatMessage], s: Sampling) -> list[ChatMessage]:
    """The conversation as a plain chat template can render it, with the tools described up front."""
    out: list[ChatMessage] = []
    names = {c.id: c.name for m in messages for c in m.tool_calls}
    for m in messages:
        if m.role == "tool":
            name = names.get(m.tool_call_id or "", "a function")
            out.append(ChatMessage(role="user", content=f"Result of {name} (call {m.tool_call_id}):\n{m.content}"))
        elif m.tool_calls:
            calls = [{"name": c.name, "arguments": json.loads(c.arguments or "{}")} for c in m.tool_calls]
            text = "\n".join(json.dumps(c) for c in calls)
            out.append(ChatMessage(role="assistant", content=f"{m.content}\n{text}".strip()))
        else:
            out.append(m)
    if not s.calls_tools:
        return out
    listed = "\n".join(
        json.dumps({"name": t.name, "description": t.description, "parameters": _parameters(t)}) for t in chosen(s)
    )
    system = _INSTRUCTIONS.format(tools=listed) + (_AUTO if s.tool_choice == "auto" else "")
    if out and out[0].role == "system":
        return [ChatMessage(role="system", content=f"{out[0].content}\n\n{system}"), *out[1:]]
    return [ChatMessage(role="system", content=system), *out]


def split_call(text: str, s: Sampling) -> tuple[str, list[ToolCall]]:
    """(text, calls) of a generation: a JSON call naming one of the tools becomes a ToolCall."""
    if not s.calls_tools or not text.lstrip().startswith("{"):
        return text, []
    try:
        obj = json.loads(text)
    except ValueError:
        return text, []
    names = {t.name for t in s.tools}
    if not isinstance(obj, dict) or obj.get("name") not in names or not isinstance(obj.get("arguments"), dict):
        return text, []
    call = ToolCall(id=f"call_{uuid.uuid4().hex[:24]}", name=obj["name"], arguments=json.dumps(obj["arguments"]))
    return "", [call]


def with_tools(request: GenerateRequest, s: Sampling) -> GenerateRequest:
    """The request with its conversation rewritten for a plain chat template when tools are involved."""
    messages = request.messages
    if messages is None or not (s.calls_tools or any(m.role == "tool" or m.tool_calls for m in messages)):
        return request
    return msgspec.structs.replace(request, messages=tool_messages(messages, s))
