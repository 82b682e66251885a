"""Pair building: only verified traces are ever "chosen"; gold fallback, dedup, length cap, saved formats."""

from __future__ import annotations

import dataclasses
import json

import datasets
import pytest

from evals.task import load_task
from quantswarm.engine import open_engine
from quantswarm.loaders import load_gsm8k
from repair.mine import Failure
from repair.pairs import ChatTemplate, PairError, PairSet, Proposer, build_pairs, gold_trace, make_pair, verified


@pytest.fixture(scope="module")
def task():
    return load_task("gsm8k_cot_zeroshot")


@pytest.fixture(scope="module")
def items(shared_data):
    return load_gsm8k("train", limit=3, seed=3, data_dir=shared_data)


def test_gold_rationale_in_answer_format_verifies(task, items):
    for it in items:
        trace = gold_trace(it)
        assert "<<" not in trace and trace.endswith(f"#### {it.gold}")
        assert verified(task, trace, it)


def test_make_pair_refuses_unverified_chosen(task, items):
    it = items[0]
    wrong = f"{it.rationale}\n#### {int(float(it.gold)) + 1}"
    with pytest.raises(PairError, match="not verified"):
        make_pair(task, it, "prompt", wrong, "bad", "reference")
    # a Qwen-style trace without GSM8K's "####" is right by the task's primary filter, and verifies
    assert make_pair(task, it, "prompt", f"Step by step...\nThe answer is {it.gold}.", "bad", "reference")
    with pytest.raises(PairError, match="rejected trace is correct"):
        make_pair(task, it, "prompt", gold_trace(it), f"#### {it.gold}", "gold")
    pair = make_pair(task, it, "prompt", gold_trace(it), "#### -1", "gold")
    assert pair.chosen == gold_trace(it) and pair.source == "gold"


def test_build_pairs_with_real_reference(task, items, smollm2, tmp_path):
    short = dataclasses.replace(task, generation=dataclasses.replace(task.generation, max_tokens=32))
    fails = [Failure(it, "I think it is -1.\n#### -1", "-1", "run-1", "smol@Q2_K", "flexible") for it in items]
    fails.append(fails[0])  # the same failure twice: deduplicated
    server = open_engine(str(smollm2), backend="llama-server", n_ctx=1024, parallel=1)
    template = ChatTemplate(server.url)
    engine = open_engine(str(smollm2), backend="llama-cpp-python", n_ctx=1024)
    try:
        got = build_pairs(fails, short, template, [Proposer("reference", engine, k=1, temperature=0.8)],
                          max_length=2048, gold_fallback=True, log=lambda s: None)
    finally:
        engine.close()
    assert got.dropped["duplicate"] == 1
    assert len(got.pairs) == len(items)
    assert sum(got.by_source.values()) == len(got.pairs)
    by_id = {it.item_id: it for it in items}
    for p in got.pairs:
        assert verified(task, p.chosen, by_id[p.item_id]), p.chosen
        assert p.prompt.startswith("<|im_start|>system") and p.prompt.endswith("<|im_start|>assistant\n")
        assert by_id[p.item_id].question in p.prompt
        assert p.prompt_tokens > 0 and p.chosen_tokens > 1
    capped = build_pairs(fails[:1], short, template, [], max_length=64, gold_fallback=True, log=lambda s: None)
    assert not capped.pairs and capped.dropped["too_long"] == 1
    template.close()
    server.close()

    folder = got.save(tmp_path / "pairs")
    rows = [json.loads(line) for line in (folder / "pairs.jsonl").read_text().splitlines()]
    assert [r["item_id"] for r in rows] == [p.item_id for p in got.pairs]
    ds = datasets.load_from_disk(str(folder / "dataset"))
    assert ds.num_rows == len(got.pairs) and {"prompt", "chosen", "rejected"} <= set(ds.column_names)
    summary = json.loads((folder / "pairs_summary.json").read_text())
    assert summary["by_source"] == got.by_source
    assert PairSet.load(folder).pairs == got.pairs


def test_cut_off_errored_and_empty_rejected_traces_are_dropped(task, items):
    """A rejected trace must be the agent's complete answer: one cut at max_tokens or an error row is not."""
    fails = [Failure(items[0], "Let me think... 3 + 4 =", "4", "r", "a", "flexible", finish_reason="length"),
             Failure(items[1], "[error] timeout", "", "r", "a", "flexible", finish_reason="error"),
             Failure(items[2], "   ", "", "r", "a", "flexible", finish_reason="stop")]
    got = build_pairs(fails, task, None, [], log=lambda s: None)
    assert not got.pairs
    assert dict(got.dropped) == {"rejected_length": 1, "rejected_error": 1, "rejected_stop": 1}


def test_chat_template_renders_special_tokens_as_llama_server_does(smollm2):
    server = open_engine(str(smollm2), backend="llama-server", n_ctx=512, parallel=1)
    try:
        t = ChatTemplate(server.url)
        prompt = t.render([{"role": "user", "content": "Hi"}])
        assert prompt.startswith("<|im_start|>") and prompt.endswith("<|im_start|>assistant\n")
        assert t.count("<|im_start|>") == 1  # a special token counts as one token
        t.close()
    finally:
        server.close()
