"""One DSPy optimizer per file, like ``dspy/teleprompt``; each exposes ``run(student, trainset, devset, ...)``."""

from __future__ import annotations

import importlib

MODULES = {
    "labeled": "router.optimizers.labeled_fewshot",
    "bootstrap_rs": "router.optimizers.bootstrap_random_search",
    "mipro": "router.optimizers.mipro",
    "gepa": "router.optimizers.gepa",
    "simba": "router.optimizers.simba",
}


def optimizer_module(name: str):
    """The module implementing optimizer ``name`` (imported lazily: DSPy is heavy)."""
    from quantswarm.errors import ConfigError

    if name not in MODULES:
        raise ConfigError(f"unknown optimizer {name!r}; choose one of {', '.join(MODULES)}")
    return importlib.import_module(MODULES[name])
