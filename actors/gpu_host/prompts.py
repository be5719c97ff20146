"""From a request to the text a model continues: completions as given, chats through a chat format.

The chat format comes from the library (``chat_format`` in models.yaml: a llama-cpp-python format name such
as chatml, gemma, llama-3, mistral-instruct), else from the GGUF's own ``tokenizer.chat_template``. A
model with neither cannot take chat messages (the Gemma 3 GGUF has no template: its entry names ``gemma``).
"""

from __future__ import annotations

from typing import Any

from llama_cpp import llama_chat_format as cf

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


def build_prompt(
    request: GenerateRequest,
    *,
    model: str,
    chat_format: str | None,
    template: str | None = None,
    bos: str = "",
    eos: str = "",
) -> tuple[str, list[str]]:
    """The prompt text and the stop sequences the chat format adds (e.g. ``<|im_end|>``)."""
    if request.messages is None:
        return request.prompt or "", []
    messages: list[Any] = [{"role": m.role, "content": m.content} for m in request.messages]
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
    prompt = response.prompt
    if bos and prompt.startswith(bos):
        prompt = prompt[len(bos) :]  # the tokenizer adds BOS itself
    return prompt, [s for s in stop if s]
