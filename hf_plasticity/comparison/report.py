"""The comparison's report, from the confirmation records: each arm's test accuracy (mean and 95% confidence
interval over the seeds), its paired difference to standard fine-tuning (mean and 95% CI of the per-seed differences,
`scipy.stats.ttest_rel(...).confidence_interval()`; for the sweep-free ``recommended`` arm, its regret against the
tuned standard with the sign flipped), the default restore's paired difference to the learning-rate-only control when
both ran (what the re-draw itself adds beyond the learning rate), the recommended recipe's paired difference to LP-FT
(the published anchor, Kumar et al., ICLR 2022) when both ran, the verdict (a sentence for the restore, one for the
restore against the control, one for LP-FT, one for the recommended recipe, one for the recommended recipe against
LP-FT), the learning curves and the difference plot (PNG: each arm against standard, then restore against the control
and the recommended recipe against LP-FT when both ran), and a JSON summary.

Every interval is Student's t interval cut at the range its quantity can take: 0 to 1 for a mean accuracy, -1 to 1 for
a mean paired difference of accuracies (with few seeds near 100% the t interval alone reaches past 100%). The true
value lies in that range, so the cut interval covers it whenever the t interval does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from .arms import (
    CONTROL,
    LP_FT,
    RECOMMENDED,
    RESTORE,
    STANDARD,
    arm_title,
    probe_epochs,
    recorded_probe_fraction,
)

REPORT_FILE, SUMMARY_FILE = "report.md", "summary.json"
CURVES_FILE, DIFFERENCES_FILE = "learning_curves.png", "differences.png"
CONFIDENCE = 0.95
ARM_TITLES = {
    STANDARD: "standard fine-tuning",
    RESTORE: "the default restore",
    CONTROL: "the learning-rate-only control",
    RECOMMENDED: "the recommended recipe",
    LP_FT: "LP-FT (Kumar et al., ICLR 2022; the published anchor: the head alone with the backbone frozen, then "
    "everything)",
}


#: Values this close (on the accuracy scale, 0 to 1) count as equal: accuracies are fractions of a split, so equal ones
#: (or equal paired differences) differ by float rounding at most, and real ones by far more.
EQUAL = 1e-9
ONE_SEED, NO_SPREAD = "one seed", "no spread"
#: The range of a mean accuracy and of a mean paired difference of accuracies: the intervals are cut at them.
ACCURACY_RANGE, DIFFERENCE_RANGE = (0.0, 1.0), (-1.0, 1.0)
INTERVAL_NOTE = (
    "The 95% CIs are Student's t intervals cut at the possible range (0 to 100 for an accuracy, -100 to +100 for a "
    "difference)."
)


def _undefined(values: Sequence[float]) -> str | None:
    """Why the t interval of ``values`` cannot be estimated (``"one seed"``: a single value; ``"no spread"``: all
    equal, so the interval would have zero width whatever the true spread), or None when it can."""
    if len(values) < 2:
        return ONE_SEED
    return NO_SPREAD if max(values) - min(values) <= EQUAL else None


def _t_interval(interval: Any, mean: float, bounds: tuple[float, float]) -> dict[str, Any]:
    """``{"low", "high", "clipped"}``: scipy's t ``interval`` cut at ``bounds``, the range the estimated quantity can
    take (a mean accuracy lies in [0, 1], a mean paired difference of accuracies in [-1, 1]); ``clipped`` says whether
    a bound was cut. The true value lies within ``bounds``, so the cut interval covers it whenever the t interval does:
    its coverage is never below the t interval's. It always holds ``mean``."""
    low, high = float(interval.low), float(interval.high)
    floor, ceiling = min(bounds[0], mean), max(bounds[1], mean)
    return {"low": max(low, floor), "high": min(high, ceiling), "clipped": low < floor or high > ceiling}


