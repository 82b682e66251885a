"""A real ladder step and a real (tiny) eval run: rows, resume, report."""

from pathlib import Path

import pytest

from evals.eval_config import EvalConfig
from evals.ladder import read_ladder
from evals.report import write_report
from evals.runner import context_needed, run_eval
from evals.task import load_task
from quantswarm.errors import ConfigError
from quantswarm.registry import inspect_gguf
from quantswarm.results import ResultsTable


def test_ladder_types(smollm2_ladder):
    rungs = read_ladder(smollm2_ladder)
    assert [r.quant for r in rungs] == ["F16", "Q8_0", "Q2_K"]
    assert rungs[0].reference == "F16 (from Q4_1)" and rungs[0].is_reference
    assert rungs[2].reference == "Q2_K via F16 from Q4_1"
    for r in rungs:
        assert inspect_gguf(r.path).file_type == r.quant
    assert rungs[0].bits_per_weight > rungs[1].bits_per_weight > rungs[2].bits_per_weight
    # SmolLM2's 576-wide rows do not divide into 256-element k-quant super-blocks: its "Q2_K" is mostly Q4_0
    q2 = rungs[2]
    assert q2.k_quant_fell_back and max(q2.tensor_types, key=q2.tensor_types.get) in ("Q4_0", "F32")
    assert q2.tensor_types.get("Q4_0", 0) > q2.tensor_types.get("Q2_K", 0) + q2.tensor_types.get("Q3_K", 0)
    assert not rungs[1].k_quant_fell_back and set(rungs[1].tensor_types) <= {"Q8_0", "F32"}
    assert inspect_gguf(q2.path).k_quant_share < 0.5 and inspect_gguf(rungs[1].path).k_quant_share == 0.0


def test_run_resume_report(smollm2_ladder, tmp_path, llama_server_bin):
    ladder = read_ladder(smollm2_ladder)
    models = [f"ref={ladder[1].path}", f"q2={ladder[2].path}"]
    res = tmp_path / "res"
    cfg = dict(models=models, tasks=["gsm8k_cot_zeroshot", "mmlu_logprob"], source="shipped", results=str(res),
               backend="llama-server", parallel=2, n_ctx=1024, max_tokens=24, progress=False)
    run_eval(EvalConfig(limit=2, **cfg))
    df = ResultsTable(res).read()
    # 2 models x (2 gsm8k items x 2 filters + 2 mmlu items x 1 filter)
    assert len(df) == 2 * (2 * 2 + 2)
    assert set(df.agent) == {"ref", "q2"} and set(df.quant) == {"Q8_0", "Q2_K"}
    assert df.groupby(["agent", "task"]).item_id.nunique().eq(2).all()
    assert (df[df.task == "mmlu_logprob"].extracted.isin(list("ABCD"))).all()
    run_eval(EvalConfig(limit=2, **cfg))  # same command: nothing new
    assert len(ResultsTable(res).read()) == len(df)
    run_eval(EvalConfig(limit=3, **cfg))  # one more item per task: only that one runs
    df3 = ResultsTable(res).read()
    assert len(df3) == 2 * (3 * 2 + 3)
    rep = write_report(res, reference="ref")
    assert rep.reference == "ref"
    assert set(rep.paired.task) == {"gsm8k_cot_zeroshot", "mmlu_logprob"} and (rep.paired.n == 3).all()
    out = Path(res) / "report"
    assert (out / "summary.md").exists() and (out / "accuracy_vs_bpw.png").stat().st_size > 1000
    summary = (out / "summary.md").read_text()
    assert "## Stored tensor types" in summary and "Q4_0 x" in summary
    assert "**Nominal k-quants that fell back**" in summary and ": q2." in summary


