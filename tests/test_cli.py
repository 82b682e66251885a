"""The CLI's core verbs on this machine."""

import subprocess
import sys


def qs(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "quantswarm.cli", *args], capture_output=True, text=True)


def test_doctor_reports_parts():
    res = qs("doctor")
    assert "llama-cpp-python" in res.stdout and "llama-server" in res.stdout and "gpu" in res.stdout
    assert "nats-server" in res.stdout
    assert res.returncode in (0, 1)


def test_verbs_listed():
    out = qs("--help").stdout
    for verb in ("eval", "router", "repair", "serve", "bench", "models", "doctor", "engine"):
        assert verb in out


def test_models_list_and_unknown_fetch():
    assert "smollm2-135m-instruct-q4_1" in qs("models", "list").stdout
    res = qs("models", "fetch", "no-such-model")
    assert res.returncode == 2 and res.stderr.startswith("error: unknown model")
