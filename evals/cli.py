"""``quantswarm eval ladder|run|kld|report|demo``: thin wrappers over evals' library calls."""

from __future__ import annotations

from pathlib import Path

import typer

eval_app = typer.Typer(
    help="Quantization evals: make a quant ladder, run GSM8K/MMLU, report degradation.", no_args_is_help=True
)


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def _limits(values: list[str]) -> dict[str, int]:
    from quantswarm.errors import ConfigError

    out = {}
    for v in values:
        name, _, n = v.partition("=")
        if not n.isdigit():
            raise ConfigError(f"--task-limit {v!r}: use TASK=N, e.g. mmlu_logprob=100")
        out[name] = int(n)
    return out


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
    from quantswarm.registry import resolve_model

    rungs = make_ladder(
        resolve_model(model), out, tuple(_csv(quants)), imatrix_quants=tuple(_csv(imatrix)), calibration=calibration
    )
    for r in rungs:
        typer.echo(
            f"{r.quant:10} {r.bits_per_weight:6.2f} bpw  {r.size_bytes / 2**20:8.1f} MiB  {r.reference:32} {r.path}"
        )


@eval_app.command("run")
def run(
    models: list[str] = typer.Argument(..., help="GGUF paths, NAME=PATH, catalogue names or ladder folders"),
    tasks: str = typer.Option("gsm8k_cot_zeroshot,mmlu_logprob", help="Comma-separated task names or YAML paths"),
    limit: int | None = typer.Option(None, help="Items per task (seeded subset; default all)"),
    task_limit: list[str] = typer.Option([], help="Per-task limit TASK=N (repeatable)"),
    split: str | None = typer.Option(None, help="Override the tasks' split (e.g. train)"),
    seed: int = typer.Option(0, help="Subset and decoding seed"),
    results: Path = typer.Option(Path("runs/results"), help="Results table directory"),
    backend: str = typer.Option("auto", help="auto | llama-server | llama-cpp-python"),
    parallel: int = typer.Option(4, help="Concurrent requests (server slots or contexts)"),
    n_ctx: int = typer.Option(2048, help="Context per slot"),
    n_gpu_layers: int = typer.Option(-1, help="Layers on the GPU (-1 all)"),
    max_tokens: int | None = typer.Option(None, help="Override the tasks' max_tokens"),
    data_dir: str | None = typer.Option(None, help="Local data folder (default $QUANTSWARM_DATA or ../shared/data)"),
    source: str = typer.Option("auto", help="auto | local | hub | shipped"),
    run_id: str | None = typer.Option(None, help="Run id (default: new)"),
) -> None:
    """Evaluate models × tasks; append per-item rows (resumable: a rerun adds no rows)."""
    from evals.eval_config import EvalConfig
    from evals.report import run_summary
    from evals.runner import expand_models, run_eval
    from evals.task import load_task

    cfg = EvalConfig(
        models=models,
        tasks=_csv(tasks),
        limit=limit,
        task_limits=_limits(task_limit),
        split=split,
        seed=seed,
        results=str(results),
        backend=backend,
        parallel=parallel,
        n_ctx=n_ctx,
        n_gpu_layers=n_gpu_layers,
        max_tokens=max_tokens,
        data_dir=data_dir,
        source=source,
        run_id=run_id,
    )
    out = run_eval(cfg)
    typer.echo(run_summary(out, [m.agent for m in expand_models(cfg.models)], [load_task(t).name for t in cfg.tasks]))
    typer.echo(f"results: {out} (full report: quantswarm eval report {out})")


@eval_app.command("kld")
def kld(
    ladder_dir: Path = typer.Argument(..., help="A ladder folder (from `eval ladder`)"),
    results: Path = typer.Option(Path("runs/results"), help="Results directory to record fidelity in"),
    n_ctx: int = typer.Option(256, help="Context of each chunk"),
    chunks: int = typer.Option(8, help="Chunks of the calibration text"),
    n_gpu_layers: int = typer.Option(0, help="Layers on the GPU"),
) -> None:
    """Mean KL divergence and top-1 agreement of each rung vs the reference (llama-perplexity)."""
    from evals.kld import measure
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
