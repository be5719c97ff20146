"""`orchestra status` for people: aligned tables in human units, times as ages, no Python reprs, and
ephemeral consumers summed per stream instead of listed by their random names."""

from __future__ import annotations

from bus import render, subjects
from cli.status_view import render_status

NOW = 1796523600.0


def report() -> dict:
    consumer = {"pending": 0, "ack_pending": 0, "redelivered": 0, "waiting": 1}
    return {
        "streams": [
            {
                "name": "RESULTS",
                "messages": 12345,
                "bytes": 2_500_000,
                "last": "2026-12-06T02:19:48+00:00",
                "consumers": [
                    {"name": "diversity_monitor", "durable": True, **consumer},
                    {"name": "budget_guard", "durable": True, **consumer, "pending": 3},
                    {"name": "Xk2pQ9", "durable": False, **consumer, "pending": 2},
                    {"name": "Yz8fL1", "durable": False, **consumer, "pending": 5},
                ],
            },
            {"name": "DEADLETTER", "missing": True},
        ],
        "state": {
            subjects.KV_HOSTS: {
                "cpu0": {
                    "host": "cpu0",
                    "up": True,
                    "heartbeat_at": NOW - 1,
                    "cards": [{"card": "cpu0", "total_bytes": 1_500_000_000, "used_bytes": 560_000_000}],
                    "models": [
                        {
                            "model": "smollm2-135m",
                            "instance": 0,
                            "keep_alive": "hot",
                            "bytes": 180_000_000,
                            "in_flight": 2,
                            "queue_depth": 7,
                            "tokens_per_s": 41.52,
                            "loaded_at": NOW - 720,
                        }
                    ],
                }
            },  # fmt: skip
            subjects.KV_PHASE: {
                "current": {
                    "phase": "phase_1_subject_expertise",
                    "since": NOW - 900,
                    "by": "rotator",
                    "rotation": {"primary": ["smollm2-135m"]},
                    "rotations": 3,
                    "rotated_at": NOW - 600,
                }
            },  # fmt: skip
            subjects.KV_TIERS: {
                "premium": {
                    "tier": "premium",
                    "enabled": False,
                    "reason": "cost spike",
                    "until": NOW + 5 * 3600,
                    "changed_at": NOW - 120,
                }
            },  # fmt: skip
            subjects.KV_PROVIDERS: {
                "together": {
                    "provider": "together",
                    "available": True,
                    "p50_latency_ms": 812.4,
                    "cooling": {"gpt-x": NOW + 120, "old": NOW - 5},
                    "cooldown_until": 0.0,
                    "updated_at": NOW - 2,
                }
            },  # fmt: skip
            subjects.KV_QUEUES: {},
        },
    }


def test_tables_are_aligned_with_human_units_and_no_reprs() -> None:
    """Sizes in KB/MB/GB, times as ages, rotation picks as text: no braces or brackets anywhere."""
    text = "\n".join(render_status(report(), NOW))
    assert "{" not in text and "[" not in text and "'" not in text
    lines = text.splitlines()
    assert lines[0].split() == ["STREAM", "MESSAGES", "SIZE", "LAST", "CONSUMERS"]
    assert "12,345" in lines[1] and "2.5 MB" in lines[1] and "12s ago" in lines[1]
    assert "560 MB of 1.5 GB" in text and "37%" in text
    model = next(line for line in lines if line.startswith("smollm2-135m"))
    assert model.split() == ["smollm2-135m", "cpu0", "hot", "2", "7", "41.5", "180", "MB", "12m", "ago"]
    assert "PHASE phase_1_subject_expertise, since 15m ago by rotator; 3 rotation(s), the last 10m ago" in text
    assert "  primary: smollm2-135m" in lines
    premium = next(line for line in lines if line.startswith("premium"))
    assert premium.split()[:4] == ["premium", "DISABLED", "in", "5h"] and "cost spike" in premium
    assert "gpt-x in 2m" in text and "old" not in text.split("MODELS COOLING")[1]
    header = next(line for line in lines if line.startswith("MODEL "))
    assert header.index("QUEUE") + len("QUEUE") == model.index(" 7") + 2  # numbers right-aligned under headers


def test_ephemeral_consumers_are_summed_not_listed() -> None:
    """Random-named ephemeral consumers become one line per stream with their summed pending count."""
    text = "\n".join(render_status(report(), NOW))
    assert "Xk2pQ9" not in text and "Yz8fL1" not in text
    assert "diversity_monitor, budget_guard + 2 ephemeral" in text
    row = next(line for line in text.splitlines() if "(2 ephemeral)" in line)
    assert row.split()[:5] == ["RESULTS", "(2", "ephemeral)", "7", "0"]
    assert "not created yet" in text


def test_human_units() -> None:
    """Bytes, spans and ages as people read them."""
    assert [render.human_bytes(n) for n in (512, 1_500, 560_000_000, 1_500_000_000)] == [
        "512 B", "1.5 KB", "560 MB", "1.5 GB",
    ]  # fmt: skip
    assert [render.human_span(s) for s in (3, 240, 9000, 3 * 86400)] == ["3s", "4m", "2.5h", "3d"]
    assert render.ago(0, NOW) == "-" and render.ago(NOW - 30, NOW) == "30s ago"
    assert render.ago(NOW + 300, NOW) == "in 5m"
