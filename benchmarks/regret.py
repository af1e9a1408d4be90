"""The sweep-free recipe's regret on test: how much each arm loses to the tuned standard arm (version 3).

The issue's question is what one fine-tune without a sweep costs. On every confirmed (model, target, budget) pair,
an arm's **regret** is the tuned standard arm's final test accuracy minus the arm's, paired by seed (points; positive:
the arm loses), with its mean and 95% t-interval over the seeds. Every arm but ``standard`` is reported where its
confirmation is complete: every seed the standard arm confirmed, paired on one device when the folder's protocol says
so (`benchmarks.study_report`'s rule). Per group (budget x atypical or in-domain data x CNN or ViT) the pooled regret
is the mean over the pairs of each pair's mean regret, with the t-interval across pairs (`benchmarks.pooled`'s
estimate; a CI across pairs needs `MIN_PAIRS`: one pair shows its CI over seeds, two their mean alone), beside the
worst pair and the epochs each arm's mean test curve takes to reach the tuned standard arm's final mean test accuracy.
The issue's targets are checked per group and arm.

Run from the repository root::

    python -m benchmarks regret benchmarks/results/v3 --doc docs/BENCHMARKS.md \
        --plot benchmarks/results/v3/regret.png --headline benchmarks/results/v3/headline.png
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from .pooled import MIN_PAIRS, table_in_doc, write_into_doc
from .pretrain import save_figure
from .restore_rule import CANDIDATE, candidate_runs
from .stats import Interval, mean_interval, paired_difference
from .study import CONFIRMATION_SEEDS
from .study_report import (
    Row,
    _paired_seeds,
    confirmation_runs,
    confirmed_pairs,
    device_of,
    first_epoch_reaching,
    result_files,
    same_device,
)

#: A pair counts once its tuned standard arm is confirmed on this many seeds (the study's confirmation seeds): records
#: committed while a study runs hold pairs part-way through their confirmation.
MIN_SEEDS = len(CONFIRMATION_SEEDS)
#: The arms whose regret the issue asks for, in the tables' order; any other arm follows, by name.
KNOWN_ARMS = (
    "recipe",
    "recipe_heldout",
    CANDIDATE,
    "lp_ft",
    "standard_fixed",
    "reinit_top_fixed",
    "boost_top_fixed",
    "auto_fixed",
    "layer_decay_fixed",
    "dash_fixed",
    "shrink_perturb_fixed",
)
#: The arms of the headline figure (the README's first): the recipe, what a user without a sweep or a recipe runs
#: (standard fine-tuning at its best fixed default) and the published anchor (LP-FT, tuned like the standard arm).
HEADLINE_ARMS = ("recipe", "standard_fixed", "lp_ft")
HEADLINE_TITLE = (
    "One fine-tune without a sweep: test points lost to a standard fine-tune tuned on validation\n"
    "recipe: rates from one diagnostic pass; standard_fixed: rates fitted on the other pairs; lp_ft: LP-FT, tuned"
)
#: The issue's targets (points): pooled regret at most `TARGET_MEAN` with the CI's upper end at most `TARGET_HIGH`,
#: and no pair's regret above `TARGET_WORST`.
TARGET_MEAN, TARGET_HIGH, TARGET_WORST = 0.5, 1.0, 2.0
#: The markers in a Markdown document between which `--doc` puts the tables.
DOC_MARKERS = ("<!-- regret table -->", "<!-- /regret table -->")
#: The budgets in the tables' order (any other after them).
BUDGET_ORDER = ("short", "long")


@dataclass(frozen=True)
class PairRegret:
    """One arm's regret on one (model, target, budget).

    Attributes:
        model / target / budget: the pair.
        atypical: whether the target is atypical for the model's pretraining (else an in-domain control).
        vit: whether the model is a ViT (else a CNN).
        arm: the arm.
        regret: the tuned standard arm's final test % minus the arm's, paired by seed: mean and 95% CI over seeds.
        epochs: the first epoch at which the arm's mean test curve reaches the standard arm's final mean test
            accuracy; ``budget_epochs + 1`` when it never does.
        standard_epochs: the same for the standard arm's own mean test curve.
        budget_epochs: the epochs of the budget.
    """

    model: str
    target: str
    budget: str
    atypical: bool
    vit: bool
    arm: str
    regret: Interval
    epochs: int
    standard_epochs: int
    budget_epochs: int

    @property
    def name(self) -> str:
        return f"{self.model} {self.target}"

    @property
    def never(self) -> bool:
        """Whether the arm's mean test curve never reached the standard arm's final mean."""
        return self.epochs > self.budget_epochs

    @property
    def group(self) -> tuple[str, bool, bool]:
        return self.budget, self.atypical, self.vit


def arm_order(arms: set[str] | list[str]) -> list[str]:
    """``arms`` in the tables' order: `KNOWN_ARMS` first, then the others by name."""
    known = [arm for arm in KNOWN_ARMS if arm in arms]
    return known + sorted(set(arms) - set(KNOWN_ARMS))


