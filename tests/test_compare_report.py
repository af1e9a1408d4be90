"""The comparison's report on hand-built confirmation records (no training): the intervals stay in the range their
quantity can take, a rounding residue is not read as a result, the restore is compared with the learning-rate-only
control, and the summary covers the seeds asked for."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from hf_plasticity.comparison.report import (
    DIFFERENCES_FILE,
    difference_rows,
    markdown,
    mean_interval,
    paired_difference,
    recommended_verdict,
    summarize,
    verdict,
    write_report,
)

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


# ------------------------------------------------------------------------------------------------ rounding
def test_differences_that_cancel_read_as_level_not_as_0_00_points_above():
    """Per-seed differences of 0, -1/14 and +1/14 sum to zero, but in floats their mean is 9.25e-18: the verdicts say
    "level with" and "matches", and the table prints 0.00, not +0.00 or -0.00 read as a result."""
    treatment, control = [0 / 14, 0 / 14, 5 / 14], [0 / 14, 1 / 14, 4 / 14]
    difference = paired_difference(treatment, control)
    assert difference["mean"] != 0  # the residue
    assert "On this data the default restore is level with standard fine-tuning [95% CI" in verdict(
        "restore", difference
    )
    assert "not tuned) matches the tuned standard fine-tuning [95% CI" in recommended_verdict(difference)
    summary = summary_of({"standard": control, "restore": treatment})
    assert summary["verdict"].startswith("On this data the default restore is level with standard fine-tuning")
    assert "0.00 points" not in summary["verdict"]
    assert row(markdown(summary), "restore")[5] == "0.00"


def _level_wording(sentences: list[str], difference: dict) -> None:
    """What a mean difference that rounds to 0.00 points may be called: level / matches, or, when its interval
    excludes 0, less than 0.005 points above or below; never 0.00 points."""
    detectable = difference["low"] is not None and (difference["low"] > 0 or difference["high"] < 0)
    for sentence in sentences:
        assert "0.00 points" not in sentence, sentence
        if detectable:
            assert "less than 0.005 points" in sentence, sentence
        else:
            assert " is level with " in sentence or " matches " in sentence, sentence


@given(st.integers(1, 500).flatmap(lambda n: st.lists(st.integers(0, n), min_size=1, max_size=10).map(
    lambda ks: [k / n for k in ks])), st.data())  # fmt: skip
@settings(max_examples=150, deadline=None)
def test_a_zero_difference_up_to_float_rounding_reads_level(control, data):
    """Treatment accuracies that are the control's in another order: the true mean difference is exactly 0, whatever
    floats make of it; the verdicts say level / matches and the table prints 0.00."""
    treatment = data.draw(st.permutations(control))
    difference = paired_difference(treatment, control)
    assert f"{100 * abs(difference['mean']):.2f}" == "0.00"
    _level_wording([verdict("restore", difference), recommended_verdict(difference)], difference)
    if len(control) > 1:
        text = markdown(summary_of({"standard": control, "restore": list(treatment)}))
        assert row(text, "restore")[5] == "0.00"


@given(st.lists(st.tuples(st.floats(0, 1), st.floats(-1e-4, 1e-4)), min_size=1, max_size=8))
@settings(max_examples=150, deadline=None)
def test_any_mean_that_prints_as_0_00_reads_level(pairs):
    """For any paired differences whose mean rounds to 0.00 points at the printed precision, the wording says level /
    matches (or less than 0.005 points, when the interval excludes 0); other means are said above or below."""
    control = [p[0] for p in pairs]
    treatment = [c + delta for c, delta in pairs]
    difference = paired_difference(treatment, control)
    sentences = [verdict("restore", difference), recommended_verdict(difference)]
    shown = f"{100 * abs(difference['mean']):.2f}"
    if shown == "0.00":
        _level_wording(sentences, difference)
    else:
        side = "above" if difference["mean"] > 0 else "below"
        assert f"is {shown} points {side} standard" in sentences[0]


# ------------------------------------------------------------------------------------------------ restore vs control
STANDARD_ACCURACIES = [0.70, 0.72, 0.71, 0.69, 0.73]


def test_a_gain_the_control_matches_is_not_credited_to_the_re_draw():
    """Restore and control both about 6 points above standard, restore 0.8 above the control with an interval
    over 0: the verdict keeps the restore's gain over standard and adds that the re-draw itself is not shown to add
    anything beyond the learning rate; the JSON holds the paired restore - control difference the text prints."""
    restore, control = [0.76, 0.78, 0.76, 0.77, 0.79], [0.74, 0.78, 0.75, 0.78, 0.77]
    summary = summary_of({"standard": STANDARD_ACCURACIES, "restore": restore, "control": control})
    redraw = summary["arms"]["restore"]["difference_to_control"]
    low, high = stats.ttest_rel(restore, control).confidence_interval()
    assert (redraw["mean"], redraw["low"], redraw["high"], redraw["n"]) == pytest.approx((0.008, low, high, 5))
    assert "difference_to_control" not in summary["arms"]["control"]
    sentences = summary["verdict"].split(". ")
    assert sentences[0].startswith("On this data the default restore is 6.20 points above standard fine-tuning")
    assert sentences[1] == (
        "Against the learning-rate-only control (the same blocks at their own learning rate, not re-drawn), the "
        f"default restore is 0.80 points above it [95% CI {100 * low:+.2f}, {100 * high:+.2f}] over 5 paired seeds: "
        "no detectable difference, so the re-draw itself is not shown to add anything beyond the learning rate "
        "alone."
    )
    text = markdown(summary)
    assert (
        "restore minus control, paired by seed (what the re-draw adds beyond the learning rate): +0.80 points, 95% CI "
        f"[{100 * low:+.2f}, {100 * high:+.2f}]." in text
    )
    assert summary["verdict"] in text


def test_the_same_gain_in_both_arms_is_said():
    """The review's case: the control gains exactly as much as the restore on every seed. The verdict no longer
    stops at the restore's detectable gain: the restore is level with the control, and with no spread the interval
    cannot be estimated."""
    gain = [0.05, 0.06, 0.05, 0.07, 0.06]
    treated = [a + g for a, g in zip(STANDARD_ACCURACIES, gain)]
    summary = summary_of({"standard": STANDARD_ACCURACIES, "restore": treated, "control": list(treated)})
    assert "a detectable gain. Against the learning-rate-only control" in summary["verdict"]
    assert "the default restore is level with it on 5 paired seeds" in summary["verdict"]
    assert "not assessable" in summary["verdict"].split("Against")[1]
    assert summary["arms"]["restore"]["difference_to_control"]["undefined"] == "no spread"


def test_a_gain_of_the_re_draw_itself_and_one_seed():
    """A restore above the control on every seed, with spread: a detectable gain of the re-draw itself. On one seed:
    the interval is undefined and the sentence says so."""
    restore, control = [0.80, 0.83, 0.81, 0.82, 0.84], [0.74, 0.75, 0.75, 0.74, 0.76]
    summary = summary_of({"standard": STANDARD_ACCURACIES, "restore": restore, "control": control})
    assert summary["verdict"].endswith(
        "a detectable gain, so the re-draw itself adds to what the learning rate alone gives."
    )
    single = summary_of({"standard": [0.7], "restore": [0.8], "control": [0.75]})
    redraw = single["arms"]["restore"]["difference_to_control"]
    assert (redraw["low"], redraw["high"], redraw["undefined"]) == (None, None, "one seed")
    assert (
        single["verdict"]
        .split(". Against")[1]
        .startswith(
            " the learning-rate-only control (the same blocks at their own learning rate, not re-drawn), the default "
            "restore is 5.00 points above it on 1 seed: the 95% CI is undefined with one seed"
        )
    )
    assert "95% CI undefined (1 seed)." in markdown(single)


def test_no_control_sentence_without_both_arms():
    """Without the control, or with a strategy arm in place of the default restore (the control holds the default
    restore's blocks), there is no restore - control difference and no sentence about it."""
    for accuracies in (
        {"standard": STANDARD_ACCURACIES, "restore": [0.8] * 4 + [0.81]},
        {"standard": STANDARD_ACCURACIES, "selective": [0.8] * 4 + [0.81], "control": [0.75] * 4 + [0.7]},
    ):
        summary = summary_of(accuracies)
        assert all("difference_to_control" not in entry for entry in summary["arms"].values())
        assert "Against the learning-rate-only control" not in summary["verdict"]
        assert "restore minus control" not in markdown(summary)


@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=8))
@settings(max_examples=80, deadline=None)
def test_the_control_sentence_follows_its_interval(triples):
    """Whatever the accuracies, the restore - control sentence's finding is that of its paired interval."""
    standard, restore, control = ([t[i] for t in triples] for i in range(3))
    summary = summary_of({"standard": standard, "restore": restore, "control": control})
    redraw = summary["arms"]["restore"]["difference_to_control"]
    assert redraw == paired_difference(restore, control)
    sentence = "Against" + summary["verdict"].split(" Against", 1)[1]
    if redraw["low"] is None:
        assert "undefined with one seed" in sentence or "not assessable" in sentence
    elif redraw["low"] > 0:
        assert sentence.endswith(
            "a detectable gain, so the re-draw itself adds to what the learning rate alone gives."
        )
    elif redraw["high"] < 0:
        assert sentence.endswith(
            "a detectable loss, so the re-draw itself costs accuracy that the learning rate alone keeps."
        )
    else:
        assert sentence.endswith(
            "no detectable difference, so the re-draw itself is not shown to add anything beyond the learning rate "
            "alone."
        )


