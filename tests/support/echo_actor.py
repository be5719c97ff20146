"""A small actor that exercises the runtime in tests (``python -m tests.support.echo_actor``).

It consumes jobs from stream ECHO (``echo.job.<id>``) and records each finished job once on
``echo.done.<id>`` (Msg-Id = job id, and a look-up first: idempotent under redelivery). Jobs can ask
it to sleep, fail transiently, crash, or be poison. A service on ``echosvc.upper`` answers with typed
errors for bad input.
"""

from __future__ import annotations

import asyncio
import os

import msgspec
from nats.js.errors import NotFoundError

from bus.actor import Actor
from bus.consumer import ConsumerSpec, Delivery
from bus.errors import Permanent, ServiceCallError, Transient
from bus.runner import main
from bus.service import ServiceSpec
from bus.subjects import StreamSpec
from schemas.codec import Codec
from schemas.errors import ErrorInfo


class Job(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    text: str = ""
    sleep_s: float = 0.0
    fail_times: int = 0  # raise Transient on the first N deliveries
    crash: bool = False  # raise an unexpected exception every time
    poison: bool = False  # raise Permanent
    exit_after_s: float | None = None  # os._exit mid-job (a crashing process)


class Done(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    text: str
    deliveries: int
    pid: int


class Upper(msgspec.Struct, frozen=True, kw_only=True):
    text: str


JOB = Codec(Job)
UPPER = Codec(Upper)
ECHO_STREAM = StreamSpec("ECHO", ["echo.>"], "test actor jobs and results")


class EchoActor(Actor):
    name = "echo"
    role = "operator"  # a test actor with a stream of its own: no role of the orchestra fits it

    def streams(self) -> list[StreamSpec]:
        return [ECHO_STREAM]

    def consumers(self) -> list[ConsumerSpec]:
        return [
            ConsumerSpec(
                stream="ECHO",
                durable="echo",
                subjects=("echo.job.>",),
                handler=self.handle,
                concurrency=4,
                **self.consumer_defaults(),
            )
        ]

    def services(self) -> list[ServiceSpec]:
        return [ServiceSpec("echosvc.upper", self.upper, UPPER)]

    async def upper(self, req: Upper) -> Upper:
        if not req.text:
            raise ServiceCallError(ErrorInfo.of("bad_request", "must not be empty", field="text"))
        return Upper(text=req.text.upper())

    async def handle(self, d: Delivery) -> None:
        job = JOB.decode(d.data)
        try:
            await self.js.get_last_msg("ECHO", f"echo.done.{job.id}")
            self.log.info("job %s already done, skipping", job.id)
            return
        except NotFoundError:
            pass
        self.log.info("job %s delivery %d", job.id, d.num_delivered)
        if job.poison:
            raise Permanent(f"job {job.id} is poison")
        if job.crash:
            raise RuntimeError(f"job {job.id} crashes")
        if d.num_delivered <= job.fail_times:
            raise Transient(f"job {job.id} not yet", delay=0.1)
        if job.exit_after_s is not None and d.num_delivered == 1:
            await asyncio.sleep(job.exit_after_s)
            os._exit(3)
        if job.sleep_s:
            await asyncio.sleep(job.sleep_s)
        done = Done(id=job.id, text=job.text.upper(), deliveries=d.num_delivered, pid=os.getpid())
        await self.publish(f"echo.done.{job.id}", done, msg_id=f"done:{job.id}")
        self.log.info("job %s done", job.id)


if __name__ == "__main__":
    main(EchoActor)
