"""Identical runs trained once: a run that would train what a run of the results file trained copies its curves.

Arms of the study often train the very same thing: `standard_fixed` and the tuned `standard` arm when tuning chose
the fixed default, `recipe_heldout` and `recipe` when both rules give a seed the same rates, a fixed arm's tuning runs
and the standard arm's. On the CPU a run is deterministic (the model's initialization, the restore and
`benchmarks.recipe.fine_tune_v2` are seeded; the version-3 records trained before this module held 202 such twins,
all bit for bit equal), so training it again spends minutes on a known answer. `run_one` restores the model as its
arm says (so the record's restore fields are its own), then, before training, computes the run's
`training_signature` (stored in its record as ``signature``) and looks for a run of the file with the same one:
found, it copies that run's curves and says so in the record (``reused``: the source's run key).

The signature holds the code too (`code_version`): a run recorded before a change to the library or the benchmark,
or by another torch, never lends its curves to a run after it; records without a signature (before this module) are
never sources. Only CPU runs are reused: on a GPU two identical runs may differ, and a copy would hide that noise.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

#: What a reused run copies from the run it found: the curves training produced (and its seconds per epoch).
COPIED_CURVES = ("val_acc", "test_acc", "train_loss")
#: The packages whose source a run's curves depend on (the library, the benchmark), at the repository's root.
CODE_PACKAGES = ("hf_plasticity", "benchmarks")


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The torch version and a hash of every Python file of `CODE_PACKAGES`, read once per process.

    Any edit to them, a docstring's too, gives another value: reuse is kept to runs of the very same code.
    """
    import torch

    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha1()
    for package in CODE_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return f"torch {torch.__version__}, source {digest.hexdigest()[:12]}"


def training_signature(ingredients: dict[str, Any]) -> str:
    """What decides a run's curves, as a short hash: two runs with one signature train the same bits on the CPU.

    Args:
        ingredients: everything training reads, as JSON-able values: `run_one` passes the model, target, budget
            and seed, the restore (strategy and its config's keyword arguments), the fine-tuning configuration as
            trained (``Recipe.to_dict``: the recipe arm's rates read off its diagnostic pass, the control's boosted
            blocks resolved), the split sizes, whether the run reads test, the study settings that shape the data
            and the restore (image size, validation share, calibration batches), the device, whether torch ran
            deterministic algorithms, and `code_version`.

    Example:

    ```python
    >>> from benchmarks.reuse import training_signature
    >>> run = {"model": "vit_tiny", "seed": 0, "strategy": None, "recipe": {"epochs": 3, "backbone_lr": 1e-3}}
    >>> training_signature(run) == training_signature(dict(reversed(run.items())))  # the order does not count
    True
    >>> training_signature(run) == training_signature({**run, "strategy": "dash"})
    False

    ```
    """
    return hashlib.sha1(json.dumps(ingredients, sort_keys=True).encode()).hexdigest()[:16]


def find_identical(path: str | Path, signature: str) -> dict[str, Any] | None:
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
            if record.get("signature") == signature and "reused" not in record:
                return record
    return None
