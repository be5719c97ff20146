"""The gpu_host actor: the local tier on one card group (``python -m actors.gpu_host --host cpu0``).

It consumes routed requests on ``orch.dispatch.host.<host>.<model>`` and commands on
``orch.cmd.host.<host>.>``; answers each request exactly once (``orch.result.<origin>.<id>``, streamed chunks on
``orch.stream.<origin>.<id>``) or reports the failed attempt to the router (``orch.result.<origin>.<id>.failed``: oom,
unavailable, timeout, context_too_long, internal); owns the host's record in KV ``orch_hosts`` (loaded
models, memory per card, in-flight and queue depth per model, tokens/s) with a heartbeat.

A dispatch is acknowledged only after its outcome is stored: a host killed mid-generation leaves it
unacknowledged, the restarted host gets it again, and a stored result (looked up first) is not generated
twice.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec

from actors.gpu_host.callstream import CallStream
from actors.gpu_host.devmem import DeviceMemory
from actors.gpu_host.engine import Completion
from actors.gpu_host.errors import HOST_ERRORS, DeadlineExceeded, GpuHostError
from actors.gpu_host.manager import ModelManager, Resident
from actors.gpu_host.messages import CommandArrived, DispatchArrived, HostMsg, Preload, StateTick
from actors.gpu_host.outcome import choices_of, gen_params, make_result, vary_seed
from actors.gpu_host.prompts import build_prompt
from actors.gpu_host.tools import split_call, with_tools
from bus import subjects
from bus.actor import Actor
from bus.consumer import ConsumerSpec, Delivery
from bus.kv import TypedKV
from bus.outcomes import ChunkSender, has_outcome, publish_failure, publish_outcome
from policy.pricing import local_cost
from schemas.base import ToolCall, priority_rank
from schemas.codec import COMMAND, DISPATCH, Codec
from schemas.commands import Command, LoadModel, SwapModels, UnloadModel
from schemas.config.root import OrchestraConfig
from schemas.dispatch import Dispatch
from schemas.events import HostDown, HostUp
from schemas.result import Usage
from schemas.state import HostState
from weights.errors import ModelNotFound
from weights.library import ModelLibrary

HOST_STATE: Codec[HostState] = Codec(HostState)


class GpuHost(Actor):
    """Serve the local models of one card group: load, batch, generate, account memory, report state."""

    name = "gpu_host"

    def __init__(self, cfg: OrchestraConfig, *, host: str, instance: str | None = None) -> None:
        super().__init__(cfg, instance=instance)
        if host not in cfg.hosts:
            raise ValueError(f"unknown host {host!r} (hosts.yaml has: {', '.join(cfg.hosts) or 'none'})")
        self.host = host
        self.hcfg = cfg.hosts[host]
        self.library = ModelLibrary(cfg, Path(cfg.data_dir))
        cuda = any(cfg.cards[c].device == "cuda" for c in self.hcfg.cards)
        self.devices = DeviceMemory.open() if cuda else None  # NVML; None on CPU cards or without a driver
        self.manager = ModelManager(
            host, cfg, self.library, emit=self.emit, changed=self._changed, devices=self.devices
        )
        self.started_at = time.time()
        self._kv: TypedKV[HostState] | None = None
        self._dirty = asyncio.Event()

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--host", help="the host (card group) of hosts.yaml to serve; default: the only one")

    @classmethod
    def from_args(cls, cfg: OrchestraConfig, args: argparse.Namespace) -> Actor:
        host = args.host or (next(iter(cfg.hosts)) if len(cfg.hosts) == 1 else None)
        if host is None:
            raise ValueError(f"--host is required: hosts.yaml has {', '.join(cfg.hosts) or 'no hosts'}")
        return cls(cfg, host=host)

    def consumers(self) -> list[ConsumerSpec]:
        defaults = self.consumer_defaults()
        return [
            ConsumerSpec(
                stream=subjects.DISPATCH_STREAM,
                durable=f"host-{self.host}",
                subjects=(subjects.dispatch_host_all(self.host),),
                handler=self.deliver(DispatchArrived),
                concurrency=self.hcfg.concurrency,
                description=f"gpu_host {self.host}: routed requests",
                **defaults,
            ),
            ConsumerSpec(
                stream=subjects.COMMANDS_STREAM,
                durable=f"host-{self.host}-cmd",
                subjects=(subjects.host_commands(self.host),),
                handler=self.deliver(CommandArrived),
                concurrency=1,  # in order: a swap finishes before the next command
                deliver_new=True,
                description=f"gpu_host {self.host}: load / unload / swap",
                **defaults,
            ),
        ]

    async def on_start(self) -> None:
        self._kv = await TypedKV.open(self.js, subjects.KV_HOSTS, HOST_STATE)
        await self._publish_state()
        await self.emit(HostUp(host=self.host, cards=list(self.hcfg.cards)))
        self.spawn("heartbeat", self._heartbeat)
        self.spawn("preload", lambda: self.handle(Preload()), restart=False)

    async def on_stop(self) -> None:
        connected = self.nc.is_connected
        await self.manager.close(announce=connected)
        if self.devices is not None:
            self.devices.close()
        if connected:  # NATS gone: nothing to tell, and waiting for it would only delay the exit
            await self._publish_state(up=False)
            await self.emit(HostDown(host=self.host, reason="stopped"))

    # --- messages ----------------------------------------------------------------------------------
    async def handle(self, msg: HostMsg) -> None:
        match msg:
            case DispatchArrived(d=d):
                await self.generate(d, DISPATCH.decode(d.data))
            case CommandArrived(d=d):
                await self.command(COMMAND.decode(d.data))
            case StateTick(sweep=sweep):
                if sweep:
                    await self.manager.sweep()
                await self._publish_state()
            case Preload():
                for name in self.manager.hot_models():
                    with contextlib.suppress(*HOST_ERRORS):
                        await self.manager.ensure_loaded(name, reason="hot")

    async def command(self, msg: Command) -> None:
        match msg:
            case LoadModel(model=model, keep_alive=keep_alive, max_bits=max_bits):
                if keep_alive not in (None, "hot", "warm", "cold"):
                    self.log.warning("%s: load %s: unknown keep_alive %r ignored", self.host, model, keep_alive)
                    keep_alive = None
                if keep_alive is None and self.manager.configured_keep_alive(model) == "cold":
                    keep_alive = "warm"  # asked for by name: keep it for its TTL, not only until it is idle
                try:
                    await self.manager.ensure_loaded(
                        model,
                        keep_alive=keep_alive,  # type: ignore[arg-type]
                        reason=msg.reason or "command",
                        max_bits=max_bits,
                    )
                except HOST_ERRORS as exc:  # published as model.load_failed / oom already
                    self.log.warning("%s: load %s failed: %s", self.host, model, exc)
            case UnloadModel(model=model):
                await self.manager.unload(model, reason=msg.reason or "command")
            case SwapModels(unload=unload, load=load):
                try:
                    await self.manager.swap(unload, load, reason=msg.reason or "swap")
                except HOST_ERRORS as exc:
                    self.log.warning("%s: swap %s -> %s failed: %s", self.host, unload, load, exc)
            case _:
                self.log.warning("%s: ignoring command %s", self.host, type(msg).__name__)

    async def generate(self, d: Delivery, dispatch: Dispatch) -> None:
        req, model = dispatch.request, dispatch.target.model
        if await has_outcome(self.js, req.id, req.origin):
            self.log.info("%s: request %s already has a result; not generating again", self.host, req.id)
            return
        taken = time.time()
        # with tools, a call streams as tool-call deltas and text as text (callstream.py)
        streamed = ChunkSender(self, req.id, dispatch.attempt, req.origin) if req.stream else None
        pieces = CallStream(dispatch.effective_sampling, f"call_{uuid.uuid4().hex[:24]}")
        try:
            if taken >= req.effective_deadline:
                raise DeadlineExceeded(f"request {req.id} reached {self.host} after its deadline")
            resident = await self._loaded(model, req.effective_deadline)
        except HOST_ERRORS as exc:
            await self._failed(dispatch, exc, streamed)
            return
        try:
            self.manager.touch(model)
            load_ms = (time.time() - taken) * 1000.0
            done, others = await self._decode(dispatch, resident, streamed, pieces)
        except HOST_ERRORS as exc:
            await self._failed(dispatch, exc, streamed)
            return
        finally:
            resident.release()
        await self._answer(d, dispatch, resident, done, others, streamed, pieces, load_ms=load_ms, taken=taken)

    async def _decode(
        self, dispatch: Dispatch, resident: Resident, streamed: ChunkSender | None, pieces: CallStream
    ) -> tuple[Completion, list[Completion]]:
        """Generate the answer (``n`` > 1: the other answers decode beside the first, in the same batch)."""
        req, sampling = dispatch.request, dispatch.effective_sampling
        engine = resident.engine
        prompt, stops = build_prompt(
            with_tools(req, sampling),
            model=dispatch.target.model,
            chat_format=resident.resolved.cfg.chat_format,
            template=getattr(engine, "chat_template", None),
            bos=getattr(engine, "bos_text", ""),
            eos=getattr(engine, "eos_text", ""),
        )
        params = gen_params(dispatch, stops)
        rank = priority_rank(req.priority)  # a busy model admits higher priorities first
        gens = [
            engine.submit(prompt, vary_seed(params, i), deadline=req.effective_deadline, stream=req.stream, rank=rank)
            for i in range(sampling.n)
        ]
        gen = gens[0]
        try:
            if streamed is not None:
                async for piece in gen.pieces():
                    await streamed.send_pieces(pieces.feed(piece))
            done = await gen.result()
            if streamed is not None:
                await streamed.send_pieces(pieces.close())
            return done, [await g.result() for g in gens[1:]]
        finally:
            for g in gens:
                g.cancel()  # no-op when finished; stops the sequence when this handler is cancelled

    async def _failed(
        self, dispatch: Dispatch, exc: GpuHostError | ModelNotFound, streamed: ChunkSender | None
    ) -> None:
        req = dispatch.request
        self.log.info("%s: request %s on %s failed: %s", self.host, req.id, dispatch.target.model, exc)
        await publish_failure(self, dispatch, exc.to_info(), streamed=bool(streamed and streamed.sent))

    async def _answer(
        self,
        d: Delivery,
        dispatch: Dispatch,
        resident: Resident,
        done: Completion,
        others: list[Completion],
        streamed: ChunkSender | None,
        pieces: CallStream,
        *,
        load_ms: float,
        taken: float,
    ) -> None:
        """Cost the answer and store it (a deadline that cut it short: a failed attempt, with its cost)."""
        req, sampling, cfg = dispatch.request, dispatch.effective_sampling, resident.resolved.cfg
        out_tokens = done.output_tokens + sum(o.output_tokens for o in others)
        usage = Usage(input_tokens=done.input_tokens, output_tokens=out_tokens)
        cost = local_cost(
            cfg,
            usage,
            self.cfg.budgets.local_cost,
            seconds=max([done.generation_s, *(o.generation_s for o in others)]),
            watts=self._watts(resident.plan.placement.cards),
        )
        if done.finish_reason == "cancelled":
            error = DeadlineExceeded(f"the deadline passed after {done.output_tokens} tokens on {self.host}")
            await publish_failure(
                self, dispatch, error.to_info(), streamed=bool(streamed and streamed.sent), usage=usage, cost_usd=cost
            )
            return
        if streamed is not None:
            await streamed.send("", done=True, finish_reason=done.finish_reason)
        result = make_result(
            dispatch, done, host=self.host, family=cfg.family, usage=usage, cost=cost, load_ms=load_ms, taken=taken,
            dispatched=d.published_at,
        )  # fmt: skip
        text, calls = split_call(result.text, sampling)
        if calls and pieces.calling:  # the call the client saw streamed: its id and its arguments' text
            calls = [ToolCall(id=pieces.call_id, name=calls[0].name, arguments=pieces.arguments)]
        if calls:
            result = msgspec.structs.replace(result, text=text, tool_calls=calls, finish_reason="tool_calls")
        if others:
            result = msgspec.structs.replace(result, choices=choices_of(result, [done, *others], sampling))
        await publish_outcome(self, result, req.origin)

    # --- helpers -----------------------------------------------------------------------------------
    async def _loaded(self, model: str, deadline: float):  # type: ignore[no-untyped-def]
        """The model, loading it if needed; a load is never cancelled half-way (others may wait on it)."""
        task = asyncio.ensure_future(self.manager.ensure_loaded(model, admit=True))
        try:
            return await asyncio.wait_for(asyncio.shield(task), timeout=max(0.0, deadline - time.time()))
        except TimeoutError as exc:
            task.add_done_callback(_abandon)
            raise DeadlineExceeded(f"the deadline passed while {model!r} was loading on {self.host}") from exc

    def _watts(self, cards: tuple[str, ...]) -> float:
        return sum(self.cfg.cards[c].watts for c in cards)

    def _changed(self) -> None:
        self._dirty.set()

    async def _publish_state(self, *, up: bool = True) -> None:
        if self._kv is not None:
            try:
                await self._kv.put(self.host, self.manager.state(up=up, started_at=self.started_at))
            except Exception as exc:  # NATS restarting: the next heartbeat tries again
                self.log.debug("%s: could not write host state: %s", self.host, exc)

    async def _heartbeat(self) -> None:
        """A state write when the record changed (``_dirty``) or a heartbeat passed; a sweep each heartbeat."""
        period = float(self.hcfg.heartbeat)
        last_sweep = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), period)
            self._dirty.clear()
            sweep = time.monotonic() - last_sweep >= period
            if sweep:
                last_sweep = time.monotonic()
            await self.handle(StateTick(sweep))
            await asyncio.sleep(0.1)  # at most ~10 state writes a second


def _abandon(task: asyncio.Future[Any]) -> None:
    """A load finished after its request gave up: hand the admission back."""
    if not task.cancelled() and task.exception() is None:
        task.result().release()
