"""Logging set-up: one line per record, no colours, and a filter that masks registered secrets.

Secrets are never logged on purpose; ``register_secret`` is the second line of defence: any record
whose text contains a registered value is rewritten with the value replaced by ``***``.
"""

from __future__ import annotations

import logging
import sys
import threading

_SECRETS: set[str] = set()
_LOCK = threading.Lock()
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def register_secret(value: str | None) -> None:
    if value and len(value) >= 6:
        with _LOCK:
            _SECRETS.add(value)


def forget_secret(value: str | None) -> None:
    with _LOCK:
        _SECRETS.discard(value or "")


def redact(text: str) -> str:
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, "***")
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not _SECRETS:
            return True
        message = record.getMessage()
        cleaned = redact(message)
        if record.exc_info and record.exc_info[1] is not None:
            exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(exc_text)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def setup_logging(level: str = "INFO", *, stream: object = None) -> None:
    """Configure the root logger once per process (actors, CLI)."""
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # nats-py logs every reconnect attempt with a traceback at ERROR; our callbacks say it once.
    logging.getLogger("nats").setLevel(logging.CRITICAL)
    logging.getLogger("asyncio").setLevel(logging.WARNING)
