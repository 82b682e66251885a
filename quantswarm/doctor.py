"""``quantswarm doctor``: what this machine has, and which optional parts are missing."""

from __future__ import annotations

import importlib.util
import platform
import shutil
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from quantswarm.energy import gpu_names, nvml_status
from quantswarm.engine.build import TOOLS, find_tool
from quantswarm.paths import data_dir, models_dir
from quantswarm.registry import local_models


@dataclass
class Check:
    """One line of the doctor's report."""

    name: str
    ok: bool
    detail: str
    required: bool = True


def _dist(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def run_checks() -> list[Check]:
    checks = [Check("python", sys.version_info >= (3, 11), f"{platform.python_version()} ({sys.executable})")]
    lcp = _dist("llama-cpp-python")
    if lcp:
        try:
            import llama_cpp
        except (OSError, RuntimeError) as exc:  # installed with LLAMA_BUILD=OFF and not yet linked
            checks.append(Check("llama-cpp-python", False, f"{lcp}, cannot load llama.cpp ({exc}): run "
                                "`quantswarm engine build`, which builds it and links the binding to it"))
        else:
            gpu = bool(llama_cpp.llama_supports_gpu_offload())
            lib = Path(llama_cpp.llama_cpp._lib._name)
            origin = f"; library {lib.resolve().parent}" if lib.is_symlink() else ""
            checks.append(Check("llama-cpp-python", True,
                                f"{lcp}, {'CUDA/GPU offload' if gpu else 'CPU-only'} build{origin}"))
    else:
        checks.append(Check("llama-cpp-python", False, "not installed: `pip install -e .`"))
    for tool in TOOLS:
        p = find_tool(tool)
        checks.append(Check(tool, p is not None, str(p) if p else "not built: `quantswarm engine build`",
                            required=tool == "llama-server"))
    status = nvml_status()
    checks.append(Check("gpu", status.startswith("ok"),
                        f"{status}: {', '.join(gpu_names())}" if status.startswith("ok") else status, required=False))
    nats = shutil.which("nats-server")
    checks.append(Check("nats-server", nats is not None, nats or "missing: `apt-get install nats-server` (bus off)",
                        required=False))
    # installed, found without importing: importing torch, trl and dspy takes seconds on a small CPU
    for mod, dist, why in (("dspy", "dspy", "router"), ("trl", "trl", "repair"), ("peft", "peft", "repair"),
                           ("torch", "torch", "repair"), ("nats", "nats-py", "bus client"),
                           ("fastapi", "fastapi", "gateway"), ("gguf", "gguf", "model registry"),
                           ("langgraph", "langgraph", "graph supervisor")):
        found = importlib.util.find_spec(mod) is not None
        ver = _dist(dist)
        if found:
            checks.append(Check(mod, True, f"{ver or '?'} ({why})"))
        else:
            checks.append(Check(mod, False, f"not installed ({why} off)", required=False))
    d = data_dir()
    checks.append(Check("data", True, f"{d} (full benchmarks)" if d else "shipped samples only (set QUANTSWARM_DATA)",
                        required=False))
    models = local_models()
    checks.append(Check("models", bool(models), f"{models_dir()}: {len(models)} GGUF file(s)"
                        if models else f"none in {models_dir()}: `quantswarm models fetch smollm2-135m-instruct-q4_1`",
                        required=False))
    return checks
