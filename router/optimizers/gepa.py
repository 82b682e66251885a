"""GEPA: reflective instruction evolution, with the metric's feedback sentences as the reflection signal."""

from __future__ import annotations

import dspy

from router.metric import CostAwareMetric


class FeedbackMetric:
    """GEPA's five-argument metric: the cost-aware score plus a sentence of feedback."""

    def __init__(self, metric: CostAwareMetric):
        self.metric = metric

    def __call__(self, gold, pred, trace=None, pred_name=None, pred_trace=None) -> dspy.Prediction:
        chosen = getattr(pred, "agent", None)
        return dspy.Prediction(score=self.metric(gold, pred), feedback=self.metric.feedback(gold, chosen))


def teleprompter(config, metric, lm: dspy.LM, reflection_lm: dspy.LM) -> dspy.teleprompt.Teleprompter:
    return dspy.GEPA(
        metric=FeedbackMetric(metric),
        max_metric_calls=config.gepa_max_metric_calls,
        reflection_lm=reflection_lm,
        reflection_minibatch_size=3,
        num_threads=config.num_threads,
        use_merge=False,
        seed=config.seed,
        add_format_failure_as_feedback=True,
    )