def mean_interval(values: Sequence[float], bounds: tuple[float, float] = ACCURACY_RANGE) -> dict[str, Any]:
    """The mean of ``values`` (accuracies, fractions 0 to 1) and its two-sided 95% confidence interval.

    The interval is Student's t interval (`scipy.stats.ttest_1samp(...).confidence_interval()`) cut at ``bounds``:
    with few seeds near 100% (three seeds at 14/14, 11/14, 14/14) the t interval reaches past 100%, which no accuracy
    can; the cut interval covers the true mean whenever the t interval does.

    Args:
        values: one accuracy per seed.
        bounds: the range the mean can take (default ``(0.0, 1.0)``).

    Returns:
        `dict`: ``{"mean", "low", "high", "n", "undefined", "clipped"}``: ``low``/``high`` are None when the interval
        cannot be estimated, and ``undefined`` says why (``"one seed"``, or ``"no spread"``: all values equal; else
        None); ``clipped`` is True when the t interval reached past ``bounds`` and was cut there.
    """
    from scipy import stats

    values = [float(v) for v in values]
    undefined = _undefined(values)
    mean = sum(values) / len(values)
    result: dict[str, Any] = {"mean": mean, "low": None, "high": None, "n": len(values), "undefined": undefined}
    result["clipped"] = False
    if undefined is None:
        result.update(_t_interval(stats.ttest_1samp(values, 0.0).confidence_interval(CONFIDENCE), mean, bounds))
    return result


def paired_difference(
    treatment: Sequence[float], control: Sequence[float], bounds: tuple[float, float] = DIFFERENCE_RANGE
) -> dict[str, Any]:
    """The mean of ``treatment[i] - control[i]`` (accuracies paired by seed) and its two-sided 95% confidence
    interval.

    The interval is the paired t interval (`scipy.stats.ttest_rel(...).confidence_interval()`) cut at ``bounds``: a
    difference of two accuracies lies between -1 and 1.

    Args:
        treatment: one accuracy per seed.
        control: the accuracy of the same seed, in the same order.
        bounds: the range the mean difference can take (default ``(-1.0, 1.0)``).

    Returns:
        `dict`: ``{"mean", "low", "high", "n", "undefined", "clipped"}``: ``low``/``high`` are None with one pair, or
        when every difference is the same (``undefined``: ``"one seed"`` or ``"no spread"``); ``clipped`` is True when
        the t interval reached past ``bounds`` and was cut there.
    """
    from scipy import stats

    differences = [float(t) - float(c) for t, c in zip(treatment, control, strict=True)]
    undefined = _undefined(differences)
    mean = sum(differences) / len(differences)
    result: dict[str, Any] = {"mean": mean, "low": None, "high": None, "n": len(differences), "undefined": undefined}
    result["clipped"] = False
    if undefined is None:
        interval = stats.ttest_rel(list(treatment), list(control)).confidence_interval(CONFIDENCE)
        result.update(_t_interval(interval, mean, bounds))
    return result


def _points(value: float) -> str:
    return f"{100 * value:+.2f}"


def _mean_points(value: float) -> str:
    """A mean difference in signed points; ``"0.00"`` when it rounds to zero at this precision (a rounding residue
    such as the 9.25e-18 of differences that sum to zero is neither above nor below)."""
    shown = _points(value)
    return "0.00" if shown in ("+0.00", "-0.00") else shown


def _direction(difference: dict[str, Any]) -> tuple[int, str]:
    """``(side, size)`` of a mean ``difference`` as the verdict words it: side 1 (above), -1 (below) or 0 (level),
    and the size in points.

    A mean that rounds to 0.00 points (a rounding residue, or a difference below the printed precision) is level,
    unless its interval excludes 0: then it is ``"less than 0.005 points"`` above or below, never "0.00 points".
    """
    mean = difference["mean"]
    size = f"{100 * abs(mean):.2f} points"
    if size != "0.00 points":
        return (1 if mean > 0 else -1), size
    low, high = difference["low"], difference["high"]
    if low is not None and (low > 0 or high < 0):  # a detectable difference too small to print
        return (1 if low > 0 else -1), "less than 0.005 points"
    return 0, ""


