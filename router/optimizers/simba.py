"""SIMBA: stochastic mini-batch ascent that adds demos and self-reflective rules."""

from __future__ import annotations

import dspy

from router.optimizers import Bound


class _Simba(Bound):
    """SIMBA's mini-batch cannot be larger than the training set: sized when the data arrives."""

    def __init__(self, config, metric, reflection_lm):
        super().__init__(None, seed=config.seed, use_valset=False)
        self.config, self.metric, self.reflection_lm = config, metric, reflection_lm

    def compile(self, student, *, trainset, teacher=None, valset=None, **kwargs):
        c = self.config
        self.inner = dspy.SIMBA(metric=self.metric, bsize=min(c.simba_bsize, len(trainset)),
                                num_candidates=c.simba_candidates, max_steps=c.simba_steps, max_demos=c.max_demos,
                                prompt_model=self.reflection_lm, num_threads=c.num_threads)
        return super().compile(student, trainset=trainset, valset=valset)


def teleprompter(config, metric, lm: dspy.LM, reflection_lm: dspy.LM) -> dspy.teleprompt.Teleprompter:
    return _Simba(config, metric, reflection_lm)