# ------------------------------------------------------------------------------------------------ seeds
def test_the_summary_covers_the_seeds_asked_for_not_every_recorded_one():
    """Records of seeds 0, 1, 2 left by a run with seeds=3; a rerun with seeds=1 reports seed 0 alone (n = 1, the
    interval undefined), as the documentation says confirmation uses seeds 0 .. seeds-1. Without ``seeds`` every
    recorded seed is reported, as before."""
    accuracies = {"standard": [0.7, 0.72, 0.71], "restore": [0.76, 0.75, 0.79]}
    one = summary_of(accuracies, seeds=range(1))
    assert one["seeds"] == [0]
    assert list(one["arms"]["restore"]["test_accuracy"]) == ["0"]
    difference = one["arms"]["restore"]["difference_to_standard"]
    assert (difference["n"], difference["low"], difference["mean"]) == (1, None, pytest.approx(0.06))
    assert "Test accuracy (%) over 1 paired seed (0)," in markdown(one)
    assert summary_of(accuracies, seeds=range(2))["seeds"] == [0, 1]
    assert summary_of(accuracies)["seeds"] == [0, 1, 2]
    with pytest.raises(ValueError, match="No confirmation run has finished for every arm yet"):
        summary_of(accuracies, seeds=[5])


# ------------------------------------------------------------------------------------------------ the figure
RECIPE = {"backbone_lr": 3e-3, "head_lr": 1e-2, "samples": 256, "budget": "short", "last_over_peak": 0.9,
          "threshold": 0.95}  # fmt: skip


