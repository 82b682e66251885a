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
    assert ("a", "abc", "t", "", "1") in table.done_keys(("agent", "model_sha", "task", "task_version", "item_id"))
    # the default identity also holds the decoding settings: seed, temperature, max_tokens, n_ctx
    assert ("a", "abc", "t", "", "1", 0, 0.0, 0, 0) in table.done_keys()


def test_parts_written_before_the_new_columns_read_back(tmp_path):
    """A part of schema 1 (no temperature, max_tokens, n_ctx, finish_reason, choice_logprobs, data_source) reads
    with their neutral values, and an old-style error row ("[error] ..." output) is not counted as answered."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from quantswarm.results import ADDED, COLUMNS, SCHEMA, rows_to_frame

    frame = rows_to_frame([ResultRow(run_id="r", agent="a", model_file="m", model_sha="s", quant="Q", task="t",
                                     dataset="d", split="test", item_id=i, output=out, extracted="", gold="",
                                     correct=False) for i, out in (("1", "fine"), ("2", "[error] timeout"))])
    old = [c for c in COLUMNS if c not in ADDED]
    table = pa.Table.from_pandas(frame[old], schema=pa.schema([SCHEMA.field(c) for c in old]), preserve_index=False)
    (tmp_path / "t").mkdir()
    pq.write_table(table, tmp_path / "t" / "part-0.parquet")
    got = ResultsTable(tmp_path / "t").read()
    assert got.finish_reason.tolist() == ["", ""] and (got.temperature == 0.0).all() and (got.n_ctx == 0).all()
    assert {k[4] for k in ResultsTable(tmp_path / "t").done_keys()} == {"1"}


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
