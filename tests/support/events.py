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


def _matching(items: list[Any], kind: type[Any], match: dict[str, Any]) -> list[Any]:
    return [i for i in items if isinstance(i, kind) and all(getattr(i, k) == v for k, v in match.items())]


class Recorder:
    """``await Recorder.listen(nc)``: events on ``orch.event.>`` (or only ``kinds``, e.g. ``"cost.>"``), and with
    ``commands=True`` every command on ``orch.cmd.>``; ``of`` / ``commands_of`` filter them by type and fields."""

    def __init__(self) -> None:
        self.events: list[AnyEvent] = []
        self.commands: list[AnyCommand] = []
        self.raw: list[bytes] = []  # every payload heard, in order (the leak tests read them)
        self.subscriptions: list[Subscription] = []

    @classmethod
    async def listen(cls, nc: NATS, *kinds: str, commands: bool = False) -> Recorder:
        rec = cls()

        async def on_event(msg: Msg) -> None:
            rec.raw.append(msg.data)
            rec.events.append(EVENT.decode(msg.data))

        async def on_command(msg: Msg) -> None:
            rec.raw.append(msg.data)
            rec.commands.append(COMMAND.decode(msg.data))

        for pattern in [f"{subjects.PREFIX}.event.{k}" for k in kinds] or [subjects.EVENT_ALL]:
            rec.subscriptions.append(await nc.subscribe(pattern, cb=on_event))
        if commands:
            rec.subscriptions.append(await nc.subscribe(subjects.COMMAND_ALL, cb=on_command))
        return rec

    @property
    def seen(self) -> list[AnyEvent]:
        return self.events

    def of(self, kind: type[Any], **match: Any) -> list[Any]:
        """The events of this type whose fields equal ``match``, in the order they were published."""
        return _matching(self.events, kind, match)

    def commands_of(self, kind: type[Any], **match: Any) -> list[Any]:
        return _matching(self.commands, kind, match)

    async def close(self) -> None:
        for sub in self.subscriptions:
            await sub.unsubscribe()
        self.subscriptions.clear()
