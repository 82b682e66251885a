"""MIPROv2 (auto budget): proposes instructions with the router LM and searches instruction x demo sets."""

from __future__ import annotations

import dspy


def run(student: dspy.Module, trainset: list[dspy.Example], devset: list[dspy.Example], metric, config,
        lm: dspy.LM, reflection_lm: dspy.LM) -> dspy.Module:
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
    return optimizer.compile(
        student,
        trainset=trainset,
        valset=devset or None,
        seed=config.seed,
        program_aware_proposer=False,  # the program's source does not fit a tiny router LM's context
        view_data_batch_size=5,
    )
