"""`router eval` refuses programs compiled for other agent sets before it does any work, in one `error:` line."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from quantswarm.errors import ConfigError
from router.evaluate import check_programs, evaluate_routers
from router.labels import labels_from_jsonl
from router.program import RouterProgram, save_program
from router.router_config import RouterConfig
from router.swarm import Swarm, load_swarm


def program(out, swarm: Swarm):
    return save_program(RouterProgram(swarm), out, {
        "optimizer": "labeled", "swarm": swarm.to_dict(), "agents": swarm.names, "rationale": False,
        "max_tokens": 24, "max_chars": 600, "router_model": "smollm2-135m-instruct-q4_1"})


@pytest.fixture()
def programs(tmp_path):
    cfg = RouterConfig()
    data = labels_from_jsonl(cfg.labels, load_swarm(cfg.swarm))
    sub = Swarm([a for a in data.swarm.agents if a.name in ("math", "knowledge", "generalist")], "relative",
                "generalist")
    return program(tmp_path / "labels", data.swarm), program(tmp_path / "other", sub), data.swarm.names


def test_programs_of_different_agent_sets_are_refused_first(programs, tmp_path):
    same, other, names = programs
    check_programs([str(same)], names)
    with pytest.raises(ConfigError, match=r"labels was compiled for agents .* but .*other for \['generalist', "
                                          r"'knowledge', 'math'\]; evaluate programs of different agent sets"):
        check_programs([str(same), str(other)])
    with pytest.raises(ConfigError, match=r"other: compiled for agents .* but the data has"):
        check_programs([str(other)], names)
    logs: list[str] = []
    with pytest.raises(ConfigError, match="other: compiled for agents"):
        evaluate_routers(RouterConfig(), [str(other)], tmp_path / "eval", log=logs.append)
    assert logs == [] and not (tmp_path / "eval").exists()  # no baseline ran, nothing was written


def test_cli_fails_in_one_line_before_any_baseline(programs, tmp_path):
    same, other, _ = programs
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "quantswarm.cli", "router", "eval", "--program", str(same),
                          "--program", str(other), "--out", str(tmp_path / "eval")], capture_output=True, text=True)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1
    assert "different agent sets" in res.stderr and "held-out" not in res.stdout
    assert not (tmp_path / "eval").exists()
    assert time.monotonic() - t0 < 60
    assert json.loads((other / "manifest.json").read_text())["agents"] == ["knowledge", "math", "generalist"]
