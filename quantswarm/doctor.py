"""``quantswarm doctor``: what this machine has, and which optional parts are missing."""

from __future__ import annotations

import importlib
import platform
import shutil
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

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
        import llama_cpp

        gpu = bool(llama_cpp.llama_supports_gpu_offload())
        checks.append(Check("llama-cpp-python", True, f"{lcp}, {'CUDA/GPU offload' if gpu else 'CPU-only'} build"))
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
    for mod, why in (("dspy", "router"), ("trl", "repair"), ("peft", "repair"), ("torch", "repair"),
                     ("nats", "bus client"), ("fastapi", "gateway"), ("gguf", "model registry")):
        try:
            m = importlib.import_module(mod)
            checks.append(Check(mod, True, f"{getattr(m, '__version__', '?')} ({why})"))
        except Exception as exc:
            checks.append(Check(mod, False, f"{type(exc).__name__}: {exc} ({why} off)", required=False))
    d = data_dir()
    checks.append(Check("data", True, f"{d} (full benchmarks)" if d else "shipped samples only (set QUANTSWARM_DATA)",
                        required=False))
    models = local_models()
    checks.append(Check("models", bool(models), f"{models_dir()}: {len(models)} GGUF file(s)"
                        if models else f"none in {models_dir()}: `quantswarm models fetch smollm2-135m-instruct-q4_1`",
                        required=False))
    return checks
