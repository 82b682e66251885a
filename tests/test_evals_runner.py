"""A real ladder step and a real (tiny) eval run: rows, resume, report."""

from pathlib import Path

from evals.eval_config import EvalConfig
from evals.ladder import read_ladder
from evals.report import write_report
from evals.runner import run_eval
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
