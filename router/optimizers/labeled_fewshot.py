"""LabeledFewShot: the labeled examples themselves become the demos (no LM calls while compiling)."""

from __future__ import annotations

import dspy

from router.optimizers import Bound


def teleprompter(config, metric, lm: dspy.LM, reflection_lm: dspy.LM) -> dspy.teleprompt.Teleprompter:
    return Bound(dspy.LabeledFewShot(k=config.max_demos), sample=True, use_valset=False)
