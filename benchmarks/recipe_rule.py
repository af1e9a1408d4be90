"""A sweep-free learning-rate rule read from the diagnostics, fitted on the v2 tuning records and scored as regret.

The question a user asks is "if I run one fine-tune instead of a sweep, how much do I lose?". The tuning records of
benchmark version 2 answer it on validation without a new run: for every (model, target, budget) they hold the
standard arm's final validation accuracy on its whole learning-rate grid (two tuning seeds), and the ``auto`` arm's
records hold the diagnostic pass made before fine-tuning, the nearest-class-mean probe accuracy of every backbone
block. One feature of that pass, how far the last block falls below the best block (``last / peak``), separates the
atypical targets (the late blocks re-encode the input for the source task) from data close to the pretraining data.

Rules compared, each fitted on the other pairs only (leave-one-pair-out; ``--holdout model`` leaves a whole model
out, to ask whether the rule transfers to an unseen architecture):

- ``fixed``: the one (backbone lr, head lr) with the smallest mean regret over the training pairs;
- ``fixed_family``: the same, CNNs and ViTs apart (falls back to ``fixed`` when the family has no training pair);
- ``probe``: two configurations and a threshold on ``last / peak``: pairs at or above it get one, pairs below the
  other; the three are chosen together for the smallest mean regret (ties: the smaller worst regret, then the
  threshold nearest the middle of its gap, which favours neither configuration);
- ``probe_family``: ``probe`` with the ViT's backbone learning rate a fitted factor below the CNNs'.

Regret of a pair = the tuned standard's best mean final validation accuracy minus the standard arm's at the rule's
configuration (the grid point nearest to it in log space: the grids differ a little across pairs). It is measured
on validation, where every configuration was run; test-set regret needs the confirmation runs of the recipe.

Run from the repository root::

    python -m benchmarks.recipe_rule benchmarks/results/v2 [--holdout pair|model] [--budget short|long]
        [--max-backbone-lr LR]
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import itertools
import math
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .models import ATYPICAL_TARGETS
from .study_report import result_files

Config = tuple[float, float]  # (backbone lr, head lr)


@dataclass(frozen=True, eq=False)
class Pair:
    """One (model, target, budget) of the tuning records: the standard arm's grid and the diagnostic feature."""

    model: str
    target: str
    budget: str
    val: dict[Config, float]  # mean final validation accuracy (points) per configuration of the standard arm
    last_over_peak: float  # probe accuracy of the last block / of the best block, before fine-tuning
    _regrets: dict[Config, float] = field(default_factory=dict, init=False, repr=False, compare=False)  # cache

    @property
    def family(self) -> str:
        return "vit" if self.model.startswith("vit") else "cnn"

    @property
    def kind(self) -> str:
        return "atypical" if self.target in ATYPICAL_TARGETS else "in-domain"

    @property
    def best(self) -> float:
        return max(self.val.values())

    def regret(self, config: Config) -> float:
        """The tuned best minus the accuracy at the grid point nearest to ``config`` (log distance; ties: lower)."""

        if config not in self._regrets:

            def distance(point: Config) -> tuple[float, float]:
                return (
                    abs(math.log(point[0] / config[0])) + abs(math.log(point[1] / config[1])),
                    point[0] + point[1],
                )

            self._regrets[config] = self.best - self.val[min(self.val, key=distance)]
        return self._regrets[config]


def load_pairs(results: str | Path) -> list[Pair]:
    """Every (model, target, budget) with standard tuning runs and an ``auto`` diagnostic pass."""
    pairs = []
    for model, target, records in result_files(results):
        for budget in sorted({r["budget"] for r in records}):
            finals: dict[Config, list[float]] = defaultdict(list)
            probe = None
            for r in records:
                if r["budget"] != budget or r["phase"] != "tune":
                    continue
                if r["arm"] == "standard":
                    finals[(r["knobs"]["backbone_lr"], r["knobs"]["head_lr"])].append(100 * r["val_acc"][-1])
                elif r["arm"] == "auto" and probe is None:
                    probe = r["details"].get("block_probe_accuracy")
            if finals and probe:
                val = {config: statistics.fmean(accs) for config, accs in finals.items()}
                pairs.append(Pair(model, target, budget, val, probe[-1] / max(probe)))
    return pairs


