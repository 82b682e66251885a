"""Make an agent's missing GGUF by quantizing another one (``quantize_from`` in the swarm spec)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from contextlib import contextmanager, redirect_stderr
from pathlib import Path

from quantswarm.errors import ConfigError, EngineError
from serving.swarm_config import SwarmConfig


def quantize(src: str | Path, dst: str | Path, qtype: str) -> Path:
    """Quantize ``src`` to ``dst`` as ``qtype`` (e.g. Q8_0) with llama.cpp's quantizer; written atomically."""
    import llama_cpp

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype}", None) or getattr(llama_cpp, f"LLAMA_FTYPE_{qtype}", None)
    if ftype is None:
        raise ConfigError(f"quantize_from.type: llama.cpp has no file type {qtype!r}")
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True
    with _quiet_stderr(dst.with_name(f".{dst.name}.quantize.log")):
        rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
    if rc != 0 or not tmp.exists():
        tmp.unlink(missing_ok=True)
        raise EngineError(f"llama.cpp could not quantize {src} to {qtype} (code {rc})")
    tmp.rename(dst)
    return dst


@contextmanager
def _quiet_stderr(log: Path):
    """Send the C library's per-tensor chatter (fd 2) to ``log`` while quantizing."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(log, "w") as f, redirect_stderr(f):  # llama-cpp-python's log callback writes to sys.stderr
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def prepare_models(cfg: SwarmConfig, log: Callable[[str], None] = print) -> list[str]:
    """Create every agent model that is missing and has ``quantize_from``; returns the names made."""
    made = []
    for name, a in cfg.agents.items():
        if Path(a.model).exists():
            continue
        if a.quantize_from is None:
            raise ConfigError(f"agents.{name}.model: {a.model} does not exist")
        log(f"quantizing {Path(a.quantize_from.source).name} -> {Path(a.model).name} ({a.quantize_from.type})")
        quantize(a.quantize_from.source, a.model, a.quantize_from.type)
        made.append(name)
    return made
