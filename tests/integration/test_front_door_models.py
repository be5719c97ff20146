"""The front door with real local models (the embedded default's SmolLM2 and Gemma on llama.cpp): the
official openai SDK's JSON mode and JSON Schema output through gateway -> router -> gpu_host processes.
Also tools (function calling) and /v1/embeddings (the cache's MiniLM). One orchestra for the module."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import openai
import pytest

from bus.server import EmbeddedNats
from tests.support import minilm
from tests.support.cloud import free_port
from tests.support.procs import ActorProcess
from tests.support.profile import write_profile

pytestmark = pytest.mark.slow
KEY = "sk-front-door-5e1c9a7b3d"


@dataclass
class Orchestra:
    sdk: openai.OpenAI
    profile: Path


@pytest.fixture(scope="module")
def orchestra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orchestra]:
    tmp = tmp_path_factory.mktemp("front")
    server = EmbeddedNats(store_dir=tmp / "nats", port=0).start()
    procs: list[ActorProcess] = []
    try:
        port = free_port()
        (tmp / "data").mkdir()
        (tmp / "data" / "keys.txt").write_text(f"front:{KEY}\n")
        profile = write_profile(
            tmp / "profile",
            server.url,
            data_dir=tmp / "data",
            overrides={
                "gateway": {"port": port, "api_keys_file": "keys.txt"},
                "router": {"attempt_timeout": "90s"},
                "hosts": {"cpu0": {"cards": ["cpu0"], "n_threads": 2, "heartbeat": "1s"}},
                "cache": {"semantic": {"model_dir": str(minilm.model_dir())}},
            },
        )
        actors = (
            ("actors.gpu_host", ["--host", "cpu0"]),
            ("actors.cache", []),
            ("actors.router", []),
            ("actors.gateway", []),
        )
        for module, args in actors:
            procs.append(ActorProcess(module, profile, *args).start())
        for proc in procs:
            proc.wait_log("started", timeout=180)
        sdk = openai.OpenAI(api_key=KEY, base_url=f"http://127.0.0.1:{port}/v1", max_retries=0, timeout=120)
        _wait_ready(sdk)
        yield Orchestra(sdk=sdk, profile=profile)
        sdk.close()
    finally:
        for proc in reversed(procs):
            proc.stop()
        server.stop()


def _wait_ready(sdk: openai.OpenAI) -> None:
    import time

    deadline, last = time.monotonic() + 180, None
    while time.monotonic() < deadline:
        try:
            sdk.chat.completions.create(
                model="smollm2-135m", messages=[{"role": "user", "content": "hi"}], max_tokens=1
            )
            return
        except openai.APIStatusError as exc:
            last = exc
            time.sleep(0.5)
    raise AssertionError(f"not ready: {last}")


class City(msgspec.Struct, forbid_unknown_fields=True):
    city: str
    population: int
    capital: bool


CITY_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 40},
        "population": {"type": "integer"},
        "capital": {"type": "boolean"},
    },
    "required": ["city", "population", "capital"],
    "additionalProperties": False,
}


def test_json_mode_answers_a_json_object(orchestra: Orchestra) -> None:
    """response_format json_object on a real local model: the answer parses as a JSON object."""
    reply = orchestra.sdk.chat.completions.create(
        model="smollm2-135m",
        messages=[{"role": "user", "content": "Describe Paris as JSON."}],
        response_format={"type": "json_object"},
        temperature=0,
        max_tokens=200,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "stop", choice.message.content
    assert isinstance(json.loads(choice.message.content or ""), dict)


@pytest.mark.parametrize("model", ["smollm2-135m", "gemma3-270m", "auto"])
def test_a_json_schema_is_followed_by_real_local_models(orchestra: Orchestra, model: str) -> None:
    """response_format json_schema: the output parses and validates against the schema (a llama.cpp
    grammar built from it constrains the sampling), on each local model and through auto."""
    reply = orchestra.sdk.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Give the city, population and capital flag of Paris."}],
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": CITY_SCHEMA, "strict": True}},
        temperature=0,
        max_tokens=120,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "stop", choice.message.content
    city = msgspec.json.decode(choice.message.content or "", type=City)
    assert city.city


def test_a_schema_the_converter_cannot_take_is_a_400(orchestra: Orchestra) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        orchestra.sdk.chat.completions.create(
            model="smollm2-135m",
            messages=[{"role": "user", "content": "x"}],
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/nowhere"}}},
        )
    assert err.value.status_code == 400


class Weather(msgspec.Struct, forbid_unknown_fields=True):
    city: str
    unit: str


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 40},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_a_real_local_model_calls_the_declared_function(orchestra: Orchestra, choice: object) -> None:
    """The SDK declares a function; SmolLM2 answers with a tool_calls entry whose arguments parse against
    the function's schema (the grammar allows nothing else)."""
    reply = orchestra.sdk.chat.completions.create(
        model="smollm2-135m",
        messages=ASK,
        tools=[WEATHER_TOOL],
        tool_choice=choice,
        temperature=0,
        max_tokens=80,  # type: ignore[arg-type,list-item]
    )
    choice0 = reply.choices[0]
    assert choice0.finish_reason == "tool_calls"
    calls = choice0.message.tool_calls or []
    assert len(calls) == 1 and calls[0].function.name == "get_weather" and calls[0].id.startswith("call_")  # type: ignore[union-attr]
    args = msgspec.json.decode(calls[0].function.arguments, type=Weather)  # type: ignore[union-attr]
    assert args.unit in ("celsius", "fahrenheit")


