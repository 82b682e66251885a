"""Silver-bullet preference pairs: a verified-correct trace against the agent's own wrong one.

For each mined failure (a complete wrong trace of the quantized agent: traces cut at max_tokens or errored
are dropped) the "chosen" trace comes from the first source that yields one the task's primary filter reads
as the gold answer: the reference model (k samples at temperature > 0; of the verified ones, the one sharing the
longest prefix with the rejected trace), a larger expert model, or, only when asked (``gold_fallback``), the
gold rationale in the task's answer format. A trace that fails verification is never used: :func:`make_pair`
refuses it. The prompt is the task's chat rendered by llama-server's own template (``/apply-template``).
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
        """Counts per source, why failures were dropped, and the token lengths of chosen vs rejected traces."""
        import numpy as np

        def dist(values: list[int]) -> dict:
            if not values:
                return {}
            v = np.asarray(values)
            return {"mean": float(v.mean()), "p10": float(np.percentile(v, 10)), "p50": float(np.median(v)),
                    "p90": float(np.percentile(v, 90)), "max": int(v.max())}

        return {"pairs": len(self.pairs), "by_source": self.by_source, "dropped": dict(self.dropped),
                "chosen_tokens": dist([p.chosen_tokens for p in self.pairs]),
                "rejected_tokens": dist([p.rejected_tokens for p in self.pairs]),
                "shared_prefix_chars": dist([shared_prefix(p.chosen, p.rejected) for p in self.pairs])}

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
    """The agent's chat template and tokenizer as llama.cpp applies them, read from a running llama-server.

    ``render`` asks the server's ``/apply-template`` (the prompt its chat completion would send, special tokens
    such as BOS written as llama.cpp writes them), ``count`` its ``/tokenize`` (special tokens parsed).
    """

    def __init__(self, url: str, timeout: float = 60.0):
        import httpx

        self.url = url
        self._client = httpx.Client(base_url=url, timeout=timeout)

    def _post(self, path: str, body: dict) -> dict:
        from quantswarm.engine.server import post_json

        return post_json(self._client, path, body)

    def render(self, messages: list[Message]) -> str:
        """The prompt text llama.cpp's chat completion sends for ``messages`` (generation prompt added)."""
        return str(self._post("/apply-template", {"messages": messages})["prompt"])

    def count(self, text: str) -> int:
        return len(self._post("/tokenize", {"content": text, "add_special": False, "parse_special": True})["tokens"])

    def close(self) -> None:
        self._client.close()


@dataclass
class Proposer:
    """A model that proposes chosen traces: sampled ``k`` times at ``temperature`` until one verifies."""

    name: str  # reference | expert
    engine: Engine
    k: int
    temperature: float
    seed: int = 0


def verified(task: Task, text: str, item: Item) -> bool:
    """True when the task's primary filter extracts the gold answer from ``text`` (the filter the task is scored
    by: a model that writes "The answer is 18." without GSM8K's ``####`` is right, and so is its trace)."""
    return bool(text.strip()) and primary_correct(task, text, item)


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


def shared_prefix(a: str, b: str) -> int:
    """Length in characters of the common prefix of ``a`` and ``b``."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def propose(proposer: Proposer, task: Task, item: Item, messages: list[Message],
            rejected: str = "") -> tuple[str | None, int]:
    """Sample k traces at the proposer's temperature; of the verified, complete ones (not cut at max_tokens) the
    one sharing the longest prefix with ``rejected`` (the closest on-policy correction), or None; and k."""
    gen = task.generation
    best, best_len = None, -1
    for attempt in range(1, proposer.k + 1):
        params = GenerationParams(max_tokens=gen.max_tokens, temperature=proposer.temperature, top_p=gen.top_p,
                                  seed=proposer.seed + attempt, stop=gen.stop)
        c = proposer.engine.chat(messages, params)
        if c.finish_reason == "length" or not verified(task, c.text, item):
            continue
        n = shared_prefix(c.text, rejected)
        if n > best_len:
            best, best_len = c.text, n
    return best, proposer.k


def _chosen(task: Task, item: Item, messages: list[Message], proposers: list[Proposer],
            gold_fallback: bool, rejected: str = "") -> tuple[str | None, str, int, str]:
    """(verified trace or None, its source, model samples drawn, why none) for one failure."""
    attempts = 0
    for prop in proposers:
        text, tries = propose(prop, task, item, messages, rejected)
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
        elif fail.finish_reason in ("length", "error") or not fail.output.strip():
            out.dropped[f"rejected_{fail.finish_reason or 'empty'}"] += 1  # cut off or failed: not the model's answer
        else:
            todo.append(fail)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(_chosen, task, f.item, task.messages(f.item), proposers, gold_fallback, f.output)
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
