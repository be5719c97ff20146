"""The one event recorder of the tests: every event (and, if asked, every command) published while a test
runs, decoded, on a core subscription started before the test acts."""

from __future__ import annotations

from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from bus import subjects
from schemas.codec import COMMAND, EVENT
from schemas.commands import AnyCommand
from schemas.events import AnyEvent


class Recorder:
    """``await Recorder.listen(nc)``: events on ``orch.event.>`` (or only ``kinds``, e.g. ``"cost.>"``), and with
    ``commands=True`` every command on ``orch.cmd.>``; ``of`` picks those of one type (and field values)."""

    def __init__(self) -> None:
        self.events: list[AnyEvent] = []
        self.commands: list[AnyCommand] = []
        self.heard: list[AnyEvent | AnyCommand] = []  # both, in the order they arrived
        self.raw: list[bytes] = []  # every payload heard, in order (the leak tests read them)
        self.subscriptions: list[Subscription] = []

    @classmethod
    async def listen(cls, nc: NATS, *kinds: str, commands: bool = False) -> Recorder:
        rec = cls()

        async def on_event(msg: Msg) -> None:
            rec.raw.append(msg.data)
            rec.events.append(event := EVENT.decode(msg.data))
            rec.heard.append(event)

        async def on_command(msg: Msg) -> None:
            rec.raw.append(msg.data)
            rec.commands.append(command := COMMAND.decode(msg.data))
            rec.heard.append(command)

        for pattern in [f"{subjects.PREFIX}.event.{k}" for k in kinds] or [subjects.EVENT_ALL]:
            rec.subscriptions.append(await nc.subscribe(pattern, cb=on_event))
        if commands:
            rec.subscriptions.append(await nc.subscribe(subjects.COMMAND_ALL, cb=on_command))
        return rec

    def of(self, kind: type[Any], **match: Any) -> list[Any]:
        """The events or commands of this type whose fields equal ``match``, in the order they arrived."""
        return [i for i in self.heard if isinstance(i, kind) and all(getattr(i, k) == v for k, v in match.items())]

    async def close(self) -> None:
        for sub in self.subscriptions:
            await sub.unsubscribe()
        self.subscriptions.clear()
