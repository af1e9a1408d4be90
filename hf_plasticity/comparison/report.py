"""The comparison's report, from the confirmation records: each arm's test accuracy (mean and 95% confidence
interval over the seeds), its paired difference to standard fine-tuning (mean and 95% CI of the per-seed differences,
`scipy.stats.ttest_rel(...).confidence_interval()`; for the sweep-free ``recommended`` arm, its regret against the
tuned standard with the sign flipped), the verdict (a sentence for the restore, one for the recommended recipe), the
learning curves and the difference plot (PNG), and a JSON summary.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from .arms import CONTROL, RECOMMENDED, RESTORE, STANDARD, arm_title

REPORT_FILE, SUMMARY_FILE = "report.md", "summary.json"
CURVES_FILE, DIFFERENCES_FILE = "learning_curves.png", "differences.png"
CONFIDENCE = 0.95
ARM_TITLES = {
    STANDARD: "standard fine-tuning",
    RESTORE: "the default restore",
    CONTROL: "the learning-rate-only control",
    RECOMMENDED: "the recommended recipe",
}


#: Values this close (on the accuracy scale, 0 to 1) count as equal: accuracies are fractions of a split, so equal ones
#: (or equal paired differences) differ by float rounding at most, and real ones by far more.
EQUAL = 1e-9
ONE_SEED, NO_SPREAD = "one seed", "no spread"


def _undefined(values: Sequence[float]) -> str | None:
    """Why the t interval of ``values`` cannot be estimated (``"one seed"``: a single value; ``"no spread"``: all
    equal, so the interval would have zero width whatever the true spread), or None when it can."""
    if len(values) < 2:
        return ONE_SEED
    return NO_SPREAD if max(values) - min(values) <= EQUAL else None


def mean_interval(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "low", "high", "n", "undefined"}``: the mean of ``values`` and its two-sided 95% t interval
    (`scipy.stats`); ``low``/``high`` are None when it cannot be estimated, and ``undefined`` says why (``"one seed"``,
    or ``"no spread"``: all values equal; else None)."""
    from scipy import stats

    values = [float(v) for v in values]
    undefined = _undefined(values)
    result: dict[str, Any] = {"mean": sum(values) / len(values), "low": None, "high": None, "n": len(values)}
    result["undefined"] = undefined
    if undefined is None:
        interval = stats.ttest_1samp(values, 0.0).confidence_interval(CONFIDENCE)
        result.update(low=float(interval.low), high=float(interval.high))
    return result