def _score(regrets: list[float]) -> tuple[float, float]:
    return (statistics.fmean(regrets), max(regrets))


def _candidates(pairs: list[Pair], max_backbone_lr: float | None = None) -> list[Config]:
    """The grid points of ``pairs`` a rule may choose: all, or those whose backbone lr is at most ``max_backbone_lr``
    (the tuned best a regret is measured against stays the whole grid's)."""
    configs = {config for pair in pairs for config in pair.val}
    return sorted(c for c in configs if max_backbone_lr is None or c[0] <= max_backbone_lr * (1 + 1e-9))


def tie_break(value: Any) -> str:
    """The last key of every choice here: a hash of the chosen value's ``repr``, so a tie (common: a regret is read at
    the nearest grid point) goes to neither the smaller nor the larger learning rate."""
    return hashlib.sha1(repr(value).encode()).hexdigest()


def fit_fixed(train: list[Pair], max_backbone_lr: float | None = None) -> Config:
    candidates = _candidates(train, max_backbone_lr)
    return min(candidates, key=lambda c: (_score([p.regret(c) for p in train]), tie_break(c)))


def fit_probe(
    train: list[Pair], vit_factor: float = 1.0, max_backbone_lr: float | None = None
) -> tuple[float, Config, Config]:
    """Threshold and the configurations at/above and below it, for the smallest (mean, worst) regret."""
    ordered = sorted(train, key=lambda p: p.last_over_peak)
    features = [p.last_over_peak for p in ordered]
    values = sorted(set(features))
    # a cut between every two neighbouring values (the midpoint: it favours neither side), and the two ends
    cuts = [values[0] - 1e-9] + [(a + b) / 2 for a, b in itertools.pairwise(values)] + [values[-1] + 1e-9]
    configs = _candidates(train, max_backbone_lr)

    def scaled(pair: Pair, config: Config) -> Config:
        return (config[0] * vit_factor, config[1]) if pair.family == "vit" else config

    # each configuration's regret on every pair, in feature order: below a cut is a prefix, at or above it the rest
    table = {c: [p.regret(scaled(p, c)) for p in ordered] for c in configs}
    hashes = {c: tie_break(c) for c in configs}
    middle = statistics.median(values)
    best = None
    for cut in cuts:
        k = bisect.bisect_left(features, cut)  # ordered[:k] lie below the cut
        pick_high = min(configs, key=lambda c: (_score(table[c][k:] or [0.0]), hashes[c]))
        pick_low = min(configs, key=lambda c: (_score(table[c][:k] or [0.0]), hashes[c]))
        key = (_score(table[pick_high][k:] + table[pick_low][:k]), abs(cut - middle))
        if best is None or key < best[0]:
            best = (key, cut, pick_high, pick_low)
    return best[1], best[2], best[3]


VIT_FACTORS = (1.0, 1 / 3, 1 / 9)


@dataclass(frozen=True)
class ProbeRule:
    """A fitted ``probe`` rule: ``last / peak`` at or above `threshold` gets `at_or_above`, below it `below`; a ViT's
    backbone learning rate is multiplied by `vit_factor`. `score` is its (mean, worst) regret on the pairs it was
    fitted on (None for a rule read back from a file)."""

    threshold: float
    at_or_above: Config
    below: Config
    vit_factor: float
    score: tuple[float, float] | None = None

    def config(self, last_over_peak: float, family: str) -> Config:
        """The (backbone lr, head lr) the rule gives a model of ``family`` (``"vit"`` or ``"cnn"``) whose probe reads
        ``last_over_peak``."""
        backbone, head = self.at_or_above if last_over_peak >= self.threshold else self.below
        return (backbone * self.vit_factor, head) if family == "vit" else (backbone, head)

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "at_or_above": list(self.at_or_above),
            "below": list(self.below),
            "vit_factor": self.vit_factor,
        }


