"""The Actor base: one process, one class, consumers and services declared, lifecycle written once.

    class Router(Actor):
        name = "router"
        def consumers(self): return [ConsumerSpec(stream="REQUESTS", durable="router", ...)]
        async def on_start(self): ...
        async def handle(self, d: Delivery): match REQUEST.decode(d.data): ...

Every actor has one entry point, ``handle(msg)``, one ``match`` over the actor's own message union (its
``messages.py``). Consumers, services and timers only turn what arrived into one of those messages:
``self.deliver(Wrap)`` is a consumer handler that calls ``handle(Wrap(delivery))``, and
``self.every("name", seconds, make)`` a supervised timer that calls ``handle(make())``. Helpers get what
they need (a callable, a view, a value), never the actor.

``start(nc)`` provisions the topology, runs ``on_start``, then opens services and consumers.
``stop()`` stops fetching, lets in-flight work finish for ``bus.shutdown_grace`` seconds, naks what
is left (redelivered elsewhere at once), closes services and supervised tasks, then ``on_stop``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import msgspec
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import PubAck

from bus import subjects
from bus.consumer import ConsumerSpec, Delivery, Handler, PullConsumer
from bus.errors import ProvisionError
from bus.provision import provision
from bus.publish import RETRYABLE, Publisher, store
from bus.service import ServiceRunner, ServiceSpec, call
from bus.subjects import BUCKETS, STREAMS, KVSpec, StreamSpec
from bus.supervise import Supervisor
from schemas.codec import Codec, encode
from schemas.commands import Command
from schemas.config.root import OrchestraConfig
from schemas.events import ActorStarted, ActorStopped, Event

T = TypeVar("T")
_RETRYABLE_PUBLISH = RETRYABLE


class Actor:
    name: ClassVar[str] = "actor"
    role: ClassVar[str | None] = None  # its NATS identity (bus/permissions.py); None: its name

    def __init__(self, cfg: OrchestraConfig, *, instance: str | None = None) -> None:
        self.cfg = cfg
        self.instance = instance or f"{socket.gethostname()}-{os.getpid()}"
        self.log = logging.getLogger(f"actors.{self.name}")
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._publisher: Publisher | None = None
        self.supervisor = Supervisor(self.log)
        self.consumers_running: list[PullConsumer] = []
        self.services_running: list[ServiceRunner] = []
        self.started = False
        self.stopping = False
        self.exit_requested = asyncio.Event()  # the actor cannot go on (a lost writer lease): the runner stops it
        self.exit_reason = ""

    # --- what subclasses declare -----------------------------------------------------------------
    def consumers(self) -> list[ConsumerSpec]:
        return []

    def services(self) -> list[ServiceSpec]:
        return []

    def streams(self) -> list[StreamSpec]:
        """Streams beyond the orchestra's topology (tests use this)."""
        return []

    def buckets(self) -> list[KVSpec]:
        return []

    async def on_start(self) -> None:
        pass

    async def handle(self, msg: Any) -> None:
        """The actor's one entry point: ``match msg:`` over its message union."""
        raise NotImplementedError(f"{type(self).__name__}.handle")

    async def on_stop(self) -> None:
        pass

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        pass

    @classmethod
    def from_args(cls, cfg: OrchestraConfig, args: argparse.Namespace) -> Actor:
        return cls(cfg)

    # --- connection ------------------------------------------------------------------------------
    @property
    def nc(self) -> NATS:
        if self._nc is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._js

    def consumer_defaults(self) -> dict[str, Any]:
        c = self.cfg.bus.consumers
        return {"ack_wait": float(c.ack_wait), "max_deliver": c.max_deliver, "nak_delay": float(c.nak_delay)}

    # --- lifecycle -------------------------------------------------------------------------------
    async def start(self, nc: NATS) -> None:
        streams = STREAMS + self.streams()
        for sspec in self.services():
            for stream in streams:
                if any(subjects.subjects_overlap(sspec.subject, s) for s in stream.subjects):
                    raise ProvisionError(
                        f"service subject {sspec.subject} is captured by stream {stream.name}: "
                        "JetStream would answer its requests with publish acks"
                    )
        self._nc = nc
        self._js = nc.jetstream(timeout=10)
        self._publisher = Publisher(nc)
        own = {spec.name for spec in self.streams()} | {f"KV_{kv.bucket}" for kv in self.buckets()}
        await provision(self.js, self.cfg.bus.streams, streams, BUCKETS + self.buckets(), may_update=own)
        # The durable consumers exist before on_start announces the actor (a gpu_host's state in KV):
        # a command sent the moment the actor is seen waits in its consumer instead of passing by a
        # `deliver_new` consumer that is created a moment later. Fetching starts once on_start is done.
        pending = [PullConsumer(nc, self.js, cspec, owner=self.name, emit=self.emit) for cspec in self.consumers()]
        for consumer in pending:
            await consumer.ensure()
        await self.on_start()
        for sspec in self.services():
            runner = ServiceRunner(nc, sspec, owner=self.name)
            await runner.start()
            self.services_running.append(runner)
        for consumer in pending:
            await consumer.start()
            self.consumers_running.append(consumer)
        self.started = True
        await self.emit(ActorStarted(actor=self.name, instance=self.instance))
        self.log.info("%s started (%s)", self.name, self.instance)

    async def stop(self, grace: float | None = None) -> None:
        if not self.started:
            return
        self.started = False
        self.stopping = True
        grace = float(self.cfg.bus.shutdown_grace) if grace is None else grace
        for consumer in self.consumers_running:
            consumer.stop_fetching()
        deadline = time.monotonic() + grace
        for consumer in self.consumers_running:
            await consumer.wait_idle(max(0.0, deadline - time.monotonic()))
        for consumer in self.consumers_running:
            await consumer.close()
        for runner in self.services_running:
            await runner.stop()
        await self.supervisor.stop()
        try:
            await self.on_stop()
        except Exception:
            self.log.exception("%s: on_stop failed", self.name)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.emit(ActorStopped(actor=self.name, instance=self.instance)), 1.0)
        if self._publisher is not None:
            await self._publisher.close()
        self.consumers_running.clear()
        self.services_running.clear()
        self.log.info("%s stopped", self.name)

    def request_exit(self, reason: str) -> None:
        """Ask the runner to stop this actor (it exits 1 with ``reason``)."""
        self.exit_reason = reason
        self.exit_requested.set()

    def on_reconnect(self) -> None:
        for consumer in self.consumers_running:
            consumer.reset()

    def on_disconnect(self) -> None:
        """The connection to the bus dropped (it reconnects by itself); nothing to do by default."""

    # --- turning arrivals into messages ---------------------------------------------------------------
    def deliver(self, wrap: Callable[[Delivery], Any]) -> Handler:
        """A consumer handler: each delivery becomes ``wrap(delivery)``, handled by ``handle``."""

        async def handler(d: Delivery) -> None:
            await self.handle(wrap(d))

        return handler

    def every(self, name: str, seconds: float, make: Callable[[], Any], *, first: float | None = None) -> None:
        """A supervised timer: every ``seconds`` (the first after ``first``, default ``seconds``), ``handle(make())``.
        An exception from one turn is logged and the timer goes on (the supervisor restarts the loop)."""

        async def tick() -> None:
            await asyncio.sleep(seconds if first is None else first)
            while True:
                await self.handle(make())
                await asyncio.sleep(seconds)

        self.spawn(name, tick)

    # --- helpers ---------------------------------------------------------------------------------
    def spawn(self, name: str, factory: Any, *, restart: bool = True) -> asyncio.Task[None]:
        return self.supervisor.spawn(name, factory, restart=restart)

    async def publish(
        self,
        subject: str,
        obj: Any,
        *,
        msg_id: str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
    ) -> PubAck:
        """Store a message in JetStream, retrying through server restarts until ``timeout``.
        With a Msg-Id, retries are deduplicated by the server: stored once."""
        data = obj if isinstance(obj, bytes) else encode(obj)
        hdrs = dict(headers or {})
        if msg_id:
            hdrs["Nats-Msg-Id"] = msg_id
        return await store(self._publisher or self.js, subject, data, headers=hdrs, timeout=timeout)

    async def publish_core(self, subject: str, obj: Any) -> None:
        """Fire-and-forget on core NATS (not stored): stream chunks, hints."""
        await self.nc.publish(subject, obj if isinstance(obj, bytes) else encode(obj))

    async def emit(self, event: Event) -> None:
        """Publish an event; an event that cannot be stored is logged, never fatal."""
        if not event.at or not event.source:
            event = msgspec.structs.replace(event, at=event.at or time.time(), source=event.source or self.name)
        try:  # while stopping, events are best effort: the bus may already be going away
            await self.publish(subjects.event(event), event, timeout=0.5 if self.stopping else 5.0)
        except Exception as exc:
            self.log.warning("%s: could not publish %s: %s", self.name, type(event).__name__, exc)

    async def send(self, cmd: Command) -> PubAck:
        if not cmd.at or not cmd.by:
            cmd = msgspec.structs.replace(cmd, at=cmd.at or time.time(), by=cmd.by or self.name)
        return await self.publish(subjects.command(cmd), cmd)

    async def call(self, subject: str, payload: Any, reply: Codec[T], timeout: float = 2.0) -> T:
        return await call(self.nc, subject, payload, reply, timeout)
