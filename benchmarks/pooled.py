"""The benchmark's headline estimates: each arm's difference to the tuned standard arm, pooled across pairs.

Ten seeds resolve about 1.5 points on one (model, target, budget); a claim about an arm in general is an estimate
across pairs. For every budget and kind of target (atypical, in-domain control), each arm's pooled difference is the
mean over the pairs of its per-pair mean paired difference to the tuned standard arm (final test accuracy, points),
with the t confidence interval across pairs (each pair one observation: the spread between pairs, not the seeds'
noise, sets the width). Only pairs on which both arms have every confirmation seed count, and a group needs 3 pairs.

Run from the repository root::

    python -m benchmarks.pooled benchmarks/results/v2 --plot benchmarks/results/v2/pooled.png --doc docs/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from .pretrain import save_figure
from .stats import Interval, mean_interval
from .study_report import Row, _difference, confirmed_pairs, result_files, same_device

#: The arms pooled, in the order of the table and the figure; the recipe arm (version 3) only once 3 pairs of a group
#: confirm it. Its row is arm minus standard, CNNs and ViT together: `benchmarks.regret` gives v3's regret (standard
#: minus arm) per kind of model.
POOLED_ARMS = ("reinit_top", "boost_top", "auto", "layer_decay", "dash", "shrink_perturb", "recipe")
#: The fewest pairs a pooled estimate is shown for.
MIN_PAIRS = 3
#: The markers in a Markdown document between which `--doc` puts the table.
DOC_MARKERS = ("<!-- pooled table -->", "<!-- /pooled table -->")


@dataclass(frozen=True)
class Pooled:
    """One arm's pooled difference to the tuned standard arm over the pairs of one (budget, kind of target)."""

    budget: str
    atypical: bool
    arm: str
    pairs: list[str]
    estimate: Interval

    @property
    def group(self) -> str:
        return f"{self.budget} / {'atypical' if self.atypical else 'in-domain'}"


def pool(pairs: list[Row], arms: tuple[str, ...] = POOLED_ARMS, min_pairs: int = MIN_PAIRS) -> list[Pooled]:
    """The pooled estimates of ``arms`` against ``standard`` over ``pairs`` (rows of `confirmed_pairs`), per budget
    (short first) and kind of target (atypical first); groups with fewer than ``min_pairs`` complete pairs are left
    out."""
    out = []
    budgets = sorted({pair["budget"] for pair in pairs}, key=lambda budget: budget != "short")
    for budget in budgets:
        for atypical in (True, False):
            for arm in arms:
                names, means = [], []
                for pair in pairs:
                    if pair["budget"] != budget or pair["atypical"] != atypical:
                        continue
                    diff, _ = _difference(pair, arm, "standard", complete=True)
                    if diff is not None:
                        names.append(f"{pair['model']} {pair['target']}")
                        means.append(diff.mean)
                if len(means) >= min_pairs:
                    out.append(Pooled(budget, atypical, arm, names, mean_interval(means)))
    return out


def table(pooled: list[Pooled]) -> list[str]:
    """Markdown lines: one row per group and arm."""
    lines = [
        "| budget / targets | arm | pairs | pooled difference to the tuned standard (points, 95% CI across pairs) |",
        "|---|---|---:|---:|",
    ]
    lines += [f"| {row.group} | {row.arm} | {len(row.pairs)} | {row.estimate} |" for row in pooled]
    return lines


def plot(pooled: list[Pooled], path: str | Path) -> Path:
    """One panel per (budget, kind of target): each arm's pooled difference with its 95% CI, 0 marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys(row.group for row in pooled))
    columns = min(2, len(groups))
    rows_of_panels = -(-len(groups) // columns)
    fig, axes = plt.subplots(rows_of_panels, columns, figsize=(5.2 * columns, 2.8 * rows_of_panels), squeeze=False)
    for ax in axes.flat[len(groups) :]:
        ax.set_visible(False)
    for ax, group in zip(axes.flat, groups):
        rows = [row for row in pooled if row.group == group]
        for y, row in enumerate(rows):
            est = row.estimate
            color = "tab:green" if est.low > 0 else "tab:red" if est.high < 0 else "tab:gray"
            ax.errorbar(est.mean, y, xerr=[[est.mean - est.low], [est.high - est.mean]], fmt="o", color=color,
                        capsize=3)  # fmt: skip
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(rows)), [f"{row.arm} ({len(row.pairs)})" for row in rows])
        ax.invert_yaxis()
        budget, kind = group.split(" / ")
        ax.set_title(f"{budget} budget, {'atypical targets' if kind == 'atypical' else 'in-domain controls'}",
                     fontsize=9)  # fmt: skip
        ax.set_xlabel("vs tuned standard, points")
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Final test accuracy minus the tuned standard fine-tune,\npooled across (model, target) pairs: mean "
                 "and 95% CI (pairs in brackets)", fontsize=10)  # fmt: skip
    fig.tight_layout()
    return save_figure(fig, path)


def write_into_doc(lines: list[str], doc: str | Path, markers: tuple[str, str] = DOC_MARKERS) -> None:
    """Puts ``lines`` between the ``markers`` (by default `DOC_MARKERS`) of ``doc``."""
    text = Path(doc).read_text(encoding="utf-8")
    start, end = text.index(markers[0]) + len(markers[0]), text.index(markers[1])
    Path(doc).write_text(text[:start] + "\n" + "\n".join(lines) + "\n" + text[end:], encoding="utf-8")


def table_in_doc(doc: str | Path, markers: tuple[str, str] = DOC_MARKERS) -> list[str]:
    """The lines between the ``markers`` (by default `DOC_MARKERS`) of ``doc``."""
    text = Path(doc).read_text(encoding="utf-8")
    start, end = text.index(markers[0]) + len(markers[0]), text.index(markers[1])
    return text[start:end].strip("\n").split("\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pooled", description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="?", default="benchmarks/results/v2", help="Folder of v2 records.")
    parser.add_argument("--plot", metavar="PNG", help="Also write the figure there.")
    parser.add_argument("--doc", metavar="MD", help=f"Also write the table between {DOC_MARKERS} of this file.")
    args = parser.parse_args(argv)
    pooled = pool(confirmed_pairs(list(result_files(args.results)), one_device=same_device(args.results)))
    lines = table(pooled)
    print("\n".join(lines))
    if args.plot:
        print(f"Figure: {plot(pooled, args.plot)}")
    if args.doc:
        write_into_doc(lines, args.doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