def fit_probe_rule(train: list[Pair], family_factor: bool = True, max_backbone_lr: float | None = None) -> ProbeRule:
    """The ``probe`` rule (``probe_family`` with ``family_factor``: the ViT factor of `VIT_FACTORS` fitted too, when
    ``train`` has a ViT pair) with the smallest (mean, worst) regret on ``train``, its configurations chosen among
    those with a backbone lr at most ``max_backbone_lr`` (None: the whole grid)."""
    factors = VIT_FACTORS if family_factor and any(p.family == "vit" for p in train) else (1.0,)
    fits = []
    for factor in factors:
        cut, high, low = fit_probe(train, factor, max_backbone_lr)
        rule = ProbeRule(cut, high, low, factor)
        score = _score([p.regret(rule.config(p.last_over_peak, p.family)) for p in train])
        fits.append(ProbeRule(cut, high, low, factor, score))
    return min(fits, key=lambda rule: (rule.score, tie_break(rule.vit_factor)))


def predict(rule: str, train: list[Pair], pair: Pair, max_backbone_lr: float | None = None) -> Config:
    """The configuration ``rule``, fitted on ``train`` (backbone lr at most ``max_backbone_lr``), gives ``pair``."""
    if rule == "fixed":
        return fit_fixed(train, max_backbone_lr)
    if rule == "fixed_family":
        same = [p for p in train if p.family == pair.family]
        return fit_fixed(same or train, max_backbone_lr)
    if rule in ("probe", "probe_family"):
        fitted = fit_probe_rule(train, family_factor=rule == "probe_family", max_backbone_lr=max_backbone_lr)
        return fitted.config(pair.last_over_peak, pair.family)
    raise ValueError(f"Unknown rule {rule!r}; accepted values: {RULES}")


RULES = ("fixed", "fixed_family", "probe", "probe_family")
#: The caps on the backbone learning rate the fit chooses among (None: the whole grid), by held-out validation regret.
CAPS: tuple[float | None, ...] = (None, 9e-3, 3e-3, 1e-3)


def _held_unit(pair: Pair, holdout: str) -> tuple[str, ...]:
    """What a fit leaves out with ``pair``: its (model, target) (``holdout="pair"``, both budgets) or its model."""
    return (pair.model, pair.target) if holdout == "pair" else (pair.model,)


def training_pairs(pairs: list[Pair], pair: Pair, holdout: str = "pair") -> list[Pair]:
    """The pairs of ``pair``'s budget that a fit scored on ``pair`` may use: all but its (model, target)
    (``holdout="pair"``) or all but its model (``"model"``)."""
    held = _held_unit(pair, holdout)
    return [p for p in pairs if p.budget == pair.budget and _held_unit(p, holdout) != held]


def held_out_regrets(
    pairs: list[Pair], rule: str, holdout: str, max_backbone_lr: float | None = None
) -> dict[Pair, float]:
    """Each pair's regret under ``rule`` fitted without it (``holdout="pair"``) or without its model (``"model"``),
    choosing among configurations with a backbone lr at most ``max_backbone_lr`` (None: all)."""
    return {
        pair: pair.regret(predict(rule, training_pairs(pairs, pair, holdout), pair, max_backbone_lr)) for pair in pairs
    }


def _groups(pairs: list[Pair]) -> list[tuple[str, str, str]]:
    """The (budget, kind, family) groups of ``pairs``, the short budget first."""
    return sorted({(p.budget, p.kind, p.family) for p in pairs}, key=lambda g: (g[0] != "short", g))


def cap_scores(pairs: list[Pair], caps: tuple[float | None, ...] = CAPS) -> dict[float | None, tuple[float, float]]:
    """Per cap, the (mean, worst) leave-one-pair-out validation regret of ``probe_family`` over ``pairs`` (both
    budgets pooled: one cap serves both)."""
    return {cap: _score(list(held_out_regrets(pairs, "probe_family", "pair", cap).values())) for cap in caps}


def pick_cap(scores: dict[float | None, tuple[float, float]]) -> float | None:
    """The cap with the smallest (mean, worst) score of `cap_scores`, ties by `tie_break`."""
    return min(scores, key=lambda cap: (scores[cap], tie_break(cap)))


