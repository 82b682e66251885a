"""In-process backend: llama-cpp-python contexts in this Python process.

``parallel`` > 1 loads that many contexts (weights are mmap-shared on CPU) and hands each
request to a free one, so threads can drive them at once. For throughput on a GPU prefer the
llama-server backend (continuous batching).
"""

from __future__ import annotations

import math
import os
import queue
import time
from contextlib import contextmanager

import numpy as np

from quantswarm.engine.base import Completion, GenerationParams, Message
from quantswarm.engine.chat_template import SpecialTokens, render_chat_template
from quantswarm.errors import EngineError
from quantswarm.registry import inspect_gguf


def _grammar(text: str | None):
    if not text:
        return None
    from llama_cpp import LlamaGrammar

    return LlamaGrammar.from_string(text, verbose=False)


class InProcessEngine:
    """One or more ``llama_cpp.Llama`` contexts over one GGUF file."""

    backend = "llama-cpp-python"

    def __init__(
        self,
        model_path: str,
        *,
        n_ctx: int = 2048,
        n_gpu_layers: int = 0,
        n_threads: int | None = None,
        seed: int = 0,
        parallel: int = 1,
        lora_path: str | None = None,
    ):
        import llama_cpp

        info = inspect_gguf(model_path)  # clear error for a bad file before llama.cpp sees it
        self.model_path = str(model_path)
        self.parallel = max(1, parallel)
        self.n_ctx = n_ctx
        threads = n_threads or max(1, (os.cpu_count() or 1) // self.parallel)
        self._pool: queue.Queue = queue.Queue()
        for _ in range(self.parallel):
            try:
                llm = llama_cpp.Llama(
                    model_path=self.model_path,
                    n_ctx=n_ctx,
                    n_gpu_layers=n_gpu_layers,
                    n_threads=threads,
                    seed=seed,
                    lora_path=lora_path,
                    verbose=False,
                )
            except (ValueError, RuntimeError) as exc:
                raise EngineError(f"llama.cpp could not load {model_path}: {exc}") from None
            self._pool.put(llm)
        self._template = info.chat_template
        self._special = SpecialTokens.of(self._pool.queue[0])

    @contextmanager
    def _context(self):
        llm = self._pool.get()
        try:
            yield llm
        finally:
            self._pool.put(llm)

    def _run(self, call: str, arg, p: GenerationParams, text_of) -> Completion:
        with self._context() as llm:
            llm.reset()  # no prefix reuse: a reused KV prefix changes float sums and so greedy picks
            t0 = time.perf_counter()
            out = getattr(llm, call)(
                arg,
                max_tokens=p.max_tokens,
                temperature=p.temperature,
                top_p=p.top_p,
                seed=p.seed,
                stop=list(p.stop) or None,
                grammar=_grammar(p.grammar),
            )
            latency = (time.perf_counter() - t0) * 1000
        choice = out["choices"][0]
        return Completion(
            text=text_of(choice) or "",
            prompt_tokens=out["usage"]["prompt_tokens"],
            completion_tokens=out["usage"]["completion_tokens"],
            latency_ms=latency,
            finish_reason=choice.get("finish_reason") or "",
        )

    def chat(self, messages: list[Message], params: GenerationParams | None = None) -> Completion:
        """Answer ``messages``, prompted with exactly the tokens llama-server would use (see :meth:`prompt_tokens`)."""
        return self._run("create_completion", self.prompt_tokens(messages), params or GenerationParams(),
                         lambda c: c["text"])

    def complete(self, prompt: str, params: GenerationParams | None = None) -> Completion:
        return self._run("create_completion", prompt, params or GenerationParams(), lambda c: c["text"])

    def render_chat(self, messages: list[Message]) -> str:
        """The prompt text the model's own chat template makes (generation prompt added), as llama.cpp renders it."""
        import jinja2

        try:
            return render_chat_template(self._template, messages, self._special)
        except jinja2.TemplateError as exc:
            raise EngineError(f"{self.model_path}: its chat template does not render: {exc}") from None

    def prompt_tokens(self, messages: list[Message]) -> list[int]:
        """The chat prompt's token ids: special tokens parsed, BOS/EOS added as the vocabulary says."""
        with self._context() as llm:
            return llm.tokenize(self.render_chat(messages).encode(), add_bos=self._special.add_bos, special=True)

    def choice_logprobs(self, messages: list[Message], choices: list[str]) -> dict[str, float]:
        """Exact next-token log-probabilities of each choice's first token after the chat prompt."""
        tokens = self.prompt_tokens(messages)
        with self._context() as llm:
            if len(tokens) >= self.n_ctx:
                raise EngineError(f"prompt of {len(tokens)} tokens does not fit n_ctx={self.n_ctx}")
            llm.reset()
            llm.eval(tokens)
            # without logits_all llama-cpp-python keeps no scores; read the last row from the context
            logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).astype(np.float64)
            ids: dict[str, set[int]] = {}
            for c in choices:  # the bare letter and the letter after a space are both answers
                for variant in (c, " " + c):
                    tok = llm.tokenize(variant.encode(), add_bos=False, special=False)
                    if len(tok) == 1:
                        ids.setdefault(c, set()).add(tok[0])
        m = logits.max()
        logz = m + math.log(np.exp(logits - m).sum())
        return {c: max(float(logits[i] - logz) for i in ids[c]) if c in ids else -math.inf for c in choices}

    def close(self) -> None:
        while not self._pool.empty():
            llm = self._pool.get_nowait()
            llm.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
