"""Edges of the gateway that both of its HTTP paths (the fast lane and aiohttp) share: a key header that is not
UTF-8 is a refusal, not a bug; settling a finished request's key counts never fails the answer."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from actors.gateway.keys import KeyStore
from actors.gateway.limits import Admission, KeyLimiter
from schemas.config.actors import GatewayCfg

KEY = "sk-test-0123456789abcdef"


def test_a_key_that_is_not_utf8_matches_no_key_and_raises_nothing(tmp_path: Path) -> None:
    (tmp_path / "keys.txt").write_text(f"alice:{KEY}\n")
    store = KeyStore(GatewayCfg(api_keys_file="keys.txt"), str(tmp_path))
    store.load()
    assert store.check(f"Bearer {KEY}") is not None
    not_utf8 = b"Bearer \xff\xfe".decode("utf-8", "surrogateescape")  # how both paths decode such a header
    assert store.check(not_utf8) is None
    assert store.check(f"Bearer {KEY}\udcff") is None


class FailingKV:
    """A key-value bucket whose every call fails, as on a bus outage."""

    async def get(self, key: str) -> Any:
        raise TimeoutError("nats: timeout")


async def test_settling_a_finished_request_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    limiter = KeyLimiter(FailingKV(), "gw-1")  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="actors.gateway.limits"):
        await limiter.release(Admission(key_id="alice", tokens=100), used=80)
    assert "alice" in caplog.text and "could not be settled" in caplog.text
