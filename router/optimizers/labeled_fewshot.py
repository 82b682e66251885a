"""LabeledFewShot: the labeled examples themselves become the demos (no LM calls while compiling)."""

from __future__ import annotations

import dspy


def run(student: dspy.Module, trainset: list[dspy.Example], devset: list[dspy.Example], metric, config,
        lm: dspy.LM, reflection_lm: dspy.LM) -> dspy.Module:
    return dspy.LabeledFewShot(k=config.max_demos).compile(student, trainset=trainset, sample=True)