def test_a_tool_result_goes_back_to_the_model(orchestra: Orchestra) -> None:
    """The assistant's call and the tool's result are sent back; the model answers in text."""
    history = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21, "sky": "sunny"}'},
    ]
    reply = orchestra.sdk.chat.completions.create(
        model="smollm2-135m",
        messages=history,
        tools=[WEATHER_TOOL],
        tool_choice="none",
        temperature=0,
        max_tokens=30,  # type: ignore[arg-type,list-item]
    )
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.choices[0].message.content and not reply.choices[0].message.tool_calls


def test_a_streamed_tool_call_arrives_as_deltas(orchestra: Orchestra) -> None:
    """stream=True on a real local model: the first tool_calls delta carries index, id, type and the name
    with empty arguments, the later ones argument fragments as the model writes them; joined, they validate
    against the schema; finish_reason tool_calls."""
    stream = orchestra.sdk.chat.completions.create(
        model="smollm2-135m",
        messages=ASK,
        tools=[WEATHER_TOOL],
        tool_choice="required",
        temperature=0,
        max_tokens=80,
        stream=True,  # type: ignore[arg-type,list-item]
    )
    deltas, finish = [], None
    for chunk in stream:
        if not chunk.choices:
            continue
        deltas += chunk.choices[0].delta.tool_calls or []
        finish = chunk.choices[0].finish_reason or finish
    head, *rest = deltas
    assert head.index == 0 and head.id and head.type == "function" and head.function
    assert head.function.name == "get_weather" and head.function.arguments == ""
    assert len(rest) > 1 and all(d.id is None and d.function and d.function.name is None for d in rest)
    arguments = "".join((d.function and d.function.arguments) or "" for d in rest)
    assert finish == "tool_calls"
    msgspec.json.decode(arguments, type=Weather)


def test_auto_answers_text_or_a_valid_call(orchestra: Orchestra) -> None:
    reply = orchestra.sdk.chat.completions.create(
        model="smollm2-135m",
        messages=ASK,
        tools=[WEATHER_TOOL],
        temperature=0,
        max_tokens=60,  # type: ignore[arg-type,list-item]
    )
    message = reply.choices[0].message
    if message.tool_calls:
        msgspec.json.decode(message.tool_calls[0].function.arguments, type=Weather)  # type: ignore[union-attr]
    else:
        assert message.content