def _group_key(group: tuple[str, bool, bool]) -> tuple:
    budget, atypical, vit = group
    rank = BUDGET_ORDER.index(budget) if budget in BUDGET_ORDER else len(BUDGET_ORDER)
    return rank, budget, not atypical, vit


def regret_pairs(files: list[tuple[str, str, list[Row]]], one_device: bool) -> list[Row]:
    """The rows of `confirmed_pairs` with ``curves`` added (arm -> seed -> confirmation test curve, %), and the
    candidate rule's runs (`restore_rule.CANDIDATE`, `restore_rule.candidate_runs`) as an arm of its own."""
    records = {(model, target): rows for model, target, rows in files}
    pairs = confirmed_pairs(files, one_device)
    for pair in pairs:
        runs = confirmation_runs(records[pair["model"], pair["target"]], pair["budget"])
        chosen = candidate_runs(runs, pair["vit"])
        if chosen is not None:  # the pre-registered candidate rule, assembled from the recipe's and auto_fixed's runs
            runs[CANDIDATE] = chosen
            pair["final"][CANDIDATE] = {seed: 100 * r["test_acc"][-1] for seed, r in chosen.items()}
            pair["devices"][CANDIDATE] = {seed: device_of(r) for seed, r in chosen.items()}
        pair["curves"] = {
            arm: {seed: [100 * acc for acc in r["test_acc"]] for seed, r in by_seed.items()}
            for arm, by_seed in runs.items()
        }
    return pairs


def mean_curve(curves: dict[int, list[float]], seeds: set[int]) -> list[float]:
    """The mean over ``seeds`` (in seed order) of the test curves, epoch by epoch."""
    ordered = sorted(seeds)
    return [sum(curves[s][e] for s in ordered) / len(ordered) for e in range(len(curves[ordered[0]]))]


def _complete(pair: Row, arm: str) -> set[int] | None:
    """The seeds ``arm`` pairs with standard on, when they are all of standard's (at least 2); else None."""
    seeds = _paired_seeds(pair, arm, "standard")
    return seeds if len(seeds) >= 2 and seeds == set(pair["final"]["standard"]) else None


def pair_regrets(pairs: list[Row], min_seeds: int | None = None) -> list[PairRegret]:
    """Every complete arm's `PairRegret` on every pair of `regret_pairs` whose tuned standard arm is confirmed on
    ``min_seeds`` seeds (None: `MIN_SEEDS`)."""
    min_seeds = MIN_SEEDS if min_seeds is None else min_seeds
    out = []
    for pair in pairs:
        standard = pair["curves"]["standard"]
        if len(standard) < min_seeds:  # part-way through its confirmation: `incomplete` notes it
            continue
        level = mean_curve(standard, set(standard))[-1]
        epochs = len(next(iter(standard.values())))
        standard_epochs = first_epoch_reaching(mean_curve(standard, set(standard)), level) or epochs + 1
        for arm in arm_order([arm for arm in pair["final"] if arm != "standard"]):
            seeds = _complete(pair, arm)
            if seeds is None:
                continue
            regret = paired_difference({s: pair["final"]["standard"][s] for s in seeds}, pair["final"][arm])
            reached = first_epoch_reaching(mean_curve(pair["curves"][arm], seeds), level)
            where = {key: pair[key] for key in ("model", "target", "budget", "atypical", "vit")}
            out.append(PairRegret(**where, arm=arm, regret=regret, epochs=reached or epochs + 1,
                                  standard_epochs=standard_epochs, budget_epochs=epochs))  # fmt: skip
    return out


