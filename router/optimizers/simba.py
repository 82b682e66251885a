"""SIMBA: stochastic mini-batch ascent that adds demos and self-reflective rules."""

from __future__ import annotations

import dspy


def run(student: dspy.Module, trainset: list[dspy.Example], devset: list[dspy.Example], metric, config,
        lm: dspy.LM, reflection_lm: dspy.LM) -> dspy.Module:
    bsize = min(config.simba_bsize, len(trainset))
    optimizer = dspy.SIMBA(
        metric=metric,
        bsize=bsize,
        num_candidates=config.simba_candidates,
        max_steps=config.simba_steps,
        max_demos=config.max_demos,
        prompt_model=reflection_lm,
        num_threads=config.num_threads,
    )
    return optimizer.compile(student, trainset=trainset, seed=config.seed)
