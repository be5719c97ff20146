"""bus/consumer.py Delivery: deliveries, stream sequence and stored-at read from the ack subject agree
with nats-py's own parse, for the plain subject and for one with a domain (left to nats-py)."""

from __future__ import annotations

from typing import Any

import pytest
from nats.aio.msg import Msg

from bus.consumer import Delivery

PLAIN = "$JS.ACK.RESULTS.budget_guard-settle.3.123456.123450.1733490000123456789.17"
DOMAIN = "$JS.ACK.hub.ACCHASH.RESULTS.budget_guard-settle.3.123456.123450.1733490000123456789.17.r4nd0m"


@pytest.mark.parametrize("reply", [PLAIN, DOMAIN])
def test_delivery_fields_match_nats_metadata(reply: str) -> None:
    """The fast parse gives what nats-py's Msg.metadata gives, to the microsecond."""
    msg = Msg(_client=None, subject="orch.result.x", reply=reply, data=b"")  # type: ignore[arg-type]
    meta: Any = msg.metadata
    d = Delivery(msg, consumer=None)  # type: ignore[arg-type]
    assert (d.num_delivered, d.stream_seq) == (3, 123456)
    assert (d.num_delivered, d.stream_seq) == (meta.num_delivered, meta.sequence.stream)
    assert d.published_at == meta.timestamp.timestamp()
