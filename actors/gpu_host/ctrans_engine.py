"""The ctransformers engine: GGML-era architectures (gpt2, gptj, gpt_neox, mpt, falcon, starcoder, dolly,
replit, llama GGML/GGUF v1-2) that llama.cpp dropped. It cannot load current GGUF files such as Gemma 3
or SmolLM2 (its bundled GGML predates them): those use the llama.cpp engine.

ctransformers has no multi-sequence API, so this engine serves one generation at a time (in arrival
order), in its own thread like every engine; tokens are streamed as they are sampled.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from actors.gpu_host.engine import Completion, Finish, Generation, LoadSpec, ThreadEngine
from actors.gpu_host.errors import BadRequest, ContextTooLong, DeadlineExceeded, GpuHostError, ModelLoadError
from actors.gpu_host.text import TextOutput

log = logging.getLogger(__name__)


class CTransformersEngine(ThreadEngine):
    kind = "ctransformers"

    def __init__(self, spec: LoadSpec) -> None:
        super().__init__(spec)
        self.llm: Any = None
        self.chat_template: str | None = None
        self.bos_text = ""
        self.eos_text = ""
        self._current: Generation | None = None

    def _load(self) -> None:
        from ctransformers import AutoModelForCausalLM

        spec = self.spec
        if not spec.model_type:
            raise ModelLoadError(f"model {spec.name!r}: the ctransformers engine needs model_type in models.yaml")
        try:
            self.llm = AutoModelForCausalLM.from_pretrained(
                str(spec.path),
                model_type=spec.model_type,
                context_length=spec.context,
                gpu_layers=0 if spec.device == "cpu" else max(spec.n_gpu_layers, 0) or 999,
                threads=spec.n_threads,
                batch_size=8,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise ModelLoadError(
                f"ctransformers could not load {spec.name!r} ({spec.path}) as {spec.model_type!r}: {exc}"
            ) from exc

    def _serve_step(self) -> bool:
        taken = self._take(1)
        if not taken:
            return False
        gen = taken[0]
        self._current = gen
        self._running = 1
        try:
            self._generate(gen)
        except GpuHostError as exc:
            gen.fail(exc)
        finally:
            self._current = None
            self._running = 0
        return True

    def _generate(self, gen: Generation) -> None:
        admitted = time.monotonic()
        if gen.expired():
            raise DeadlineExceeded("the request's deadline passed before generation started")
        llm, p = self.llm, gen.params
        if p.grammar is not None:
            raise BadRequest("ctransformers cannot constrain output (structured output, tools): use a llama.cpp model")
        tokens = llm.tokenize(str(gen.prompt))
        if len(tokens) + p.max_tokens > self.spec.context:
            raise ContextTooLong(
                f"prompt of {len(tokens)} tokens + max_tokens {p.max_tokens} exceeds the model's context of "
                f"{self.spec.context} tokens"
            )
        out = TextOutput(p.stop)
        n_out, first, reason = 0, 0.0, "length"
        started = time.monotonic()
        greedy = p.temperature <= 0.0
        for token in llm.generate(
            tokens,
            top_k=1 if greedy else max(p.top_k, 0),
            top_p=1.0 if greedy else p.top_p,
            temperature=1.0 if greedy else p.temperature,
            repetition_penalty=1.0,
            seed=-1 if p.seed is None else p.seed & 0x7FFFFFFF,
            threads=self.spec.n_threads,
            reset=True,
        ):
            if not first:
                first = time.monotonic()
            n_out += 1
            gen.push_text(out.feed(llm.detokenize([token], decode=False)))
            if out.stopped:
                reason = "stop"
                break
            if n_out >= p.max_tokens:
                break
            if gen.expired():
                reason = "cancelled"
                break
        else:
            reason = "stop"  # end of sequence
        gen.push_text(out.flush())
        now = time.monotonic()
        self._rate.add(n_out, now - started)
        finish: Finish = reason  # type: ignore[assignment]
        gen.finish(
            Completion(
                text=out.text,
                finish_reason=finish,
                input_tokens=len(tokens),
                output_tokens=n_out,
                queue_s=admitted - gen.submitted,
                first_token_s=(first or now) - gen.submitted,
                generation_s=now - admitted,
            )
        )

    def _abort_running(self, exc: GpuHostError) -> None:
        return  # the one running generation finishes its loop first (it checks expiry every token)

    def _free(self) -> None:
        self.llm = None
