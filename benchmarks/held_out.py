"""What the version-3 study fixes before a pair's runs, each fitted on the *other* pairs' version-2 tuning records.

The issue's question, "if I run one fine-tune instead of a sweep, how much do I lose?", has two kinds of answer that
need no tuning on the user's data, and both are confirmed on test against the tuned standard arm:

- **an arm at its best fixed default** (``<arm>_fixed`` in `benchmarks.study`): the configuration with the smallest
  mean validation regret against each training pair's tuned standard arm, ties by the worst pair's regret, then by a
  hash of the configuration (`recipe_rule.tie_break`: favours no side of the grid). Fitted per budget and per family
  (CNNs, ViT: a user knows which they have), on the family's other pairs. For ``standard`` the candidates and the
  regret are the recipe rule's (`recipe_rule.fit_fixed`: every (backbone lr, head lr) any training pair ran, read at
  each pair's nearest grid point), the rule's own; but not under the rule's cap on the backbone lr (its candidates
  were named after the first fit's test results), so it may pick 9e-3: the out-of-sample comparison is with
  ``recipe_heldout``, not with the in-sample ``recipe``; for the other arms, whose knobs are not all learning rates,
  the configurations every training pair ran (the base grid, and an extension where every one of them extended to
  it);
- **the recipe's rule refitted without the pair** (``recipe_heldout``): the whole fit of the shipped rule made without
  the pair's (model, target) (`recipe_rule.nested_fits`): the cap on the backbone lr chosen on the other pairs, then
  the ``probe_family`` rule of `benchmarks.recipe_rule` fitted under it on the budget's other pairs, applied to each
  run's own diagnostic pass. The shipped
  rule (``recipe``) was fitted on every pair, so its test regret on a pair it saw is an in-sample number; this one is
  not.

Regret on validation = the pair's tuned standard arm's best mean final validation accuracy (over its whole grid,
extensions included) minus the arm's at the configuration (mean over the two tuning seeds). Nothing here reads a test
accuracy. A fixed default needs `MIN_TRAINING_PAIRS` pairs of the family with the arm's grid (version 2 ran DASH,
layer decay and shrink & perturb on one model only at the long budget: no fixed default there).

The output, ``held_out.json`` in the version-3 results folder, is committed; the study reads it, and
``tests/test_held_out.py`` checks that it is what this module computes from the committed version-2 records::

    python -m benchmarks.held_out benchmarks/results/v2 --output benchmarks/results/v3/held_out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from .recipe_rule import ProbeRule, fit_fixed, load_pairs, nested_fits, tie_break
from .study import FIXED_BASES
from .study_report import result_files

#: The fewest other pairs of a family a fixed default is fitted on.
MIN_TRAINING_PAIRS = 3
#: The file in a results folder that holds the held-out choices.
HELD_OUT_FILE = "held_out.json"
COMMAND = "python -m benchmarks.held_out benchmarks/results/v2 --output benchmarks/results/v3/held_out.json"

Key = tuple[str, str, str]  # (model, target, budget)


def pair_name(model: str, target: str, budget: str) -> str:
    """The key of a pair in `HELD_OUT_FILE`: ``model/target/budget``."""
    return f"{model}/{target}/{budget}"


def family(model: str) -> str:
    return "vit" if model.startswith("vit") else "cnn"


def _config(knobs: dict[str, Any]) -> str:
    return json.dumps(knobs, sort_keys=True)


def tuning_tables(results: str | Path) -> dict[Key, dict[str, dict[str, float]]]:
    """(model, target, budget) -> arm -> configuration (its knobs as sorted JSON) -> mean final validation accuracy
    over the tuning runs, in points."""
    finals: dict[Key, dict[str, dict[str, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for model, target, records in result_files(results):
        for r in records:
            if r["phase"] == "tune":
                finals[(model, target, r["budget"])][r["arm"]][_config(r["knobs"])].append(100 * r["val_acc"][-1])
    return {
        key: {arm: {c: statistics.fmean(v) for c, v in configs.items()} for arm, configs in arms.items()}
        for key, arms in finals.items()
    }


def arm_regret(tables: dict[Key, dict[str, dict[str, float]]], key: Key, arm: str, config: str) -> float:
    """The pair's tuned standard arm's best validation % over its whole grid minus ``arm``'s at ``config`` (points)."""
    return max(tables[key]["standard"].values()) - tables[key][arm][config]


