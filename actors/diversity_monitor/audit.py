"""The dashboard's audit view (``/dashboard/audit?id=...``): every stored record that names one request, the same
records ``orchestra audit`` replays, as an HTML table (every field escaped).

    records = await audit_records(js, request_id, at)    # within AUDIT_SPAN_S of ``at`` (or of now)
    page = audit_html(request_id, records)
"""

from __future__ import annotations

import html
import time
from datetime import UTC, datetime
from typing import Any

from nats.js import JetStreamContext

from bus import render, subjects
from bus.replay import replay

AUDIT_SPAN_S = 600.0  # the audit view searches this long around the event that links it


def audit_html(rid: str, records: list[dict[str, Any]]) -> str:
    rows = "\n".join(
        "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>".format(
            html.escape(datetime.fromtimestamp(r["at"], UTC).strftime("%H:%M:%S.%f")[:-3]),
            html.escape(r["kind"]),
            html.escape(r["subject"]),
            html.escape(r["text"]),
        )
        for r in records
    )
    empty = "" if records else "<p>nothing stored for this request in the window searched.</p>"
    rid = html.escape(rid)
    return (
        f"<!doctype html><meta charset=utf-8><title>audit {rid}</title>"
        '<link rel=stylesheet href="/dashboard/static/dashboard.css">'
        f'<body class=audit><p><a href="/dashboard">&larr; dashboard</a></p><h1>request <code>{rid}</code></h1>'
        f"<p>the same records as <code>orchestra audit</code> (UTC)</p>{empty}"
        f"<table><tr><th>time</th><th>kind</th><th>subject</th><th>what</th></tr>{rows}</table>"
    )


async def audit_records(js: JetStreamContext, request_id: str, at: float | None) -> list[dict[str, Any]]:
    """Every stored record that names the request, within AUDIT_SPAN_S of ``at`` (or of now)."""
    now = time.time()
    around = now if at is None else at
    start = datetime.fromtimestamp(around - AUDIT_SPAN_S, UTC)
    end = datetime.fromtimestamp(min(now, around + AUDIT_SPAN_S), UTC)
    filters = [f for spec in subjects.STREAMS for f in spec.subjects]
    needle = request_id.encode()
    out = []
    for when, _seq, _stream, subject, data in await replay(js, filters, start, end):
        if request_id in subject or needle in data:
            kind, _fields = render.decode(subject, data)
            text = render.line(when, subject, data).split(" ", 3)[-1]  # after the stamp and the kind
            out.append({"at": when.timestamp(), "kind": kind, "subject": subject, "text": text})
    return out
