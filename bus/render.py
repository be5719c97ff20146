"""One line (or one JSON object) per bus message, for ``watch`` and ``audit``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import msgspec

from bus import subjects
from schemas.codec import ATTEMPT_FAILED, COMMAND, DISPATCH, EVENT, OUTCOME, REQUEST
from schemas.errors import SchemaError


def decode(subject: str, data: bytes) -> tuple[str, dict[str, Any]]:
    """(kind, fields) of a bus message; undecodable payloads are shown raw."""
    area = subjects.area(subject)
    try:
        if area == "event":
            ev = EVENT.decode(data)
            return str(type(ev).__struct_config__.tag), msgspec.to_builtins(ev)
        if area == "cmd":
            cmd = COMMAND.decode(data)
            return "cmd." + str(type(cmd).__struct_config__.tag), msgspec.to_builtins(cmd)
        if area == "request":
            req = REQUEST.decode(data)
            return "request", _request_fields(msgspec.to_builtins(req))
        if area == "dispatch":
            d = DISPATCH.decode(data)
            fields = {"request_id": d.request.id, "attempt": d.attempt, **msgspec.to_builtins(d.target)}
            fields.update(strategy=d.strategy, route=d.route)
            return "dispatch", fields
        if subjects.is_attempt_failed(subject):
            return "attempt.failed", msgspec.to_builtins(ATTEMPT_FAILED.decode(data))
        if area == "result":
            out = OUTCOME.decode(data)
            return "result." + str(type(out).__struct_config__.tag), msgspec.to_builtins(out)
    except SchemaError:
        pass
    try:
        return "raw", {"data": json.loads(data)}
    except ValueError:
        return "raw", {"data": data[:200].decode(errors="replace")}


def _request_fields(req: dict[str, Any]) -> dict[str, Any]:
    text = req.get("prompt") or " | ".join(m["content"] for m in req.get("messages") or [])
    return {
        "id": req["id"],
        "model": req.get("model"),
        "mode": req.get("mode"),
        "priority": req.get("priority"),
        "prompt": text[:80] + ("..." if len(text) > 80 else ""),
    }


_SKIP = {"kind", "at", "source", "created_at"}


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        text = json.dumps(value, separators=(",", ":"))
    else:
        text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def line(when: datetime, subject: str, data: bytes) -> str:
    kind, fields = decode(subject, data)
    source = fields.get("source") if isinstance(fields, dict) else None
    shown = " ".join(
        f"{k}={_short(v)}" for k, v in fields.items() if k not in _SKIP and v not in (None, "", [], {}, 0, 0.0)
    )
    stamp = when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    by = f" [{source}]" if source else ""
    return f"{stamp} {kind}{by} {shown}".rstrip()


def as_json(when: datetime, subject: str, data: bytes, seq: int | None = None) -> str:
    kind, fields = decode(subject, data)
    record: dict[str, Any] = {
        "time": when.astimezone(UTC).isoformat(),
        "subject": subject,
        "kind": kind,
        "data": fields,
    }
    if seq is not None:
        record["seq"] = seq
    return json.dumps(record, separators=(",", ":"))


# --- tables and human units (``orchestra status`` and friends) ---------------------------------------
def table(headers: list[str], rows: list[list[Any]], indent: str = "  ") -> list[str]:
    """Aligned columns: numbers (and human sizes/durations that start with a digit) to the right."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    right = []
    for i in range(len(headers)):
        values = [r[i] for r in cells if r[i] not in ("", "-")]
        right.append(bool(values) and all(_numeric(v) for v in values))

    def fmt(row: list[str]) -> str:
        parts = [c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right, strict=True)]
        return (indent + "  ".join(parts)).rstrip()

    return [fmt(headers), *(fmt(r) for r in cells)]


def _numeric(text: str) -> bool:
    return bool(text) and (text[0].isdigit() or text[0] in "$-+.") and not text.endswith(" ago")


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" or value >= 100 else f"{value:.3g} {unit}"
        value /= 1000
    return f"{value:.3g} TB"  # pragma: no cover


def human_span(seconds: float) -> str:
    """3s, 4m, 2.5h, 3d."""
    s = abs(seconds)
    if s < 90:
        return f"{s:.0f}s"
    if s < 90 * 60:
        return f"{s / 60:.0f}m"
    if s < 48 * 3600:
        return f"{s / 3600:.1f}h".replace(".0h", "h")
    return f"{s / 86400:.0f}d"


def ago(at: float | None, now: float) -> str:
    """'12s ago' for a past epoch time, 'in 5m' for a future one, '-' for never (0 / None)."""
    if not at:
        return "-"
    return f"{human_span(now - at)} ago" if at <= now else f"in {human_span(at - now)}"