def _interval(stat: dict[str, Any], signed: bool = False) -> str:
    if stat["low"] is None:
        if stat.get("undefined") == NO_SPREAD:
            return f"cannot be estimated (no spread over {stat['n']} seeds)"
        return "undefined (1 seed)"
    show = _points if signed else (lambda v: f"{100 * v:.2f}")
    return f"[{show(stat['low'])}, {show(stat['high'])}]"


def _ending(difference: dict[str, Any], meaning: dict[str, str] | None = None) -> str:
    """The end of a verdict: the interval and what it says, or why it cannot say anything yet; ``meaning`` adds what
    a ``"gain"``, a ``"loss"`` or ``"none"`` (no detectable difference) means, after a comma."""
    if difference["low"] is None and difference.get("undefined") == NO_SPREAD:
        return (
            f"on {difference['n']} paired seeds, with the same difference on every one: without any spread the 95% CI "
            "cannot be estimated, so whether the difference is real is not assessable; run more seeds (--seeds)."
        )
    if difference["low"] is None:
        return (
            "on 1 seed: the 95% CI is undefined with one seed, so this says nothing yet; run with --seeds 3 or more."
        )
    low, high, seeds = _points(difference["low"]), _points(difference["high"]), difference["n"]
    interval = f"[95% CI {low}, {high}] over {seeds} paired seeds"
    if difference["low"] > 0:
        finding, key = "a detectable gain", "gain"
    elif difference["high"] < 0:
        finding, key = "a detectable loss", "loss"
    else:
        finding, key = "no detectable difference", "none"
    if meaning:
        finding = f"{finding}, {meaning[key]}"
    return f"{interval}: {finding}."


def verdict(arm: str, difference: dict[str, Any]) -> str:
    """One sentence: how far ``arm`` is from standard fine-tuning on this data, and whether that is detectable; "level
    with" when the mean difference rounds to 0.00 points and its interval does not exclude 0."""
    name = ARM_TITLES.get(arm) or arm_title(arm)  # a strategy arm: "a selective restore", "training with cbp's ..."
    side, size = _direction(difference)
    amount = f"{size} above" if side > 0 else f"{size} below" if side < 0 else "level with"
    return f"On this data {name} is {amount} standard fine-tuning {_ending(difference)}"


def recommended_verdict(difference: dict[str, Any]) -> str:
    """One sentence: how much the sweep-free ``recommended`` arm loses (its regret) or gains against the standard
    fine-tuning tuned on the grid, and whether that is detectable; "matches" when the mean difference rounds to 0.00
    points and its interval does not exclude 0."""
    side, size = _direction(difference)
    amount = f"gains {size} over" if side > 0 else f"loses {size} to" if side < 0 else "matches"
    return (
        f"Without a sweep, the recommended recipe (rates from one diagnostic pass, not tuned) {amount} the tuned "
        f"standard fine-tuning {_ending(difference)}"
    )


#: What the restore's difference to the control means, by finding (`control_verdict`).
REDRAW_MEANING = {
    "gain": "so the re-draw itself adds to what the learning rate alone gives",
    "loss": "so the re-draw itself costs accuracy that the learning rate alone keeps",
    "none": "so the re-draw itself is not shown to add anything beyond the learning rate alone",
}


def control_verdict(difference: dict[str, Any]) -> str:
    """One sentence: whether the re-draw itself adds anything beyond the learning rate, from the paired difference
    of the default restore minus the learning-rate-only control (the same blocks at their own learning rate, not
    re-drawn): a gain of the restore over standard fine-tuning that the control matches is the learning rate's.

    Args:
        difference: `paired_difference` of the restore's accuracies and the control's (summary key
            ``arms.restore.difference_to_control``).

    Returns:
        `str`: the sentence; with one seed, or the same difference on every seed, it says the interval cannot be
        estimated instead of a finding.
    """
    side, size = _direction(difference)
    amount = f"{size} above it" if side > 0 else f"{size} below it" if side < 0 else "level with it"
    return (
        f"Against {ARM_TITLES[CONTROL]} (the same blocks at their own learning rate, not re-drawn), "
        f"{ARM_TITLES[RESTORE]} is {amount} {_ending(difference, REDRAW_MEANING)}"
    )


