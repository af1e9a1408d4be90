"""Identical runs trained once: a run that would train what a run of the results file trained copies its curves.

Arms of the study often train the very same thing: `standard_fixed` and the tuned `standard` arm when tuning chose
the fixed default, `recipe_heldout` and `recipe` when both rules give a seed the same rates, a fixed arm's tuning runs
and the standard arm's. On the CPU a run is deterministic (the model's initialization, the restore and
`benchmarks.recipe.fine_tune_v2` are seeded; the version-3 records trained before this module held 202 such twins,
all bit for bit equal), so training it again spends minutes on a known answer. `run_one` restores the model as its
arm says (so the record's restore fields are its own), then, before training, looks for a run with the same
`training_signature`: found, it copies that run's curves and says so in the record (``reused``: the source's run
key).

Only CPU runs are reused: on a GPU two identical runs differ, and a copy would hide that noise.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

#: What a reused run copies from the run it found: the curves training produced (and its seconds per epoch).
COPIED_CURVES = ("val_acc", "test_acc", "train_loss")


def training_signature(
    model: str,
    target: str,
    budget: str,
    seed: int,
    strategy: str | None,
    strategy_params: dict[str, Any],
    recipe: dict[str, Any],
    n: dict[str, int],
    device: str,
    evaluates_test: bool,
    image_size: int | None = None,
) -> str:
    """What decides a run's curves, as a short hash: two runs with one signature train the same bits on the CPU.

    Args:
        model / target / budget / seed: the run's.
        strategy / strategy_params: the restore before fine-tuning (None: none) and its config's keyword arguments
            (the arm's params with the run's strategy knobs, e.g. DASH's ``lambda_min``).
        recipe: the fine-tuning configuration as trained (``Recipe.to_dict``: the recipe arm's rates read off its
            diagnostic pass, the control's boosted blocks resolved).
        n: the split sizes (``train``, ``val``, ``test``): the data the folder's settings cut.
        device: where it trained.
        evaluates_test: whether the run read the test split (a confirmation run); a tuning run's record has no
            test curve to lend.
        image_size: the side of the images when the study set one (None: the model's own).

    Example:

    ```python
    >>> from benchmarks.reuse import training_signature
    >>> common = dict(model="vit_tiny", target="digits", budget="short", seed=0, n={"train": 8, "val": 4, "test": 4},
    ...               device="cpu", evaluates_test=True, recipe={"epochs": 3, "backbone_lr": 1e-3})
    >>> training_signature(strategy=None, strategy_params={}, **common) == training_signature(
    ...     strategy="dash", strategy_params={}, **common)
    False

    ```
    """
    text = json.dumps(
        [model, target, budget, seed, strategy, strategy_params, recipe, n, device, evaluates_test, image_size],
        sort_keys=True,
    )
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def signature_of_record(record: dict[str, Any], arms: dict[str, Any]) -> str | None:
    """A stored run's `training_signature` (None: its arm is not in ``arms``, so its restore is unknown).

    Records before this module carry no signature; everything it needs is in them but the restore, which the arm's
    definition (``arms``: `benchmarks.study.ARMS`) gives.
    """
    arm = arms.get(record["arm"])
    if arm is None or "recipe" not in record:
        return None
    from .study import split_knobs

    strategy_knobs = split_knobs(record["knobs"])[1]
    return training_signature(
        record["model"],
        record["target"],
        record["budget"],
        record["seed"],
        arm.strategy,
        {**arm.params, **strategy_knobs},
        record["recipe"],
        record["n"],
        record.get("device", "cpu"),  # version 2's first records predate the field: CPU runs
        record["test_acc"] is not None,
        record.get("image_size"),
    )


def find_identical(path: str | Path, signature: str, arms: dict[str, Any]) -> dict[str, Any] | None:
    """The first run of the results file ``path`` with ``signature`` that trained itself (None: there is none).

    The file is read as it is now: the study's parent process appends every finished run, so a twin finished
    earlier in the same study is found.
    """
    path = Path(path)
    if not path.exists():
        return None
    with path.open() as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a blank line, or the last one while the parent writes it
                continue
            if "reused" not in record and signature_of_record(record, arms) == signature:
                return record
    return None
