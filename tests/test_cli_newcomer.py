"""What a newcomer meets first: fast core verbs (no heavy imports, GGUF metadata read once), help without a
verb, and misspelled names refused with one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "trl", "peft", "dspy", "litellm", "langgraph", "pandas", "datasets", "sklearn")


def py(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **env}, timeout=120)


def qs(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "quantswarm.cli", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **env}, timeout=120)


def loaded_after(argv: list[str], watch: tuple[str, ...], **env: str) -> list[str]:
    """The modules of ``watch`` imported by running the CLI with ``argv`` in a fresh interpreter."""
    code = (f"import sys\nsys.argv = {['quantswarm', *argv]!r}\nfrom quantswarm.cli import main\n"
            f"try:\n    main()\nexcept SystemExit:\n    pass\n"
            f"print('LOADED=' + ','.join(m for m in {watch!r} if m in sys.modules))")
    res = py(code, **env)
    line = [x for x in res.stdout.splitlines() if x.startswith("LOADED=")]
    assert line, res.stderr[-800:]
    return [m for m in line[-1].removeprefix("LOADED=").split(",") if m]


@pytest.mark.parametrize("group", ["models", "engine", "eval", "router", "repair", "monitor"])
def test_group_without_verb_shows_help_and_exits_0(group):
    res = qs(group)
    assert res.returncode == 0, res.stderr
    assert "Usage: quantswarm" in res.stdout and "Commands" in res.stdout and not res.stderr


def test_unknown_verb_still_fails():
    res = qs("models", "nope")
    assert res.returncode == 2 and "No such command" in res.stderr


@pytest.mark.parametrize("argv", [["--help"], ["models", "--help"], ["models"], ["eval", "run", "--help"],
                                  ["demo", "--help"]])
def test_help_imports_nothing_heavy(argv):
    assert loaded_after(argv, (*HEAVY, "gguf", "numpy", "llama_cpp")) == []


def test_doctor_imports_no_job_library():
    code = ("import sys\nfrom quantswarm.doctor import run_checks\nchecks = run_checks()\n"
            f"print('LOADED=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
            "print('NAMES=' + ','.join(c.name for c in checks))")
    res = py(code)
    out = dict(x.split("=", 1) for x in res.stdout.splitlines() if "=" in x)
    assert out.get("LOADED") == "", res.stdout + res.stderr[-800:]
    assert {"dspy", "trl", "torch", "langgraph", "llama-server"} <= set(out["NAMES"].split(","))


def test_gguf_metadata_is_read_once_per_file_version(smollm2, tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(smollm2.read_bytes())
    env = {"QUANTSWARM_CACHE": str(tmp_path / "cache")}
    code = ("import json, sys\nfrom quantswarm.registry import inspect_gguf\n"
            f"i = inspect_gguf({str(gguf)!r})\n"
            "print(json.dumps({'gguf': 'gguf' in sys.modules, 'layers': i.n_layers, 'type': i.file_type, "
            "'layer_bytes': sorted(i.layer_bytes.items())[:2], 'params': i.n_params}))")
    first = json.loads(py(code, **env).stdout.splitlines()[-1])
    second = json.loads(py(code, **env).stdout.splitlines()[-1])
    assert first["gguf"] is True and second["gguf"] is False  # the second process never parsed the file
    assert {k: v for k, v in first.items() if k != "gguf"} == {k: v for k, v in second.items() if k != "gguf"}
    assert first["layers"] == 30 and first["type"] == "Q4_1"
    os.utime(gguf, ns=(gguf.stat().st_atime_ns, gguf.stat().st_mtime_ns + 10**9))  # a new file version
    assert json.loads(py(code, **env).stdout.splitlines()[-1])["gguf"] is True


def test_models_list_and_inspect_read_the_cache(smollm2, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / smollm2.name).symlink_to(smollm2)
    env = {"QUANTSWARM_CACHE": str(tmp_path / "cache"), "QUANTSWARM_MODELS": str(models)}
    assert "gguf" in loaded_after(["models", "list"], ("gguf",), **env)  # reads the file once, fills the cache
    assert "gguf" not in loaded_after(["models", "list"], ("gguf",), **env)
    assert "gguf" not in loaded_after(["models", "inspect", str(models / smollm2.name)], ("gguf",), **env)


def test_misspelled_task_limit_is_an_error(smollm2):
    res = qs("eval", "run", str(smollm2), "--task-limit", "mmlu_logprb=2")
    assert res.returncode == 2
    assert res.stderr.startswith("error: task_limits: 'mmlu_logprb' is not one of the tasks being run")
    assert len(res.stderr.strip().splitlines()) == 1


def test_misspelled_task_is_an_error(smollm2):
    res = qs("eval", "run", str(smollm2), "--tasks", "gsm8k_cot_zeroshot,mmlu_logprb")
    assert res.returncode == 2 and res.stderr.startswith("error: tasks: unknown task 'mmlu_logprb'")


def test_task_limit_by_yaml_path_applies_to_its_task(tmp_path):
    from evals.eval_config import EvalConfig

    yaml_task = tmp_path / "my_task.yaml"
    yaml_task.write_text((REPO / "evals" / "tasks" / "mmlu_logprob.yaml").read_text().replace(
        "task: mmlu_logprob", "task: my_mmlu"))
    cfg = EvalConfig(models=["x.gguf"], tasks=["gsm8k_cot_zeroshot", str(yaml_task)],
                     task_limits={str(yaml_task): 3, "gsm8k_cot_zeroshot": 2}, limit=5)
    assert cfg.limit_for("my_mmlu") == 3 and cfg.limit_for("gsm8k_cot_zeroshot") == 2
    with pytest.raises(Exception, match="'my_task' is not one of the tasks"):
        EvalConfig(models=["x.gguf"], tasks=[str(yaml_task)], task_limits={"my_task": 3})


def test_models_inspect_says_when_a_k_quant_fell_back(smollm2_ladder):
    """SmolLM2's 576-wide rows take no 256-element super-blocks: its "Q2_K" is mostly Q4_0, and inspect says so."""
    from evals.ladder import read_ladder

    rungs = {r.quant: r.path for r in read_ladder(smollm2_ladder)}
    q2 = qs("models", "inspect", rungs["Q2_K"])
    assert q2.returncode == 0 and "FELL BACK: only" in q2.stdout and "Q4_0 x180" in q2.stdout
    q8 = qs("models", "inspect", rungs["Q8_0"])
    assert q8.returncode == 0 and "FELL BACK" not in q8.stdout