def anchor_verdict(difference: dict[str, Any]) -> str:
    """One sentence: how the sweep-free ``recommended`` arm does against LP-FT, the published anchor (both on the same
    seeds), and whether that is detectable.

    Args:
        difference: `paired_difference` of the recommended arm's accuracies and LP-FT's (summary key
            ``arms.recommended.difference_to_lp_ft``).
    """
    side, size = _direction(difference)
    amount = f"{size} above it" if side > 0 else f"{size} below it" if side < 0 else "level with it"
    return f"Against LP-FT, the published anchor, {ARM_TITLES[RECOMMENDED]} is {amount} {_ending(difference)}"


def summarize(
    arms: Sequence[str],
    chosen: dict[str, tuple[float, float] | None],
    records: list[dict[str, Any]],
    seeds: Iterable[int] | None = None,
) -> dict[str, Any]:
    """The statistics of the confirmation ``records``, over the seeds every arm has (complete pairs only).

    Args:
        arms: the arms to report, ``standard`` among them.
        chosen: each tuned arm's configuration (its records at other learning rates are left out) and None for an
            untuned arm (its one record per seed trained at the rates its run chose; the summary keeps them under
            ``recipes``, per seed).
        records: the confirmation records.
        seeds: the seeds to report (a comparison run with ``seeds=n`` reports ``range(n)``): records of other seeds,
            left by an earlier run with more seeds, are not pooled in. None reports every recorded seed.

    Returns:
        `dict`: ``seeds`` (those reported), ``arms`` (per arm: ``tuned``, ``backbone_lr``, ``own_lr``,
        ``test_accuracy`` per seed, ``test`` (`mean_interval`), ``val_curves``, ``recipes`` for an untuned arm,
        ``difference_to_standard`` (`paired_difference`) for every arm but standard, for ``restore``, when the
        control ran too, ``difference_to_control``: restore minus control, paired by seed, for ``lp_ft`` its
        ``probe_epochs`` and ``probe_fraction`` (the share of the epochs they were drawn from), and for
        ``recommended``, when ``lp_ft`` ran too, ``difference_to_lp_ft``) and ``verdict``.

    Raises:
        ValueError: when no requested seed has a record of every arm.
    """
    wanted = None if seeds is None else {int(seed) for seed in seeds}
    by_arm: dict[str, dict[int, dict[str, Any]]] = {arm: {} for arm in arms}
    for record in records:
        if record["arm"] not in by_arm or (wanted is not None and record["seed"] not in wanted):
            continue
        rates = chosen[record["arm"]]
        if rates is None or (record["config"]["backbone_lr"], record["config"]["own_lr"]) == tuple(rates):
            by_arm[record["arm"]][record["seed"]] = record
    seeds = sorted(set.intersection(*(set(runs) for runs in by_arm.values())))
    if not seeds:
        raise ValueError("No confirmation run has finished for every arm yet.")
    base = [by_arm[STANDARD][s]["test_accuracy"] for s in seeds]
    result: dict[str, Any] = {"seeds": seeds, "arms": {}}
    for arm in arms:
        accuracies = [by_arm[arm][s]["test_accuracy"] for s in seeds]
        rates = chosen[arm]
        entry = {
            "tuned": rates is not None,
            "backbone_lr": rates[0] if rates else None,
            "own_lr": rates[1] if rates else None,
            "test_accuracy": dict(zip(map(str, seeds), accuracies)),
            "test": mean_interval(accuracies),
            "val_curves": {str(s): by_arm[arm][s]["val_curve"] for s in seeds},
        }
        if rates is None:
            entry["recipes"] = {str(s): by_arm[arm][s]["recipe"] for s in seeds}
        if arm != STANDARD:
            entry["difference_to_standard"] = paired_difference(accuracies, base)
        if arm == LP_FT:
            entry["probe_epochs"] = by_arm[arm][seeds[0]].get("probe_epochs")
            entry["probe_fraction"] = recorded_probe_fraction(by_arm[arm][seeds[0]])
        result["arms"][arm] = entry
    for arm, other, key, _ in PAIRED_LINES:  # restore - control, recommended - lp_ft: paired by seed, when both ran
        if arm in arms and other in arms:
            treated, baseline = ([by_arm[name][s]["test_accuracy"] for s in seeds] for name in (arm, other))
            result["arms"][arm][key] = paired_difference(treated, baseline)
    restores = [arm for arm in arms if arm not in (STANDARD, RECOMMENDED, LP_FT)]
    headline = RESTORE if RESTORE in restores else restores[0] if restores else None
    sentences = [verdict(headline, result["arms"][headline]["difference_to_standard"])] if headline else []
    if headline == RESTORE and "difference_to_control" in result["arms"][RESTORE]:
        sentences.append(control_verdict(result["arms"][RESTORE]["difference_to_control"]))
    if LP_FT in arms:
        sentences.append(verdict(LP_FT, result["arms"][LP_FT]["difference_to_standard"]))
    if RECOMMENDED in arms:
        sentences.append(recommended_verdict(result["arms"][RECOMMENDED]["difference_to_standard"]))
    if "difference_to_lp_ft" in result["arms"].get(RECOMMENDED, {}):
        sentences.append(anchor_verdict(result["arms"][RECOMMENDED]["difference_to_lp_ft"]))
    alone = "Only standard fine-tuning was run: there is nothing to compare it with."
    result["verdict"] = " ".join(sentences) or alone
    return result


