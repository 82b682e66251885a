"""Shared fixtures: the real SmolLM2 GGUF and the real llama.cpp tools (built by `make test`)."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from quantswarm.engine.build import find_tool  # noqa: E402
from quantswarm.registry import DEFAULT_MODEL, fetch  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """SmolLM2-135M-Instruct Q4_1 (fetched once per machine into the model cache)."""
    return fetch(DEFAULT_MODEL, try_hub=False)


@pytest.fixture(scope="session")
def llama_server_bin() -> Path:
    p = find_tool("llama-server")
    if p is None:
        pytest.fail("llama-server is not built: run `make test` (it runs `quantswarm engine build`)")
    return p


@pytest.fixture(scope="session")
def shared_data() -> Path | None:
    d = REPO.parent / "shared" / "data"
    return d if d.is_dir() else None


@pytest.fixture(scope="session")
def smollm2_ladder(smollm2, tmp_path_factory) -> Path:
    """A real ladder of the tiny model: F16 (from Q4_1), Q8_0 and Q2_K, made once per session."""
    from evals.ladder import make_ladder

    out = tmp_path_factory.mktemp("ladder")
    make_ladder(smollm2, out, ("Q8_0", "Q2_K"))
    return out
