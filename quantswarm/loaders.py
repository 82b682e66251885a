"""Benchmark data loaders: GSM8K, MMLU and HumanEval, from local JSONL or the Hugging Face hub.

Where data comes from (``source="auto"``): an explicit ``data_dir``, else ``$QUANTSWARM_DATA``,
else ``../shared/data`` beside the checkout; failing those, the hub (``openai/gsm8k`` main,
``cais/mmlu`` all, ``openai/openai_humaneval``) unless HF offline mode is set; failing that,
the small samples shipped in ``data/``. A local folder uses the layout ``gsm8k/{train,test}.jsonl``,
``mmlu/{dev,test}.jsonl``, ``humaneval/HumanEval.jsonl``. Subsets are seeded, so every model in a
grid sees the same items; MMLU subsets are stratified by subject.
"""

from __future__ import annotations

import json
import os
import random
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from quantswarm.errors import DataError
from quantswarm.paths import SHIPPED_DATA, data_dir

LETTERS = ("A", "B", "C", "D")
FILES = {
    ("gsm8k", "train"): "gsm8k/train.jsonl",
    ("gsm8k", "test"): "gsm8k/test.jsonl",
    ("mmlu", "dev"): "mmlu/dev.jsonl",
    ("mmlu", "test"): "mmlu/test.jsonl",
    ("humaneval", "test"): "humaneval/HumanEval.jsonl",
    ("easy", "train"): "easy/train.jsonl",
    ("easy", "test"): "easy/test.jsonl",
}
GENERATED = {"easy"}  # made by this project from a seed (evals/easy.py): always the shipped files
HUB = {
    "gsm8k": ("openai/gsm8k", "main"),
    "mmlu": ("cais/mmlu", "all"),
    "humaneval": ("openai/openai_humaneval", None),
}


@dataclass
class Item:
    """One benchmark item; ``gold`` is the number (GSM8K), letter (MMLU) or canonical solution."""

    dataset: str
    split: str
    item_id: str
    question: str
    gold: str
    subject: str = ""
    choices: list[str] = field(default_factory=list)
    rationale: str = ""  # GSM8K worked solution (without the final #### line)
    extra: dict = field(default_factory=dict)


