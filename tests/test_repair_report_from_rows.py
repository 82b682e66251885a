"""benchmarks/repair_report_from_rows.py: a repair report rebuilt from rows alone, each deployment on the items
it answered, the summary's item counts and settings those of the deployment it names."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from evals.task import load_task
from quantswarm.results import ResultRow, ResultsTable

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import repair_report_from_rows  # noqa: E402

N = 40
DATA = Path(__file__).resolve().parents[1] / "data"  # the shipped GSM8K and MMLU items


def _rows(agent: str, task: str, ids: list[str], right: int, sha: str = "s") -> list[ResultRow]:
    return [ResultRow(run_id="r", agent=agent, model_file="m.gguf", model_sha=sha, quant="Q2_K", task=task,
                      dataset=task, split="test", item_id=i, output="o", extracted="1", gold="1",
                      correct=k < right, device="NVIDIA H200", primary=True) for k, i in enumerate(ids)]


@pytest.fixture()
def results(tmp_path):
    ids = {t: [it.item_id for it in load_task(t).load_items(N, 0, data_dir=str(DATA))]
           for t in ("gsm8k_cot_zeroshot", "mmlu_logprob")}
    table = ResultsTable(tmp_path / "results")
    for task, items in ids.items():
        table.append(_rows("m@Q2_K", task, items, 10))
        table.append(_rows("m@F16", task, items, 30))
        table.append(_rows("m-rpo-lora@Q2_K", task, items, 25))
        table.append(_rows("m-dpo-lora@Q2_K", task, items if task.startswith("gsm") else items[:8], 12))
    adapter = tmp_path / "adapter-rpo"
    adapter.mkdir()
    (adapter / "repair_meta.json").write_text(json.dumps({"config": {
        "loss_type": "sigmoid,sft", "beta": 0.1, "learning_rate": 5e-5, "epochs": 2.0, "train_on": "quantized"}}))
    (tmp_path / "train_result-rpo.json").write_text(json.dumps({"steps": 42, "seconds": 40.6, "history": []}))
    return tmp_path, table


def test_each_deployment_on_its_own_items_and_the_summary_of_the_best(results):
    folder, table = results
    out = folder / "report"
    rc = repair_report_from_rows.main([str(table.path), "--stem", "m", "--quant", "Q2_K", "--data-dir",
                                       str(DATA), "--gsm8k-items", str(N), "--mmlu-items", str(N),
                                       "--train-results", str(folder), "--out", str(out)])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["deploy"] == "rpo_lora" and summary["gap_recovered"] == pytest.approx(0.75)
    assert summary["n_gsm8k"] == N and summary["n_mmlu"] == N  # not the cut-short dpo_lora's 8
    assert summary["loss_type"] == "sigmoid,sft" and summary["gpu"] == "NVIDIA H200"
    assert summary["deploys"]["dpo_lora"]["n_mmlu"] == 8 and summary["deploys"]["rpo_lora"]["n_mmlu"] == N
    assert summary["deploys"]["rpo_lora"]["gap"] == pytest.approx(0.5)
    assert "| dpo_lora | mmlu_logprob | 8 |" in (out / "report.md").read_text()


def test_rows_of_two_files_under_one_agent_and_missing_roles_are_one_line_errors(results, capsys):
    folder, table = results
    args = ["--stem", "m", "--quant", "Q2_K", "--data-dir", str(DATA), "--gsm8k-items", str(N),
            "--mmlu-items", str(N), "--out", str(folder / "r")]
    assert repair_report_from_rows.main([str(table.path), *args[:3], "Q3_K_M", *args[4:]]) == 2
    assert "no rows of m@Q3_K_M" in capsys.readouterr().err
    table.append(_rows("m-rpo-lora@Q2_K", "gsm8k_cot_zeroshot", ["x"], 1, sha="other"))
    assert repair_report_from_rows.main([str(table.path), *args]) == 2
    assert "m-rpo-lora@Q2_K has rows of 2 model files" in capsys.readouterr().err


def test_rows_of_other_data_settings_and_bad_inputs_are_one_line_errors(results, tmp_path, capsys):
    folder, table = results
    args = ["--stem", "m", "--quant", "Q2_K", "--gsm8k-items", str(N), "--mmlu-items", str(N), "--out",
            str(tmp_path / "r")]
    # items drawn from another data folder (here: 10 items asked of rows that answered other ids) do not pass
    assert repair_report_from_rows.main([str(table.path), *args[:4], "--data-dir", str(tmp_path), *args[4:]]) == 2
    assert "repair_report_from_rows:" in capsys.readouterr().err
    base = [str(table.path), *args, "--data-dir", str(DATA)]
    assert repair_report_from_rows.main([*base, "--train-results", str(tmp_path / "none")]) == 2
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "list.json").write_text("[1, 2]")
    assert repair_report_from_rows.main([*base, "--pairs-summary", str(tmp_path / "list.json")]) == 2
    assert "must be a JSON object, not list" in capsys.readouterr().err
    (folder / "adapter-rpo" / "repair_meta.json").write_text('{"config": {"beta": 0.1}}')
    assert repair_report_from_rows.main([*base, "--train-results", str(folder)]) == 2
    assert "config lacks loss_type" in capsys.readouterr().err
    assert repair_report_from_rows.main([*base, "--reference", "m@Q2_K"]) == 2
    assert "is the degraded agent itself" in capsys.readouterr().err


def test_fewer_answered_items_than_drawn_is_an_error(results, tmp_path, capsys):
    """Rows made from other data (here: 40 items answered, 45 drawn) are refused, not compared on a subset."""
    _, table = results
    rc = repair_report_from_rows.main([str(table.path), "--stem", "m", "--quant", "Q2_K", "--data-dir", str(DATA),
                                       "--gsm8k-items", "45", "--mmlu-items", str(N), "--out", str(tmp_path / "r")])
    assert rc == 2 and "answered 40 of the 45 gsm8k_cot_zeroshot items" in capsys.readouterr().err
