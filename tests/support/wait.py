"""Polling helpers: wait for a condition instead of sleeping a fixed time."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def eventually(check: Callable[[], Any | Awaitable[Any]], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Call ``check`` until it returns a truthy value (returned) or raise AssertionError at timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        last = value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {last!r})")
        await asyncio.sleep(interval)
