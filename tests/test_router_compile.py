"""A real tiny compile: BootstrapFewShotWithRandomSearch on the real SmolLM2 router LM served by llama-server,
then `quantswarm router route` reloads the saved JSON in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from router.router_config import SHIPPED_LABELS, RouterConfig


@pytest.fixture(scope="module")
def tiny_labels(tmp_path_factory):
    """Eight shipped labeled tasks (math, writer, coder, knowledge), so the compile stays small."""
    rows = [json.loads(x) for x in SHIPPED_LABELS.read_text().splitlines() if x.strip()]
    keep, seen = [], {}
    for r in rows:
        if r["agent"] != "generalist" and seen.get(r["agent"], 0) < 3:
            seen[r["agent"]] = seen.get(r["agent"], 0) + 1
            keep.append(r)
    path = tmp_path_factory.mktemp("labels") / "tiny.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in keep))
    return path


def test_compile_bootstrap_then_route_in_fresh_process(tmp_path, tiny_labels, smollm2, llama_server_bin,
                                                       monkeypatch):
    monkeypatch.setenv("DSPY_CACHEDIR", str(tmp_path / "dspy_cache"))
    from router.compiler import compile_router

    out = tmp_path / "prog"
    cfg = RouterConfig(labels=str(tiny_labels), optimizer="bootstrap_rs", num_candidates=1, max_demos=2,
                       max_train=3, max_dev=2, train_frac=0.6, dev_frac=0.3, router_model=str(smollm2),
                       max_tokens=8, max_chars=300, out=str(out))
    res = compile_router(cfg, log=lambda *_: None)
    assert 0.0 <= res.dev_score_before <= 1.0 and 0.0 <= res.dev_score_after <= 1.0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["optimizer"] == "bootstrap_rs" and len(manifest["router_model_sha"]) == 16
    assert set(manifest["agents"]) == {"math", "knowledge", "writer", "coder", "generalist"}
    assert (out / "program.json").is_file() and (out / "tfidf.json").is_file()

    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "DSPY_CACHEDIR": str(tmp_path / "dspy_cache")}
    proc = subprocess.run([sys.executable, "-m", "quantswarm.cli", "router", "route", "What is 17 times 3?",
                           "--program", str(out)], capture_output=True, text=True, env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr[-800:]
    line = proc.stdout.strip().splitlines()[0]
    agent = line.split()[0].removeprefix("agent=")
    assert agent in manifest["agents"]
    assert float(line.split()[1].removeprefix("latency_ms=")) > 0


def test_router_lm_honours_max_tokens(smollm2, llama_server_bin):
    from router.router_lm import dspy_lm, start_router_server

    with start_router_server(smollm2, n_ctx=1024, parallel=1) as engine:
        lm = dspy_lm(engine.url, max_tokens=5)
        out = lm(messages=[{"role": "user", "content": "Write a long story about a dragon."}])
        assert isinstance(out[0], str)
        assert lm.history[-1]["usage"]["completion_tokens"] <= 5


def test_every_optimizer_is_a_configured_teleprompter():
    """The registry returns DSPy Teleprompters configured from the RouterConfig; compile takes data only."""
    import inspect

    import dspy
    from dspy.teleprompt import Teleprompter

    from router.metric import CostAwareMetric
    from router.optimizers import MODULES, teleprompter
    from router.router_config import RouterConfig

    lm = dspy.LM("hosted_vllm/router", api_base="http://127.0.0.1:9/v1", api_key="local")
    for name in MODULES:
        tp = teleprompter(name, RouterConfig(optimizer=name), CostAwareMetric(), lm, lm)
        assert isinstance(tp, Teleprompter), name
        params = inspect.signature(tp.compile).parameters
        assert "trainset" in params and "valset" in params, name
