"""``quantswarm router compile | eval | route``: thin wrappers turning flags into a RouterConfig."""

from __future__ import annotations

from pathlib import Path

import typer

router_app = typer.Typer(help="Route tasks to the cheapest competent agent (DSPy on a llama.cpp router LM).",
                         no_args_is_help=True)


def _config(**kw):
    from router.router_config import RouterConfig

    return RouterConfig(**{k: v for k, v in kw.items() if v is not None})


@router_app.command("compile")
def compile_cmd(
    results: str = typer.Option("", help="Results table dir (several agents on the same items)"),
    labels: str = typer.Option("", help="Hand-labeled JSONL (task, agent); default: data/routing/labeled.jsonl"),
    swarm: str = typer.Option("", help="Swarm spec JSON for --labels (default: data/routing/swarm.json)"),
    task: str = typer.Option("", help="Only results rows of this task"),
    optimizer: str = typer.Option("labeled", help="labeled | bootstrap_rs | mipro | gepa | simba"),
    out: str = typer.Option("", help="Program dir (default: runs/router/<optimizer>)"),
    seed: int = typer.Option(0, help="Optimizer seed"),
    split_seed: int = typer.Option(0, help="Train/dev/test split seed"),
    router_model: str = typer.Option("", help="Router GGUF (default: cheapest agent's file, else SmolLM2-135M)"),
    api_base: str = typer.Option("", help="Use this running llama-server instead of starting one"),
    reflection_model: str = typer.Option("", help="llama-server URL of the GEPA/SIMBA/MIPRO proposer LM"),
    rationale: bool = typer.Option(False, help="Short rationale before the agent (slower)"),
    max_tokens: int = typer.Option(24, help="Router LM max tokens per decision"),
    max_train: int = typer.Option(16, help="Cap on train examples"),
    max_dev: int = typer.Option(12, help="Cap on dev examples"),
    max_demos: int = typer.Option(4, help="Max few-shot demos"),
    num_candidates: int = typer.Option(2, help="BootstrapFewShotWithRandomSearch candidates"),
    gepa_max_metric_calls: int = typer.Option(40, help="GEPA budget"),
    simba_steps: int = typer.Option(2, help="SIMBA steps"),
    reflection_max_tokens: int = typer.Option(128, help="Max tokens of an optimizer's instruction proposal"),
    power_w: float = typer.Option(30.0, help="Watts for latency-based cost when rows have no joules"),
    cost_basis: str = typer.Option("auto", help="auto | joules | latency | size"),
    unsolved_agent: str = typer.Option("", help="Label for items no agent solved (default: most accurate)"),
    num_threads: int = typer.Option(2, help="Parallel router LM calls / server slots"),
) -> None:
    """Compile a router program with one DSPy optimizer and save JSON state + manifest."""
    cfg = _config(**locals())
    from router.compiler import MIN_DEV, compile_router

    res = compile_router(cfg, log=typer.echo)
    typer.echo(f"{res.out}  optimizer={res.optimizer}  dev {res.dev_score_before:.3f} -> {res.dev_score_after:.3f}  "
               f"({res.seconds:.0f} s)" + (f"  [only {res.n_dev} dev items: not a reliable score]"
                                            if res.n_dev < MIN_DEV else ""))


@router_app.command("eval")
def eval_cmd(
    program: list[str] = typer.Option([], "--program", help="Compiled program dir (repeatable)"),
    results: str = typer.Option("", help="Results table dir the programs were compiled on"),
    labels: str = typer.Option("", help="Hand-labeled JSONL instead of a results table"),
    swarm: str = typer.Option("", help="Swarm spec JSON for --labels"),
    task: str = typer.Option("", help="Only results rows of this task"),
    out: str = typer.Option("runs/router/eval", help="Report dir (report.md, png, json)"),
    split_seed: int = typer.Option(0, help="Must match the compile's split seed"),
    api_base: str = typer.Option("", help="Use this running llama-server for the programs"),
    no_uncompiled: bool = typer.Option(False, "--no-uncompiled", help="Skip the uncompiled program"),
    power_w: float = typer.Option(30.0, help="Watts for latency-based cost"),
    cost_basis: str = typer.Option("auto", help="auto | joules | latency | size (must match the compile)"),
    seed: int = typer.Option(0, help="Seed of the random baseline and TF-IDF fit"),
    max_test: int = typer.Option(0, help="Score only this many held-out items (0: all)"),
) -> None:
    """Evaluate programs and baselines on the held-out split; print the table and write Markdown + PNG."""
    from quantswarm.cli import echo_table
    from router.evaluate import evaluate_routers

    cfg = _config(results=results, labels=labels, swarm=swarm, task=task, split_seed=split_seed, api_base=api_base,
                  power_w=power_w, cost_basis=cost_basis, seed=seed, max_test=max_test)
    scores = evaluate_routers(cfg, program, out, uncompiled=not no_uncompiled, log=typer.echo)
    echo_table([{"router": s.name, "label_acc": f"{s.label_accuracy:.3f}", "metric": f"{s.metric:.3f}",
                 "task_acc": f"{s.task_accuracy:.3f}", "cost": f"{s.total_cost:.4g}", "APGR": f"{s.apgr:.3f}",
                 "parse_fail": s.parse_failures, "p50_ms": f"{s.latency_p50_ms:.2f}",
                 "p95_ms": f"{s.latency_p95_ms:.2f}"} for s in scores])


@router_app.command("route")
def route_cmd(
    text: str = typer.Argument(..., help="The task to route"),
    program: Path = typer.Option(Path("runs/router/labeled"), help="Compiled program dir"),
    api_base: str = typer.Option("", help="Use this running llama-server (else one is started)"),
) -> None:
    """Load a compiled router and print the chosen agent and the decision latency."""
    from router.program import load_router

    typer.echo(f"loading {program} and " + (f"using {api_base}" if api_base else "starting its router llama-server")
               + " ...", err=True)
    with load_router(program, api_base=api_base or None) as router:
        typer.echo("routing ...", err=True)
        d = router.route(text)
    typer.echo(f"agent={d.agent}  latency_ms={d.latency_ms:.1f}" + ("  (parse failed: fallback)" if d.parse_failed
                                                                     else ""))
    if d.rationale:
        typer.echo(f"rationale: {d.rationale}")


def register(app: typer.Typer) -> None:
    app.add_typer(router_app, name="router")
