"""A candidate for the recipe's next rule, pre-registered before its test: re-draw on the atypical side of the
threshold.

The shipped rule (`benchmarks.recipe_rule`, ``probe_family`` under the backbone-lr cap) never re-initializes. This
candidate keeps its threshold and its rates at or above it, and below it, on a CNN, runs the ``auto`` restore at its
fixed configuration, fitted (`held_out.best_fixed`) on the training pairs of the CNN family that read below the
threshold; the ViT keeps the shipped rule. Everything is fitted without the scored pair (its model and target, both
budgets), on the version-2 tuning records: validation only, no test accuracy read. The idea came from a test result
(``auto_fixed`` lost less than the recipe on the short budget's atypical CNN pairs), and about twenty variants were
compared on these validation pairs before this one was written down, so its validation gain flatters it; the pairs
whose test split nobody has read decide (docs/BENCHMARKS.md, "A candidate next rule").

Run from the repository root (a few seconds)::

    python -m benchmarks.restore_rule benchmarks/results/v2
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from .held_out import Key, _config, arm_regret, best_fixed, tuning_tables
from .recipe_rule import Pair, _groups, fit_probe_rule, load_pairs, training_pairs
from .study_report import Row

#: The restore the candidate runs below the threshold, and the cap the shipped fit chose (`recipe_rule.choose_cap`).
ARM = "auto"
CAP = 3e-3
#: The candidate's name in the regret tables of the version-3 study (`benchmarks.regret`).
CANDIDATE = "restore_below"


def _key(pair: Pair) -> Key:
    return (pair.model, pair.target, pair.budget)


def candidate_regrets(
    pairs: list[Pair], tables: dict[Key, dict[str, dict[str, float]]], arm: str = ARM, cap: float = CAP
) -> dict[Pair, tuple[float, float]]:
    """Per pair, the validation regret (points) of the shipped rule and of the candidate, both fitted without the
    pair's (model, target) on the other pairs of its budget. Where the candidate has no configuration (fewer than
    `held_out.MIN_TRAINING_PAIRS` CNN pairs below the threshold ran ``arm``) or the pair never ran it, it keeps the
    shipped rule's rates."""
    out = {}
    for pair in pairs:
        train = training_pairs(pairs, pair)
        rule = fit_probe_rule(train, max_backbone_lr=cap)
        shipped = pair.regret(rule.config(pair.last_over_peak, pair.family))
        candidate = shipped
        if pair.family == "cnn" and pair.last_over_peak < rule.threshold:
            below = [_key(p) for p in train if p.family == "cnn" and p.last_over_peak < rule.threshold]
            config = best_fixed(arm, below, tables)
            if config is not None and _config(config) in tables[_key(pair)].get(arm, {}):
                candidate = arm_regret(tables, _key(pair), arm, _config(config))
        out[pair] = (shipped, candidate)
    return out


def candidate_runs(runs: dict[str, dict[int, Row]], vit: bool, arm: str = ARM) -> dict[int, Row] | None:
    """The candidate's confirmation runs (seed -> run), assembled from a version-3 pair's (arm -> seed -> run): where
    the seed's ``recipe`` run read below its threshold (its own diagnostic pass) on a CNN, ``<arm>_fixed``'s run of
    that seed (the candidate's configuration, where the pair read below the threshold in version 2 too: it equals
    ``auto_fixed``'s on every such CNN pair, docs/BENCHMARKS.md), else the recipe's. None without recipe runs that
    carry their reading, or when a seed lacks the run it needs."""
    restore, out = runs.get(f"{arm}_fixed", {}), {}
    for seed, run in runs.get("recipe", {}).items():
        read = run.get("recommended")
        if read is None:
            return None
        if not vit and read["last_over_peak"] < read["threshold"]:
            if seed not in restore:
                return None
            run = restore[seed]
        out[seed] = run
    return out or None


def lines(regrets: dict[Pair, tuple[float, float]]) -> list[str]:
    """Markdown: per group (budget, data, family), the mean and worst held-out validation regret of each rule."""
    rows = [
        "| budget | data | family | pairs | shipped rule: mean / worst | candidate: mean / worst |",
        "|---|---|---|---:|---|---|",
    ]
    for group in _groups(list(regrets)):
        members = [r for p, r in regrets.items() if (p.budget, p.kind, p.family) == group]
        cells = [
            f"{statistics.fmean(v):.2f} / {max(v):.2f}" for v in ([s for s, _ in members], [c for _, c in members])
        ]
        rows.append(f"| {' | '.join(group)} | {len(members)} | {cells[0]} | {cells[1]} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.restore_rule", description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="?", default="benchmarks/results/v2", help="Folder of v2 records.")
    args = parser.parse_args(argv)
    if not Path(args.results).is_dir():
        print(f"restore_rule: error: no results folder {args.results!r}", file=sys.stderr)
        return 2
    print("\n".join(lines(candidate_regrets(load_pairs(args.results), tuning_tables(args.results)))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
