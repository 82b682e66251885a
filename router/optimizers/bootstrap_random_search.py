"""BootstrapFewShotWithRandomSearch: bootstrapped demo sets, the best on dev wins."""

from __future__ import annotations

import dspy


def teleprompter(config, metric, lm: dspy.LM, reflection_lm: dspy.LM) -> dspy.teleprompt.Teleprompter:
    return dspy.BootstrapFewShotWithRandomSearch(
        metric=metric,
        max_bootstrapped_demos=config.max_demos,
        max_labeled_demos=config.max_demos,
        num_candidate_programs=config.num_candidates,
        num_threads=config.num_threads,
        max_errors=10**6,
        metric_threshold=1.0,  # only demos that chose the labeled agent
    )
