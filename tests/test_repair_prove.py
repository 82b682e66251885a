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


def test_a_repair_past_the_reference_and_an_insignificant_gap_are_said():
    """The H200 Q3_K_M run: a 2-point gap (not significant) and a repaired agent 11 points above the reference —
    the share of the gap (over 500%) gets no CI (the gap's CI reaches 0) and both caveats are said."""
    n = 200
    before = [1] * 90 + [0] * 110  # 45%
    reference = [1] * 84 + [0] * 6 + [1] * 10 + [0] * 100  # 47%: 10 items won, 6 of before's lost
    after = [1] * 116 + [0] * 84  # 58%
    c = compare(_frame(before, after, reference), "gsm8k_cot_zeroshot", n_boot=4000, seed=0)
    assert c.gap == pytest.approx(0.02) and c.gap_ci[0] < 0 < c.gap_ci[1]
    assert c.over_reference == pytest.approx(0.11) and c.over_reference_ci[0] > 0.05
    assert c.share_recovered == pytest.approx(6.5) and c.share_ci is None  # a ratio over a gap that may be <= 0
    text = verdict(c, c)
    assert "beats the reference by +11.0%" in text and "The gap is not significant" in text
    assert "no CI: the gap's own 95% CI" in text and f"{n} items)." in text


def test_no_common_item_is_an_error_not_nan(tmp_path):
    from quantswarm.errors import QuantswarmError
    from quantswarm.results import ResultRow, ResultsTable
    from repair.prove import outcomes

    table = ResultsTable(tmp_path / "r")
    table.append([ResultRow(run_id="r", agent=a, model_file="m", model_sha="s", quant="Q2_K", task="t", dataset="d",
                            split="test", item_id=i, output="o", extracted="1", gold="1", correct=True)
                  for a, i in (("before", "x"), ("after", "y"))])
    with pytest.raises(QuantswarmError, match="answered no t item in common"):
        outcomes(table, "t", {"before": ("before", None), "after": ("after", None)}, ["x", "y"])
