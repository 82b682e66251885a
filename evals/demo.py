"""The embedded default job (``make demo``): SmolLM2 on shipped GSM8K + MMLU samples, on CPU."""

from __future__ import annotations

from pathlib import Path

from evals.eval_config import EvalConfig
from evals.report import build_report
from evals.runner import run_eval
from quantswarm.registry import CATALOGUE, fetch, resolve_model
from quantswarm.results import ResultsTable


def run_demo(model: str, items: int, results: Path) -> str:
    """Evaluate ``model`` on ``items`` GSM8K and MMLU items from the shipped samples; return a summary."""
    path = fetch(model) if model in CATALOGUE else resolve_model(model)
    cfg = EvalConfig(
        models=[str(path)],
        tasks=["gsm8k_cot_zeroshot", "mmlu_logprob"],
        limit=items,
        source="shipped",
        results=str(results),
        parallel=2,
        n_ctx=1024,
        max_tokens=256,
    )
    run_eval(cfg)
    frame = ResultsTable(results).read()
    rep = build_report(results)
    acc = rep.accuracy
    lines = [
        f"Demo: {path.name} on {items} GSM8K + {items} MMLU items (shipped samples), device {frame.device.iloc[0]}",
        "",
        f"{'dataset/task':28} {'filter':9} {'n':>4} {'accuracy':>9}  95% CI",
    ]
    for _, r in acc.sort_values(["task", "filter"]).iterrows():
        lines.append(f"{r.task:28} {r['filter']:9} {r.n:4d} {r.accuracy:9.3f}  [{r.ci_low:.3f}, {r.ci_high:.3f}]")
    if not rep.speed.empty:
        for _, s in rep.speed.iterrows():
            lines.append(
                f"speed {s.task:22} {s.items_per_s:.2f} items/s, {s.gen_tok_per_s:.1f} generated tok/s "
                f"({s.backend}, {s.parallel} parallel)"
            )
    lines += [
        "",
        f"results table: {results} ({len(frame)} rows; read it with `quantswarm eval report {results}` or pandas)",
    ]
    return "\n".join(lines)