def _span(values: Sequence[float], style: str = "g") -> str:
    """``"0.003"``, or ``"3.33e-05 to 0.003"`` when the values differ."""
    low, high = min(values), max(values)
    return f"{low:{style}}" if low == high else f"{low:{style}} to {high:{style}}"


def _rates(entry: dict[str, Any]) -> tuple[str, str]:
    """The table's backbone and own learning rate cells: the tuned configuration, or the range over the seeds of the
    rates the recipe's pass chose."""
    if entry["tuned"]:
        return f"{entry['backbone_lr']:g}", f"{entry['own_lr']:g}"
    recipes = entry["recipes"].values()
    return _span([r["backbone_lr"] for r in recipes], ".3g"), _span([r["head_lr"] for r in recipes], ".3g")


def recipe_note(entry: dict[str, Any]) -> str:
    """What the ``recommended`` arm's diagnostic passes read and chose, over the seeds, in one line."""
    recipes = list(entry["recipes"].values())

    def span(key: str, style: str = "g") -> str:
        return _span([recipe[key] for recipe in recipes], style)

    budgets = " / ".join(sorted({recipe["budget"] for recipe in recipes}))
    return (
        f"recommended (not tuned): recommend_recipe read {span('samples')} training images per seed (shuffled by the "
        f"seed), {budgets} budget, last/peak probe accuracy {span('last_over_peak', '.3f')} "
        f"(threshold {span('threshold', '.4g')}), and chose backbone lr {span('backbone_lr', '.3g')}, head lr "
        f"{span('head_lr', '.3g')}; no re-draw."
    )


def lp_ft_note(entry: dict[str, Any], epochs: int) -> str:
    """What the ``lp_ft`` arm's runs did, in one line: its two phases and their learning rates."""
    probe = entry.get("probe_epochs")
    phases = f"for {probe if probe is not None else probe_epochs(epochs)} of the {epochs} epochs"
    return (
        "lp_ft: LP-FT (Kumar et al., ICLR 2022), the published anchor: the head alone at the own lr, the backbone "
        f"frozen (eval mode), {phases}, then everything (backbone lr, head at the own lr) for the rest; each phase "
        "with its own optimizer and warmup + cosine schedule."
    )


