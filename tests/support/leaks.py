"""The session-wide secret check: every secret value the tests hand to the orchestra (API keys, the
gateway's client keys, vault values) must never show up in a log line, whether logged in the test
process or by an actor process started through ``ActorProcess``. ``tests/conftest.py`` watches the
whole run and fails it at the end, naming the record or file, when one does. Tests that check a
particular path more closely (the bus, ``orchestra status``) grep for themselves as well.

Add the value here when a test introduces a new secret."""

from __future__ import annotations

import logging
from pathlib import Path

CANARIES: tuple[str, ...] = (
    "sk-e2e-7f3a9c2b5d1e8f4a6b0c",  # test_e2e: the gateway's client key
    "tg-e2e-1c4d7e0a3b6f9c2d5e8a",  # test_e2e: the Together key
    "sk-llama-test-5f9e2c7a1b3d",  # test_cloud_openai: the llama-server key
    "sk-wrong-key-for-llama-000",  # test_cloud_openai: a wrong key is a secret too
    "sk-ant-leakcanary-3e8b0d2f6c4a",  # test_cloud_openai
    "AIza-leakcanary-9d7c5b3a1e0f",  # test_cloud_openai
    "sk-ant-test-8c1d5e0f4a7b",  # test_cloud_formats
    "sk-ant-rotated-77aa11bb22",  # test_cloud_formats: the rotated key
    "sk-vault-value-123456",  # test_cloud_formats: read from the vault
    "sk-test-0123456789abcdef",  # test_gateway: the client key
)

# Files that actor processes wrote their logs to during this run.
LOG_FILES: list[Path] = []


def found_in(text: str) -> list[str]:
    return [c for c in CANARIES if c in text]


class LeakWatch(logging.Handler):
    """Keeps every log record of this process that carries a canary."""

    def __init__(self) -> None:
        super().__init__(level=logging.NOTSET)
        self.leaks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a broken format is another test's business
            text = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            text += f" {record.exc_info[1]!r}"
        found = found_in(text)
        for canary in found:
            text = text.replace(canary, f"{canary[:6]}…")  # the report names it without repeating it
        self.leaks += [f"{record.name} {record.levelname}: {text[:200]!r}"] if found else []

    def report(self) -> list[str]:
        out = list(self.leaks)
        for path in LOG_FILES:
            if path.exists():
                text = path.read_text(errors="replace")
                out += [f"{path}: {c[:6]}…" for c in found_in(text)]
        return out