def incomplete(pairs: list[Row], min_seeds: int | None = None) -> list[str]:
    """The arms left out of a pair, with how many of standard's seeds they pair on (and on another device)."""
    min_seeds = MIN_SEEDS if min_seeds is None else min_seeds
    notes = []
    for pair in pairs:
        standard = set(pair["final"]["standard"])
        if len(standard) < min_seeds:
            notes.append(
                f"{pair['model']} {pair['target']} ({pair['budget']}): the tuned standard arm is confirmed on "
                f"{len(standard)} of {min_seeds} seeds so far"
            )
            continue
        for arm in arm_order([arm for arm in pair["final"] if arm != "standard"]):
            if _complete(pair, arm) is None:
                paired = _paired_seeds(pair, arm, "standard")
                other = len(standard & set(pair["final"][arm]) - paired)
                device = f", {other} on another device" if other else ""
                notes.append(
                    f"{arm} on {pair['model']} {pair['target']} ({pair['budget']}): {len(paired)} of "
                    f"{len(standard)} seeds{device}"
                )
    return notes


@dataclass(frozen=True)
class GroupRegret:
    """One arm's regret over the pairs of one group (budget, kind of data, family)."""

    budget: str
    atypical: bool
    vit: bool
    arm: str
    pairs: list[PairRegret]

    @property
    def label(self) -> str:
        return f"{self.budget} | {'atypical' if self.atypical else 'in-domain'} | {'ViT' if self.vit else 'CNN'}"

    @property
    def pooled(self) -> Interval:
        """The mean over pairs of the per-pair mean regret, with the t-interval across pairs; one pair: its own
        interval over seeds."""
        if len(self.pairs) == 1:
            return self.pairs[0].regret
        return mean_interval([p.regret.mean for p in self.pairs])

    @property
    def worst(self) -> PairRegret:
        return max(self.pairs, key=lambda p: p.regret.mean)

    @property
    def epochs(self) -> tuple[float, float]:
        """The mean over pairs of the arm's epochs to reach, and of the standard arm's."""
        n = len(self.pairs)
        return sum(p.epochs for p in self.pairs) / n, sum(p.standard_epochs for p in self.pairs) / n


def groups(regrets: list[PairRegret]) -> list[GroupRegret]:
    """One `GroupRegret` per group and arm, groups in order (short first, atypical first, CNN first)."""
    keys = sorted({r.group for r in regrets}, key=_group_key)
    out = []
    for key in keys:
        members = [r for r in regrets if r.group == key]
        for arm in arm_order({r.arm for r in members}):
            out.append(GroupRegret(*key, arm, [r for r in members if r.arm == arm]))
    return out


def pooled_cell(group: GroupRegret) -> str:
    """The pooled regret as the tables show it: a CI across pairs needs `MIN_PAIRS` pairs."""
    n = len(group.pairs)
    if n == 1:
        return f"{group.pooled} (1 pair: CI over seeds)"
    if n < MIN_PAIRS:
        return f"{group.pooled.mean:+.2f} ({n} pairs: no CI)"
    return str(group.pooled)


def _verdict(excess: float) -> str:
    return "met" if excess <= 1e-9 else f"missed by {excess:.2f}"


def targets(group: GroupRegret) -> tuple[str, str, str]:
    """The verdicts on the issue's three targets: pooled regret (mean and CI's upper end), worst pair, epochs to reach
    (the arm's pooled mean at most the standard arm's). Below `MIN_PAIRS` pairs each reads "not enough pairs", but a
    worst pair already above `TARGET_WORST` (more pairs cannot lower it)."""
    enough = len(group.pairs) >= MIN_PAIRS
    pooled, (arm_epochs, standard_epochs) = group.pooled, group.epochs
    regret = _verdict(max(pooled.mean - TARGET_MEAN, pooled.high - TARGET_HIGH))
    worst = _verdict(group.worst.regret.mean - TARGET_WORST)
    epochs = _verdict(arm_epochs - standard_epochs)
    if not enough:
        regret, epochs = "not enough pairs", "not enough pairs"
        worst = worst if worst != "met" else "not enough pairs"
    return regret, worst, epochs


