"""``quantswarm eval ladder|run|kld|report|demo``: thin wrappers over evals' library calls."""

from __future__ import annotations

from pathlib import Path

import typer

from evals.eval_config import EvalConfig
from quantswarm.config_cli import config_options

eval_app = typer.Typer(
    help="Quantization evals: make a quant ladder, run GSM8K/MMLU, report degradation.", no_args_is_help=True
)


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


@eval_app.command("ladder")
def ladder(
    model: str = typer.Argument(..., help="GGUF path or catalogue name (the reference source)"),
    out: Path = typer.Option(..., "--out", help="Folder for the ladder (cached by the source's sha256)"),
    quants: str = typer.Option("Q8_0,Q6_K,Q5_K_M,Q4_K_M,Q3_K_M,Q2_K", help="Comma-separated quant types"),
    imatrix: str = typer.Option("", help="Also make these quants with an importance matrix, e.g. Q2_K,Q3_K_M"),
    calibration: Path | None = typer.Option(None, help="Calibration text for the importance matrix"),
) -> None:
    """Make the reference (F16, labelled 'from <type>' when dequantized) and every quant with llama.cpp."""
    from evals.ladder import make_ladder
    from quantswarm.registry import resolve_model, tensor_types_label

    rungs = make_ladder(
        resolve_model(model), out, tuple(_csv(quants)), imatrix_quants=tuple(_csv(imatrix)), calibration=calibration
    )
    for r in rungs:
        fell = f"  FELL BACK: {tensor_types_label(r.tensor_types)}" if r.k_quant_fell_back else ""
        typer.echo(f"{r.quant:10} {r.bits_per_weight:6.2f} bpw  {r.size_bytes / 2**20:8.1f} MiB  {r.reference:32} "
                   f"{r.path}{fell}")
    if any(r.k_quant_fell_back for r in rungs):
        typer.echo("FELL BACK: most tensors of these rungs are not stored in their nominal k-/i-quant type (rows not "
                   "divisible by 256); read them by bits per weight", err=True)


@eval_app.command("run")
@config_options(EvalConfig, arguments=("models",), flags={"task_limits": "--task-limit"})
def run(cfg: EvalConfig) -> None:
    """Evaluate models × tasks; append per-item rows (resumable: a rerun adds no rows)."""
    from evals.report import run_summary
    from evals.runner import expand_models, run_eval
    from evals.task import load_task
    from quantswarm.errors import QuantswarmError

    out = run_eval(cfg)
    try:
        agents = [m.agent for m in expand_models(cfg.models)]
        typer.echo(run_summary(out, agents, [load_task(t).name for t in cfg.tasks]))
    except QuantswarmError as exc:  # the rows are written; only the summary table could not be made
        typer.echo(f"no accuracy summary: {exc}", err=True)
    typer.echo(f"results: {out} (full report: quantswarm eval report {out})")


@eval_app.command("kld")
def kld(
    ladder_dir: Path = typer.Argument(..., help="A ladder folder (from `eval ladder`)"),
    results: Path = typer.Option(Path("runs/results"), help="Results directory to record fidelity in"),
    n_ctx: int = typer.Option(256, help="Context of each chunk"),
    chunks: int = typer.Option(8, help="Chunks of the text"),
    n_gpu_layers: int = typer.Option(0, help="Layers on the GPU"),
    text: Path | None = typer.Option(None, help="Text to measure on (default: evals/heldout.txt, held out from "
                                                "the importance-matrix calibration text)"),
) -> None:
    """Mean KL divergence and top-1 agreement of each rung vs the reference (llama-perplexity)."""
    from evals.kld import HELDOUT, measure
    from evals.ladder import read_ladder

    rungs = read_ladder(ladder_dir)
    ref = next(r for r in rungs if r.is_reference)
    stem = Path(ref.path).name.split(".")[0]
    out = measure(
        (f"{stem}@{ref.quant}", ref.path),
        [(f"{stem}@{r.quant}", r.path) for r in rungs if not r.is_reference],
        results,
        n_ctx=n_ctx,
        chunks=chunks,
        n_gpu_layers=n_gpu_layers,
        text=text or HELDOUT,
        log=lambda line: typer.echo(line, err=True),
    )
    for f in out:
        typer.echo(
            f"{f.agent:40} KLD {f.mean_kld:.4f} ± {f.kld_err:.4f}  same top-1 {f.same_top1_pct:.1f}%  PPL {f.ppl:.3f}"
        )


@eval_app.command("report")
def report(
    results: Path = typer.Argument(Path("runs/results"), help="Results table directory"),
    out: Path | None = typer.Option(None, help="Output folder (default RESULTS/report)"),
    reference: str | None = typer.Option(None, help="Reference agent (default: the F16 rung)"),
) -> None:
    """Accuracy with CIs, paired degradation vs the reference, flips, KLD, speed; Markdown + CSV + PNG."""
    from evals.report import write_report

    rep = write_report(results, out, reference)
    typer.echo(rep.markdown)
    typer.echo(f"written to {out or results / 'report'}")


@eval_app.command("demo")
def demo(
    model: str = typer.Option("smollm2-135m-instruct-q4_1", help="GGUF path or catalogue name"),
    items: int = typer.Option(20, help="Items per dataset"),
    results: Path = typer.Option(Path("runs/demo"), help="Results table directory"),
) -> None:
    """The embedded default: a small GSM8K + MMLU eval of one model on CPU, then its summary."""
    from evals.demo import run_demo

    typer.echo(run_demo(model, items, results))


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")
