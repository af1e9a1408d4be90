"""The comparison's report on hand-built confirmation records (no training): the intervals stay in the range their
quantity can take, a rounding residue is not read as a result, the restore is compared with the learning-rate-only
control, and the summary covers the seeds asked for."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from hf_plasticity.comparison.report import markdown, mean_interval, paired_difference, summarize

RATES = (1e-4, 1e-3)


def record(arm: str, seed: int, accuracy: float) -> dict:
    """A confirmation record of a tuned arm at `RATES`."""
    config = {"backbone_lr": RATES[0], "own_lr": RATES[1]}
    return {"arm": arm, "seed": seed, "config": config, "test_accuracy": accuracy, "val_curve": [accuracy]}


def summary_of(accuracies: dict[str, list[float]], **kwargs) -> dict:
    """The summary (with the settings `markdown` reads) of tuned arms with these accuracies on seeds 0, 1, ..."""
    records = [record(arm, seed, a) for arm, values in accuracies.items() for seed, a in enumerate(values)]
    summary = summarize(list(accuracies), dict.fromkeys(accuracies, RATES), records, **kwargs)
    summary["settings"] = {"model": "m", "data": "d"}
    return summary


def row(text: str, arm: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {arm} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


# ------------------------------------------------------------------------------------------------ intervals
def test_an_accuracy_interval_never_reaches_past_100():
    """Three seeds at 14/14, 11/14, 14/14: the t interval is [62.12, 123.59]; the report cuts it at 100 and says so."""
    accuracies = [1.0, 11 / 14, 1.0]
    t_low, t_high = stats.ttest_1samp(accuracies, 0.0).confidence_interval()
    assert t_high > 1  # what the t interval alone would print
    summary = summary_of({"standard": [0.5, 0.6, 0.55], "restore": accuracies})
    text = markdown(summary)
    assert row(text, "restore")[3:5] == ["92.86", f"[{100 * t_low:.2f}, 100.00]"]
    interval = mean_interval(accuracies)
    assert (interval["low"], interval["high"], interval["clipped"]) == (pytest.approx(t_low), 1.0, True)
    assert "cut at the possible range (0 to 100 for an accuracy, -100 to +100 for a difference)" in text
    assert summary["arms"]["restore"]["test"]["clipped"] is True
    assert summary["arms"]["standard"]["test"]["clipped"] is False


def test_a_difference_interval_stays_within_plus_minus_100():
    """Differences of 100, 100 and 0 points: the paired t interval reaches past +100; the report cuts it there."""
    treatment, control = [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]
    t_low, t_high = stats.ttest_rel(treatment, control).confidence_interval()
    assert t_high > 1
    text = markdown(summary_of({"standard": control, "restore": treatment}))
    assert row(text, "restore")[5:7] == ["+66.67", f"[{100 * t_low:+.2f}, +100.00]"]
    difference = paired_difference(treatment, control)
    assert (difference["low"], difference["high"], difference["clipped"]) == (pytest.approx(t_low), 1.0, True)


fractions = st.integers(1, 500).flatmap(
    lambda size: st.lists(st.tuples(st.integers(0, size), st.integers(0, size)), min_size=1, max_size=10).map(
        lambda pairs: [(t / size, c / size) for t, c in pairs]
    )
)


def printed(interval: str) -> list[float]:
    return [float(v) for v in re.findall(r"[-+]?\d+\.\d\d", interval)]


@given(fractions)
@settings(max_examples=150, deadline=None)
def test_intervals_stay_in_the_range_of_their_quantity(pairs):
    """For any accuracies k/n (paired by seed): an accuracy's interval lies in [0, 1] and a difference's in [-1, 1],
    each holds its mean, and where not cut it is scipy's t interval; the printed cells stay in [0, 100] and
    [-100, +100]."""
    treatment, control = [p[0] for p in pairs], [p[1] for p in pairs]
    for stat, (floor, ceiling), t_test in (
        (mean_interval(treatment), (0.0, 1.0), lambda: stats.ttest_1samp(treatment, 0.0)),
        (paired_difference(treatment, control), (-1.0, 1.0), lambda: stats.ttest_rel(treatment, control)),
    ):
        if stat["low"] is None:
            assert stat["undefined"] in ("one seed", "no spread") and stat["clipped"] is False
            continue
        assert floor <= stat["low"] <= stat["mean"] <= stat["high"] <= ceiling
        t_low, t_high = t_test().confidence_interval()
        assert (stat["low"], stat["high"]) == pytest.approx((max(t_low, floor), min(t_high, ceiling)))
        assert stat["clipped"] == (t_low < floor or t_high > ceiling)
    if len(pairs) > 1:
        text = markdown(summary_of({"standard": control, "restore": treatment}))
        cells = row(text, "restore")
        for value in printed(cells[4]):
            assert 0 <= value <= 100
        for value in printed(cells[6]):
            assert -100 <= value <= 100
