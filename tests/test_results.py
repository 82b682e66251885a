"""Results table: schema round-trip, appends as parts, clear errors on malformed files."""

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from quantswarm.errors import ResultsSchemaError
from quantswarm.results import COLUMNS, ResultRow, ResultsTable


def _row(item: str, correct: bool, agent: str = "a") -> ResultRow:
    return ResultRow(run_id="r1", agent=agent, model_file="m.gguf", model_sha="abc", quant="Q4_K_M", task="t",
                     dataset="gsm8k", split="test", item_id=item, output="out", extracted="1", gold="1",
                     correct=correct, joules=None if item == "0" else 1.5, prompt_tokens=3, completion_tokens=4)


def test_round_trip_and_append(tmp_path):
    table = ResultsTable(tmp_path / "res")
    assert table.append([_row("0", True), _row("1", False)]) == 2
    assert table.append([_row("2", True, agent="b")]) == 1
    assert len(table.parts()) == 2
    df = table.read()
    assert list(df.columns) == COLUMNS
    assert len(df) == 3
    assert df.correct.tolist() == [True, False, True]
    assert pd.isna(df.joules.iloc[0]) and df.joules.iloc[1] == 1.5
    assert str(df.timestamp.dt.tz) == "UTC"
    assert len(table.read(agent="b")) == 1
    assert ("a", "abc", "t", "", "1") in table.done_keys()


def test_unknown_filter_column(tmp_path):
    table = ResultsTable(tmp_path)
    table.append([_row("0", True)])
    with pytest.raises(ResultsSchemaError, match="unknown results column"):
        table.read(nope="x")


def test_refuses_foreign_parquet(tmp_path):
    d = tmp_path / "res"
    d.mkdir()
    pq.write_table(pa.table({"x": [1, 2]}), d / "part-0.parquet")
    with pytest.raises(ResultsSchemaError, match="missing columns"):
        ResultsTable(d).read()


def test_refuses_wrong_type(tmp_path):
    d = tmp_path / "res"
    ResultsTable(d).append([_row("0", True)])
    df = ResultsTable(d).read()
    df["correct"] = df["correct"].map(str)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), d / "part-bad.parquet")
    with pytest.raises(ResultsSchemaError, match="column 'correct' has type"):
        ResultsTable(d).read()


def test_refuses_non_parquet(tmp_path):
    d = tmp_path / "res"
    d.mkdir()
    (d / "part-x.parquet").write_text("not parquet")
    with pytest.raises(ResultsSchemaError, match="not a readable Parquet"):
        ResultsTable(d).read()


def test_missing_table(tmp_path):
    with pytest.raises(ResultsSchemaError, match="no results table"):
        ResultsTable(tmp_path / "none").read()
