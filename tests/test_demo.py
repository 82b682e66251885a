"""`quantswarm demo` end to end on SmolLM2, shrunk: two rungs, a few items, two served requests."""

from __future__ import annotations

import pytest

from quantswarm.errors import ConfigError
from quantswarm_demo.loop import DemoConfig, accuracy_rows, run_demo


def test_config_refuses_what_cannot_run():
    with pytest.raises(ConfigError, match="router_quant='Q4_0' is not one of quants"):
        DemoConfig(quants=("Q8_0", "Q2_K"), router_quant="Q4_0")
    with pytest.raises(ConfigError, match="at least two rungs"):
        DemoConfig(quants=("Q8_0",))
    with pytest.raises(ConfigError, match="optimizer='labelled': choose one of labeled"):
        DemoConfig(optimizer="labelled")
    cfg = DemoConfig(quants=("q8_0", "q2_k"), router_quant="q8_0")
    assert cfg.agent("Q8_0") == "smollm2@Q8_0" and cfg.swarm_agent("Q2_K") == "smollm2-Q2_K"


def test_misspelled_quant_fails_before_any_work(tmp_path, smollm2):
    from quantswarm_demo.loop import stage_ladder

    with pytest.raises(ConfigError, match="Q4_K_N"):
        stage_ladder(DemoConfig(model=str(smollm2), quants=("Q8_0", "Q4_K_N"), out=str(tmp_path)), lambda _m: None)
    assert not list(tmp_path.glob("ladder/*.gguf"))


@pytest.mark.slow
def test_demo_runs_the_loop(tmp_path, smollm2, llama_server_bin, monkeypatch):
    monkeypatch.setenv("DSPY_CACHEDIR", str(tmp_path / "dspy_cache"))
    lines: list[str] = []
    cfg = DemoConfig(model=str(smollm2), quants=("Q8_0", "Q2_K"), router_quant="Q8_0", gsm8k_items=2, mmlu_items=6,
                     max_tokens=48, kld_chunks=2, requests=("What is 17 * 23?", "Write a Python hello world."),
                     request_max_tokens=8, out=str(tmp_path / "demo"))
    out = run_demo(cfg, say=lines.append)
    text = "\n".join(lines)
    for n in range(1, 8):  # every stage announced and finished, in order
        assert text.index(f"[{n}/7] done in") > text.index(f"[{n}/7] ")
    assert [r.quant for r in out["rungs"]] == ["F16", "Q8_0", "Q2_K"]
    assert set(out["fidelity"]) == {"smollm2@Q8_0", "smollm2@Q2_K"}
    assert out["fidelity"]["smollm2@Q2_K"].mean_kld > out["fidelity"]["smollm2@Q8_0"].mean_kld > 0
    rows = accuracy_rows(out["report"], out["fidelity"])
    assert [r["agent"] for r in rows][0] == "smollm2@F16" and len(rows) == 3
    assert out["compiled"].optimizer == "labeled" and (cfg.router_dir / "program.json").is_file()
    served = out["served"]
    assert len(served) == 2 and all(r["router chose"] in ("smollm2-Q8_0", "smollm2-Q2_K") for r in served)
    assert all(r["source"] == "router" for r in served)  # the compiled router decided, not the default
    assert "LangGraph supervisor" in text
    assert all(p.exists() for p in out["where"].values()), out["where"]