def gsm8k_gold(answer: str) -> tuple[str, str]:
    """(gold number, rationale) from a GSM8K answer field ``... #### 72``."""
    if "####" not in answer:
        raise DataError(f"GSM8K answer has no '####' line: {answer[:80]!r}")
    rationale, gold = answer.rsplit("####", 1)
    return gold.strip().replace(",", ""), rationale.strip()


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line; DataError naming file:line on bad JSON."""
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{n}: expected a JSON object")
            yield n, row


def _read_jsonl(path: Path) -> list[dict]:
    return [row for _, row in iter_jsonl(path)]


def _hub_offline() -> bool:
    return any(os.environ.get(v) in ("1", "true", "True") for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def resolve_source(dataset: str, split: str, data_dir_: str | Path | None = None, source: str = "auto") -> str | Path:
    """Where (dataset, split) will be read from: a JSONL path, or the string "hub"."""
    if (dataset, split) not in FILES:
        known = ", ".join(f"{d}/{s}" for d, s in FILES)
        raise DataError(f"unknown dataset/split {dataset}/{split}; known: {known}")
    rel = FILES[(dataset, split)]
    if source not in ("auto", "local", "hub", "shipped"):
        raise DataError(f"source must be auto, local, hub or shipped, not {source!r}")
    if source == "hub":
        return "hub"
    if source == "shipped" or dataset in GENERATED:
        return SHIPPED_DATA / rel
    root = Path(data_dir_) if data_dir_ else data_dir()
    if root is not None and (root / rel).exists():
        return root / rel
    if source == "local" or data_dir_:
        raise DataError(f"{(root or Path('.')) / rel}: not found; set --data-dir or QUANTSWARM_DATA to a folder "
                        f"with {rel}")
    if not _hub_offline():
        return "hub"
    if (SHIPPED_DATA / rel).exists():
        return SHIPPED_DATA / rel
    raise DataError(f"no local copy of {rel} and the hub is offline (HF_HUB_OFFLINE); set --data-dir")


def _rows(dataset: str, split: str, data_dir_, source: str) -> list[dict]:
    where = resolve_source(dataset, split, data_dir_, source)
    if where != "hub":
        return _read_jsonl(Path(where))
    try:
        import datasets

        repo, name = HUB[dataset]
        ds = datasets.load_dataset(repo, name, split=split)
    except Exception as exc:
        if source == "auto" and (SHIPPED_DATA / FILES[(dataset, split)]).exists():
            return _read_jsonl(SHIPPED_DATA / FILES[(dataset, split)])
        raise DataError(f"could not load {dataset}/{split} from the hub ({type(exc).__name__}); "
                        "use --data-dir with local JSONL") from None
    return [dict(r) for r in ds]


def _subset(items: list[Item], limit: int | None, seed: int, stratify: bool) -> list[Item]:
    if limit is None or limit >= len(items):
        return items
    rng = random.Random(seed)
    if not stratify:
        return rng.sample(items, limit)
    groups: dict[str, list[Item]] = defaultdict(list)
    for it in items:
        groups[it.subject].append(it)
    for g in groups.values():
        rng.shuffle(g)
    order = sorted(groups)
    out: list[Item] = []
    depth = 0
    while len(out) < limit:
        for s in order:
            if depth < len(groups[s]) and len(out) < limit:
                out.append(groups[s][depth])
        depth += 1
    return out


def load_gsm8k(split: str = "test", limit: int | None = None, seed: int = 0, data_dir: str | Path | None = None,
               source: str = "auto") -> list[Item]:
    items = []
    for n, row in enumerate(_rows("gsm8k", split, data_dir, source)):
        if "question" not in row or "answer" not in row:
            raise DataError(f"gsm8k/{split} row {n}: needs 'question' and 'answer'")
        gold, rationale = gsm8k_gold(row["answer"])
        idx = row.get("idx", n)
        items.append(Item("gsm8k", split, f"{split}-{idx}", row["question"], gold, rationale=rationale))
    return _subset(items, limit, seed, stratify=False)


def load_mmlu(split: str = "test", limit: int | None = None, seed: int = 0, data_dir: str | Path | None = None,
              source: str = "auto", subjects: list[str] | None = None) -> list[Item]:
    items = []
    for n, row in enumerate(_rows("mmlu", split, data_dir, source)):
        try:
            choices = list(row["choices"])
            answer = int(row["answer"])
            subject, question = str(row["subject"]), str(row["question"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"mmlu/{split} row {n}: needs subject, question, choices[4], answer 0-3") from None
        if len(choices) != 4 or not 0 <= answer <= 3:
            raise DataError(f"mmlu/{split} row {n}: needs exactly 4 choices and answer 0-3")
        if subjects and subject not in subjects:
            continue
        idx = row.get("idx", n)
        items.append(Item("mmlu", split, f"{split}-{idx}", question, LETTERS[answer], subject=subject,
                          choices=choices))
    if subjects and not items:
        raise DataError(f"no MMLU items for subjects {subjects}")
    return _subset(items, limit, seed, stratify=True)


def load_humaneval(limit: int | None = None, seed: int = 0, data_dir: str | Path | None = None,
                   source: str = "auto") -> list[Item]:
    items = []
    for n, row in enumerate(_rows("humaneval", "test", data_dir, source)):
        if "prompt" not in row or "task_id" not in row:
            raise DataError(f"humaneval row {n}: needs task_id and prompt")
        items.append(Item("humaneval", "test", str(row["task_id"]), row["prompt"], row.get("canonical_solution", ""),
                          extra={"entry_point": row.get("entry_point", ""), "test": row.get("test", "")}))
    return _subset(items, limit, seed, stratify=False)


def load_easy(split: str = "test", limit: int | None = None, seed: int = 0, data_dir: str | Path | None = None,
              source: str = "auto") -> list[Item]:
    """The generated one-step family (evals/easy.py); ``subject`` holds the kind (arithmetic, reverse, ...)."""
    items = []
    for n, row in enumerate(_rows("easy", split, data_dir, source)):
        if not all(isinstance(row.get(k), str) for k in ("question", "answer", "kind")):
            raise DataError(f"easy/{split} row {n}: needs string fields question, answer, kind")
        items.append(Item("easy", split, f"{split}-{row.get('idx', n)}", row["question"], row["answer"],
                          subject=row["kind"]))
    return _subset(items, limit, seed, stratify=True)


def mmlu_fewshot(dev: list[Item], subject: str, k: int) -> list[Item]:
    """The first k dev exemplars of a subject (the standard MMLU k-shot prompt)."""
    return [it for it in dev if it.subject == subject][:k]


def load(dataset: str, split: str, **kwargs) -> list[Item]:
    if dataset == "gsm8k":
        return load_gsm8k(split, **kwargs)
    if dataset == "mmlu":
        return load_mmlu(split, **kwargs)
    if dataset == "humaneval":
        return load_humaneval(**kwargs)
    if dataset == "easy":
        return load_easy(split, **kwargs)
    raise DataError(f"unknown dataset {dataset!r}; known: gsm8k, mmlu, humaneval, easy")
