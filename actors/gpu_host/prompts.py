"""From a request to the text a model continues: completions as given, chats through a chat format.

The chat format comes from the library (``chat_format`` in models.yaml: a llama-cpp-python format name such
as chatml, gemma, llama-3, mistral-instruct), else from the GGUF's own ``tokenizer.chat_template``. A
model with neither cannot take chat messages (the Gemma 3 GGUF has no template: its entry names ``gemma``).

A chat prompt comes back as :class:`Segments`: the template's own text (role markers such as
``<|im_start|>`` are special tokens there) and the messages' contents, which the engine tokenises without
special-token parsing — a user who writes ``<|im_start|>system`` gets those characters, not a new turn.
The template is rendered with a placeholder for each content and the contents are put back afterwards.
"""

from __future__ import annotations

import re
from typing import Any

from llama_cpp import llama_chat_format as cf

from actors.gpu_host.engine import Segments
from actors.gpu_host.errors import ModelLoadError
from schemas.request import GenerateRequest

_FORMATTERS: dict[str, Any] = {
    "llama-2": cf.format_llama2,
    "llama-3": cf.format_llama3,
    "alpaca": cf.format_alpaca,
    "qwen": cf.format_qwen,
    "vicuna": cf.format,
    "oasst_llama": cf.format_oasst_llama,
    "baichuan-2": cf.format_baichuan2,
    "openbuddy": cf.format_openbuddy,
    "redpajama-incite": cf.format_redpajama_incite,
    "snoozy": cf.format_snoozy,
    "phind": cf.format_phind,
    "intel": cf.format_intel,
    "open-orca": cf.format_open_orca,
    "mistrallite": cf.format_mistrallite,
    "zephyr": cf.format_zephyr,
    "pygmalion": cf.format_pygmalion,
    "chatml": cf.format_chatml,
    "mistral-instruct": cf.format_mistral_instruct,
    "chatglm3": cf.format_chatglm3,
    "openchat": cf.format_openchat,
    "saiga": cf.format_saiga,
    "gemma": cf.format_gemma,
}
CHAT_FORMATS = tuple(sorted(_FORMATTERS))
_HOLDER = re.compile("\ue000([0-9]+)\ue001")  # private-use characters around a message index


def _holder(i: int) -> str:
    return f"\ue000{i}\ue001"


def _segments(rendered: str, contents: list[str]) -> Segments | None:
    """The rendered template with each placeholder replaced by its content (literal); None when the
    template did not keep a placeholder verbatim (it rewrote the content)."""
    parts: list[tuple[str, bool]] = []
    at = 0
    for m in _HOLDER.finditer(rendered):
        i = int(m.group(1))
        if i >= len(contents):
            return None
        parts.append((rendered[at : m.start()], False))
        parts.append((contents[i], True))
        at = m.end()
    parts.append((rendered[at:], False))
    if any("\ue000" in text or "\ue001" in text for text, literal in parts if not literal):
        return None  # a placeholder was cut or rewritten (a template may drop a message, e.g. gemma's system)
    return Segments(tuple((text, literal) for text, literal in parts if text))


def build_prompt(
    request: GenerateRequest,
    *,
    model: str,
    chat_format: str | None,
    template: str | None = None,
    bos: str = "",
    eos: str = "",
) -> tuple[str | Segments, list[str]]:
    """The prompt and the stop sequences the chat format adds (e.g. ``<|im_end|>``): a completion's prompt
    as given (a raw prompt may carry special tokens on purpose), a chat as :class:`Segments`."""
    if request.messages is None:
        return request.prompt or "", []
    contents = [m.content for m in request.messages]
    # an empty content stays empty (templates test it); the others become placeholders
    messages: list[Any] = [
        {"role": m.role, "content": _holder(i) if m.content else ""} for i, m in enumerate(request.messages)
    ]
    if chat_format is not None:
        formatter = _FORMATTERS.get(chat_format)
        if formatter is None:
            raise ModelLoadError(
                f"model {model!r}: unknown chat_format {chat_format!r} (known: {', '.join(CHAT_FORMATS)})"
            )
        response = formatter(messages=messages)
    elif template:
        response = cf.Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)(messages=messages)
    else:
        raise ModelLoadError(
            f"model {model!r} has no chat template in its file and no chat_format in models.yaml: "
            "send a completion (prompt), or set chat_format"
        )
    stop = response.stop if isinstance(response.stop, list) else [response.stop] if response.stop else []
    rendered = response.prompt
    if bos and rendered.startswith(bos):
        rendered = rendered[len(bos) :]  # the tokenizer adds BOS itself
    segments = _segments(rendered, contents)
    if segments is None:
        raise ModelLoadError(f"model {model!r}: its chat template rewrites message contents; set chat_format")
    return segments, [s for s in stop if s]
