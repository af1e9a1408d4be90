"""The comparison's schedule: tune every tuned arm on the validation split, then confirm the chosen configurations on
paired seeds, scored once on the test split. An untuned arm (``recommended``: each run chooses its learning rates)
has no tuning runs, only its confirmation runs.

Tuning: every (backbone learning rate, own learning rate) of the grid, trained once with the tuning seed, scored by
the validation accuracy after the last epoch (the model the test would score). Ties, which small validation splits
make common, are broken by a rule that favours no arm: the tied configurations are trained again with a second tuning
seed and compared by the mean of both; configurations still tied go to the smallest `tie_key`, a hash of the
configuration (neither the smaller nor the larger learning rates).

Confirmation: every arm with its chosen configuration on the same seeds (the same seed gives the same head init and
data order in every arm), seed by seed, so an interrupted comparison holds complete pairs.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from typing import Any

from .arms import is_tuned
from .runner import CONFIRM, TUNE, RunSpec
from .store import RunStore

#: Seeds of the tuning runs (the second one breaks ties); the confirmation seeds are 0, 1, ..., N-1.
TUNE_SEEDS = (1000, 1001)


def tie_key(config: tuple[float, float]) -> str:
    """The order of configurations still tied after the second tuning seed: a hash of ``(backbone lr, own lr)``, so
    the last tie-break favours no side of the grid and does not depend on its order."""
    return hashlib.sha1(repr(tuple(float(v) for v in config)).encode()).hexdigest()


def _tied(scores: dict[tuple[float, float], float]) -> list[tuple[float, float]]:
    best = max(scores.values())
    return sorted((c for c, score in scores.items() if math.isclose(score, best, abs_tol=1e-9)), key=tie_key)


def run_schedule(
    arms: Sequence[str],
    grid: Sequence[tuple[float, float]],
    seeds: Sequence[int],
    store: RunStore,
    train: Callable[[RunSpec], dict[str, Any]],
    progress: bool = True,
) -> dict[str, tuple[float, float] | None]:
    """Runs every run the comparison still needs (those whose key ``store`` holds are skipped) and records each.

    Args:
        arms: the arms' names.
        grid: the ``(backbone_lr, own_lr)`` configurations tried for every tuned arm.
        seeds: the confirmation seeds.
        store: the records so far; each finished run is added.
        train: runs one [`RunSpec`] and returns its record.
        progress: show a tqdm bar over the runs.

    Returns:
        `dict`: each tuned arm's chosen ``(backbone_lr, own_lr)``; None for an untuned arm.
    """
    from tqdm.auto import tqdm

    tuned = [arm for arm in arms if is_tuned(arm)]
    total = len(tuned) * len(grid) + len(arms) * len(seeds)
    bar = tqdm(total=total, desc="compare", unit="run", disable=not progress)

    def ensure(spec: RunSpec) -> dict[str, Any]:
        bar.set_postfix_str(f"{spec.phase} {spec.arm} seed {spec.seed}")
        if spec.key not in store:
            store.add(train(spec))
        bar.update(1)
        return store.get(spec.key)

    chosen: dict[str, tuple[float, float] | None] = {arm: None for arm in arms}
    try:
        for arm in tuned:
            first = {config: ensure(RunSpec(TUNE, arm, *config, TUNE_SEEDS[0]))["val_accuracy"] for config in grid}
            tied = _tied(first)
            if len(tied) > 1:
                bar.total += len(tied)
                second = {c: ensure(RunSpec(TUNE, arm, *c, TUNE_SEEDS[1]))["val_accuracy"] for c in tied}
                tied = _tied({config: (first[config] + second[config]) / 2 for config in tied})
            chosen[arm] = tied[0]  # the smallest tie_key
        for seed in seeds:
            for arm in arms:
                ensure(RunSpec(CONFIRM, arm, *(chosen[arm] or (None, None)), seed))
    finally:
        bar.close()
    return chosen


def tuning_table(arms: Sequence[str], grid: Sequence[tuple[float, float]], store: RunStore) -> dict[str, list[dict]]:
    """Per tuned arm, every configuration of the grid with its validation accuracy per tuning seed (for the
    summary)."""
    table: dict[str, list[dict]] = {}
    for arm in filter(is_tuned, arms):
        rows = []
        for backbone_lr, own_lr in grid:
            scores = {}
            for seed in TUNE_SEEDS:
                record = store.get(RunSpec(TUNE, arm, backbone_lr, own_lr, seed).key)
                if record is not None:
                    scores[str(seed)] = record["val_accuracy"]
            rows.append({"backbone_lr": backbone_lr, "own_lr": own_lr, "val_accuracy": scores})
        table[arm] = rows
    return table
