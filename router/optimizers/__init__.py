"""The router's DSPy optimizers as a registry of factories, one file each like ``dspy/teleprompt``.

``teleprompter(name, config, metric, lm, reflection_lm)`` returns a configured DSPy ``Teleprompter`` whose
``compile(student, trainset=..., valset=...)`` takes data only; the settings come from the ``RouterConfig``.
"""

from __future__ import annotations

import importlib

MODULES = {
    "labeled": "router.optimizers.labeled_fewshot",
    "bootstrap_rs": "router.optimizers.bootstrap_random_search",
    "mipro": "router.optimizers.mipro",
    "gepa": "router.optimizers.gepa",
    "simba": "router.optimizers.simba",
}


def teleprompter(name: str, config, metric, lm, reflection_lm):
    """The configured Teleprompter for optimizer ``name`` (imported lazily: DSPy is heavy)."""
    from quantswarm.errors import ConfigError

    if name not in MODULES:
        raise ConfigError(f"unknown optimizer {name!r}; choose one of {', '.join(MODULES)}")
    return importlib.import_module(MODULES[name]).teleprompter(config, metric, lm, reflection_lm)


def _teleprompter_base():
    from dspy.teleprompt import Teleprompter

    return Teleprompter


class Bound(_teleprompter_base()):
    """A Teleprompter whose ``compile`` forwards fixed keyword arguments (a seed, a proposer switch) to an
    optimizer that wants more than data; ``use_valset=False`` for optimizers whose compile takes no valset."""

    def __init__(self, inner, *, use_valset: bool = True, **fixed):
        super().__init__()
        self.inner, self.use_valset, self.fixed = inner, use_valset, fixed

    def compile(self, student, *, trainset, teacher=None, valset=None, **kwargs):
        extra = {"valset": valset or None} if self.use_valset else {}
        return self.inner.compile(student, trainset=trainset, **extra, **self.fixed)
