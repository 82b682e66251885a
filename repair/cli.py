"""``quantswarm repair``: thin typer verbs over :mod:`repair.pipeline`.

``repair run`` gets one flag per :class:`RepairConfig` field (``--train-items``, ``--max-minutes``,
...) from :func:`quantswarm.config_cli.config_options`, with the field's help text, so the dataclass stays
the one place settings are documented.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from quantswarm.config_cli import config_options
from repair.repair_config import RepairConfig


def register(app: typer.Typer) -> None:
    """Add the ``repair`` group (``run``, ``show``) to the quantswarm app."""
    repair_app = typer.Typer(help="DPO repair of a quantized agent: mine, pair, train, export, prove.",
                             no_args_is_help=True)

    @config_options(RepairConfig, required=("agent",))
    def run(cfg: RepairConfig) -> None:
        """The whole loop: degraded agent -> train-split failures -> verified pairs -> DPO LoRA -> GGUF -> report."""
        from repair.pipeline import run_repair

        run_repair(cfg, log=typer.echo)

    repair_app.command("run")(run)

    @repair_app.command("show")
    def show(out_dir: Path = typer.Argument(Path("runs/repair"), help="The --out-dir of a repair run")) -> None:
        """Print a finished run's report (report.md) and pair counts."""
        from quantswarm.errors import QuantswarmError

        md = out_dir / "report.md"
        if not md.exists():
            raise QuantswarmError(f"{md}: no report; run `quantswarm repair run --out-dir {out_dir}` first")
        typer.echo(md.read_text())
        summary = out_dir / "pairs" / "pairs_summary.json"
        if summary.exists():
            typer.echo(json.dumps(json.loads(summary.read_text()), indent=2))

    app.add_typer(repair_app, name="repair")
