"""Config dataclass -> CLI options -> the same dataclass, for a toy config and for every job's CLI."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import pytest
import typer
from typer.testing import CliRunner

from quantswarm.config_cli import config_options, flag_name
from quantswarm.errors import ConfigError


@dataclass
class Toy:
    """Every field kind the helper maps."""

    name: str = field(default="", metadata={"help": "the name"})
    mode: str = field(default="fast", metadata={"help": "how", "choices": ("fast", "slow")})
    n: int = field(default=3, metadata={"help": "how many"})
    scale: float = field(default=0.5, metadata={"help": "how much"})
    cap: int | None = field(default=None, metadata={"help": "optional cap"})
    verbose: bool = field(default=True, metadata={"help": "talk"})
    sizes: list[int] = field(default_factory=lambda: [1, 2], metadata={"help": "sizes"})
    limits: dict[str, int] = field(default_factory=dict, metadata={"help": "per-name limits"})


def toy_app(**options) -> tuple[typer.Typer, list]:
    got: list = []
    app = typer.Typer()

    @app.command()
    @config_options(Toy, **options)
    def go(cfg: Toy, extra: str = typer.Option("x", help="the command's own option")) -> None:
        got.append((cfg, extra))

    return app, got


def test_options_round_trip_to_the_dataclass():
    app, got = toy_app(required=("name",))
    res = CliRunner().invoke(app, ["--name", "a", "--mode", "SLOW", "--n", "7", "--scale", "2", "--cap", "4",
                                   "--no-verbose", "--sizes", "4,8", "--limits", "x=1", "--limits", "y=2",
                                   "--extra", "own"])
    assert res.exit_code == 0, res.output
    assert got == [(Toy(name="a", mode="slow", n=7, scale=2.0, cap=4, verbose=False, sizes=[4, 8],
                        limits={"x": 1, "y": 2}), "own")]
    res = CliRunner().invoke(app, ["--name", "b"])
    assert got[-1] == (Toy(name="b"), "x")  # defaults are the dataclass's
    assert CliRunner().invoke(app, []).exit_code == 2  # --name is required


def test_help_and_bad_values():
    app, _ = toy_app(flags={"limits": "--limit"}, exclude=("scale",), arguments=("name",))
    text = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"}).output
    for flag in ("--mode", "--n", "--cap", "--verbose", "--no-verbose", "--sizes", "--limit", "--extra"):
        assert flag in text
    assert "--scale" not in text and "fast|slow" in text and "per-name limits" in text
    assert CliRunner().invoke(app, ["a", "--mode", "medium"]).exit_code == 2
    res = CliRunner().invoke(app, ["a", "--sizes", "4,big"])
    assert isinstance(res.exception, ConfigError) and str(res.exception) == \
        "--sizes '4,big': comma-separated list: expected integers, got 'big'"
    res = CliRunner().invoke(app, ["a", "--limit", "x"])
    assert str(res.exception) == "--limit 'x': use KEY=VALUE, e.g. --limit name=3"


def job_app() -> typer.Typer:
    import evals.cli
    import repair.cli
    import router.cli
    import serving.cli

    app = typer.Typer()
    for mod in (evals.cli, router.cli, repair.cli, serving.cli):
        mod.register(app)
    return app


@pytest.mark.parametrize(("verb", "config", "skip"), [
    (["eval", "run"], "evals.eval_config:EvalConfig", {"models"}),
    (["router", "compile"], "router.router_config:RouterConfig", {"max_test"}),
    (["repair", "run"], "repair.repair_config:RepairConfig", set()),
    (["bench"], "serving.bench:BenchConfig", set()),
])
def test_every_job_flag_comes_from_its_config(verb, config, skip):
    import importlib

    module, name = config.split(":")
    cls = getattr(importlib.import_module(module), name)
    text = CliRunner().invoke(job_app(), [*verb, "--help"], env={"COLUMNS": "400"}).output
    flags = {"task_limits": "--task-limit"}
    missing = [f.name for f in fields(cls) if f.name not in skip and flag_name(f.name, flags) not in text]
    assert not missing, missing


def test_eval_run_builds_its_config(monkeypatch):
    import evals.runner

    seen = []
    monkeypatch.setattr(evals.runner, "run_eval", lambda cfg: seen.append(cfg) or "runs/x")
    res = CliRunner().invoke(job_app(), ["eval", "run", "a.gguf", "ref=b.gguf", "--tasks", "gsm8k_cot_zeroshot",
                                         "--task-limit", "gsm8k_cot_zeroshot=5", "--backend", "llama-server"])
    assert res.exit_code == 0, res.output
    (cfg,) = seen
    assert cfg.models == ["a.gguf", "ref=b.gguf"] and cfg.tasks == ["gsm8k_cot_zeroshot"]
    assert cfg.limit_for("gsm8k_cot_zeroshot") == 5 and cfg.backend == "llama-server" and cfg.parallel == 4
