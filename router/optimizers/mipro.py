"""MIPROv2 (auto budget): proposes instructions with the router LM and searches instruction x demo sets."""

from __future__ import annotations

import dspy

from router.optimizers import Bound


def teleprompter(config, metric, lm: dspy.LM, reflection_lm: dspy.LM) -> dspy.teleprompt.Teleprompter:
    optimizer = dspy.MIPROv2(
        metric=metric,
        prompt_model=reflection_lm,
        task_model=lm,
        auto=config.mipro_auto,
        max_bootstrapped_demos=config.max_demos,
        max_labeled_demos=config.max_demos,
        num_threads=config.num_threads,
        max_errors=10**6,
        seed=config.seed,
        metric_threshold=1.0,
        verbose=False,
    )
    return Bound(optimizer, seed=config.seed,
                 program_aware_proposer=False,  # the program's source does not fit a tiny router LM's context
                 view_data_batch_size=5)
