"""Data loaders on the shipped samples and on ../shared/data."""

import pytest

from quantswarm.errors import DataError
from quantswarm.loaders import gsm8k_gold, load_gsm8k, load_humaneval, load_mmlu


def test_shipped_samples():
    g = load_gsm8k("test", source="shipped")
    assert len(g) == 50 and all(it.gold.lstrip("-").replace(".", "").isdigit() for it in g)
    m = load_mmlu("test", source="shipped")
    assert len(m) == 260 and {it.gold for it in m} <= set("ABCD") and all(len(it.choices) == 4 for it in m)
    assert len(load_mmlu("dev", source="shipped")) == 285
    h = load_humaneval(source="shipped")
    assert len(h) == 20 and h[0].item_id == "HumanEval/0"


def test_seeded_subsets_and_stratification():
    a = load_mmlu("test", limit=52, seed=3, source="shipped")
    b = load_mmlu("test", limit=52, seed=3, source="shipped")
    assert [x.item_id for x in a] == [x.item_id for x in b]
    assert len({x.subject for x in a}) == 52  # one per subject before any repeats
    c = load_gsm8k("test", limit=10, seed=1, source="shipped")
    assert len(c) == 10 and [x.item_id for x in c] != [x.item_id for x in load_gsm8k("test", limit=10, seed=2,
                                                                                      source="shipped")]


def test_shared_data(shared_data):
    if shared_data is None:
        pytest.skip("../shared/data not present")
    assert len(load_gsm8k("test", data_dir=shared_data)) == 1000
    train = load_gsm8k("train", data_dir=shared_data, limit=5)
    assert all(it.item_id.startswith("train-") and it.rationale for it in train)
    assert len(load_mmlu("test", data_dir=shared_data, subjects=["anatomy"])) > 50


def test_gold_and_errors(tmp_path):
    assert gsm8k_gold("so 3\n#### 1,200") == ("1200", "so 3")
    with pytest.raises(DataError):
        gsm8k_gold("no marker")
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "test.jsonl").write_text('{"question": "q", "answer": "#### 1"}\nnot json\n')
    with pytest.raises(DataError, match="test.jsonl:2"):
        load_gsm8k("test", data_dir=tmp_path)
    with pytest.raises(DataError, match="not found"):
        load_mmlu("test", data_dir=tmp_path)
    with pytest.raises(DataError, match="unknown dataset"):
        load_gsm8k("validation", data_dir=tmp_path)


def test_offline_hub_falls_back_to_shipped(monkeypatch, tmp_path):
    monkeypatch.setenv("QUANTSWARM_DATA", str(tmp_path))  # empty folder: nothing local
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert len(load_gsm8k("test")) == 50
