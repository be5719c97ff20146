"""A small async client for training jobs: requests straight onto the bus, with the job's own identity.

    from bus.client import OrchestraClient
    from schemas.request import ChatMessage, make_request

    async with await OrchestraClient.connect("nats://127.0.0.1:4222", ".data/auth/clients/job7.json") as orch:
        result = await orch.ask(make_request(prompt="Write a haiku about GPUs"))
        async for text in orch.stream(make_request(prompt="Count to five", stream=True)):
            print(text, end="")
        outcomes = await orch.batch([make_request(prompt=p) for p in prompts], concurrency=16)

Credentials come from ``orchestra client add NAME`` (``<data_dir>/auth/clients/NAME.json``). The client
publishes on ``orch.request.<priority>.NAME.<id>`` and reads ``orch.result.NAME.<id>`` /
``orch.stream.NAME.<id>``: the only subjects its permissions allow. Its budget identity (``client_key``)
is NAME, whatever a request says. Each request ends in a GenerateResult or a GenerateError (``ask``);
``stream`` raises :class:`RequestFailed` for an error.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import msgspec
import nats
from nats.aio.client import Client as NATS

from bus import subjects
from bus.credentials import read_credentials
from bus.outcomes import StreamFollower
from bus.permissions import CLIENT_PREFIX, inbox_prefix
from bus.publish import Publisher, store
from schemas.codec import CHUNK, OUTCOME, encode
from schemas.errors import ErrorInfo
from schemas.request import GenerateRequest
from schemas.result import GenerateError, Outcome

GRACE_S = 5.0  # past a request's deadline, wait this long for the router's own timeout outcome
TAIL_S = 2.0  # after the result, wait this long for chunks still on their way


class RequestFailed(Exception):
    def __init__(self, error: ErrorInfo) -> None:
        super().__init__(f"{error.code}: {error.message}")
        self.error = error


class OrchestraClient:
    def __init__(self, nc: NATS, name: str) -> None:
        self.nc, self.name = nc, subjects.check_client_name(name)
        self.js = nc.jetstream()
        self.publisher = Publisher(nc)

    @classmethod
    async def connect(
        cls, servers: str | list[str], credentials: str | Path, *, tls: ssl.SSLContext | None = None, **options: Any
    ) -> OrchestraClient:
        """Connect with the credentials file of ``orchestra client add NAME``."""
        creds = read_credentials(Path(credentials))
        user = creds.user
        if not user.startswith(CLIENT_PREFIX):
            raise ValueError(f"{credentials}: not a client's credentials (user {user!r})")
        nc = await nats.connect(
            servers,
            user=user,
            password=creds.password,
            inbox_prefix=inbox_prefix(user),
            tls=tls,
            name=f"orchestra-client:{user}",
            **options,
        )
        return cls(nc, user[len(CLIENT_PREFIX) :])

    async def __aenter__(self) -> OrchestraClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.publisher.close()
        await self.nc.drain()

    def _own(self, request: GenerateRequest) -> GenerateRequest:
        return msgspec.structs.replace(request, origin=self.name, client_key=self.name)

    async def _publish(self, request: GenerateRequest) -> None:
        subject = subjects.request(request.priority, request.id, self.name)
        # retried through a cluster's leader election: stored once (Msg-Id)
        within = max(1.0, request.deadline - time.time())
        await store(self.publisher, subject, encode(request), headers={"Nats-Msg-Id": request.id}, timeout=within)

    async def ask(self, request: GenerateRequest) -> Outcome:
        """One request, its one outcome (a result or a typed error; a timeout error past the deadline)."""
        request = self._own(request)
        sub = await self.nc.subscribe(subjects.result(request.id, self.name), max_msgs=1)
        try:
            await self._publish(request)
            wait = max(0.1, request.effective_deadline - time.time() + GRACE_S)
            msg = await sub.next_msg(timeout=wait)
        except nats.errors.TimeoutError:
            return GenerateError(request_id=request.id, error=ErrorInfo.of("timeout", "no answer before the deadline"))
        finally:
            await sub.unsubscribe()
        return OUTCOME.decode(msg.data)

    async def stream(self, request: GenerateRequest) -> AsyncIterator[str]:
        """The answer's text as it comes; raises RequestFailed when the request ends in an error."""
        request = self._own(msgspec.structs.replace(request, stream=True))
        queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

        async def on_msg(msg: Any) -> None:
            queue.put_nowait((msg.subject, msg.data))

        subs = [
            await self.nc.subscribe(subjects.chunks(request.id, self.name), cb=on_msg),
            await self.nc.subscribe(subjects.result(request.id, self.name), cb=on_msg),
        ]
        try:
            await self._publish(request)
            outcome: Outcome | None = None
            done = False
            follow = StreamFollower()
            while outcome is None or not done:
                # Chunks and the result come on two subscriptions: after the result, the last chunks
                # get a moment to arrive.
                wait = TAIL_S if outcome is not None else max(0.1, request.effective_deadline - time.time() + GRACE_S)
                try:
                    subject, data = await asyncio.wait_for(queue.get(), wait)
                except TimeoutError:
                    if outcome is not None:
                        return
                    raise RequestFailed(ErrorInfo.of("timeout", "no answer before the deadline")) from None
                if subjects.is_chunks(subject):
                    chunk = CHUNK.decode(data)
                    if not follow.accept(chunk):
                        continue  # another generation's: never two answers glued
                    if chunk.text:
                        yield chunk.text
                    done = done or chunk.done
                else:
                    outcome = follow.outcome(OUTCOME.decode(data))
                    if isinstance(outcome, GenerateError):
                        raise RequestFailed(outcome.error)
        finally:
            for sub in subs:
                await sub.unsubscribe()

    async def batch(self, requests: Iterable[GenerateRequest], *, concurrency: int = 16) -> list[Outcome]:
        """Many requests, at most ``concurrency`` in flight; the outcomes in the requests' order."""
        gate = asyncio.Semaphore(concurrency)

        async def one(request: GenerateRequest) -> Outcome:
            async with gate:
                return await self.ask(request)

        return list(await asyncio.gather(*(one(r) for r in requests)))
