"""The before/after/reference comparison: share of the gap recovered, paired CIs, McNemar, honest verdict."""

from __future__ import annotations

import pandas as pd
import pytest

from repair.prove import compare, verdict


def _frame(before: list[int], after: list[int], reference: list[int]) -> pd.DataFrame:
    return pd.DataFrame({"before": before, "after": after, "reference": reference},
                        index=[f"test-{i}" for i in range(len(before))]).astype(bool)


def test_share_of_gap_recovered_with_paired_ci():
    before = [0] * 16 + [1] * 4  # 20%
    after = [1] * 6 + [0] * 10 + [1] * 4  # 50%: 6 fixed, none broken
    reference = [1] * 12 + [0] * 4 + [1] * 4  # 80%
    c = compare(_frame(before, after, reference), "gsm8k_cot_zeroshot", n_boot=4000, seed=1)
    assert c.items == 20
    assert c.accuracy == pytest.approx({"before": 0.2, "after": 0.5, "reference": 0.8})
    assert c.delta == pytest.approx(0.3) and c.gap == pytest.approx(0.6)
    assert c.share_recovered == pytest.approx(0.5)
    assert c.share_ci[0] < 0.5 < c.share_ci[1]
    assert c.delta_ci[0] > 0  # six fixes and no breakages: the paired CI excludes zero
    assert c.discordant == (6, 0) and c.mcnemar_p == pytest.approx(2 * 0.5**6)
    assert "recovered +50%" in verdict(c, None)


def test_no_gap_is_reported_as_such():
    c = compare(_frame([1, 0, 0], [0, 0, 0], [1, 0, 0]), "gsm8k_cot_zeroshot", n_boot=200)
    assert c.share_recovered is None and c.share_ci is None
    assert c.delta == pytest.approx(-1 / 3) and c.discordant == (0, 1)
    assert verdict(c, c).startswith("No gap to recover")
