"""Mining picks only the agent's training-split failures (headline filter), never test items."""

from __future__ import annotations

import pytest

from quantswarm.errors import DataError
from quantswarm.loaders import load_gsm8k
from quantswarm.results import ResultRow, ResultsTable
from repair.mine import mine_failures

TASK = "gsm8k_cot_zeroshot"
# item ids from the shipped train sample (works with or without ../shared/data), in numeric order
_SHIPPED = {it.item_id: it for it in load_gsm8k("train", source="shipped")}
_ID = sorted(_SHIPPED, key=lambda i: int(i.split("-")[1]))
ID = {"train-0": _ID[0], "train-1": _ID[1], "train-2": _ID[2], "train-10": _ID[3], "train-4": _ID[4]}


def _rows(agent: str, item_id: str, split: str, strict_ok: bool, flexible_ok: bool, output: str) -> list[ResultRow]:
    common = dict(run_id="run-1", agent=agent, model_file="m.gguf", model_sha="0" * 16, quant="Q2_K", task=TASK,
                  dataset="gsm8k", split=split, item_id=item_id, output=output, gold="7")
    return [ResultRow(**common, filter="strict", primary=False, extracted="x", correct=strict_ok),
            ResultRow(**common, filter="flexible", primary=True, extracted="x", correct=flexible_ok)]


@pytest.fixture()
def table(tmp_path):
    t = ResultsTable(tmp_path / "results")
    rows = []
    rows += _rows("agent@Q2_K", ID["train-0"], "train", False, False, "wrong trace 0")
    rows += _rows("agent@Q2_K", ID["train-1"], "train", True, True, "right trace 1")
    rows += _rows("agent@Q2_K", ID["train-2"], "train", False, True, "right by the headline filter")
    rows += _rows("agent@Q2_K", ID["train-10"], "train", False, False, "wrong trace 10")
    rows += _rows("agent@Q2_K", "test-3", "test", False, False, "a test failure must never be mined")
    rows += _rows("other@Q2_K", ID["train-4"], "train", False, False, "another agent's failure")
    t.append(rows)
    return t


def test_mines_only_training_failures_of_the_agent(table):
    items = _SHIPPED
    got = mine_failures(table, "agent@Q2_K", TASK, items=items)
    assert [f.item.item_id for f in got] == [ID["train-0"], ID["train-10"]]
    assert all(f.item.split == "train" and f.item.item_id.startswith("train-") for f in got)
    assert got[0].output == "wrong trace 0" and got[0].filter == "flexible"
    assert got[0].item.question == items[ID["train-0"]].question


def test_strict_filter_and_exclusions(table):
    items = _SHIPPED
    strict = mine_failures(table, "agent@Q2_K", TASK, filter="strict", items=items)
    assert [f.item.item_id for f in strict] == [ID["train-0"], ID["train-2"], ID["train-10"]]
    assert [f.item.item_id for f in mine_failures(table, "agent@Q2_K", TASK, items=items,
                                                  exclude_ids={ID["train-0"]})] == [ID["train-10"]]


def test_latest_row_wins(table):
    items = _SHIPPED
    table.append([r for r in _rows("agent@Q2_K", ID["train-0"], "train", True, True, "fixed later")])
    assert [f.item.item_id for f in mine_failures(table, "agent@Q2_K", TASK, items=items)] == [ID["train-10"]]


def test_refuses_a_table_with_only_test_rows(tmp_path):
    t = ResultsTable(tmp_path / "only-test")
    t.append(_rows("agent@Q2_K", "test-3", "test", False, False, "test failure"))
    with pytest.raises(DataError, match="train-split"):
        mine_failures(t, "agent@Q2_K", TASK)