def _every_arm(arms: tuple[str, ...]) -> dict:
    """The summary of ``arms`` (standard among them) on three seeds; ``recommended`` untuned, with a recipe."""
    accuracies = {"standard": [0.50, 0.60, 0.55], "restore": [0.60, 0.70, 0.60], "control": [0.55, 0.60, 0.62],
                  "lp_ft": [0.52, 0.61, 0.60], "recommended": [0.58, 0.66, 0.57]}  # fmt: skip
    records = []
    for arm in arms:
        for seed, accuracy in enumerate(accuracies[arm]):
            extra = {"recipe": RECIPE} if arm == "recommended" else {"probe_epochs": 1} if arm == "lp_ft" else {}
            records.append({**record(arm, seed, accuracy), **extra})
    chosen = {arm: None if arm == "recommended" else RATES for arm in arms}
    summary = summarize(list(arms), chosen, records)
    summary["settings"] = {"model": "m", "data": "d", "epochs": 3}
    return summary


def test_the_difference_figure_plots_the_paired_lines_the_report_prints(tmp_path, monkeypatch):
    """differences.png has a row for restore minus control and for recommended minus lp_ft (per-seed points, mean and
    CI as summary.json holds them), after the arms' differences to standard, as the text report has their lines."""
    import matplotlib.pyplot as plt

    summary = _every_arm(("standard", "restore", "control", "lp_ft", "recommended"))
    rows = difference_rows(summary)
    labels = ["restore", "control", "lp_ft", "recommended", "restore - control", "recommended - lp_ft"]
    assert [row.label for row in rows] == labels
    for row, arm, other, key in ((rows[4], "restore", "control", "difference_to_control"),
                                 (rows[5], "recommended", "lp_ft", "difference_to_lp_ft")):  # fmt: skip
        treatment, control = (summary["arms"][a]["test_accuracy"] for a in (arm, other))
        assert row.points == pytest.approx([100 * (treatment[s] - control[s]) for s in control])
        paired = summary["arms"][arm][key]
        assert (row.mean, row.low, row.high) == pytest.approx((100 * paired["mean"], 100 * paired["low"],
                                                               100 * paired["high"]))  # fmt: skip
    assert "restore minus control, paired by seed" in markdown(summary)

    drawn, close = [], plt.close
    monkeypatch.setattr(plt, "close", drawn.append)  # keep the figures write_report draws, to read them
    try:
        write_report(summary, str(tmp_path))
        (figure,) = [f for f in drawn if f.axes[0].get_xlabel().startswith("test accuracy difference")]
        assert [tick.get_text() for tick in figure.axes[0].get_yticklabels()] == labels
    finally:
        for figure in drawn:
            close(figure)
    assert (tmp_path / DIFFERENCES_FILE).stat().st_size > 0


def test_a_paired_line_is_plotted_only_when_both_its_arms_ran():
    labels = [row.label for row in difference_rows(_every_arm(("standard", "restore", "lp_ft")))]
    assert labels == ["restore", "lp_ft"]
    labels = [row.label for row in difference_rows(_every_arm(("standard", "control", "recommended")))]
    assert labels == ["control", "recommended"]
