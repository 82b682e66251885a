"""What the CLI tells its user and where it writes by default: a warning for a dev split too small to judge a
compile by, status lines while `eval kld` works, and default outputs that stay out of the repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer

from evals.kld import measure
from quantswarm.cli import app
from quantswarm.errors import ConfigError
from router.compiler import dev_warning
from router.router_config import SHIPPED_LABELS, RouterConfig


def test_every_cli_default_path_is_under_runs_or_shipped_data():
    command = typer.main.get_command(app)
    seen = []

    def walk(cmd: click.Command, name: str) -> None:
        for p in cmd.params:
            d = p.default
            if isinstance(d, str | Path) and "/" in str(d):
                seen.append((f"{name} --{p.name}", str(d)))
        if hasattr(cmd, "list_commands"):  # job verbs are loaded on demand: ask the group, not its dict
            ctx = typer.Context(cmd)
            for sub_name in cmd.list_commands(ctx):
                walk(cmd.get_command(ctx, sub_name), f"{name} {sub_name}")

    walk(command, "quantswarm")
    assert ("quantswarm bench --out", "runs/bench") in seen
    assert ("quantswarm router eval --out", "runs/router/eval") in seen
    bad = [(n, d) for n, d in seen if not d.startswith(("runs/", "data/"))]
    assert not bad, f"defaults that would write into the repository: {bad}"
    assert RouterConfig(optimizer="mipro").out == "runs/router/mipro"


def test_dev_warning_text():
    assert dev_warning(1) == ("warning: only 1 dev examples (each item moves the dev score by 1.00); add labeled "
                              "items, raise --max-dev or the config's dev_frac to get at least 10")
    assert "the dev score is 0 by definition" in dev_warning(0)


def test_compile_with_one_dev_item_warns(smollm2, llama_server_bin, tmp_path):
    rows = [json.loads(x) for x in SHIPPED_LABELS.read_text().splitlines() if x.strip()][:12]
    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = {**os.environ, "DSPY_CACHEDIR": str(tmp_path / "dspy_cache")}
    res = subprocess.run([sys.executable, "-m", "quantswarm.cli", "router", "compile", "--labels", str(labels),
                          "--optimizer", "labeled", "--max-train", "3", "--max-dev", "1", "--router-model",
                          str(smollm2), "--max-tokens", "8", "--num-threads", "1", "--out", str(tmp_path / "p")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-1500:]
    assert ("warning: only 1 dev examples (each item moves the dev score by 1.00); add labeled items, raise "
            "--max-dev or the config's dev_frac to get at least 10") in res.stdout.splitlines()
    assert res.stdout.rstrip().endswith("[only 1 dev items: not a reliable score]")
    assert " INFO " not in res.stderr  # no DSPy log lines unless --verbose


def test_kld_says_what_it_is_doing(smollm2, llama_server_bin, tmp_path):
    lines: list[str] = []
    out = measure(("ref", str(smollm2)), [("same", str(smollm2))], tmp_path, n_ctx=128, chunks=2,
                  log=lines.append)
    assert lines == ["reference logits: ref over 2 x 128 tokens (llama-perplexity)", "[1/1] KLD of same vs ref"]
    assert out[0].mean_kld == pytest.approx(0.0, abs=1e-3) and out[0].same_top1_pct == pytest.approx(100.0)


def test_kld_text_is_held_out_from_the_imatrix_calibration(smollm2, llama_server_bin, tmp_path, shared_data):
    """The KLD's default text is evals/heldout.txt, rebuilt exactly from the local data, sharing no passage with the
    importance matrix's calibration text; measuring on the calibration text is said."""
    from evals.heldout_text import build
    from evals.kld import CALIBRATION, HELDOUT

    if shared_data is not None:  # the shipped file is what its provenance says (where the datasets are)
        assert HELDOUT.read_text() == build(shared_data)
    calibration = {b.strip() for b in CALIBRATION.read_text().split("\n\n") if b.strip()}
    heldout = {b.strip() for b in HELDOUT.read_text().split("\n\n") if b.strip()}
    assert len(heldout) > 400 and not calibration & heldout
    out = measure(("ref", str(smollm2)), [("same", str(smollm2))], tmp_path, n_ctx=128, chunks=2)
    assert out[0].text == "heldout.txt" and out[0].mean_kld == pytest.approx(0.0, abs=1e-3)
    lines: list[str] = []
    measure(("ref", str(smollm2)), [("same", str(smollm2))], tmp_path, n_ctx=128, chunks=2, text=CALIBRATION,
            log=lines.append)
    assert lines[0].startswith("note: calibration.txt is the importance matrix's calibration text")
    # the reference logits are saved per text, n_ctx x chunks and reference file: another size is measured anew
    more = measure(("ref", str(smollm2)), [("same", str(smollm2))], tmp_path, n_ctx=128, chunks=3)
    assert more[0].tokens == 384 and len(list(tmp_path.glob("*.kld-base"))) == 3
    with pytest.raises(ConfigError, match="2 or more chunks"):
        measure(("ref", str(smollm2)), [("same", str(smollm2))], tmp_path, chunks=1)
    with pytest.raises(ConfigError, match="no such file"):
        measure(("ref", str(smollm2)), [("same", str(smollm2))], tmp_path, text=tmp_path / "nope.txt")