def _epochs_cell(epochs: int, never: bool) -> str:
    return f"{epochs} (never)" if never else str(epochs)


def markdown(regrets: list[PairRegret], notes: Sequence[str] = ()) -> list[str]:
    """The report's Markdown lines: the per-pair regrets and epochs to reach, the groups and the targets."""
    left_out = ["Left out (confirmation incomplete or paired across devices): " + "; ".join(notes) + ".", ""]
    left_out = left_out if notes else []
    if not regrets:
        return ["No pair has a complete confirmation of an arm besides the tuned standard arm yet.", "", *left_out]
    arms = arm_order({r.arm for r in regrets})
    keys = sorted({(r.group, r.model, r.target) for r in regrets}, key=lambda k: (_group_key(k[0]), k[1], k[2]))
    cells = {(r.group, r.model, r.target, r.arm): r for r in regrets}
    header = "| pair | budget | data | family | " + " | ".join(arms) + " |"
    rule = "|---|---|---|---|" + "---:|" * len(arms)
    regret_rows, epoch_rows = [], []
    for group, model, target in keys:
        found = [cells.get((group, model, target, arm)) for arm in arms]
        first = next(r for r in found if r is not None)
        lead = f"| {model} {target} | {group[0]} | {'atypical' if group[1] else 'in-domain'} | "
        lead += f"{'ViT' if group[2] else 'CNN'} | "
        regret_rows.append(lead + " | ".join("–" if r is None else str(r.regret) for r in found) + " |")
        epochs = [f"{first.standard_epochs}"] + ["–" if r is None else _epochs_cell(r.epochs, r.never) for r in found]
        epoch_rows.append(lead + " | ".join(epochs) + " |")
    lines = [
        "Regret: the tuned standard arm's final test % minus the arm's, paired by seed (points; positive: the arm "
        "loses).",
        "",
        "#### Per pair: regret (points, mean [95% CI over seeds])",
        "",
        header,
        rule,
        *regret_rows,
        "",
        "#### Per pair: epochs for the mean test curve to reach the tuned standard's final mean",
        "",
        "| pair | budget | data | family | standard | " + " | ".join(arms) + " |",
        rule + "---:|",
        *epoch_rows,
        "",
    ]
    lines += left_out
    found_groups = groups(regrets)
    lines += [
        "#### Per group",
        "",
        "| budget | data | family | arm | pairs | pooled regret (points, 95% CI across pairs) | worst pair | "
        "epochs to reach: arm / standard |",
        "|---|---|---|---|---:|---:|---|---:|",
    ]
    for g in found_groups:
        never = sum(p.never for p in g.pairs)
        flag = f" ({never} never)" if never else ""
        lines.append(
            f"| {g.label} | {g.arm} | {len(g.pairs)} | {pooled_cell(g)} | {g.worst.name} {g.worst.regret.mean:+.2f} | "
            f"{g.epochs[0]:.2f}{flag} / {g.epochs[1]:.2f} |"
        )
    lines += [
        "",
        "#### Targets of the issue",
        "",
        f"Missed by X: X points above the target (the larger of the pooled mean's excess over {TARGET_MEAN:.1f} and "
        f"its CI's upper end's over {TARGET_HIGH:.1f}), or X epochs more than the tuned standard's. Below {MIN_PAIRS} "
        "pairs a verdict reads not enough pairs, except a worst pair already above its target (more pairs cannot "
        "lower it).",
        "",
        f"| budget | data | family | arm | pairs | regret <= {TARGET_MEAN:.1f}, CI's upper end <= {TARGET_HIGH:.1f} | "
        f"worst pair <= {TARGET_WORST:.1f} | epochs to reach <= standard's |",
        "|---|---|---|---|---:|---|---|---|",
    ]
    lines += [f"| {g.label} | {g.arm} | {len(g.pairs)} | " + " | ".join(targets(g)) + " |" for g in found_groups]
    return lines


def select(found: list[GroupRegret], arms: Sequence[str]) -> list[GroupRegret]:
    """The rows of ``arms`` alone: groups in their order, the arms in the order given within each group."""
    chosen = [g for arm in arms for g in found if g.arm == arm]
    return sorted(chosen, key=lambda g: _group_key((g.budget, g.atypical, g.vit)))  # stable: the arms' order


