"""[`recommend_recipe`]: a fine-tune's learning rates from one diagnostic pass on the training data (experimental).

The pass is [`diagnose`]'s probe on the first ``samples`` training images (256, as in the fit), forward passes only
(the probe reads no gradient); the rule is [`FineTuneRecipe.from_probe`], with the constants fitted on the benchmark's
tuning records (`hf_plasticity.core.recipe.FITTED_RULE`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

from torch import nn

from ..core.architectures import get_layout
from ..core.data import CalibrationDataError, iter_batches
from ..core.recipe import FITTED_PROBE_SAMPLES, FineTuneRecipe, _check_budget
from ..core.record import blocks_restore, record_recipe, restore_record
from ..core.unwrap import check_restorable, unwrap_model
from ..core.validators import check_flag, check_positive_int
from .diagnose import block_probe_accuracy


def _first_images(data: Any, samples: int, batch_size: int) -> Iterator[dict[str, Any]]:
    """The first ``samples`` images of ``data``, in its batches (the last one cut)."""
    taken = 0
    for pixel_values, labels in iter_batches(data, sys.maxsize, batch_size):
        keep = min(samples - taken, int(labels.shape[0]))
        yield {"pixel_values": pixel_values[:keep], "labels": labels[:keep]}
        taken += keep
        if taken >= samples:
            return


def _dataset_size(data: Any) -> int | None:
    """Images in the training set behind ``data`` (a DataLoader's dataset, a `datasets.Dataset`), when known."""
    dataset = getattr(data, "dataset", None)  # a DataLoader's
    if dataset is None and hasattr(data, "column_names"):  # a datasets.Dataset
        dataset = data
    try:
        return len(dataset) if dataset is not None else None
    except TypeError:  # an iterable dataset
        return None


def recommend_recipe(
    model: nn.Module,
    data: Any,
    *,
    budget: str = "short",
    samples: int = FITTED_PROBE_SAMPLES,
    batch_size: int = 32,
    record: bool = True,
) -> FineTuneRecipe:
    """Chooses a fine-tune's learning rates from one diagnostic pass on the training data, without a sweep
    (experimental).

    One forward pass over the first ``samples`` training images measures how well each backbone block's output
    separates the classes (the probe of [`diagnose`], which the ``auto`` strategy reads); the rule reads
    ``last / peak``, the last block's accuracy over the best block's, and picks the backbone and head learning rates
    fitted for ``budget`` (see [`FineTuneRecipe.from_probe`]). The recipe re-draws nothing: its rates were measured
    on fine-tunes without a re-draw, and a re-draw did not beat the tuned standard fine-tune on average in the
    benchmark.

    **Fitted on the benchmark's tuning records** (docs/BENCHMARKS.md, "Toward a sweep-free recipe"): its validation
    regret against a tuned learning-rate sweep, each pair held out of the fit, was 0.4-5.5 points on average per group
    of pairs and up to 33 points on one pair; on test (10 seeds per pair, "Where the confirmation stands"), the rule as
    shipped lost under a point on average in every group of pairs measured, up to 3.3 points on one pair. A one-call
    recipe loses against a sweep on some data. The rates were measured on small models with AdamW (weight decay 0.05),
    a 10% warmup then cosine decay, batch 32: train that way (``TrainingArguments(lr_scheduler_type="cosine",
    warmup_steps=0.1, weight_decay=0.05)``) to be where it was measured.

    Args:
        model: the pretrained model with its downstream head, not restored (the rule was fitted on pretrained
            blocks; a model whose blocks were re-drawn is refused).
        data: the training data: a DataLoader, a `datasets.Dataset` with ``pixel_values`` and ``labels``, or an
            iterable of such dicts. Labelled, shuffled (the first images are read).
        budget: the fine-tune's length: ``"short"`` (about 3 epochs) or ``"long"`` (about 9).
        samples: images the diagnostic pass reads (the fit read 256).
        batch_size: rows per batch when ``data`` is a `datasets.Dataset`.
        record: record the recipe on the model (its [`RestoreRecord`], so ``save_pretrained`` and the card carry
            it).

    Returns:
        [`FineTuneRecipe`], with the pass's cost (``samples``, ``seconds``, ``epoch_share`` when the data's size is
        known).

    Raises:
        ValueError: for an unknown ``budget`` or a bad ``samples``, ``batch_size`` or ``record``, before anything is
            read; and when the model carries a restore that re-drew part of it.
        CalibrationDataError: when the data has no labels, or fewer than two classes with two images or more.

    Example:

    ```python
    >>> import torch
    >>> from transformers import ViTConfig, ViTForImageClassification
    >>> from hf_plasticity import plasticity_param_groups, recommend_recipe
    >>> model = ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=32,
    ...     num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=3))
    >>> labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    >>> data = [{"pixel_values": torch.randn(8, 3, 32, 32) + labels[:, None, None, None], "labels": labels}]
    >>> recipe = recommend_recipe(model, data)
    >>> recipe.budget, recipe.samples, recipe.head_lr
    ('short', 8, 0.001)
    >>> groups = plasticity_param_groups(model, recipe=recipe)  # the backbone at recipe.backbone_lr
    >>> model.config.plasticity["recipe"]["backbone_lr"] == recipe.backbone_lr  # recorded with the model
    True
    ```
    """
    _check_budget(budget)
    check_positive_int("samples", samples)
    check_positive_int("batch_size", batch_size)
    check_flag("record", record)
    if data is None:
        raise CalibrationDataError(
            "recommend_recipe reads the training data: pass a DataLoader, a datasets.Dataset with `pixel_values` and "
            "`labels`, or an iterable of such dicts."
        )
    base = unwrap_model(model)
    check_restorable(base, writes=record)
    existing = restore_record(base)
    if blocks_restore(existing):
        raise ValueError(
            f"recommend_recipe reads the pretrained blocks, and this model was restored ({existing.strategy}: "
            f"{existing.total_reinitialized:,} entries re-drawn), while the rule was fitted on models that were not: "
            "call it on the base checkpoint (before `prepare_pretrained`), or give the learning rates yourself."
        )
    accuracies, read, seconds = block_probe_accuracy(
        base, _first_images(data, samples, batch_size), batches=sys.maxsize, batch_size=batch_size
    )
    size = _dataset_size(data)
    try:
        recipe = FineTuneRecipe.from_probe(
            accuracies,
            budget=budget,
            family=get_layout(base).family,
            samples=read,
            seconds=seconds,
            epoch_share=read / size if size else None,
        )
    except ValueError:
        raise CalibrationDataError(
            "The recipe compares the last block's probe accuracy with the best block's, which needs at least two "
            f"classes with two images or more among the images read, and a block that tells some apart; got {read} "
            f"images, probe accuracies {accuracies} (raise `samples`, or shuffle the data)."
        ) from None
    if record:
        record_recipe(base, recipe)
    return recipe
