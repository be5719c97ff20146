"""The HTTP/1.1 wire format of the gateway's fast lane (fastlane.py), without I/O: which request heads the lane reads
(everything else is aiohttp's), and the status line and headers of its answers.

    taken = read_head(method, path, header_lines, heavy)   # (headers, body length, keep-alive) or None: aiohttp's
    head = head_bytes(200, "OK", {"Content-Type": "application/json"}, chunked=False, keep_alive=True)
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from email.utils import formatdate
from typing import Any

LANE_PATHS = frozenset({b"/v1/chat/completions", b"/v1/completions"})
MAX_HEAD = 16 * 1024  # a longer head is aiohttp's to read (and to refuse)
MAX_LINE = 8190  # aiohttp's limit for a header line: a longer one is handed over, for aiohttp to refuse
KEEPALIVE_S = 75.0  # an idle connection (or one that never completes a request) is closed after this, as aiohttp's
_REFUSED_HEADERS = (b"transfer-encoding", b"expect", b"upgrade")
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class Headers(Mapping[str, str]):
    """A request's headers, looked up without regard to case (names stored lower-case)."""

    __slots__ = ("_items",)

    def __init__(self, items: dict[str, str]) -> None:
        self._items = items

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    def get(self, name: str, default: Any = None) -> Any:
        return self._items.get(name.lower(), default)

    def __iter__(self) -> Any:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


class _Date:
    """The Date header, formatted once a second."""

    second = -1
    value = b""

    @classmethod
    def now(cls) -> bytes:
        second = int(time.time())
        if second != cls.second:
            cls.second, cls.value = second, formatdate(second, usegmt=True).encode()
        return cls.value


def read_head(method: bytes, path: bytes, lines: list[bytes], heavy: int) -> tuple[dict[str, str], int, bool] | None:
    """(headers, body length, keep-alive) of a head the lane takes, or None: aiohttp's to read."""
    if method != b"POST" or path not in LANE_PATHS:
        return None
    headers: dict[str, str] = {}
    length = -1
    keep_alive = True
    for line in lines:
        if len(line) > MAX_LINE:
            return None
        name, sep, value = line.partition(b":")
        if not sep or not name or not _TOKEN.issuperset(name):
            return None  # a folded or malformed line: aiohttp answers it
        key = name.lower()
        value = value.strip(b" \t")
        if key in _REFUSED_HEADERS:
            return None
        if key == b"content-length":
            if length >= 0 or not value.isdigit() or len(value) > 9:
                return None
            length = int(value)
        elif key == b"connection":
            tokens = {t.strip() for t in value.lower().split(b",")}
            if not tokens <= {b"keep-alive", b"close"}:
                return None
            keep_alive = b"close" not in tokens
        name_s, text = key.decode("ascii"), value.decode("latin-1")
        headers[name_s] = f"{headers[name_s]}, {text}" if name_s in headers else text
    if length < 0 or length >= heavy:
        return None
    return headers, length, keep_alive


def head_bytes(status: int, reason: str, headers: Mapping[str, str], *, chunked: bool, keep_alive: bool) -> bytes:
    """A response's status line and headers; ValueError for a header that would break the head."""
    head = [b"HTTP/1.1 %d %b\r\nDate: %b\r\n" % (status, reason.encode("latin-1"), _Date.now())]
    for name, value in headers.items():
        line = b"%b: %b\r\n" % (name.encode("latin-1"), value.encode("latin-1"))
        if line.count(b"\n") != 1 or b"\r" in line[:-2]:
            raise ValueError(f"the header {name!r} holds a line break")
        head.append(line)
    if chunked:
        head.append(b"Transfer-Encoding: chunked\r\n")
    if not keep_alive:
        head.append(b"Connection: close\r\n")
    head.append(b"\r\n")
    return b"".join(head)