#: A panel's x-axis reaches at most this far either side of 0 (points): one arm's wide interval (standard at its
#: fixed default on the long ViT pairs: -45 to +72) would squeeze the other arms' points to one line. What lies
#: beyond is written at the panel's edge (`beyond_reach`).
AXIS_REACH = 12.0


def axis_limits(intervals: Sequence[Interval], reach: float = AXIS_REACH) -> tuple[float, float] | None:
    """A panel's x-limits when its ``intervals`` (or 0) reach beyond ``reach`` points (None: let matplotlib choose).

    Example:

    ```python
    >>> from benchmarks.regret import axis_limits
    >>> from benchmarks.stats import Interval
    >>> axis_limits([Interval(0.1, -0.3, 0.5, 3, 0.2)]) is None
    True
    >>> axis_limits([Interval(0.1, -0.3, 0.5, 3, 0.2), Interval(13.6, 2.0, 72.3, 3, 24.0)])
    (-1.5, 12.0)
    >>> axis_limits([Interval(0.1, -0.3, 0.5, 3, 0.2), Interval(13.6, -45.0, 72.3, 3, 24.0)])
    (-12.0, 12.0)

    ```
    """
    low = min(0.0, *(i.low for i in intervals))
    high = max(0.0, *(i.high for i in intervals))
    if -reach <= low and high <= reach:
        return None
    inside = [v for i in intervals for v in (i.low, i.mean, i.high) if -reach <= v <= reach] + [0.0]
    margin = 0.1 * reach
    left = -reach if low < -reach else max(-reach, min(inside) - margin)
    right = reach if high > reach else min(reach, max(inside) + margin)
    return round(left, 6), round(right, 6)


def beyond_reach(interval: Interval, limits: tuple[float, float]) -> tuple[str, bool] | None:
    """For an interval that leaves a panel's ``limits``: the text written at the panel's edge, and whether that edge
    is the right one (the side it leaves by; both sides: its mean's). None: it stays inside.

    Example:

    ```python
    >>> from benchmarks.regret import beyond_reach
    >>> from benchmarks.stats import Interval
    >>> beyond_reach(Interval(13.6, -45.0, 72.3, 3, 24.0), (-12.0, 12.0))
    ('+13.6 [-45.0, +72.3]', True)
    >>> beyond_reach(Interval(3.0, -20.0, 5.0, 3, 9.0), (-12.0, 12.0))
    ('+3.0 [-20.0, +5.0]', False)

    ```
    """
    left, right = limits
    leaves_left, leaves_right = interval.low < left, interval.high > right
    if not (leaves_left or leaves_right):
        return None
    at_right = leaves_right if leaves_left != leaves_right else interval.mean > 0
    return f"{interval.mean:+.1f} [{interval.low:+.1f}, {interval.high:+.1f}]", at_right


