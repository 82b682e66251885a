"""Run model-written Python against a task's tests in a separate, limited process.

Following the execution harness of OpenAI's human-eval (``execution.py``) and lm-eval-harness's ``code_eval``: the
program runs in a fresh interpreter (``python -I``) in an empty temporary folder, with a wall-clock timeout, limits on
address space, CPU time, file size and processes, an empty environment, and socket creation disabled. It is a guard
against accidents (runaway loops, memory blow-ups, stray writes, network calls), not a security boundary against
hostile code; run it only where model output may be executed.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass

PRELUDE = """
import socket as _s
def _no_net(*a, **k):
    raise OSError("network disabled in the sandbox")
_s.socket = _no_net
_s.create_connection = _no_net
import sys as _sys
_code = _sys.stdin.read()
exec(compile(_code, "<completion>", "exec"), {"__name__": "__main__"})
"""


@dataclass
class SandboxResult:
    """How one program ended: ``passed`` (exit 0), else ``timeout`` or ``failed`` with the error's last line."""

    passed: bool
    status: str  # passed | failed | timeout
    detail: str = ""


def _limits(memory_mb: int, cpu_s: int) -> None:
    os.setsid()
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s))
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    resource.setrlimit(resource.RLIMIT_NPROC, (64, 64))


def run_program(program: str, *, timeout_s: float = 10.0, memory_mb: int = 1024) -> SandboxResult:
    """Execute ``program`` (Python source) in the sandbox; passed means it exited 0 within ``timeout_s``."""
    with tempfile.TemporaryDirectory(prefix="qs-sandbox-") as tmp:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-c", PRELUDE], cwd=tmp, env={"PATH": "/usr/bin:/bin", "HOME": tmp},
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            preexec_fn=lambda: _limits(memory_mb, int(timeout_s) + 1),
        )
        try:
            _, err = proc.communicate(program, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.communicate()
            return SandboxResult(False, "timeout", f"no exit within {timeout_s:g} s")
    if proc.returncode == 0:
        return SandboxResult(True, "passed")
    last = (err or "").strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
    return SandboxResult(False, "failed", last[0][:200])


def extract_code(text: str) -> str:
    """The first fenced code block of an answer (```python ... ```), else the whole answer."""
    import re

    m = re.search(r"```(?:python|py|Python)?\s*\n(.*?)(?:```|$)", text, re.DOTALL)
    return m.group(1) if m else text


def humaneval_program(prompt: str, answer: str, test: str, entry_point: str) -> str:
    """The program that checks one HumanEval answer: prompt + completion (or the answer's whole function) + tests."""
    code = extract_code(answer)
    body = f"{prompt}\n\n{code}" if f"def {entry_point}" in code else prompt + code
    return f"{body}\n\n{test}\n\ncheck({entry_point})\n"
