"""Which pretrained source a bench run was fine-tuned from, so that one pair never pairs runs of two sources.

The small bench models are pretrained by the bench (`benchmarks.models.pretrain_source_model`) and cached outside
the repository, so a fresh machine pretrains them again, and the result need not be the source a pair's runs came
from: pretrained on 2026-12-04, `convnext_tiny` and `resnet_tiny` part from the curves of docs/source_pretraining.json
in the first epoch's loss (ConvNeXt's then drifts up to 5 points of validation accuracy apart). A pair whose runs came
from two sources would pair seeds as if they shared one.

A source is named by the fingerprint of its pretraining curve (`IDENTITY_KEYS`, every epoch's value as
`source_metrics.json` records it; the timings are left out): two trainings whose losses and accuracies agree on every
epoch to the last digit are the same training, and the curve is all that is left of the sources older runs came from.
Each run records its source's fingerprint (``pretrained_source``). A run without one, made before this module, comes
from the source its folder declares in `SOURCES_FILE` (model -> fingerprint, with the evidence), else from the
documented one. Version 3's folder declares `convnext_tiny`'s and `resnet_tiny`'s: re-run on the sources pretrained
here on 2026-12-04, its runs train the same bits (`benchmarks.rerun`), so they were fine-tuned from those, not from the
documented ones. Published weights (EfficientNet-Lite) have no fingerprint and are never refused.

    >>> from benchmarks.source_identity import fingerprint
    >>> curve = {"train_loss": [2.3, 1.1], "train_acc": [0.1, 0.6], "val_acc": [0.1, 0.5], "test_acc": [0.1, 0.5]}
    >>> fingerprint(curve) == fingerprint({**curve, "epoch_seconds": [9.0, 8.0]})  # timings do not count
    True
    >>> fingerprint(curve) == fingerprint({**curve, "val_acc": [0.1, 0.51]})
    False
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

#: The per-epoch values of a pretraining curve that its bits decide (not ``epoch_seconds``).
IDENTITY_KEYS = ("train_loss", "train_acc", "val_acc", "test_acc")
#: The pretraining records of the sources the committed runs were made from, unless their folder says otherwise.
DOCUMENTED = Path(__file__).resolve().parents[1] / "docs" / "source_pretraining.json"
#: A results folder's declaration of the sources its unmarked runs came from: model -> {"fingerprint", "evidence"}.
SOURCES_FILE = "sources.json"


def fingerprint(curve: dict[str, list[float]]) -> str:
    """A short hash of a pretraining curve's `IDENTITY_KEYS` (a missing key counts as empty)."""
    values = {key: curve.get(key, []) for key in IDENTITY_KEYS}
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def _documented() -> dict[str, Any]:
    return json.loads(DOCUMENTED.read_text()) if DOCUMENTED.exists() else {}


def documented_curve(model: str) -> dict[str, list[float]] | None:
    """The pretraining curve of ``model``'s documented source (None: the bench does not pretrain it)."""
    entry = _documented().get(model)
    return None if entry is None else entry["curve"]


def documented_fingerprint(model: str) -> str | None:
    """The fingerprint of ``model``'s documented source (None: the bench does not pretrain it)."""
    curve = documented_curve(model)
    return None if curve is None else fingerprint(curve)


def _pretrained_here(model: str) -> bool:
    """Whether the bench pretrains ``model`` itself (False for published weights and for unknown names, which are
    refused elsewhere)."""
    from .models import MODEL_SPECS, is_source_pretrained

    return model in MODEL_SPECS and is_source_pretrained(model)


def cached_curve(model: str, cache_dir: str | os.PathLike | None = None) -> dict[str, list[float]] | None:
    """The pretraining curve of ``model``'s cached source (None: published weights, or not pretrained yet)."""
    from .models import read_source_metrics

    if not _pretrained_here(model):
        return None
    metrics = read_source_metrics(model, cache_dir)
    return None if metrics is None else metrics["curve"]


def cached_fingerprint(model: str, cache_dir: str | os.PathLike | None = None) -> str | None:
    """The fingerprint of ``model``'s cached source, what a run made now is fine-tuned from (None: none to check)."""
    curve = cached_curve(model, cache_dir)
    return None if curve is None else fingerprint(curve)


def unmarked_source(model: str, folder: str | os.PathLike | None = None) -> str | None:
    """The source of ``folder``'s runs of ``model`` that carry no fingerprint: its `SOURCES_FILE` entry, else the
    documented source (None: published weights)."""
    declared = Path(folder) / SOURCES_FILE if folder is not None else None
    if declared is not None and declared.exists():
        entry = json.loads(declared.read_text()).get(model)
        if entry is not None:
            return entry["fingerprint"]
    return documented_fingerprint(model)


def recorded_sources(model: str, records: list[dict[str, Any]], folder: str | os.PathLike | None = None) -> set[str]:
    """The fingerprints of the sources ``records`` (of the results folder ``folder``) were fine-tuned from; a run
    without one: `unmarked_source`."""
    default = unmarked_source(model, folder)
    recorded = (record.get("pretrained_source", default) for record in records)
    return {source for source in recorded if source is not None}


def first_difference(recorded: dict[str, list[float]], current: dict[str, list[float]]) -> str:
    """Where two pretraining curves first part: the epoch (1-based), the value and both readings."""
    longest = max(len(curve.get(key, [])) for curve in (recorded, current) for key in IDENTITY_KEYS)
    for epoch in range(longest):
        for key in IDENTITY_KEYS:
            a, b = recorded.get(key, []), current.get(key, [])
            if epoch >= len(a) or epoch >= len(b):
                if len(a) != len(b):
                    return f"one curve ends at epoch {min(len(a), len(b))}"
                continue
            if a[epoch] != b[epoch]:
                return f"first at epoch {epoch + 1}, {key} {b[epoch]!r} against the recorded {a[epoch]!r}"
    return "the curves agree"


def refuse_another_source(
    model: str,
    path: str | os.PathLike,
    records: list[dict[str, Any]],
    source: str | None,
    must_be_cached: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> None:
    """Refuses to add a run fine-tuned from the source ``source`` (a fingerprint; None: nothing to check) to the
    ``records`` of ``path`` when they came from another source.

    With ``must_be_cached`` (a study's check before it starts), a pair with runs whose model's source is not cached
    yet is refused too: the study would otherwise pretrain it (up to the better part of an hour) and fine-tune one run
    before it could compare the two.

    Raises:
        ValueError: naming the file, the model, both fingerprints, where the curves part and what to do.
    """
    from .models import cache_path, get_spec, pretrain_recipe

    recorded = recorded_sources(model, records, Path(path).parent)
    if source is None:
        if must_be_cached and recorded and _pretrained_here(model):
            raise ValueError(
                f"{path} holds runs of {model}, whose pretrained source is not cached here yet: pretrain it first "
                f"(python -m benchmarks pretrain --models {model}), then resume; the study compares it with the "
                "source of those runs before it trains anything."
            )
        return
    others = recorded - {source}
    if not others:
        return
    where = ""
    if documented_fingerprint(model) in others and (current := cached_curve(model, cache_dir)):
        parted = first_difference(documented_curve(model), current)
        where = f" (its curve parts from docs/source_pretraining.json's {parted})"
    raise ValueError(
        f"{path} holds runs of {model} fine-tuned from the pretrained source {sorted(others)}, and the source cached "
        f"now is {source}{where}: resuming would pair runs of two sources, which train other bits. Use another "
        f"--results folder (a pair made wholly from this source), or put the original source checkpoint back in "
        f"{cache_path(get_spec(model), pretrain_recipe(model), cache_dir)}."
    )
