"""Continuous batching on one llama.cpp context: several sequences decoded together, one llama_decode a step.

The context is created with ``n_seq_max`` = the model's batch size and a KV cache of ``context`` tokens per
sequence (``kv_unified`` off: each sequence has its own cache stream, so a sequence's numbers do not
depend on its neighbours). Every step:

  1. admit waiting requests into free sequence slots (tokenise, check the context, build a sampler chain);
  2. build one ``llama_batch``: the prompt of one newly admitted sequence alone (chunked to ``n_batch``),
     or else the last sampled token of every running sequence; logits only where a token is sampled
     (a prompt is never mixed with other sequences' tokens: mixed rows change the numbers);
  3. ``llama_decode`` once, then sample each sequence from its own logits row
     (``llama_sampler_sample(chain, ctx, i)`` = ``llama_get_logits_ith`` + its sampler chain);
  4. finish sequences on end-of-generation, a stop sequence, max_tokens, deadline or cancellation, and
     clear their cache (``llama_memory_seq_rm``) so the slot can take the next request.

A request that arrives while others run joins at the next step. Each sequence samples with its own chain
(greedy at temperature 0; top-k, top-p, temperature and a seeded ``dist`` otherwise), so its output does
not depend on what it was batched with. All of it runs in the engine's thread (not thread-safe).
"""

from __future__ import annotations

import ctypes
import logging
import time
from dataclasses import dataclass

import llama_cpp as lc

from actors.gpu_host.engine import Completion, Finish, Generation, GenParams, Prompt, Rate
from actors.gpu_host.errors import BadRequest, ContextTooLong, DeadlineExceeded, EngineError, GpuHostError
from actors.gpu_host.logprobs import token_logprob
from actors.gpu_host.text import TextOutput
from schemas.result import TokenLogprob

log = logging.getLogger(__name__)


@dataclass
class Slot:
    seq: int
    gen: Generation
    tokens: list[int]  # prompt tokens not yet decoded
    chain: ctypes.c_void_p
    out: TextOutput
    n_prompt: int
    admitted: float
    pos: int = 0  # next position in this sequence
    n_out: int = 0
    last: int | None = None  # sampled token to decode next step
    first_token: float = 0.0
    row: int = -1  # index in the current batch of the token whose logits we sample
    logprobs: list[TokenLogprob] | None = None  # when the generation asks for them


class Vocab:
    """Tokenise / detokenise with a model's vocabulary (engine thread only)."""

    def __init__(self, model: ctypes.c_void_p) -> None:
        self.vocab = lc.llama_model_get_vocab(model)
        self.n_vocab = lc.llama_vocab_n_tokens(self.vocab)
        self._buf = ctypes.create_string_buffer(256)

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        raw = text.encode("utf-8")
        cap = len(raw) + 16
        arr = (lc.llama_token * cap)()
        n = lc.llama_tokenize(self.vocab, raw, len(raw), arr, cap, add_special, parse_special)
        if n < 0:
            cap = -n
            arr = (lc.llama_token * cap)()
            n = lc.llama_tokenize(self.vocab, raw, len(raw), arr, cap, add_special, parse_special)
        if n < 0:
            raise EngineError(f"could not tokenise a prompt of {len(raw)} bytes")
        return list(arr[:n])

    def tokenize_prompt(self, prompt: Prompt) -> list[int]:
        """A whole prompt: BOS once at the start; a client's text (literal segments) without special-token
        parsing, so ``<|im_start|>`` written by a user stays characters."""
        if isinstance(prompt, str):
            return self.tokenize(prompt)
        tokens: list[int] = []
        for text, literal in prompt.parts:
            tokens += self.tokenize(text, add_special=not tokens, parse_special=not literal)
        return tokens or self.tokenize("")

    def piece(self, token: int) -> bytes:
        n = lc.llama_token_to_piece(self.vocab, token, self._buf, len(self._buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = lc.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
            return buf.raw[:n]
        return self._buf.raw[:n]

    def is_eog(self, token: int) -> bool:
        return bool(lc.llama_vocab_is_eog(self.vocab, token))


def sampler_chain(params: GenParams, vocab: Vocab) -> ctypes.c_void_p:
    """The sampler chain of one sequence; a grammar comes first: it removes every token the grammar does not
    allow before penalties, top-k/top-p and the pick (``llama_sampler_sample`` advances it with the pick)."""
    n_vocab = vocab.n_vocab
    chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
    if params.grammar is not None:
        grammar = lc.llama_sampler_init_grammar(vocab.vocab, params.grammar.encode(), b"root")
        if not grammar:
            lc.llama_sampler_free(chain)
            raise BadRequest("the output grammar could not be parsed by llama.cpp")
        lc.llama_sampler_chain_add(chain, grammar)
    if params.presence_penalty or params.frequency_penalty:
        lc.llama_sampler_chain_add(
            chain, lc.llama_sampler_init_penalties(n_vocab, 64, 1.0, params.frequency_penalty, params.presence_penalty)
        )
    if params.temperature <= 0.0:
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
        return chain
    if params.top_k > 0:
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_k(params.top_k))
    if params.top_p < 1.0:
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(params.top_p, 1))
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(params.temperature))
    seed = lc.LLAMA_DEFAULT_SEED if params.seed is None else params.seed & 0xFFFFFFFF
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(seed))
    return chain


