"""The cost-aware routing metric: full credit for the label, partial for a dearer competent agent, zero otherwise."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CostAwareMetric:
    """Score one routing decision against an example carrying ``agent``, ``correct`` and ``cost``.

    1.0 for the labeled agent (the cheapest that solved the item), ``partial_credit`` for another agent
    that solved it, 0.0 for an agent that failed it. Works as a DSPy metric (extra arguments ignored).
    """

    partial_credit: float = 0.5

    def score(self, label: str, chosen: str, correct: dict[str, bool]) -> float:
        if chosen == label:
            return 1.0
        if correct.get(chosen, False):
            return self.partial_credit
        return 0.0

    def __call__(self, example, pred, trace=None, pred_name=None, pred_trace=None) -> float:
        return self.score(example.agent, getattr(pred, "agent", None), dict(example.correct))

    def feedback(self, example, chosen: str) -> str:
        """A sentence GEPA's reflection LM can learn from."""
        label, correct = example.agent, dict(example.correct)
        if chosen == label:
            return f"Correct: {label} is the cheapest agent that solves this task."
        if correct.get(chosen, False):
            return f"{chosen} can solve this task but costs more; the cheapest competent agent is {label}."
        return f"{chosen} fails this task; route it to {label}."


@dataclass
class KindMetric:
    """1.0 when the predicted task kind is the example's kind, else 0.0 (the ``kind`` structure's metric)."""

    def __call__(self, example, pred, trace=None, pred_name=None, pred_trace=None) -> float:
        return float(getattr(pred, "kind", None) == example.kind)

    def feedback(self, example, chosen: str) -> str:
        return f"The task is a {example.kind}."
