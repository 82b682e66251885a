"""``serve``, ``bench`` and ``monitor`` verbs: thin wrappers that build configs and call serving's library."""

from __future__ import annotations

from pathlib import Path

import typer

from quantswarm.config_cli import config_options

SPEC_HELP = "Swarm spec YAML (e.g. data/swarms/cpu-demo.yaml)"


def register(app: typer.Typer) -> None:
    from serving.bench_config import BenchConfig  # light: serving.bench itself loads numpy and the results table

    monitor_app = typer.Typer(help="GPU monitor: sample NVML to CSV, plot it, sum its energy.", no_args_is_help=True)
    app.add_typer(monitor_app, name="monitor")

    @app.command("serve")
    def serve_cmd(
        spec: Path | None = typer.Argument(None, help=SPEC_HELP),
        dry_run: bool = typer.Option(False, "--dry-run", help="Only print the VRAM plan; load nothing"),
        host: str | None = typer.Option(None, help="Gateway bind address (default: gateway.host, 127.0.0.1)"),
        port: int | None = typer.Option(None, help="Gateway port (default: gateway.port)"),
        bus: bool | None = typer.Option(None, "--bus/--no-bus", help="Consume the NATS bus (default: bus.enabled)"),
        explain: bool = typer.Option(False, "--explain", help="Print every spec key with its default and exit"),
        schema: bool = typer.Option(False, "--schema", help="Print the spec's JSON schema and exit "
                                                            "(data/swarms/swarm.schema.json)"),
    ) -> None:
        """Start every agent of a swarm spec and serve the OpenAI gateway (and bus) until Ctrl-C."""
        from serving.serve import plan_only, serve
        from serving.swarm_config import describe_spec, load_swarm, schema_text

        if explain:
            typer.echo(describe_spec())
            return
        if schema:
            typer.echo(schema_text(), nl=False)
            return
        if spec is None:
            raise typer.BadParameter("give a swarm spec YAML (or --explain, --schema)")
        cfg = load_swarm(spec)
        if dry_run:
            plan_only(cfg, log=typer.echo)
            return
        serve(cfg, host=host, port=port, bus=bus, log=typer.echo)

    @app.command("bench")
    @config_options(BenchConfig, param="bc")
    def bench_cmd(bc: BenchConfig, spec: Path = typer.Argument(..., help=SPEC_HELP)) -> None:
        """Load-test a swarm over HTTP or the bus: latency percentiles, tok/s, VRAM, energy, results rows."""
        from serving.bench import run_bench
        from serving.swarm_config import load_swarm

        run_bench(load_swarm(spec), bc, log=typer.echo)

    @monitor_app.command("run")
    def monitor_run(
        csv: Path = typer.Option(Path("runs/monitor.csv"), help="CSV to append samples to"),
        interval: float = typer.Option(1.0, help="Seconds between samples"),
        duration: float | None = typer.Option(None, help="Stop after this many seconds (default: Ctrl-C)"),
        gpu: int = typer.Option(0, help="GPU index"),
        temp_alert: float = typer.Option(85.0, help="Alert above this temperature (C)"),
    ) -> None:
        """Sample power, energy, temperature, utilisation and VRAM to CSV (says so once without NVML)."""
        from serving.monitor import run_monitor

        n = run_monitor(csv, interval, duration, gpu, temp_alert, log=typer.echo)
        typer.echo(f"{n} samples -> {csv}" if n else "no samples recorded")

    @monitor_app.command("plot")
    def monitor_plot(
        csv: Path = typer.Argument(..., help="Monitor CSV"),
        out: Path | None = typer.Option(None, help="PNG path (default: the CSV's name with .png)"),
    ) -> None:
        """Draw power and VRAM over time (PNG)."""
        from serving.monitor import plot_monitor

        typer.echo(str(plot_monitor(csv, out)))

    @monitor_app.command("energy")
    def monitor_energy(
        csv: Path = typer.Argument(..., help="Monitor CSV"),
        tokens: int = typer.Option(0, help="Tokens generated in the window, for Wh per 1M tokens"),
        start: float | None = typer.Option(None, help="Window start (unix time)"),
        end: float | None = typer.Option(None, help="Window end (unix time)"),
    ) -> None:
        """Energy (J, Wh), mean power, peaks and Wh per 1M generated tokens over a monitor CSV."""
        from serving.monitor import energy_summary, read_samples

        s = energy_summary(read_samples(csv), tokens, start, end)
        if s.joules is None:
            typer.echo("fewer than 2 samples: no energy")
            return
        typer.echo(f"{s.seconds:.1f} s, {s.joules:.1f} J = {s.joules / 3600:.4f} Wh, mean {s.mean_power_w:.1f} W, "
                   f"peak VRAM {s.peak_vram_mib:.0f} MiB, peak {s.peak_temp_c:.0f} C"
                   + (f", {s.wh_per_mtok:.2f} Wh/1M tokens" if s.wh_per_mtok is not None else ""))
