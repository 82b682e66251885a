"""The routed workload: tasks from a compiled router's held-out split, sent as the eval sends them, scored as it does.

A router program is compiled on labeled items (``router.labels``: one JSONL line per item, ``key`` =
``dataset/split/item_id``) split by a hash of the key (:func:`router.labels.split_of` with the manifest's
``split_seed``, ``train_frac`` and ``dev_frac``). The items of the ``test`` split were never seen by the
optimizer, so a swarm serving them with ``model="auto"`` measures the router where it has to generalize.

Each item becomes the chat messages of its eval task (:data:`DATASET_TASKS`: GSM8K zero-shot CoT, MMLU 5-shot
answered by letter, HumanEval, the generated easy family) and its answer is scored by that task's primary filter
(:meth:`evals.task.Task.score`). HumanEval runs model-written code: its items are kept only with
``allow_code_execution`` (the sandbox of :mod:`evals.sandbox`), else dropped and said so.
"""

from __future__ import annotations

import json
import random
import re
import sys
from dataclasses import replace
from pathlib import Path

from quantswarm.errors import ConfigError, DataError

DATASET_TASKS = {"gsm8k": "gsm8k_cot_zeroshot", "mmlu": "mmlu_generate", "humaneval": "humaneval_pass1",
                 "easy": "easy_oneshot"}
SPLIT_KEYS = ("split_seed", "train_frac", "dev_frac")


def split_params(program_dir: str | Path) -> dict:
    """``split_seed``, ``train_frac``, ``dev_frac`` of a compiled router (its ``manifest.json`` ``data`` block).

    Raises ConfigError when the manifest is missing or lacks them."""
    path = Path(program_dir) / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the router manifest ({exc})") from None
    data = manifest.get("data") if isinstance(manifest, dict) else None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: no `data` object (the split the router was compiled on); recompile the router")
    missing = [k for k in SPLIT_KEYS if isinstance(data.get(k), bool) or not isinstance(data.get(k), int | float)]
    if missing:
        raise ConfigError(f"{path}: data block lacks {', '.join(missing)}; recompile the router")
    return {k: data[k] for k in SPLIT_KEYS}


def heldout_keys(labels: str | Path, program_dir: str | Path) -> list[str]:
    """Keys (``dataset/split/item_id``) of the labeled items in the router's held-out (test) split, file order.

    Raises DataError for a missing or unreadable file, a line that is not a JSON object with a string ``key``, a key
    given twice, or no held-out item."""
    from router.labels import split_of

    sp = split_params(program_dir)
    path = Path(labels)
    if not path.is_file():
        raise DataError(f"{path}: no such labels file (the router's labels.jsonl)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the labels ({exc})") from None
    keys, seen = [], {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            key = json.loads(line)["key"]
        except (ValueError, KeyError, TypeError):
            raise DataError(f"{path}:{n}: not a JSON object with a `key`") from None
        if not isinstance(key, str) or key.count("/") < 2:
            raise DataError(f"{path}:{n}: key {key!r} is not dataset/split/item_id")
        if key in seen:
            raise DataError(f"{path}:{n}: key {key!r} again (first on line {seen[key]}): one line per item")
        seen[key] = n
        if split_of(key, int(sp["split_seed"]), sp["train_frac"], sp["dev_frac"]) == "test":
            keys.append(key)
    if not keys:
        raise DataError(f"{path}: none of its items is in the held-out split of {program_dir}")
    return keys


def routed_workload(labels: str | Path, program_dir: str | Path, n: int, seed: int = 0, data_dir: str | None = None,
                    allow_code_execution: bool = False, log=None) -> list:
    """``n`` bench :class:`~serving.bench.WorkItem` s drawn (seeded, without replacement, then cycled if ``n`` is
    larger) from the router's held-out items, each with its task's messages, gold answer and scorer.

    Raises DataError when an item is not in the data (a labels file from other data) or nothing is left."""
    from evals.task import load_task
    from serving.bench import WorkItem

    say = log or (lambda m: print(m, file=sys.stderr))
    keys = heldout_keys(labels, program_dir)
    by_dataset: dict[str, list[str]] = {}
    for k in keys:
        by_dataset.setdefault(k.split("/", 1)[0], []).append(k)
    unknown = sorted(set(by_dataset) - set(DATASET_TASKS))
    if unknown:
        raise DataError(f"{labels}: held-out items of datasets {unknown}; the routed workload knows "
                        f"{', '.join(DATASET_TASKS)}")
    if "humaneval" in by_dataset and not allow_code_execution:
        say(f"routed workload: {len(by_dataset.pop('humaneval'))} held-out HumanEval items dropped (scoring them runs "
            "model-written code: pass --allow-code-execution)")
    items = []
    for dataset, ks in sorted(by_dataset.items()):
        task = load_task(DATASET_TASKS[dataset])
        splits = {k.split("/")[1] for k in ks}
        pool = task.load_fewshot_pool(data_dir=data_dir)
        found = {}
        for split in splits:
            for it in task.load_items(None, 0, data_dir=data_dir, split=split):
                found[f"{dataset}/{split}/{it.item_id}"] = it
        lost = [k for k in ks if k not in found]
        if lost:
            raise DataError(f"{labels}: {len(lost)} held-out items (e.g. {lost[0]}) are not in the {dataset} data "
                            f"({data_dir or 'default data folder'})")
        for k in ks:
            it = found[k]
            items.append(WorkItem(re.sub(r"[^A-Za-z0-9_-]", "-", k), dataset,
                                  task.messages(it, task.fewshot_items(it, pool)), gold=it.gold, task=task.name,
                                  item=it, allow_code_execution=allow_code_execution))
    if not items:
        raise DataError(f"{labels}: no held-out item left to serve")
    rng = random.Random(seed)
    rng.shuffle(items)
    m = len(items)
    if n > m:
        say(f"routed workload: {n} tasks from {m} held-out items (each served about {n / m:.1f}x)")
    # a repeat gets its own id, so the bus does not drop it as a duplicate
    return [items[i] if i < m else replace(items[i % m], id=f"{items[i % m].id}-r{i // m}") for i in range(n)]