class BatchScheduler:
    """The decode loop of one model: slots for up to ``n_seq`` sequences in one llama_context."""

    def __init__(
        self, ctx: ctypes.c_void_p, vocab: Vocab, *, n_seq: int, context: int, n_batch: int, rate: Rate
    ) -> None:
        self.ctx, self.vocab = ctx, vocab
        self.n_seq, self.context, self.n_batch = n_seq, context, n_batch
        self.memory = lc.llama_get_memory(ctx)
        self.batch = lc.llama_batch_init(n_batch, 0, 1)
        self.slots: dict[int, Slot] = {}
        self.rate = rate

    def free_slots(self) -> int:
        return self.n_seq - len(self.slots)

    def close(self) -> None:
        for slot in list(self.slots.values()):
            lc.llama_sampler_free(slot.chain)
        self.slots.clear()
        lc.llama_batch_free(self.batch)

    # --- admission ---------------------------------------------------------------------------------
    def admit(self, gen: Generation) -> None:
        now = time.monotonic()
        if gen.expired():
            gen.fail(DeadlineExceeded("the request's deadline passed before generation started"))
            return
        try:
            tokens = self.vocab.tokenize_prompt(gen.prompt)
        except GpuHostError as exc:
            gen.fail(exc)
            return
        if not tokens:
            tokens = self.vocab.tokenize(" ")
        need = len(tokens) + gen.params.max_tokens
        if need > self.context:
            gen.fail(
                ContextTooLong(
                    f"prompt of {len(tokens)} tokens + max_tokens {gen.params.max_tokens} exceeds the model's "
                    f"context of {self.context} tokens"
                )
            )
            return
        seq = next(i for i in range(self.n_seq) if i not in self.slots)
        lc.llama_memory_seq_rm(self.memory, seq, -1, -1)
        try:
            chain = sampler_chain(gen.params, self.vocab)
        except GpuHostError as exc:
            gen.fail(exc)
            return
        self.slots[seq] = Slot(seq, gen, tokens, chain, TextOutput(gen.params.stop), len(tokens), now)

    # --- one step ----------------------------------------------------------------------------------
    def step(self) -> int:
        """Decode one batch; returns the number of tokens sampled (0 when nothing ran)."""
        for slot in list(self.slots.values()):
            if slot.gen.expired():
                self._finish(slot, "cancelled")
        if not self.slots:
            return 0
        b = self.batch
        b.n_tokens = 0
        for slot in self.slots.values():
            slot.row = -1
        prefilling = next((slot for slot in self.slots.values() if slot.tokens), None)
        if prefilling is not None:
            # A newcomer's prompt is decoded alone, in exactly the batches it would have run in alone:
            # rows mixed with other sequences' tokens take other kernel paths and change the numbers
            # (enough to flip a greedy choice). The running sequences wait one step.
            slot = prefilling
            chunk, slot.tokens = slot.tokens[: self.n_batch], slot.tokens[self.n_batch :]
            for i, tok in enumerate(chunk):
                self._add(slot, tok, logits=not slot.tokens and i == len(chunk) - 1)
        else:
            for slot in self.slots.values():
                if slot.last is not None:
                    self._add(slot, slot.last, logits=True)
                    slot.last = None
        if b.n_tokens == 0:
            return 0
        started = time.monotonic()
        rc = lc.llama_decode(self.ctx, b)
        if rc != 0:
            self.fail_all(EngineError(f"llama_decode returned {rc} for a batch of {b.n_tokens} tokens"))
            return 0
        sampled = 0
        for slot in list(self.slots.values()):
            if slot.row < 0:
                continue
            token = lc.llama_sampler_sample(slot.chain, self.ctx, slot.row)
            sampled += 1
            if slot.gen.params.logprobs and not self.vocab.is_eog(token):
                slot.logprobs = slot.logprobs or []
                logits = lc.llama_get_logits_ith(self.ctx, slot.row)
                top = slot.gen.params.top_logprobs
                slot.logprobs.append(token_logprob(logits, self.vocab.n_vocab, token, top, self.vocab.piece))
            self._accept(slot, token)
        self.rate.add(sampled, time.monotonic() - started)
        return sampled

    def _add(self, slot: Slot, token: int, *, logits: bool) -> None:
        b, k = self.batch, self.batch.n_tokens
        b.token[k] = token
        b.pos[k] = slot.pos
        b.n_seq_id[k] = 1
        b.seq_id[k][0] = slot.seq
        b.logits[k] = logits
        if logits:
            slot.row = k
        slot.pos += 1
        b.n_tokens = k + 1

    def _accept(self, slot: Slot, token: int) -> None:
        if slot.n_out == 0:
            slot.first_token = time.monotonic()
        if self.vocab.is_eog(token):
            self._finish(slot, "stop")
            return
        slot.n_out += 1
        text = slot.out.feed(self.vocab.piece(token))
        slot.gen.push_text(text)
        if slot.out.stopped:
            self._finish(slot, "stop")
        elif slot.n_out >= slot.gen.params.max_tokens:
            self._finish(slot, "length")
        else:
            slot.last = token

    def _finish(self, slot: Slot, reason: Finish) -> None:
        tail = slot.out.flush()
        slot.gen.push_text(tail)
        now = time.monotonic()
        completion = Completion(
            text=slot.out.text,
            finish_reason=reason,
            input_tokens=slot.n_prompt,
            output_tokens=slot.n_out,
            queue_s=slot.admitted - slot.gen.submitted,
            first_token_s=(slot.first_token or now) - slot.gen.submitted,
            generation_s=now - slot.admitted,
            logprobs=(slot.logprobs or []) if slot.gen.params.logprobs else None,
        )
        self._release(slot)
        slot.gen.finish(completion)

    def _release(self, slot: Slot) -> None:
        lc.llama_memory_seq_rm(self.memory, slot.seq, -1, -1)
        lc.llama_sampler_free(slot.chain)
        self.slots.pop(slot.seq, None)

    def fail_all(self, exc: GpuHostError) -> None:
        for slot in list(self.slots.values()):
            self._release(slot)
            slot.gen.fail(exc)