def test_embeddings_through_the_sdk(orchestra: Orchestra) -> None:
    """The SDK's embeddings call (base64 by default, decoded by the SDK): 384 normalised floats per input,
    MiniLM's reference vector for "hello world", paraphrases closer than unrelated texts, usage counted."""
    import numpy as np

    texts = [
        "hello world",
        "How do I reset my password?",
        "What is the way to change my password?",
        "Tigers hunt at night.",
    ]
    reply = orchestra.sdk.embeddings.create(model="all-minilm-l6-v2", input=texts)
    vectors = np.array([d.embedding for d in reply.data], dtype=np.float32)
    assert vectors.shape == (4, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    # MiniLM runs with int8 weights: "hello world" is within 8.4e-3 a value of the float reference (measured)
    assert np.allclose(vectors[0][:5], [-0.034478, 0.03102, 0.00673, 0.02611, -0.039362], atol=0.015)
    assert vectors[1] @ vectors[2] > vectors[1] @ vectors[3] + 0.3
    assert reply.usage.prompt_tokens > 0 and reply.model == "all-minilm-l6-v2"
    plain = orchestra.sdk.embeddings.create(model="all-minilm-l6-v2", input="hello world", encoding_format="float")
    assert np.allclose(plain.data[0].embedding, vectors[0], atol=1e-5)
    assert "all-minilm-l6-v2" in {m.id for m in orchestra.sdk.models.list()}


def test_embeddings_refuse_what_they_cannot_honour(orchestra: Orchestra) -> None:
    """A text longer than MiniLM reads is a 400 naming it (never silently truncated); token ids, other
    dimensions and other models are refused by name."""
    cases = [
        ({"input": ["ok", "word " * 400]}, "input[1]"),
        ({"input": [[1, 2, 3]]}, "input[0]"),
        ({"input": "x", "dimensions": 128}, "dimensions"),
    ]
    for extra, param in cases:
        with pytest.raises(openai.BadRequestError) as err:
            orchestra.sdk.embeddings.create(model="all-minilm-l6-v2", encoding_format="float", **extra)  # type: ignore[arg-type]
        assert err.value.body["param"] == param  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        orchestra.sdk.embeddings.create(model="text-embedding-3-small", input="x")


def test_logprobs_of_a_real_local_model(orchestra: Orchestra) -> None:
    """logprobs / top_logprobs on llama.cpp: one entry per generated token, the model's own probabilities;
    at temperature 0 the chosen token is the most likely one."""
    reply = orchestra.sdk.chat.completions.create(
        model="smollm2-135m", messages=ASK, temperature=0, max_tokens=6, logprobs=True, top_logprobs=3
    )
    choice = reply.choices[0]
    content = choice.logprobs.content if choice.logprobs else None
    assert content and reply.usage is not None and len(content) == reply.usage.completion_tokens
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].token == entry.token and abs(entry.top_logprobs[0].logprob - entry.logprob) < 1e-6
    assert "".join(e.token for e in content) == choice.message.content
    legacy = orchestra.sdk.completions.create(
        model="gemma3-270m", prompt="Once upon a", max_tokens=4, logprobs=2, temperature=0
    )
    lp = legacy.choices[0].logprobs
    assert lp is not None and len(lp.tokens or []) == 4 and all(len(t) <= 2 for t in lp.top_logprobs or [])


def test_n_answers_from_one_local_model(orchestra: Orchestra) -> None:
    """n = 3 on SmolLM2: three choices, sampled with their own seeds, decoded side by side."""
    reply = orchestra.sdk.chat.completions.create(
        model="smollm2-135m", messages=ASK, n=3, temperature=1.0, seed=7, max_tokens=12
    )
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert all(c.message.content for c in reply.choices) and reply.model == "smollm2-135m"
    assert len({c.message.content for c in reply.choices}) > 1  # three seeds, not one answer three times
    assert reply.usage is not None and reply.usage.completion_tokens >= 3
