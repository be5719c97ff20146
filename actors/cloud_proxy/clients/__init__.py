"""Provider clients: one transport (http1: a lean keep-alive HTTP/1.1 client) and one pure wire format per API."""

from __future__ import annotations

from actors.cloud_proxy.clients.anthropic import AnthropicWire
from actors.cloud_proxy.clients.base import Call, Completion, HttpClient, Wire
from actors.cloud_proxy.clients.gemini import GeminiWire
from actors.cloud_proxy.clients.openai import OpenAIWire

WIRES: dict[str, type[OpenAIWire] | type[AnthropicWire] | type[GeminiWire]] = {
    "openai": OpenAIWire,
    "anthropic": AnthropicWire,
    "gemini": GeminiWire,
}


def wire_for(api: str) -> Wire:
    return WIRES[api]()


__all__ = ["Call", "Completion", "HttpClient", "Wire", "wire_for"]
