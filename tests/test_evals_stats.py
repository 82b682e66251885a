"""Paired statistics on constructed cases with known answers."""

import numpy as np
import pytest

from evals.stats import paired, wilson


def test_paired_known_case():
    # 20 items: the reference is right on 10; the quant loses 5 of those and gains 1 elsewhere.
    a = np.array([1] * 10 + [0] * 10, dtype=bool)
    b = a.copy()
    b[:5] = False
    b[10] = True
    d = paired(a, b, n_boot=4000, seed=1)
    assert d.n == 20 and d.acc_a == 0.5 and d.acc_b == 0.3
    assert d.diff == pytest.approx(-0.2)
    assert (d.right_to_wrong, d.wrong_to_right) == (5, 1)
    assert d.p_mcnemar == pytest.approx(0.21875)  # exact binomial: 2 * P(X <= 1 | n=6, p=.5)
    assert d.low < d.diff < d.high and d.high < 0.05


def test_paired_identical():
    a = np.array([1, 0, 1, 1], dtype=bool)
    d = paired(a, a)
    assert d.diff == 0 and d.low == 0 and d.high == 0 and d.p_mcnemar == 1.0


def test_wilson():
    p = wilson(0, 10)
    assert p.value == 0 and p.low == 0 and 0.25 < p.high < 0.35
    p = wilson(50, 100)
    assert p.low == pytest.approx(0.4038, abs=1e-3) and p.high == pytest.approx(0.5962, abs=1e-3)
