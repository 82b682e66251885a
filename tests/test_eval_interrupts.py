"""Ctrl-C and SIGTERM stop `eval run` within seconds at any point, keep the rows that finished, say how many,
and leave no llama-server behind (real llama-server, real SmolLM2)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from quantswarm.results import ResultsTable
from tests.procs import alive, llama_children

# a generation the 135M model drags out to its cap: in flight for a minute and more on a shared CPU
LONG_TASK = """task: apples
dataset: gsm8k
split: test
method: generate
num_fewshot: 0
doc_to_text: "Repeat the word 'apple' one thousand times."
generation_kwargs:
  max_tokens: 1000
  temperature: 0.0
metric: numeric_match
primary_filter: flexible
filter_list:
  - name: flexible
    filter:
      - function: regex
        regex_pattern: "(-?[0-9]+)"
        group_select: -1
      - function: number
metadata:
  version: 1
"""


class EvalProcess:
    """`quantswarm eval run` in a child process, its stderr collected as it comes."""

    def __init__(self, *args: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "quantswarm.cli", "eval", "run", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.err: list[str] = []
        self.servers: set[int] = set()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while ch := self.proc.stderr.read(1):
            self.err.append(ch)

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    def children(self) -> set[int]:
        """llama-server processes whose parent is the eval process."""
        return llama_children(self.proc.pid)

    def wait_for(self, pattern: str, timeout: float = 300) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.servers |= self.children()
            m = re.search(pattern, self.stderr)
            if m:
                return m
            if self.proc.poll() is not None:
                pytest.fail(f"eval run ended early ({self.proc.returncode}): {self.stderr[-2000:]}")
            time.sleep(0.2)
        self.proc.kill()
        pytest.fail(f"no {pattern!r} in {timeout} s: {self.stderr[-2000:]}")

    def stop(self, sig: int, limit: float = 20.0) -> float:
        """Send ``sig``; the seconds until the process exited (fails past ``limit``)."""
        self.servers |= self.children()
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            for pid in self.servers:
                _kill(pid)
            pytest.fail(f"still running {limit} s after signal {sig}: {self.stderr[-2000:]}")
        time.sleep(0.5)  # let the reader thread take the last lines
        return time.monotonic() - t0


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def common(smollm2, results: Path, *tasks: str, limit: int, backend: str = "llama-server") -> list[str]:
    return [f"smol={smollm2}", "--tasks", ",".join(tasks), "--limit", str(limit), "--parallel", "2",
            "--n-ctx", "1536", "--backend", backend, "--source", "shipped", "--results", str(results)]


def saved(stderr: str) -> tuple[int, int]:
    m = re.search(r"interrupted: (\d+) rows \((\d+) items\) saved to .* by this run; rerun the same command to "
                  r"resume", stderr)
    assert m, stderr[-2000:]
    return int(m.group(1)), int(m.group(2))


def test_ctrl_c_mid_block_keeps_finished_items_and_stops_at_once(smollm2, llama_server_bin, tmp_path):
    res = tmp_path / "res"
    run = EvalProcess(*common(smollm2, res, "mmlu_logprob", limit=200))
    done = int(run.wait_for(r"mmlu_logprob:\s+\d+%\|[^|]*\|\s*([3-9]|\d\d+)/200").group(1))
    assert run.servers, "the run started no llama-server"
    seconds = run.stop(signal.SIGINT)
    assert run.proc.returncode == 130, run.stderr[-2000:]
    assert seconds < 15
    rows, items = saved(run.stderr)
    table = ResultsTable(res).read()
    assert len(table) == rows == items >= done  # mmlu_logprob has one filter: one row per item
    assert items < 200 and table.item_id.nunique() == items
    assert not [p for p in run.servers if alive(p)], "llama-server left running"


def test_sigterm_during_long_generations_saves_and_stops_the_server(smollm2, llama_server_bin, tmp_path):
    long_task = tmp_path / "apples.yaml"
    long_task.write_text(LONG_TASK)
    res = tmp_path / "res"
    run = EvalProcess(*common(smollm2, res, "mmlu_logprob", str(long_task), limit=2))
    run.wait_for(r"smol apples:\s+0%")
    assert run.servers, "the run started no llama-server"
    time.sleep(3)  # both slots are now inside thousand-token answers
    seconds = run.stop(signal.SIGTERM)
    assert run.proc.returncode == 143, run.stderr[-2000:]
    assert seconds < 15
    assert "terminated" in run.stderr.splitlines()[-1]
    assert saved(run.stderr) == (2, 2)  # the finished mmlu block; the unfinished answers are not rows
    table = ResultsTable(res).read()
    assert len(table) == 2 and set(table.task) == {"mmlu_logprob"}
    assert not [p for p in run.servers if alive(p)], "llama-server left running"


def test_ctrl_c_during_in_process_generations_exits_at_once(smollm2, tmp_path):
    long_task = tmp_path / "apples.yaml"
    long_task.write_text(LONG_TASK)
    res = tmp_path / "res"
    run = EvalProcess(*common(smollm2, res, "mmlu_logprob", str(long_task), limit=2, backend="llama-cpp-python"))
    run.wait_for(r"smol apples:\s+0%")
    time.sleep(3)  # two in-process contexts are inside thousand-token answers, which nothing can interrupt
    seconds = run.stop(signal.SIGINT)
    assert run.proc.returncode == 130, run.stderr[-2000:]
    assert seconds < 15
    assert saved(run.stderr) == (2, 2) and len(ResultsTable(res).read()) == 2


def test_ctrl_c_with_concurrent_models_closes_every_server_and_keeps_the_rows(smollm2, llama_server_bin, tmp_path):
    """Two models at once (--concurrent-models 2): Ctrl-C while both generate closes both llama-servers at once,
    keeps each model's finished MMLU rows and says how many."""
    long_task = tmp_path / "apples.yaml"
    long_task.write_text(LONG_TASK)
    res = tmp_path / "res"
    args = common(smollm2, res, "mmlu_logprob", str(long_task), limit=2)
    run = EvalProcess(f"twin={smollm2}", *args, "--concurrent-models", "2")
    run.wait_for(r"smol apples:\s+0%")
    run.wait_for(r"twin apples:\s+0%")
    assert len(run.servers) == 2, run.servers
    time.sleep(3)
    seconds = run.stop(signal.SIGINT)
    assert run.proc.returncode == 130, run.stderr[-2000:]
    assert seconds < 15
    rows, items = saved(run.stderr)  # each model's finished MMLU block, and any answer that finished in time
    table = ResultsTable(res).read()
    assert len(table) == rows == items >= 4 and set(table.agent) == {"smol", "twin"}
    assert len(table[table.task == "mmlu_logprob"]) == 4
    assert not [p for p in run.servers if alive(p)], "llama-server left running"
