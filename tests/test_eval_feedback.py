"""What `eval run` tells its user: an accuracy summary per agent and task with the share of answers cut off at
max_tokens, and nothing from the libraries unless --verbose."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from evals.report import (
    TRUNCATION_ESTIMATED,
    TRUNCATION_FROM_FINISH,
    TRUNCATION_MIXED,
    accuracy_table,
    build_report,
    truncated_flags,
)
from quantswarm.results import ResultRow, ResultsTable


def rows(agent: str, task: str, tokens: list[int], run_id: str = "r1", outputs: list[str] | None = None
         ) -> list[ResultRow]:
    outputs = outputs or ["x"] * len(tokens)
    return [ResultRow(run_id=run_id, agent=agent, model_file="m.gguf", model_sha="s", quant="Q4_1", task=task,
                      dataset="gsm8k", split="test", item_id=str(i), output=out, extracted="1", gold="1",
                      correct=i % 2 == 0, filter="flexible", completion_tokens=n)
            for i, (n, out) in enumerate(zip(tokens, outputs, strict=True))]


def test_truncated_share_from_token_counts_and_the_block_cap(tmp_path):
    table = ResultsTable(tmp_path)
    table.append(rows("a", "gsm8k_cot_zeroshot", [320, 100, 320, 5]))  # the task YAML's cap is 320
    table.append(rows("b", "gsm8k_cot_zeroshot", [100, 100, 99, 5], run_id="r2", outputs=["x", "[error] n_ctx",
                                                                                         "x", "x"]))
    table.append(rows("a", "mmlu_logprob", [1, 1]))
    block = {"run_id": "r2", "agent": "b", "quant": "Q4_1", "reference": "", "bits_per_weight": 4.5,
             "task": "gsm8k_cot_zeroshot", "items": 4, "wall_s": 2.0, "completion_tokens": 304, "max_tokens": 100,
             "backend": "llama-server", "parallel": 2, "device": "cpu", "joules": None, "peak_vram_mib": None}
    (tmp_path / "blocks.jsonl").write_text(json.dumps(block) + "\n")
    frame = table.read()
    acc = accuracy_table(frame, pd.read_json(tmp_path / "blocks.jsonl", lines=True)).set_index(["agent", "task"])
    assert acc.loc[("a", "gsm8k_cot_zeroshot"), "truncated"] == 0.5  # 2 of 4 reached 320
    # run r2 ran with --max-tokens 100 (its block says so): 1 of the 3 scored answers hit it; the error row is left out
    assert acc.loc[("b", "gsm8k_cot_zeroshot"), "truncated"] == pytest.approx(1 / 3)
    assert np.isnan(acc.loc[("a", "mmlu_logprob"), "truncated"])  # log-probability scoring generates nothing
    rep = build_report(tmp_path)
    assert TRUNCATION_ESTIMATED in rep.markdown and "| errors | truncated |" in rep.markdown
    assert "| a | Q4_1 | gsm8k_cot_zeroshot | flexible | 4 | 0.500 | 0.150 | 0.850 | 0 | 0.500 |" in rep.markdown


def test_truncated_share_uses_finish_reason_and_the_rows_own_cap_when_the_table_has_them():
    frame = pd.DataFrame({"run_id": "r", "agent": "a", "task": ["gsm8k_cot_zeroshot"] * 5,
                          "completion_tokens": [5, 320, 50, 7, 3], "max_tokens": [0, 0, 50, 0, 0],
                          "output": ["x", "x", "x", "[error] boom", "x"],
                          "finish_reason": ["length", "stop", "", "error", "logprob"]})
    flags, how = truncated_flags(frame)
    # length -> cut; stop -> not, whatever the count; "" -> estimated against the row's own cap of 50
    assert flags.iloc[:3].tolist() == [1.0, 0.0, 1.0] and flags.iloc[3:].isna().all()
    assert how == TRUNCATION_MIXED
    flags, how = truncated_flags(frame.iloc[:2])
    assert how == TRUNCATION_FROM_FINISH
    flags, how = truncated_flags(frame.drop(columns="finish_reason"))
    assert how == TRUNCATION_ESTIMATED and flags.iloc[:3].tolist() == [0.0, 1.0, 1.0]  # the YAML's 320, the row's 50


def test_eval_run_prints_accuracy_and_truncation(smollm2, tmp_path):
    res = subprocess.run([sys.executable, "-m", "quantswarm.cli", "eval", "run", f"smol={smollm2}",
                          "--tasks", "gsm8k_cot_zeroshot,mmlu_logprob", "--limit", "2", "--max-tokens", "8",
                          "--backend", "llama-cpp-python", "--parallel", "1", "--n-ctx", "1024", "--source", "shipped",
                          "--results", str(tmp_path / "res")], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    gsm = [ln.split() for ln in lines if ln.startswith("smol") and "gsm8k_cot_zeroshot" in ln]
    mmlu = [ln.split() for ln in lines if ln.startswith("smol") and "mmlu_logprob" in ln]
    assert sorted(r[2] for r in gsm) == ["flexible*", "strict"] and len(mmlu) == 1
    assert all(r[3] == "2" and r[-1] == "1.000" for r in gsm)  # 8-token answers: every one hit the cap
    assert mmlu[0][-1] == "n/a"
    assert any(TRUNCATION_FROM_FINISH in ln for ln in lines)  # the runner records each answer's finish_reason
    assert lines[-1] == f"results: {tmp_path / 'res'} (full report: quantswarm eval report {tmp_path / 'res'})"


SNIPPET = """
import logging, warnings
from quantswarm.cli import configure_output
configure_output({verbose})
import dspy
logging.getLogger("dspy.teleprompt.bootstrap").info("dspy-info-line")
logging.getLogger("LiteLLM").warning("litellm-warning-line")
warnings.warn("library-warning-line")
logging.getLogger("x").error("error-line")
"""


@pytest.mark.parametrize("verbose", [False, True])
def test_library_logs_and_warnings_only_with_verbose(verbose):
    res = subprocess.run([sys.executable, "-c", SNIPPET.format(verbose=verbose)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    for line in ("dspy-info-line", "litellm-warning-line", "library-warning-line"):
        assert (line in res.stderr) == verbose, res.stderr
    assert "error-line" in res.stderr  # errors always show


def test_verbose_is_taken_anywhere_on_the_command_line():
    res = subprocess.run([sys.executable, "-m", "quantswarm.cli", "models", "list", "--verbose"],
                         capture_output=True, text=True)
    assert res.returncode == 0 and "smollm2-135m-instruct-q4_1" in res.stdout
