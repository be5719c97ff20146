"""Grammars that constrain a local model's output (pure): JSON mode and JSON Schema through llama.cpp's
GBNF, built by llama-cpp-python's schema converter. The output of a constrained generation always parses
(and follows the schema) unless ``max_tokens`` cuts it: its finish_reason then says ``length``.
"""

from __future__ import annotations

import json
from functools import lru_cache

from llama_cpp.llama_grammar import json_schema_to_gbnf

from actors.gpu_host.errors import BadRequest
from schemas.request import ResponseFormat

ANY_OBJECT = '{"type": "object"}'  # JSON mode: any object, with bounded whitespace (no endless newlines)


@lru_cache(maxsize=256)
def schema_grammar(schema: str) -> str:
    """GBNF for a JSON Schema (JSON text); BadRequest when the converter cannot take it."""
    try:
        json.loads(schema)
        return json_schema_to_gbnf(schema)
    except (ValueError, KeyError, TypeError, NotImplementedError, RecursionError, AssertionError) as exc:
        raise BadRequest(f"response_format: the JSON schema cannot be turned into a grammar: {exc}") from exc


def grammar_for(fmt: ResponseFormat | None) -> str | None:
    if fmt is None:
        return None
    if fmt.type == "json_object" or not fmt.json_schema:
        return schema_grammar(ANY_OBJECT)
    return schema_grammar(fmt.json_schema)
