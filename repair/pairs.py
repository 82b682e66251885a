"""Silver-bullet preference pairs: a verified-correct trace against the agent's own wrong one.

For each mined failure the "chosen" trace comes from the first source that yields one whose
answer every task filter extracts as the gold answer: the reference model (sampled up to k
times at temperature > 0), a larger expert model, or, as fallback, the gold rationale rewritten
into the task's answer format. A trace that fails verification is never used: :func:`make_pair`
refuses it. The prompt is the task's chat rendered with the agent GGUF's own chat template.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from evals.task import Task
from quantswarm.engine.base import Engine, GenerationParams, Message
from quantswarm.errors import QuantswarmError
from quantswarm.loaders import Item
from quantswarm.registry import inspect_gguf
from repair.mine import Failure

CALCULATOR = re.compile(r"<<[^<>]*>>")  # GSM8K calculator annotations: "3*4=<<3*4=12>>12"


class PairError(QuantswarmError):
    """A preference pair would teach the wrong thing (unverified chosen, or a rejected trace that is right)."""


@dataclass
class Pair:
    """One DPO example: the agent's prompt, a verified-correct trace and the agent's wrong trace."""

    item_id: str
    prompt: str  # chat rendered in the agent's template, generation prompt included
    chosen: str
    rejected: str
    source: str  # reference | expert | gold
    gold: str
    attempts: int = 0  # samples drawn before a verified trace was found (0 for gold)
    prompt_tokens: int = 0
    chosen_tokens: int = 0
    rejected_tokens: int = 0


@dataclass
class PairSet:
    """The pairs of one run, with how many came from each source and why others were dropped."""

    pairs: list[Pair] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)

    @property
    def by_source(self) -> dict[str, int]:
        return dict(Counter(p.source for p in self.pairs))

    def summary(self) -> dict:
        return {"pairs": len(self.pairs), "by_source": self.by_source, "dropped": dict(self.dropped)}

    def to_dataset(self):
        """The pairs as an HF ``datasets.Dataset`` (columns prompt, chosen, rejected, item_id, source, gold)."""
        import datasets

        cols = ("prompt", "chosen", "rejected", "item_id", "source", "gold")
        return datasets.Dataset.from_dict({c: [getattr(p, c) for p in self.pairs] for c in cols})

    def save(self, folder: str | Path) -> Path:
        """Write ``pairs.jsonl``, the HF dataset (``dataset/``) and ``pairs_summary.json``; returns the folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "pairs.jsonl", "w", encoding="utf-8") as f:
            for p in self.pairs:
                f.write(json.dumps(asdict(p), ensure_ascii=False) + "\n")
        self.to_dataset().save_to_disk(str(folder / "dataset"))
        (folder / "pairs_summary.json").write_text(json.dumps(self.summary(), indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> PairSet:
        folder = Path(folder)
        pairs = [Pair(**json.loads(line)) for line in (folder / "pairs.jsonl").read_text().splitlines() if line]
        summary = json.loads((folder / "pairs_summary.json").read_text())
        return cls(pairs, Counter(summary.get("dropped", {})))


class ChatTemplate:
    """The agent GGUF's chat template and tokenizer (vocab only, no weights loaded)."""

    def __init__(self, gguf_path: str | Path):
        import llama_cpp
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        info = inspect_gguf(gguf_path)
        self._vocab = llama_cpp.Llama(model_path=str(gguf_path), vocab_only=True, verbose=False)
        eos = self._vocab.detokenize([self._vocab.token_eos()]).decode(errors="ignore")
        bos = self._vocab.detokenize([self._vocab.token_bos()]).decode(errors="ignore")
        self.eos = eos
        self.template = info.chat_template
        self._fmt = (Jinja2ChatFormatter(info.chat_template, eos_token=eos, bos_token=bos)
                     if info.chat_template else None)

    def render(self, messages: list[Message]) -> str:
        """The prompt text llama.cpp's chat completion sends for ``messages`` (generation prompt added)."""
        if self._fmt is None:
            return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
        return self._fmt(messages=messages).prompt

    def count(self, text: str) -> int:
        return len(self._vocab.tokenize(text.encode(), add_bos=False, special=True))

    def close(self) -> None:
        self._vocab.close()


@dataclass
class Proposer:
    """A model that proposes chosen traces: sampled ``k`` times at ``temperature`` until one verifies."""

    name: str  # reference | expert
    engine: Engine
    k: int
    temperature: float
    seed: int = 0


def verified(task: Task, text: str, item: Item) -> bool:
    """True when every filter of ``task`` extracts the gold answer from ``text``."""
    return bool(text.strip()) and all(r.correct for r in task.score(text, item))


def primary_correct(task: Task, text: str, item: Item) -> bool:
    return any(r.correct for r in task.score(text, item) if r.primary)


def gold_trace(item: Item) -> str:
    """The gold rationale in the task's answer format: calculator notes removed, ``#### <gold>`` last."""
    if not item.rationale:
        return ""
    steps = CALCULATOR.sub("", item.rationale).strip()
    return f"{steps}\n#### {item.gold}"


def make_pair(task: Task, item: Item, prompt: str, chosen: str, rejected: str, source: str,
              attempts: int = 0) -> Pair:
    """A pair, refused (:class:`PairError`) unless ``chosen`` verifies and ``rejected`` is wrong."""
    if not verified(task, chosen, item):
        got = {r.filter: r.extracted for r in task.score(chosen, item)}
        raise PairError(f"{item.item_id}: chosen trace from {source} is not verified (gold {item.gold}, "
                        f"extracted {got}); only traces every filter reads as gold may be chosen")
    if primary_correct(task, rejected, item):
        raise PairError(f"{item.item_id}: rejected trace is correct under the primary filter; not a failure")
    return Pair(item.item_id, prompt, chosen.strip(), rejected.strip(), source, item.gold, attempts)


def propose(proposer: Proposer, task: Task, item: Item, messages: list[Message]) -> tuple[str | None, int]:
    """Sample up to k traces; the first verified one (or None) and how many samples were drawn."""
    gen = task.generation
    for attempt in range(1, proposer.k + 1):
        params = GenerationParams(max_tokens=gen.max_tokens, temperature=proposer.temperature, top_p=gen.top_p,
                                  seed=proposer.seed + attempt, stop=gen.stop)
        text = proposer.engine.chat(messages, params).text
        if verified(task, text, item):
            return text, attempt
    return None, proposer.k


def _chosen(task: Task, item: Item, messages: list[Message], proposers: list[Proposer],
            gold_fallback: bool) -> tuple[str | None, str, int, str]:
    """(verified trace or None, its source, model samples drawn, why none) for one failure."""
    attempts = 0
    for prop in proposers:
        text, tries = propose(prop, task, item, messages)
        attempts += tries
        if text is not None:
            return text, prop.name, attempts, ""
    if not gold_fallback:
        return None, "", attempts, "no_verified_trace"
    text = gold_trace(item)
    if verified(task, text, item):
        return text, "gold", attempts, ""
    return None, "", attempts, "gold_unverified"


def build_pairs(failures: Iterable[Failure], task: Task, template: ChatTemplate, proposers: list[Proposer], *,
                gold_fallback: bool = True, max_length: int = 768, workers: int = 1,
                log: Callable[[str], None] = print) -> PairSet:
    """One pair per failure where some source gives a verified trace; deduplicated and length-capped.

    ``workers`` failures are sampled at once (match the engines' ``parallel`` slots); pairs keep failure order.
    """
    from concurrent.futures import ThreadPoolExecutor

    failures = list(failures)
    out = PairSet()
    seen: set[tuple[str, str, str]] = set()
    todo = []
    for fail in failures:
        if primary_correct(task, fail.output, fail.item):
            out.dropped["rejected_not_wrong"] += 1
        else:
            todo.append(fail)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(_chosen, task, f.item, task.messages(f.item), proposers, gold_fallback)
                   for f in todo]
        for n, (fail, fut) in enumerate(zip(todo, futures, strict=True), 1):
            item = fail.item
            chosen, source, attempts, why = fut.result()
            tag = f"[pairs {n}/{len(todo)}] {item.item_id}:"
            if chosen is None:
                out.dropped[why] += 1
                log(f"{tag} no verified trace ({why})")
                continue
            pair = make_pair(task, item, template.render(task.messages(item)), chosen, fail.output, source, attempts)
            key = (pair.prompt, pair.chosen, pair.rejected)
            if key in seen:
                out.dropped["duplicate"] += 1
                continue
            seen.add(key)
            pair.prompt_tokens = template.count(pair.prompt)
            pair.chosen_tokens = template.count(pair.chosen) + 1  # + end-of-turn token trl appends
            pair.rejected_tokens = template.count(pair.rejected) + 1
            if pair.prompt_tokens + max(pair.chosen_tokens, pair.rejected_tokens) > max_length:
                out.dropped["too_long"] += 1
                log(f"{tag} dropped, longer than {max_length} tokens")
                continue
            out.pairs.append(pair)
            log(f"{tag} chosen from {source}" + (f" after {attempts} model samples" if attempts else ""))
    return out
