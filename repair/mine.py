"""Mine a quantized agent's failures on a *training* split from the results table.

Only rows with ``split == "train"`` are ever mined: the test items the repair is judged on
must never leak into the pairs. One failure per item (the latest row of the headline filter).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from quantswarm.errors import DataError
from quantswarm.loaders import Item, load
from quantswarm.results import ResultsTable

TRAIN_SPLIT = "train"


@dataclass
class Failure:
    """An item the agent got wrong on the training split, with its wrong trace."""

    item: Item
    output: str  # the agent's wrong trace (the "rejected" side of a pair)
    extracted: str
    run_id: str
    agent: str
    filter: str
    finish_reason: str = ""  # stop | length | error ("" for rows written before it was recorded)


def mine_failures(table: ResultsTable | str | Path, agent: str, task: str, *, filter: str | None = None,
                  items: dict[str, Item] | None = None, exclude_ids: set[str] | frozenset = frozenset(),
                  data_dir: str | Path | None = None) -> list[Failure]:
    """The training-split items ``agent`` answered wrongly on ``task``, with their wrong outputs.

    ``filter`` picks the answer filter that decides "wrong" (default: each row's primary filter).
    ``items`` maps item_id to the dataset item (loaded from the train split when not given);
    ``exclude_ids`` are item ids never to mine (e.g. the eval set, as a second guard).
    """
    table = table if isinstance(table, ResultsTable) else ResultsTable(table)
    rows = table.read(agent=agent, task=task)
    if rows.empty:
        raise DataError(f"no results for agent {agent!r} on task {task!r} in {table.path}; evaluate it first")
    rows = rows[rows["split"] == TRAIN_SPLIT]
    if rows.empty:
        raise DataError(f"agent {agent!r} has no {TRAIN_SPLIT}-split rows for {task!r} in {table.path}; "
                        f"evaluate it on the {TRAIN_SPLIT} split (test items are never mined)")
    rows = rows[rows["filter"] == filter] if filter else rows[rows["primary"]]
    if rows.empty:
        raise DataError(f"no rows with filter {filter!r} for agent {agent!r}; check the task's filter names")
    latest = rows.sort_values("timestamp").groupby("item_id", sort=False).tail(1)
    wrong = latest[~latest["correct"].astype(bool)]
    if items is None:
        datasets = sorted(set(wrong["dataset"]))
        items = {it.item_id: it for ds in datasets for it in load(ds, TRAIN_SPLIT, data_dir=data_dir)}
    out = []
    for row in sorted(wrong.itertuples(index=False), key=lambda r: _item_order(r.item_id)):
        if row.item_id in exclude_ids:
            continue
        item = items.get(row.item_id)
        if item is None:
            raise DataError(f"{row.dataset}/{TRAIN_SPLIT} has no item {row.item_id!r} (results row of run "
                            f"{row.run_id}); mine with the data the eval used (--data-dir)")
        if item.split != TRAIN_SPLIT:
            raise DataError(f"item {row.item_id!r} is from split {item.split!r}; only {TRAIN_SPLIT} items are mined")
        out.append(Failure(item=item, output=row.output, extracted=row.extracted, run_id=row.run_id,
                           agent=row.agent, filter=row.filter, finish_reason=row.finish_reason))
    return out


def _item_order(item_id: str) -> tuple[str, int]:
    """Sort ``train-12`` before ``train-100`` (numeric suffix), other ids as text."""
    stem, _, num = item_id.rpartition("-")
    return (stem, int(num)) if num.isdigit() else (item_id, -1)