def best_fixed(arm: str, train: list[Key], tables: dict[Key, dict[str, dict[str, float]]]) -> dict[str, Any] | None:
    """The configuration of ``arm`` run on every pair of ``train`` with the smallest (mean, worst) validation regret
    against each pair's tuned standard arm, then the smallest hash; None with fewer than `MIN_TRAINING_PAIRS` pairs
    that ran the arm."""
    train = [key for key in train if arm in tables[key]]
    if len(train) < MIN_TRAINING_PAIRS:
        return None
    common = set.intersection(*(set(tables[key][arm]) for key in train))

    def score(config: str) -> tuple[float, float, str]:
        regrets = [arm_regret(tables, key, arm, config) for key in train]
        return statistics.fmean(regrets), max(regrets), tie_break(config)

    return json.loads(min(common, key=score)) if common else None


def held_out_choices(results: str | Path) -> dict[str, Any]:
    """The content of `HELD_OUT_FILE`: per arm of `FIXED_BASES` and pair, the fixed default fitted without the pair
    (on its family's other pairs of its budget); per pair, the recipe's rule fitted without it (on the budget's other
    pairs)."""
    tables = tuning_tables(results)
    pairs = load_pairs(results)
    fixed: dict[str, dict[str, Any]] = {"standard": {}}
    for pair in pairs:  # standard's fixed default: the recipe rule's candidates and regret (`recipe_rule.fit_fixed`)
        train = [
            p
            for p in pairs
            if (p.budget, p.family) == (pair.budget, pair.family) and (p.model, p.target) != (pair.model, pair.target)
        ]
        if len(train) >= MIN_TRAINING_PAIRS:
            backbone_lr, head_lr = fit_fixed(train)
            fixed["standard"][pair_name(pair.model, pair.target, pair.budget)] = {
                "backbone_lr": backbone_lr,
                "head_lr": head_lr,
            }
    fixed["standard"] = dict(sorted(fixed["standard"].items()))
    for arm in FIXED_BASES[1:]:  # standard first, fitted apart above
        chosen = {}
        for key in sorted(tables):
            model, target, budget = key
            train = [k for k in tables if k != key and k[2] == budget and family(k[0]) == family(model)]
            knobs = best_fixed(arm, train, tables)
            if knobs is not None:
                chosen[pair_name(*key)] = knobs
        fixed[arm] = chosen
    # the whole fit without the pair: its cap (on both budgets' other pairs), then the rule
    rules = {pair_name(p.model, p.target, p.budget): rule.to_dict() for p, rule in nested_fits(pairs).items()}
    return {"source": str(results), "command": COMMAND, "fixed": fixed, "recipe_rule": dict(sorted(rules.items()))}


def read_held_out(results: str | Path) -> dict[str, Any]:
    """The `HELD_OUT_FILE` of a results folder.

    Raises:
        FileNotFoundError: naming the command that writes it into that folder.
    """
    path = Path(results) / HELD_OUT_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the held-out arms (<arm>_fixed, recipe_heldout) run what it holds. Write it with: "
            f"python -m benchmarks.held_out benchmarks/results/v2 --output {path} (or leave those arms out of --arms)"
        )
    return json.loads(path.read_text())


def held_out_rates(rule: dict[str, Any], last_over_peak: float, model: str) -> tuple[float, float]:
    """The (backbone lr, head lr) a held-out rule of `HELD_OUT_FILE` gives a run of ``model`` whose diagnostic pass
    read ``last_over_peak``."""
    fitted = ProbeRule(**{key: tuple(v) if isinstance(v, list) else v for key, v in rule.items()})
    return fitted.config(last_over_peak, family(model))


def render(choices: dict[str, Any]) -> str:
    return json.dumps(choices, indent=1, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.held_out V2_RESULTS --output FILE``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.held_out", description=__doc__.split("\n")[0])
    parser.add_argument("results", help="Folder of the version-2 records (benchmarks/results/v2).")
    parser.add_argument(
        "--output", required=True, help=f"Where to write the choices (the v3 folder's {HELD_OUT_FILE})."
    )
    args = parser.parse_args(argv)
    if not Path(args.results).is_dir():
        parser.error(f"no results folder {args.results!r}")
    Path(args.output).write_text(render(held_out_choices(args.results)))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
