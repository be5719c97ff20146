"""bus.publish.Publisher against a real nats-server: it stores what nats-py's js.publish stores, and fails
the way js.publish fails (the actors' retry loop, ``store``, relies on the same exceptions)."""

from __future__ import annotations

import asyncio

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import StreamConfig
from nats.js.errors import APIError, NoStreamResponseError

from bus.publish import Publisher, store
from tests.support.wait import eventually


@pytest.fixture
async def stream(nc: NATS) -> str:
    js = nc.jetstream(timeout=5)
    await js.add_stream(StreamConfig(name="PUBTEST", subjects=["pubtest.>"]))
    return "PUBTEST"


async def test_stores_like_js_publish(nc: NATS, stream: str) -> None:
    js, pub = nc.jetstream(timeout=5), Publisher(nc)
    first = await js.publish("pubtest.a", b"one", headers={"Nats-Msg-Id": "m1"})
    second = await pub.publish("pubtest.b", b"two", timeout=5, headers={"Nats-Msg-Id": "m2", "X-Extra": "yes"})
    assert (second.stream, second.seq, second.duplicate) == (stream, first.seq + 1, None)
    again = await pub.publish("pubtest.b", b"two", timeout=5, headers={"Nats-Msg-Id": "m2"})
    assert (again.seq, again.duplicate) == (second.seq, True)  # the server's de-duplication, reported
    stored = await js.get_msg(stream, second.seq)
    assert (stored.subject, stored.data) == ("pubtest.b", b"two")
    assert stored.headers is not None and stored.headers["X-Extra"] == "yes"
    assert pub.waiting == 0
    await pub.close()


async def test_concurrent_publishes_each_get_their_own_ack(nc: NATS, stream: str) -> None:
    pub = Publisher(nc)
    acks = await asyncio.gather(*(pub.publish(f"pubtest.{i}", str(i).encode(), timeout=5) for i in range(64)))
    assert sorted(a.seq for a in acks) == list(range(1, 65))
    js = nc.jetstream(timeout=5)
    for i, ack in enumerate(acks):  # each ack names the sequence of its own message
        assert (await js.get_msg(stream, ack.seq)).data == str(i).encode()
    assert pub.waiting == 0
    await pub.close()


async def test_no_stream_is_the_same_error_as_js_publish(nc: NATS) -> None:
    js, pub = nc.jetstream(timeout=5), Publisher(nc)
    with pytest.raises(NoStreamResponseError):
        await js.publish("nostream.x", b"x")
    with pytest.raises(NoStreamResponseError):
        await pub.publish("nostream.x", b"x", timeout=5)
    await pub.close()


async def test_a_refused_store_raises_the_servers_api_error(nc: NATS, stream: str) -> None:
    js, pub = nc.jetstream(timeout=5), Publisher(nc)
    await pub.publish("pubtest.a", b"one", timeout=5)
    wrong = {"Nats-Expected-Last-Sequence": "99"}
    with pytest.raises(APIError) as theirs:
        await js.publish("pubtest.a", b"two", headers=dict(wrong))
    with pytest.raises(APIError) as ours:
        await pub.publish("pubtest.a", b"two", timeout=5, headers=dict(wrong))
    assert type(ours.value) is type(theirs.value)
    assert (ours.value.code, ours.value.err_code) == (theirs.value.code, theirs.value.err_code) == (400, 10071)
    await pub.close()


async def test_no_ack_times_out_with_nats_timeout_error(nc: NATS) -> None:
    swallowed: list[bytes] = []

    async def silent(msg: nats.aio.msg.Msg) -> None:  # a responder that never answers
        swallowed.append(msg.data)

    await nc.subscribe("silent.x", cb=silent)
    pub = Publisher(nc)
    with pytest.raises(nats.errors.TimeoutError):
        await pub.publish("silent.x", b"x", timeout=0.2)
    assert swallowed == [b"x"] and pub.waiting == 0
    await pub.close()


async def test_store_retries_until_a_stream_appears(nc: NATS) -> None:
    pub = Publisher(nc)
    js = nc.jetstream(timeout=5)
    stored = asyncio.ensure_future(store(pub, "late.a", b"x", headers={"Nats-Msg-Id": "late-1"}, timeout=10))
    await eventually(lambda: pub.sent >= 2)  # a first try met no stream and was sent again
    await js.add_stream(StreamConfig(name="LATE", subjects=["late.>"]))
    ack = await stored
    assert (ack.stream, ack.seq) == ("LATE", 1)
    await pub.close()


async def test_close_ends_waits_and_a_later_publish_subscribes_again(nc: NATS, stream: str) -> None:
    swallowed: list[bytes] = []

    async def silent(msg: nats.aio.msg.Msg) -> None:
        swallowed.append(msg.data)

    await nc.subscribe("silent.y", cb=silent)
    pub = Publisher(nc)
    waiting = asyncio.ensure_future(pub.publish("silent.y", b"x", timeout=30))
    await eventually(lambda: swallowed)
    await pub.close()
    with pytest.raises(nats.errors.TimeoutError):
        await waiting
    ack = await pub.publish("pubtest.after", b"y", timeout=5)
    assert ack.stream == stream
    await pub.close()
