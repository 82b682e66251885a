"""Statistics for accuracy and paired degradation (statsmodels/scipy; nothing hand-rolled that they do).

* :func:`wilson` — a proportion's 95% Wilson interval.
* :func:`paired` — the paired accuracy difference of two agents on the same items, with a
  bootstrap CI over items, McNemar's exact p-value and the flip table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint


@dataclass
class Proportion:
    """An accuracy with its 95% Wilson interval."""

    k: int
    n: int
    low: float
    high: float

    @property
    def value(self) -> float:
        return self.k / self.n if self.n else float("nan")


def wilson(k: int, n: int, alpha: float = 0.05) -> Proportion:
    if n == 0:
        return Proportion(0, 0, float("nan"), float("nan"))
    low, high = proportion_confint(k, n, alpha=alpha, method="wilson")
    return Proportion(int(k), int(n), float(low), float(high))


@dataclass
class PairedDiff:
    """``b - a`` accuracy on the same n items: bootstrap CI, McNemar p and the flips."""

    n: int
    acc_a: float
    acc_b: float
    diff: float
    low: float
    high: float
    p_mcnemar: float
    right_to_wrong: int  # a right, b wrong
    wrong_to_right: int  # a wrong, b right


def paired(a: np.ndarray, b: np.ndarray, *, n_boot: int = 10_000, seed: int = 0, alpha: float = 0.05) -> PairedDiff:
    """Paired difference of two boolean vectors over the same items (b minus a)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("paired() needs two 1-D vectors over the same items")
    n = len(a)
    if n == 0:
        nan = float("nan")
        return PairedDiff(0, nan, nan, nan, nan, nan, nan, 0, 0)
    d = b.astype(float) - a.astype(float)
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    low, high = np.quantile(boots, [alpha / 2, 1 - alpha / 2])
    rw = int((a & ~b).sum())
    wr = int((~a & b).sum())
    table = [[int((a & b).sum()), rw], [wr, int((~a & ~b).sum())]]
    p = float(mcnemar(table, exact=True).pvalue) if rw + wr else 1.0
    return PairedDiff(n, float(a.mean()), float(b.mean()), float(d.mean()), float(low), float(high), p, rw, wr)