def choose_cap(pairs: list[Pair], caps: tuple[float | None, ...] = CAPS) -> float | None:
    """The cap of ``caps`` with the smallest (mean, worst) held-out validation regret of ``probe_family`` on
    ``pairs`` (`cap_scores`), ties by `tie_break`: the cap the shipped rule is fitted under, chosen on validation."""
    return pick_cap(cap_scores(pairs, caps))


def nested_fits(
    pairs: list[Pair], caps: tuple[float | None, ...] = CAPS, holdout: str = "pair"
) -> dict[Pair, ProbeRule]:
    """Each pair's ``probe_family`` rule with the whole fit made without its (model, target) (``holdout="pair"``, the
    ``recipe_heldout`` arm's rule, `benchmarks.held_out`) or without its model (``"model"``: an unseen architecture):
    the cap chosen (`choose_cap`) on the other pairs of both budgets, then the rule fitted on the other pairs of its
    budget under it."""
    fits, caps_without = {}, {}
    for pair in pairs:
        held = _held_unit(pair, holdout)
        others = [p for p in pairs if _held_unit(p, holdout) != held]
        if held not in caps_without:  # one choice serves every pair left out together
            caps_without[held] = choose_cap(others, caps)
        fits[pair] = fit_probe_rule(training_pairs(pairs, pair, holdout), max_backbone_lr=caps_without[held])
    return fits


def nested_cap_regrets(
    pairs: list[Pair], caps: tuple[float | None, ...] = CAPS, holdout: str = "pair"
) -> dict[Pair, float]:
    """Each pair's regret under its `nested_fits` rule: the held-out estimate of the fit as shipped, cap included."""
    return {
        pair: pair.regret(rule.config(pair.last_over_peak, pair.family))
        for pair, rule in nested_fits(pairs, caps, holdout).items()
    }


def cap_lines(pairs: list[Pair], scores: dict[float | None, tuple[float, float]], holdout: str = "pair") -> list[str]:
    """Markdown: the held-out validation regret of ``probe_family`` under each cap (``scores``, from `cap_scores` on
    ``pairs``), the chosen cap, and the nested estimate (`nested_cap_regrets`, each pair or each model held out) per
    group."""
    chosen = pick_cap(scores)
    lines = [
        "Cap on the backbone lr, chosen on leave-one-pair-out validation regret of probe_family (both budgets):",
        "",
        "| cap | mean | worst |",
        "|---|---|---|",
        *(f"| {'none' if cap is None else f'{cap:g}'} | {m:.2f} | {w:.2f} |" for cap, (m, w) in scores.items()),
        "",
        f"Chosen: {'none' if chosen is None else f'{chosen:g}'}. Nested (cap and rule both fitted without the "
        f"{holdout}):",
        "",
        "| budget | data | family | mean | worst | pairs |",
        "|---|---|---|---|---|---|",
    ]
    nested = nested_cap_regrets(pairs, tuple(scores), holdout)
    for group in _groups(pairs):
        values = [r for p, r in nested.items() if (p.budget, p.kind, p.family) == group]
        lines.append(f"| {' | '.join(group)} | {statistics.fmean(values):.2f} | {max(values):.2f} | {len(values)} |")
    return lines