def test_replicas_errors_repeats_and_row_identity(smollm2, tmp_path, llama_server_bin):
    """Two llama-server replicas answer like one; an errored answer is retried on rerun; k seeds give k answers;
    a rerun with another max_tokens is a new answer, not a skipped one."""
    res = tmp_path / "res"
    base = dict(models=[f"smol={smollm2}"], tasks=["easy_oneshot"], limit=4, results=str(res),
                backend="llama-server", parallel=1, n_ctx=512, progress=False)
    run_eval(EvalConfig(**base, replicas=2))
    two = ResultsTable(res).read()
    assert len(two) == 4 and set(two.finish_reason) <= {"stop", "length"}
    assert (two.temperature == 0.0).all() and (two.n_ctx == 512).all() and (two.max_tokens == 32).all()
    assert two.data_source.str.endswith("easy/test.jsonl").all()
    one_res = tmp_path / "one"
    run_eval(EvalConfig(**{**base, "results": str(one_res)}))
    one = ResultsTable(one_res).read()
    by = lambda df: dict(zip(df.item_id, df.output, strict=True))  # noqa: E731
    assert by(one) == by(two)  # greedy on the CPU: the same answers from one process or two

    # an errored answer (as the runner records a refused request) is retried by the same command
    table = ResultsTable(res)
    bad = two.iloc[[0]].copy()
    bad["finish_reason"], bad["output"], bad["timestamp"] = "error", "[error] timeout", bad["timestamp"]
    frame = two[two.item_id != bad.item_id.iloc[0]]
    import shutil

    shutil.rmtree(res)
    table.append(frame)
    table.append(bad)
    run_eval(EvalConfig(**base))
    again = ResultsTable(res).read()
    item = bad.item_id.iloc[0]
    assert len(again[again.item_id == item]) == 2 and set(again[again.item_id == item].finish_reason) - {"error"}

    run_eval(EvalConfig(**base, max_tokens=8))  # another setting: four new answers
    assert len(ResultsTable(res).read()) == len(again) + 4
    run_eval(EvalConfig(**base, repeats=2, temperature=0.8, max_tokens=8))  # two sampled answers per item
    sampled = ResultsTable(res).read().query("temperature == 0.8")
    assert len(sampled) == 8 and set(sampled.seed) == {0, 1}


def test_mmlu_choice_logprobs_are_a_typed_column(smollm2, tmp_path, llama_server_bin, capsys):
    """Also: a 5-shot prompt longer than the requested n_ctx raises the slot's context (noted on stderr) instead of
    failing every long item with a 400 from llama-server."""
    res = tmp_path / "res"
    cfg = EvalConfig(models=[f"smol={smollm2}"], tasks=["mmlu_logprob"], limit=2, source="shipped",
                     results=str(res), backend="llama-server", parallel=1, n_ctx=256, progress=False)
    run_eval(cfg)
    df = ResultsTable(res).read()
    task = load_task("mmlu_logprob")
    items, pool = task.load_items(2, 0, None, "shipped"), task.load_fewshot_pool(None, "shipped")
    need, which = context_needed([task], {task.name: (items, pool)}, cfg)
    assert which == "mmlu_logprob" and need > 256 and need % 256 == 0
    assert (df.n_ctx == need).all() and "n_ctx per slot raised from 256" in capsys.readouterr().err
    for _, row in df.iterrows():
        lp = dict(row.choice_logprobs)
        assert set(lp) <= set("ABCD") and lp and row.output == max(lp, key=lp.get)
        assert row.finish_reason == "logprob" and row.extracted == row.output


def test_backend_sampling_is_recorded(smollm2, tmp_path, llama_server_bin):
    """llama-server --backend-sampling changes greedy outputs under batching: the block and every row say it was on."""
    import json

    res = tmp_path / "res"
    run_eval(EvalConfig(models=[f"smol={smollm2}"], tasks=["easy_oneshot"], limit=2, results=str(res),
                        backend="llama-server", parallel=1, n_ctx=512, backend_sampling=True, progress=False))
    block = json.loads((res / "blocks.jsonl").read_text().splitlines()[-1])
    assert block["backend_sampling"] is True
    df = ResultsTable(res).read()
    assert len(df) == 2 and df.versions.map(lambda v: json.loads(v)["sampling"]).eq(
        "llama-server --backend-sampling").all()


def test_concurrent_models_give_the_rows_of_one_at_a_time(smollm2_ladder, tmp_path, llama_server_bin, capsys):
    """Two rungs evaluated at once (each its own llama-server) give the same greedy rows as one after the other;
    energy is then not recorded, and the run says so."""
    import json

    ladder = read_ladder(smollm2_ladder)
    base = dict(models=[f"q8={ladder[1].path}", f"q2={ladder[2].path}"], tasks=["easy_oneshot"], limit=3,
                backend="llama-server", parallel=1, n_ctx=512, progress=False)
    run_eval(EvalConfig(**base, results=str(tmp_path / "seq")))
    run_eval(EvalConfig(**base, results=str(tmp_path / "conc"), concurrent_models=2))
    assert "2 models at once on one device: energy per row and per block is not recorded" in capsys.readouterr().err
    seq, conc = ResultsTable(tmp_path / "seq").read(), ResultsTable(tmp_path / "conc").read()
    key = lambda df: sorted(zip(df.agent, df.item_id, df.output, strict=True))  # noqa: E731
    assert len(conc) == 6 and key(conc) == key(seq)
    blocks = [json.loads(line) for line in (tmp_path / "conc" / "blocks.jsonl").read_text().splitlines()]
    assert sorted(b["agent"] for b in blocks) == ["q2", "q8"] and all(b["joules"] is None for b in blocks)
    assert conc.joules.isna().all()
    with pytest.raises(ConfigError, match="concurrent_models must be >= 1"):
        EvalConfig(**base, concurrent_models=0)