#: The paired differences between two arms other than standard that the report prints and plots when both arms ran:
#: ``(arm, the arm it is compared with, summary key, what it is)``, in the report's order.
PAIRED_LINES = (
    (
        RESTORE,
        CONTROL,
        "difference_to_control",
        "restore minus control, paired by seed (what the re-draw adds beyond the learning rate)",
    ),
    (
        RECOMMENDED,
        LP_FT,
        "difference_to_lp_ft",
        "recommended minus lp_ft, paired by seed (the sweep-free recipe against the published anchor)",
    ),
)


def markdown(summary: dict[str, Any]) -> str:
    """The report: the table, the verdict and the figures, as Markdown."""
    seeds = summary["seeds"]
    rates = "each arm at the learning rates its validation tuning chose"
    if RECOMMENDED in summary["arms"]:
        rates = (
            "each tuned arm at the learning rates its validation tuning chose, recommended at those its diagnostic "
            "pass chose on each seed (not tuned; their range over the seeds)"
        )
    lines = [
        f"# Does a restore help on this data? {summary['settings']['model']} on {summary['settings']['data']}",
        "",
        f"Test accuracy (%) over {len(seeds)} paired seed{'s' if len(seeds) != 1 else ''} "
        f"({', '.join(map(str, seeds))}), {rates}; differences are paired by seed. {INTERVAL_NOTE}",
        "",
        "| arm | backbone lr | own lr | test accuracy | 95% CI | difference to standard | 95% CI |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm, entry in summary["arms"].items():
        test, difference = entry["test"], entry.get("difference_to_standard")
        backbone_lr, own_lr = _rates(entry)
        compared = (
            f"{_mean_points(difference['mean'])} | {_interval(difference, signed=True)}" if difference else "- | -"
        )
        lines.append(
            f"| {arm} | {backbone_lr} | {own_lr} | {100 * test['mean']:.2f} | {_interval(test)} | {compared} |"
        )
    for arm, _, key, what in PAIRED_LINES:
        paired = summary["arms"].get(arm, {}).get(key)
        if paired:
            lines += [
                "",
                f"{what}: {_mean_points(paired['mean'])} points, 95% CI {_interval(paired, signed=True)}.",
            ]
    if LP_FT in summary["arms"]:
        lines += ["", lp_ft_note(summary["arms"][LP_FT], summary["settings"]["epochs"])]
    if RECOMMENDED in summary["arms"]:
        lines += ["", recipe_note(summary["arms"][RECOMMENDED])]
    lines += ["", summary["verdict"], "", f"![learning curves]({CURVES_FILE})", f"![differences]({DIFFERENCES_FILE})"]
    return "\n".join(lines) + "\n"


def plot_curves(summary: dict[str, Any], path: str) -> None:
    """Validation accuracy per epoch of the confirmation runs: each seed thin, the mean over seeds thick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(figsize=(6, 4))
    for index, (arm, entry) in enumerate(summary["arms"].items()):
        color = f"C{index}"
        curves = list(entry["val_curves"].values())
        epochs = range(1, len(curves[0]) + 1)
        for curve in curves:
            axes.plot(epochs, [100 * v for v in curve], color=color, alpha=0.25, linewidth=1)
        mean = [100 * sum(values) / len(values) for values in zip(*curves)]
        axes.plot(epochs, mean, color=color, linewidth=2, marker="o", label=arm)
    axes.set(xlabel="epoch", ylabel="validation accuracy (%)", title="Learning curves (confirmation seeds)")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


class DifferenceRow(NamedTuple):
    """One row of ``differences.png``: a paired difference of test accuracies, in points (percent).

    Attributes:
        label: the row's name: the arm (its difference to standard fine-tuning), or ``"restore - control"`` for a
            paired line between two other arms ([`PAIRED_LINES`]).
        points: the per-seed differences, in the summary's seed order.
        mean: their mean.
        low, high: the mean's 95% CI (None when it is undefined: one seed, or no spread).
    """

    label: str
    points: list[float]
    mean: float
    low: float | None
    high: float | None


def _difference_row(
    label: str, treatment: dict[str, float], control: dict[str, float], stat: dict[str, Any]
) -> DifferenceRow:
    """A [`DifferenceRow`] from two arms' per-seed accuracies and their `paired_difference`."""
    points = [100 * (treatment[seed] - control[seed]) for seed in control]
    low, high = stat["low"], stat["high"]
    return DifferenceRow(
        label, points, 100 * stat["mean"], None if low is None else 100 * low, None if high is None else 100 * high
    )


def difference_rows(summary: dict[str, Any]) -> list[DifferenceRow]:
    """The rows ``differences.png`` plots: each arm's paired difference to standard fine-tuning, then each of the
    [`PAIRED_LINES`] whose arms both ran (restore minus control, recommended minus lp_ft), as the text report and
    ``summary.json`` hold them.

    Args:
        summary: the comparison's summary ([`summarize`]).
    """
    arms = summary["arms"]
    base = arms[STANDARD]["test_accuracy"]
    rows = [
        _difference_row(arm, entry["test_accuracy"], base, entry["difference_to_standard"])
        for arm, entry in arms.items()
        if arm != STANDARD
    ]
    for arm, other, key, _ in PAIRED_LINES:
        paired = arms.get(arm, {}).get(key)
        if paired and other in arms:
            label = f"{arm} - {other}"
            rows.append(_difference_row(label, arms[arm]["test_accuracy"], arms[other]["test_accuracy"], paired))
    return rows


def plot_differences(summary: dict[str, Any], path: str) -> None:
    """The per-seed test-accuracy differences (dots) of every row of [`difference_rows`] (each arm minus standard,
    then the paired lines between two other arms that ran), with the mean and its 95% CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = difference_rows(summary)
    figure, axes = plt.subplots(figsize=(6, 1.5 + 0.6 * max(len(rows), 1)))
    for index, row in enumerate(rows):
        axes.scatter(row.points, [index] * len(row.points), color="0.5", zorder=2)
        if row.low is not None and row.high is not None:
            error = [[row.mean - row.low], [row.high - row.mean]]
            axes.errorbar([row.mean], [index], xerr=error, fmt="o", color="C3", capsize=4, zorder=3)
        else:
            axes.plot([row.mean], [index], "o", color="C3", zorder=3)
    axes.axvline(0, color="black", linewidth=1)
    against_standard = len(summary["arms"]) - 1  # the first rows; the paired lines between two other arms after them
    if len(rows) > against_standard:
        axes.axhline(against_standard - 0.5, color="0.7", linewidth=1, linestyle="--")
    axes.set_yticks(range(len(rows)), [row.label for row in rows])
    axes.set_ylim(-0.7, max(len(rows), 1) - 0.3)
    what = "an arm minus standard fine-tuning, or the pair named"
    axes.set(xlabel=f"test accuracy difference (points; mean and 95% CI):\n{what}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_report(summary: dict[str, Any], directory: str) -> str:
    """Writes ``report.md``, ``summary.json`` and the two figures into ``directory``; returns the Markdown."""
    text = markdown(summary)
    plot_curves(summary, os.path.join(directory, CURVES_FILE))
    plot_differences(summary, os.path.join(directory, DIFFERENCES_FILE))
    with open(os.path.join(directory, SUMMARY_FILE), "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2, sort_keys=True, allow_nan=False)
        handle.write("\n")
    with open(os.path.join(directory, REPORT_FILE), "w", encoding="utf-8") as handle:
        handle.write(text)
    return text
