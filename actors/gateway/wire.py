"""The HTTP/1.1 wire format of the gateway's fast lane (fastlane.py), without I/O: which request heads the lane reads
(everything else is aiohttp's), and the status line and headers of its answers.

    may_begin(buffer, scanned)           # False: these bytes cannot start a head the lane reads (hand them over now)
    taken = read_head(head, heavy)       # (path, headers, body length, keep-alive) or None: aiohttp's
    head = head_bytes(200, "OK", {"Content-Type": "application/json"}, chunked=False, keep_alive=True)

What the lane reads is a strict subset of what aiohttp (llhttp, strict mode) accepts: everything else is handed
over for aiohttp to answer or refuse, so a request is never read two ways. So a head with a bare LF, a control
character in a value, no Host, a repeated singleton header or more than aiohttp's 128 headers is aiohttp's.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from email.utils import formatdate
from typing import Any

REQUEST_LINES = {
    b"POST /v1/chat/completions HTTP/1.1": "/v1/chat/completions",
    b"POST /v1/completions HTTP/1.1": "/v1/completions",
}
_LINE_STARTS = tuple(line + b"\r\n" for line in REQUEST_LINES)
_LONGEST_LINE = max(len(start) for start in _LINE_STARTS)
MAX_HEADERS = 128  # aiohttp's limit: a head with more is aiohttp's to refuse
MAX_HEAD = 16 * 1024  # a longer head is aiohttp's to read (and to refuse)
MAX_LINE = 8190  # aiohttp's limit for a header line: a longer one is handed over, for aiohttp to refuse
KEEPALIVE_S = 75.0  # a connection silent this long while no request of it is answered is closed (aiohttp's 75 s)
_REFUSED_HEADERS = (b"transfer-encoding", b"expect", b"upgrade")
# RFC 9110's singleton headers, as aiohttp's strict parser lists them: a head repeating one is aiohttp's to refuse
_SINGLETONS = frozenset(
    {
        b"content-length",
        b"content-location",
        b"content-range",
        b"content-type",
        b"etag",
        b"host",
        b"max-forwards",
        b"server",
        b"transfer-encoding",
        b"user-agent",
    }
)
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # no field value may hold these (RFC 9110 5.5): tab may
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


def may_begin(buffer: bytes | bytearray, scanned: int) -> bool:
    """Whether bytes without a whole head yet can still begin one the lane reads: its request line exactly, and no
    line ended by a bare LF after ``scanned`` (the bytes before it were checked already)."""
    line_end = buffer.find(b"\n", 0, _LONGEST_LINE)
    if line_end < 0:  # the request line so far must be the start of one of the lane's
        return any(start.startswith(buffer[: len(start)]) for start in _LINE_STARTS)
    if not buffer.startswith(_LINE_STARTS):
        return False
    i = buffer.find(b"\n", max(scanned, line_end + 1))
    while i >= 0:
        if buffer[i - 1] != 13:  # a bare LF: aiohttp's to refuse
            return False
        i = buffer.find(b"\n", i + 1)
    return True


def read_head(head: bytes, heavy: int) -> tuple[str, dict[str, str], int, bool] | None:
    """(path, headers, body length, keep-alive) of a head the lane takes (without its closing blank line), or
    None: aiohttp's to read."""
    lines = head.split(b"\r\n")
    path = REQUEST_LINES.get(lines[0])
    if path is None or len(lines) > MAX_HEADERS + 1:
        return None
    headers: dict[str, str] = {}
    seen: set[bytes] = set()
    length = -1
    keep_alive = True
    for line in lines[1:]:
        if len(line) > MAX_LINE:
            return None
        name, sep, value = line.partition(b":")
        if not sep or not name or not _TOKEN.issuperset(name):
            return None  # a folded or malformed line: aiohttp answers it
        key = name.lower()
        value = value.strip(b" \t")
        if key in _REFUSED_HEADERS or _CONTROL.search(value) is not None:
            return None
        if key in _SINGLETONS:
            if key in seen:
                return None
            seen.add(key)
        if key == b"content-length":
            if not value.isdigit() or len(value) > 9:
                return None
            length = int(value)
        elif key == b"connection":
            tokens = {t.strip() for t in value.lower().split(b",")}
            if not tokens <= {b"keep-alive", b"close"}:
                return None
            keep_alive = b"close" not in tokens
        name_s, text = key.decode("ascii"), value.decode("utf-8", "surrogateescape")  # as aiohttp decodes them
        headers[name_s] = f"{headers[name_s]}, {text}" if name_s in headers else text
    if length < 0 or length >= heavy or b"host" not in seen:
        return None
    return path, headers, length, keep_alive


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
