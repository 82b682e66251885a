"""Job verbs come from the ``quantswarm.jobs`` entry points and are imported only when used."""

from __future__ import annotations

import importlib
import subprocess
import sys
import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path

from typer.testing import CliRunner

from quantswarm import cli_jobs

REPO = Path(__file__).resolve().parent.parent
JOBS = ("evals", "router", "repair", "serving")


def declared() -> dict[str, str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"][cli_jobs.GROUP]


def test_declared_entry_points_name_register_functions():
    eps = declared()
    assert set(eps) == {"eval", "router", "repair", "serve", "bench", "monitor", "demo"}
    for verb, target in eps.items():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), verb


def test_core_verbs_import_no_job():
    code = ("import sys; from typer.testing import CliRunner; from quantswarm.cli import app; "
            "r = CliRunner().invoke(app, ['models', 'inspect', '--help']); assert r.exit_code == 0, r.output; "
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(JOBS)!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_verbs_load_on_use_and_missing_jobs_say_so(monkeypatch):
    from quantswarm.cli import app

    eps = {verb: EntryPoint(verb, target, cli_jobs.GROUP) for verb, target in declared().items()}
    eps["ghost"] = EntryPoint("ghost", "nosuchjob.cli:register", cli_jobs.GROUP)
    monkeypatch.setattr(cli_jobs, "job_entry_points", lambda: eps)
    listing = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"}).output
    for verb in ("models", "doctor", "engine", "eval", "router", "repair", "serve", "bench", "monitor", "ghost"):
        assert f" {verb} " in listing, verb
    res = CliRunner().invoke(app, ["bench", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "--sweep-parallel" in res.output
    ghost = CliRunner().invoke(app, ["ghost", "x"])
    assert ghost.exit_code == 2 and "not installed (no module nosuchjob)" in ghost.output


def test_an_install_without_entry_points_says_to_reinstall(monkeypatch):
    from quantswarm.cli import app

    monkeypatch.setattr(cli_jobs, "job_entry_points", dict)
    res = CliRunner().invoke(app, ["eval", "run", "x.gguf"])
    assert res.exit_code == 2 and "reinstall quantswarm" in res.output
    assert CliRunner().invoke(app, ["models", "--help"]).exit_code == 0