def summary_lines(pairs: list[Pair], holdout: str, max_backbone_lr: float | None = None) -> list[str]:
    """Markdown: per rule and group (budget, kind, family), the mean and worst held-out regret in points."""
    regrets = {rule: held_out_regrets(pairs, rule, holdout, max_backbone_lr) for rule in RULES}
    lines = [
        f"Held-out ({holdout}) validation regret against the tuned standard, points (mean / worst pair / pairs):",
        "",
        "| budget | data | family | " + " | ".join(RULES) + " |",
        "|---|---|---|" + "---|" * len(RULES),
    ]
    for budget, kind, family in _groups(pairs):
        members = [p for p in pairs if (p.budget, p.kind, p.family) == (budget, kind, family)]
        cells = []
        for rule in RULES:
            values = [regrets[rule][p] for p in members]
            cells.append(f"{statistics.fmean(values):.2f} / {max(values):.2f} / {len(values)}")
        lines.append(f"| {budget} | {kind} | {family} | " + " | ".join(cells) + " |")
    lines += ["", "Per pair (regret, points):", "", "| pair | budget | last/peak | " + " | ".join(RULES) + " |"]
    lines.append("|---|---|---|" + "---|" * len(RULES))
    for p in sorted(pairs, key=lambda p: (p.budget != "short", p.model, p.target)):
        cells = " | ".join(f"{regrets[rule][p]:.2f}" for rule in RULES)
        lines.append(f"| {p.model} {p.target} | {p.budget} | {p.last_over_peak:.2f} | {cells} |")
    return lines


def fitted_rule_lines(pairs: list[Pair], max_backbone_lr: float | None = None) -> list[str]:
    """The rules fitted on every pair (what a library default would ship), per budget."""
    lines = []
    for budget in sorted({p.budget for p in pairs}, key=lambda b: b != "short"):
        train = [p for p in pairs if p.budget == budget]
        fixed = fit_fixed(train, max_backbone_lr)
        lines.append(f"- {budget}: fixed backbone lr {fixed[0]:g}, head lr {fixed[1]:g}")
        rule = fit_probe_rule(train, max_backbone_lr=max_backbone_lr)
        (mean, worst), factor, cut = rule.score, rule.vit_factor, rule.threshold
        high, low = rule.at_or_above, rule.below
        lines.append(
            f"- {budget}: probe rule: last/peak >= {cut:.3f} -> backbone lr {high[0]:g}, head lr {high[1]:g}; "
            f"below -> backbone lr {low[0]:g}, head lr {low[1]:g}; ViT backbone lr x{factor:.3g} "
            f"(in-sample regret mean {mean:.2f}, worst {worst:.2f})"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.recipe_rule [RESULTS] [--holdout pair|model] [--budget short|long]``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.recipe_rule", description=__doc__.split("\n")[0])
    parser.add_argument("results", nargs="?", default="benchmarks/results/v2", help="Folder of v2 records.")
    parser.add_argument("--holdout", choices=("pair", "model"), default="pair", help="What each fit leaves out.")
    parser.add_argument("--budget", choices=("short", "long"), help="Only this budget (default: both).")
    parser.add_argument(
        "--max-backbone-lr",
        type=float,
        help="Let the rules choose only configurations with a backbone lr at most this (default: the tables over "
        "the whole grid, then the cap chosen on held-out validation regret, `CAPS`, and the rule fitted under it).",
    )
    args = parser.parse_args(argv)
    if args.max_backbone_lr is not None and not args.max_backbone_lr > 0:
        print(f"recipe_rule: error: --max-backbone-lr must be > 0, got {args.max_backbone_lr}", file=sys.stderr)
        return 2
    if not Path(args.results).is_dir():
        print(f"recipe_rule: error: no results folder {args.results!r}", file=sys.stderr)
        return 2
    everything = load_pairs(args.results)
    pairs = [p for p in everything if args.budget in (None, p.budget)]
    lines = summary_lines(pairs, args.holdout, args.max_backbone_lr)
    if args.max_backbone_lr is None:  # the shipped fit: the cap chosen on every pair of both budgets, then the rule
        scores = cap_scores(everything)
        cap = pick_cap(scores)
        lines += ["", *cap_lines(everything, scores, args.holdout)]
    else:
        cap = args.max_backbone_lr
    shown = "the whole grid" if cap is None else f"backbone lr at most {cap:g}"
    lines += ["", f"Fitted on every pair ({shown}):", *fitted_rule_lines(pairs, cap)]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__: list[Any] = [
    "CAPS",
    "Pair",
    "ProbeRule",
    "cap_scores",
    "choose_cap",
    "RULES",
    "fit_probe_rule",
    "held_out_regrets",
    "load_pairs",
    "main",
    "nested_cap_regrets",
    "nested_fits",
    "pick_cap",
    "predict",
]
