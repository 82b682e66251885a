"""Eval replicas: `--replicas auto` (free GPU memory and cores, 1 without a GPU), `--gpus` placement, and a shared
device recording no energy."""

from __future__ import annotations

import pytest

from evals.eval_config import EvalConfig
from quantswarm.config_cli import config_from_options
from quantswarm.engine.replicas import auto_replicas, replica_mib
from quantswarm.errors import ConfigError


@pytest.mark.parametrize(("free", "per", "cores", "models", "want"), [
    ([], 500.0, 16, 1, 1),  # no GPU
    ([140_000.0], 1_500.0, 16, 1, 4),  # an H200 and 16 cores: cores decide (the measured 4 x 16 layout)
    ([140_000.0], 1_500.0, 128, 1, 8),  # cores for 32, capped at 8
    ([3_000.0], 1_500.0, 16, 1, 1),  # 0.9 x 3000 holds one 1500 MiB replica
    ([20_000.0], 1_500.0, 16, 2, 2),  # two models at once share memory and cores
    ([140_000.0], 1_500.0, 2, 1, 1),  # 2 cores: one
])
def test_auto_replicas_rule(free, per, cores, models, want):
    n, why = auto_replicas(free, per, cores, models)
    assert n == want and why


def test_replica_memory_estimate_counts_weights_kv_and_logits():
    # Qwen2.5-Coder-1.5B-like: 1.0 GiB of weights, 28 KiB of f16 KV per token, 16 slots x 4096 tokens
    mib = replica_mib(2**30, 28 * 1024, 4096, 16, 151_936)
    assert mib == pytest.approx(1024 + 28 * 4096 * 16 / 1024 + 4 * 151_936 * 16 / 2**20 + 300)


@pytest.mark.parametrize(("text", "want"), [("auto", "auto"), ("AUTO", "auto"), ("3", 3), (2, 2)])
def test_replicas_text_from_the_cli(text, want):
    cfg = config_from_options(EvalConfig, {"models": ["m.gguf"], "tasks": "easy_oneshot", "replicas": text})
    assert cfg.replicas == want


@pytest.mark.parametrize("text", ["0", "many", "-1", 0])
def test_bad_replicas_are_one_clear_error(text):
    with pytest.raises(ConfigError, match="replicas must be"):
        EvalConfig(models=["m.gguf"], tasks=["easy_oneshot"], replicas=text)


def test_auto_on_a_cpu_runs_one_server_and_says_why(smollm2, tmp_path, llama_server_bin, capsys):
    from evals.runner import run_eval
    from quantswarm.results import ResultsTable

    run_eval(EvalConfig(models=[f"smol={smollm2}"], tasks=["easy_oneshot"], limit=2, results=str(tmp_path / "r"),
                        backend="llama-server", parallel=1, n_ctx=512, progress=False, replicas="auto"))
    assert "smol: replicas auto = 1 (no GPU visible" in capsys.readouterr().err
    assert len(ResultsTable(tmp_path / "r").read()) == 2


def test_replicas_are_spread_over_the_given_gpus_in_turn():
    from quantswarm.engine.replicas import placement_args

    assert placement_args((), 3) == ()
    assert [placement_args((0, 1), i)[-1] for i in range(4)] == ["0", "1", "0", "1"]
    assert placement_args((1,), 0) == ("--split-mode", "none", "--main-gpu", "1")


@pytest.mark.parametrize(("gpus", "backend", "match"), [
    ([0, 0], "llama-server", "distinct"), ([-1], "llama-server", "distinct"),
    ([0], "llama-cpp-python", "use backend llama-server")])
def test_bad_gpus_are_one_clear_error(gpus, backend, match):
    with pytest.raises(ConfigError, match=match):
        EvalConfig(models=["m.gguf"], tasks=["easy_oneshot"], gpus=gpus, backend=backend)


def test_placed_replicas_answer_like_one_server(smollm2, tmp_path, llama_server_bin):
    """Two replicas placed with --split-mode none --main-gpu 0 (the flags llama-server also takes on a CPU build)
    give the same greedy rows as one unplaced server, and the block records the placement."""
    import json

    from evals.runner import run_eval
    from quantswarm.results import ResultsTable

    base = dict(models=[f"smol={smollm2}"], tasks=["easy_oneshot"], limit=3, backend="llama-server", parallel=1,
                n_ctx=512, progress=False)
    run_eval(EvalConfig(**base, results=str(tmp_path / "one")))
    run_eval(EvalConfig(**base, results=str(tmp_path / "two"), replicas=2, gpus=[0]))
    by = lambda p: dict(zip(*(lambda d: (d.item_id, d.output))(ResultsTable(p).read()), strict=True))  # noqa: E731
    assert by(tmp_path / "one") == by(tmp_path / "two")
    block = json.loads((tmp_path / "two" / "blocks.jsonl").read_text().splitlines()[-1])
    assert block["replicas"] == 2 and block["gpus"] == [0]


def test_a_shared_device_records_no_energy_and_says_so(smollm2, tmp_path, llama_server_bin, capsys):
    import json

    from evals.runner import run_eval
    from quantswarm.results import ResultsTable

    run_eval(EvalConfig(models=[f"smol={smollm2}"], tasks=["easy_oneshot"], limit=2, results=str(tmp_path / "r"),
                        backend="llama-server", parallel=1, n_ctx=512, progress=False, shared_device=True))
    assert "device is shared with other work: energy" in capsys.readouterr().err
    assert ResultsTable(tmp_path / "r").read().joules.isna().all()
    assert json.loads((tmp_path / "r" / "blocks.jsonl").read_text().splitlines()[-1])["joules"] is None
