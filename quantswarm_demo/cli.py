"""``quantswarm demo``: the first run, a thin wrapper over :func:`quantswarm_demo.loop.run_demo`."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        model: str = typer.Option("smollm2-135m-instruct-q4_1", help="Catalogue name or GGUF path"),
        quants: str = typer.Option("Q8_0,Q4_K_M,Q2_K", help="Ladder rungs below F16: the swarm's agents"),
        router_quant: str = typer.Option("Q8_0", help="The rung that also runs the router program"),
        gsm8k_items: int = typer.Option(10, help="GSM8K test items per rung"),
        mmlu_items: int = typer.Option(24, help="MMLU test items per rung"),
        optimizer: str = typer.Option("labeled", help="Router optimizer: labeled | bootstrap_rs | mipro | ..."),
        out: str = typer.Option("runs/demo", help="Output folder"),
    ) -> None:
        """The whole loop on CPU: ladder + KLD + accuracy -> routing labels -> compiled router -> served swarm."""
        from quantswarm_demo.loop import DemoConfig, run_demo

        run_demo(DemoConfig(model=model, quants=tuple(q.strip() for q in quants.split(",") if q.strip()),
                            router_quant=router_quant, gsm8k_items=gsm8k_items, mmlu_items=mmlu_items,
                            optimizer=optimizer, out=out))
