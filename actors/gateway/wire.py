"""The HTTP/1.1 wire format of the gateway's fast lane (fastlane.py), without I/O: which request heads the lane reads
(everything else is aiohttp's), and the status line and headers of its answers.

    scanned = scan_head(buffer, scanned)  # -1: these bytes cannot begin a head the lane reads (hand them over now)
    taken = read_head(head, heavy)        # (path, headers, body length, keep-alive) or None: aiohttp's
    head = head_bytes(200, "OK", [("Content-Type", "application/json")], chunked=False, keep_alive=True)

What the lane reads is a strict subset of what aiohttp (llhttp, strict mode) accepts: everything else is handed
over for aiohttp to answer or refuse, so a request is never read two ways. So a head with a bare LF, a control
character in a value, no Host, a header given twice, more than aiohttp's 128 headers, an encoded body or a proxy's
connection header is aiohttp's.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
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
MAX_NAME = 256  # a longer header name is aiohttp's (its limit counts names across lines: kept far from it here)
SERVER = "llm-orchestra"  # the Server header of every answer, the lane's and aiohttp's alike (no version given away)
_SERVER = SERVER.encode()
KEEPALIVE_S = 75.0  # a connection silent this long while no request of it is answered is closed (aiohttp's 75 s)
# bodies and connections the lane does not handle: a chunked or encoded body, an interim answer, another protocol,
# a proxy's connection header, and the one header llhttp refuses by its name
_REFUSED_HEADERS = frozenset(
    {
        b"transfer-encoding",
        b"content-encoding",
        b"expect",
        b"upgrade",
        b"proxy-connection",
        b"sec-websocket-key1",
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


def scan_head(buffer: bytes | bytearray, scanned: int) -> int:
    """Check the lines of an unfinished head completed since ``scanned`` (where the first line not yet checked
    starts; 0 at first) by the rules of :func:`read_head`: the new such offset, or -1 when these bytes can no
    longer begin a head the lane reads (for aiohttp to answer at once, not at a timeout)."""
    if scanned == 0:  # the request line: exactly one of the lane's
        line_end = buffer.find(b"\n", 0, _LONGEST_LINE)
        if line_end < 0:
            return 0 if any(start.startswith(buffer[: len(start)]) for start in _LINE_STARTS) else -1
        if not buffer.startswith(_LINE_STARTS):
            return -1
        scanned = line_end + 1
    while (line_end := buffer.find(b"\n", scanned)) >= 0:
        if buffer[line_end - 1] != 13:  # a bare LF
            return -1
        line = bytes(buffer[scanned : line_end - 1])
        if not line:
            return scanned  # the blank line: the head is whole (read_head reads it)
        if _field(line) is None:
            return -1
        scanned = line_end + 1
    cr = buffer.find(b"\r", scanned)
    if (cr >= 0 and cr != len(buffer) - 1) or len(buffer) - scanned > MAX_LINE + 1:
        return -1  # a CR not ending its line, or a line already too long
    return scanned


def _field(line: bytes) -> tuple[bytes, bytes] | None:
    """(lower-case name, value) of a header line the lane reads, or None: aiohttp's (to read or to refuse)."""
    if len(line) > MAX_LINE:
        return None
    name, sep, value = line.partition(b":")
    if not sep or not name or len(name) > MAX_NAME or not _TOKEN.issuperset(name):
        return None  # a folded or malformed line
    key = name.lower()
    value = value.strip(b" \t")
    if key in _REFUSED_HEADERS or _CONTROL.search(value) is not None:
        return None
    return key, value


def read_head(head: bytes, heavy: int) -> tuple[str, dict[str, str], int, bool] | None:
    """(path, headers, body length, keep-alive) of a head the lane takes (without its closing blank line), or
    None: aiohttp's to read. Each header appears once (a repeated one is aiohttp's: it refuses some and reads
    others as their first value), so every header means here what it means to aiohttp."""
    lines = head.split(b"\r\n")
    path = REQUEST_LINES.get(lines[0])
    if path is None or len(lines) > MAX_HEADERS + 1:
        return None
    headers: dict[str, str] = {}
    length = -1
    keep_alive = True
    for line in lines[1:]:
        field = _field(line)
        if field is None:
            return None
        key, value = field
        name = key.decode("ascii")
        if name in headers:
            return None
        if key == b"content-length":
            if not value.isdigit() or len(value) > 9:
                return None
            length = int(value)
        elif key == b"connection":
            tokens = {t.strip() for t in value.lower().split(b",")}
            if not tokens <= {b"keep-alive", b"close"}:
                return None
            keep_alive = b"close" not in tokens
        headers[name] = value.decode("utf-8", "surrogateescape")  # as aiohttp decodes them
    if length < 0 or length >= heavy or "host" not in headers:
        return None
    return path, headers, length, keep_alive


def head_bytes(
    status: int, reason: str, headers: Iterable[tuple[str, str]], *, chunked: bool, keep_alive: bool
) -> bytes:
    """A response's status line and headers (pairs: a name may repeat); ValueError for a header that would break
    the head."""
    head = [b"HTTP/1.1 %d %b\r\nDate: %b\r\nServer: %b\r\n" % (status, reason.encode("latin-1"), _Date.now(), _SERVER)]
    for name, value in headers:
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
