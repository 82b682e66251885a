"""``quantswarm router compile | eval | route``: thin wrappers turning flags into a RouterConfig."""

from __future__ import annotations

from pathlib import Path

import typer

from quantswarm.config_cli import config_options
from router.router_config import RouterConfig

router_app = typer.Typer(help="Route tasks to the cheapest competent agent (DSPy on a llama.cpp router LM).",
                         no_args_is_help=True)


@router_app.command("compile")
@config_options(RouterConfig, exclude=("max_test",))
def compile_cmd(cfg: RouterConfig) -> None:
    """Compile a router program with one DSPy optimizer and save JSON state + manifest."""
    from router.compiler import MIN_DEV, compile_router

    res = compile_router(cfg, log=typer.echo)
    typer.echo(f"{res.out}  optimizer={res.optimizer}  dev {res.dev_score_before:.3f} -> {res.dev_score_after:.3f}  "
               f"({res.seconds:.0f} s)" + (f"  [only {res.n_dev} dev items: not a reliable score]"
                                            if res.n_dev < MIN_DEV else ""))


@router_app.command("eval")
@config_options(RouterConfig, include=("results", "labels", "swarm", "task", "split_seed", "api_base", "power_w",
                                       "cost_basis", "seed", "max_test"))
def eval_cmd(
    cfg: RouterConfig,
    program: list[str] = typer.Option([], "--program", help="Compiled program dir (repeatable)"),
    out: str = typer.Option("runs/router/eval", help="Report dir (report.md, png, json)"),
    no_uncompiled: bool = typer.Option(False, "--no-uncompiled", help="Skip the uncompiled program"),
) -> None:
    """Evaluate programs and baselines on the held-out split; print the table and write Markdown + PNG."""
    from quantswarm.cli import echo_table
    from router.evaluate import evaluate_routers

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