def plot(
    found: list[GroupRegret], path: str | Path, arms: Sequence[str] | None = None, title: str | None = None
) -> Path:
    """One panel per group: each arm's pooled regret with its 95% CI (across pairs; one pair: over its seeds; two:
    the mean alone), 0 and the `TARGET_MEAN` marked; only ``arms`` (in their order) when given; ``title`` above the
    figure's reading notes."""
    found = select(found, arms) if arms is not None else found
    if not found:
        asked = f"of the arms {list(arms)} " if arms is not None else ""
        raise ValueError(f"No regret {asked}to plot: none is confirmed on a pair yet.")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(g.label for g in found))
    columns = min(2, len(labels))
    rows_of_panels = -(-len(labels) // columns)
    height = 2.0 + 0.4 * max(sum(g.label == label for g in found) for label in labels)
    fig, axes = plt.subplots(rows_of_panels, columns, figsize=(5.2 * columns, height * rows_of_panels), squeeze=False)
    for ax in axes.flat[len(labels) :]:
        ax.set_visible(False)
    for ax, label in zip(axes.flat, labels):
        rows = [g for g in found if g.label == label]
        # two pairs: the mean alone (no interval across two)
        shown = [replace(g.pooled, low=g.pooled.mean, high=g.pooled.mean) if 1 < len(g.pairs) < MIN_PAIRS
                 else g.pooled for g in rows]  # fmt: skip
        limits = axis_limits(shown)
        for y, (g, est) in enumerate(zip(rows, shown)):
            xerr = [[est.mean - est.low], [est.high - est.mean]] if est.low < est.high else None
            color = "tab:blue" if len(g.pairs) >= MIN_PAIRS else "tab:gray"
            ax.errorbar(est.mean, y, xerr=xerr, fmt="o", color=color, capsize=3)
            beyond = beyond_reach(est, limits) if limits is not None else None
            if beyond is not None:  # the interval leaves the axis: its numbers at the edge it leaves by
                note, right = beyond
                edge = limits[1] if right else limits[0]
                if not limits[0] <= est.mean <= limits[1]:  # the mean itself is off the axis: an arrowhead there
                    ax.plot(edge, y, marker=">" if right else "<", color=color, clip_on=False)
                ax.annotate(note, (edge, y), xytext=(-4 if right else 4, -8),
                            textcoords="offset points", ha="right" if right else "left", va="top", fontsize=7,
                            color=color)  # fmt: skip
        if limits is not None:
            ax.set_xlim(*limits)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.axvline(TARGET_MEAN, color="tab:red", linewidth=0.8, linestyle="--")
        ax.set_yticks(range(len(rows)), [f"{g.arm} ({len(g.pairs)})" for g in rows])
        ax.invert_yaxis()
        ax.set_title(label.replace(" | ", ", "), fontsize=9)
        ax.set_xlabel("regret vs tuned standard, points")
        ax.grid(axis="x", alpha=0.3)
    title = title or "Regret: the tuned standard's final test accuracy minus the arm's"
    title += f"\n(pairs in brackets; dashed: the {TARGET_MEAN:g}-point target;\n95% CI: across pairs from "
    title += f"{MIN_PAIRS} pairs, over seeds for 1)"
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)


def report(results: str | Path, min_seeds: int | None = None) -> tuple[list[PairRegret], list[str]]:
    """The regrets of a results folder's committed records, and the notes on the arms left out; a pair counts once
    its tuned standard arm is confirmed on ``min_seeds`` seeds (None: `MIN_SEEDS`, the study's 10)."""
    pairs = regret_pairs(list(result_files(results)), same_device(results))
    return pair_regrets(pairs, min_seeds), incomplete(pairs, min_seeds)


def doc_block(doc: str | Path) -> list[str]:
    """The lines between the `DOC_MARKERS` of ``doc`` (what ``--doc`` put there)."""
    return table_in_doc(doc, DOC_MARKERS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks regret", description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="?", default="benchmarks/results/v3", help="Folder of v3 records.")
    parser.add_argument("--doc", metavar="MD", help=f"Also write the tables between {DOC_MARKERS} of this file.")
    parser.add_argument("--plot", metavar="PNG", help="Also write the figure there.")
    parser.add_argument(
        "--headline", metavar="PNG", help=f"Also write the figure of {', '.join(HEADLINE_ARMS)} alone there."
    )
    parser.add_argument(
        "--seeds",
        type=int,
        default=MIN_SEEDS,
        help=f"Confirmation seeds a pair needs to count (default {MIN_SEEDS}, the study's; fewer: a study run with "
        "--confirmation-seeds N).",
    )
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.error(f"--seeds is {args.seeds}: a paired interval needs at least 2 seeds.")
    if not Path(args.results).is_dir():
        print(f"No results folder {args.results}: give the folder of the study's records.", file=sys.stderr)
        return 2
    regrets, notes = report(args.results, args.seeds)
    lines = markdown(regrets, notes)
    print("\n".join(lines))
    if args.doc:
        write_into_doc(lines, args.doc, DOC_MARKERS)
    if args.plot and regrets:
        print(f"Figure: {plot(groups(regrets), args.plot)}")
    if args.headline and regrets:
        try:
            print(f"Headline figure: {plot(groups(regrets), args.headline, HEADLINE_ARMS, HEADLINE_TITLE)}")
        except ValueError as error:  # none of the headline's arms confirmed yet: the rest is written
            print(f"No headline figure: {error}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
