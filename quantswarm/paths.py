"""Where quantswarm keeps caches, models, data and results (all overridable by env)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_DATA = REPO_ROOT / "data"


def cache_dir() -> Path:
    """Root cache: $QUANTSWARM_CACHE or ~/.cache/quantswarm."""
    return Path(os.environ.get("QUANTSWARM_CACHE", Path.home() / ".cache" / "quantswarm"))


def models_dir() -> Path:
    """Fetched GGUF files: $QUANTSWARM_MODELS, $SWARM_MODELS, or <cache>/models."""
    for var in ("QUANTSWARM_MODELS", "SWARM_MODELS"):
        if os.environ.get(var):
            return Path(os.environ[var])
    return cache_dir() / "models"


def llama_bin_root() -> Path:
    """Built llama.cpp tools, one folder per llama-cpp-python version and backend."""
    return cache_dir() / "llama.cpp"


def data_dir() -> Path | None:
    """Full benchmark data: $QUANTSWARM_DATA, else ../shared/data beside the checkout, else None."""
    if os.environ.get("QUANTSWARM_DATA"):
        return Path(os.environ["QUANTSWARM_DATA"])
    shared = REPO_ROOT.parent / "shared" / "data"
    return shared if shared.is_dir() else None