def paired_difference(treatment: Sequence[float], control: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "low", "high", "n", "undefined"}``: the mean of ``treatment[i] - control[i]`` (paired by seed) and
    its 95% CI from `scipy.stats.ttest_rel`; ``low``/``high`` are None with one pair, or when every difference is the
    same (``undefined``: ``"one seed"`` or ``"no spread"``)."""
    from scipy import stats

    differences = [float(t) - float(c) for t, c in zip(treatment, control, strict=True)]
    undefined = _undefined(differences)
    result: dict[str, Any] = {"mean": sum(differences) / len(differences), "low": None, "high": None}
    result.update(n=len(differences), undefined=undefined)
    if undefined is None:
        interval = stats.ttest_rel(list(treatment), list(control)).confidence_interval(CONFIDENCE)
        result.update(low=float(interval.low), high=float(interval.high))
    return result


def _points(value: float) -> str:
    return f"{100 * value:+.2f}"


def _interval(stat: dict[str, Any], signed: bool = False) -> str:
    if stat["low"] is None:
        if stat.get("undefined") == NO_SPREAD:
            return f"cannot be estimated (no spread over {stat['n']} seeds)"
        return "undefined (1 seed)"
    show = _points if signed else (lambda v: f"{100 * v:.2f}")
    return f"[{show(stat['low'])}, {show(stat['high'])}]"


def _ending(difference: dict[str, Any]) -> str:
    """The end of a verdict: the interval and what it says, or why it cannot say anything yet."""
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
        finding = "a detectable gain"
    elif difference["high"] < 0:
        finding = "a detectable loss"
    else:
        finding = "no detectable difference"
    return f"{interval}: {finding}."


def verdict(arm: str, difference: dict[str, Any]) -> str:
    """One sentence: how far ``arm`` is from standard fine-tuning on this data, and whether that is detectable."""
    name = ARM_TITLES.get(arm) or arm_title(arm)  # a strategy arm: "a selective restore", "training with cbp's ..."
    points = abs(100 * difference["mean"])
    side = "above" if difference["mean"] > 0 else "below" if difference["mean"] < 0 else "level with"
    amount = f"{points:.2f} points {side}" if side != "level with" else "level with"
    return f"On this data {name} is {amount} standard fine-tuning {_ending(difference)}"


def recommended_verdict(difference: dict[str, Any]) -> str:
    """One sentence: how much the sweep-free ``recommended`` arm loses (its regret) or gains against the standard
    fine-tuning tuned on the grid, and whether that is detectable."""
    points = abs(100 * difference["mean"])
    if difference["mean"] < 0:
        amount = f"loses {points:.2f} points to"
    elif difference["mean"] > 0:
        amount = f"gains {points:.2f} points over"
    else:
        amount = "matches"
    return (
        f"Without a sweep, the recommended recipe (rates from one diagnostic pass, not tuned) {amount} the tuned "
        f"standard fine-tuning {_ending(difference)}"
    )


def summarize(
    arms: Sequence[str], chosen: dict[str, tuple[float, float] | None], records: list[dict[str, Any]]
) -> dict[str, Any]:
    """The statistics of the confirmation ``records``, over the seeds every arm has (complete pairs only).

    ``chosen`` holds each tuned arm's configuration (its records at other learning rates are left out) and None for
    an untuned arm (its one record per seed trained at the rates its run chose; the summary keeps them under
    ``recipes``, per seed).
    """
    by_arm: dict[str, dict[int, dict[str, Any]]] = {arm: {} for arm in arms}
    for record in records:
        if record["arm"] not in by_arm:
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
        result["arms"][arm] = entry
    restores = [arm for arm in arms if arm not in (STANDARD, RECOMMENDED)]
    headline = RESTORE if RESTORE in restores else restores[0] if restores else None
    sentences = [verdict(headline, result["arms"][headline]["difference_to_standard"])] if headline else []
    if RECOMMENDED in arms:
        sentences.append(recommended_verdict(result["arms"][RECOMMENDED]["difference_to_standard"]))
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
        f"({', '.join(map(str, seeds))}), {rates}; differences are paired by seed.",
        "",
        "| arm | backbone lr | own lr | test accuracy | 95% CI | difference to standard | 95% CI |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm, entry in summary["arms"].items():
        test, difference = entry["test"], entry.get("difference_to_standard")
        backbone_lr, own_lr = _rates(entry)
        lines.append(
            f"| {arm} | {backbone_lr} | {own_lr} | {100 * test['mean']:.2f} | {_interval(test)} | "
            + (f"{_points(difference['mean'])} | {_interval(difference, signed=True)} |" if difference else "- | - |")
        )
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


def plot_differences(summary: dict[str, Any], path: str) -> None:
    """Each arm's per-seed test-accuracy difference to standard (dots), with the mean and its 95% CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = [arm for arm in summary["arms"] if arm != STANDARD]
    figure, axes = plt.subplots(figsize=(6, 1.5 + 0.6 * max(len(arms), 1)))
    base = summary["arms"][STANDARD]["test_accuracy"]
    for row, arm in enumerate(arms):
        entry = summary["arms"][arm]
        points = [100 * (entry["test_accuracy"][seed] - base[seed]) for seed in base]
        axes.scatter(points, [row] * len(points), color="0.5", zorder=2)
        difference = entry["difference_to_standard"]
        mean = 100 * difference["mean"]
        if difference["low"] is not None:
            error = [[mean - 100 * difference["low"]], [100 * difference["high"] - mean]]
            axes.errorbar([mean], [row], xerr=error, fmt="o", color="C3", capsize=4, zorder=3)
        else:
            axes.plot([mean], [row], "o", color="C3", zorder=3)
    axes.axvline(0, color="black", linewidth=1)
    axes.set_yticks(range(len(arms)), arms)
    axes.set_ylim(-0.7, max(len(arms), 1) - 0.3)
    axes.set(xlabel="test accuracy minus standard fine-tuning (points; mean and 95% CI)")
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
