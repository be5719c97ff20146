"""The front door with real local models (the embedded default's SmolLM2 and Gemma on llama.cpp): the
official openai SDK's JSON mode and JSON Schema output through gateway -> router -> gpu_host processes.
One orchestra for the module."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import openai
import pytest

from bus.server import EmbeddedNats
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
            },
        )
        for module, args in (("actors.gpu_host", ["--host", "cpu0"]), ("actors.router", []), ("actors.gateway", [])):
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
