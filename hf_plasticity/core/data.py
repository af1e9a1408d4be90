"""Calibration input: batches of downstream data from a DataLoader, a `datasets.Dataset` or an iterable of dicts,
and the downstream loss of a model on one batch (with the new head attached).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .messages import first_line

Batch = tuple[torch.Tensor, torch.Tensor]


class CalibrationDataError(ValueError):
    """The calibration data is missing or cannot be read as (pixel_values, labels) batches."""


#: What to do when the model overflows on the calibration data (NaN or infinite activations or statistics).
OVERFLOW_ADVICE = (
    "Run the model in float32 (half precision overflows first) and feed images through the model's image processor "
    "(rescaled and normalized)."
)


LABEL_KEYS = ("labels", "label")


def _as_tensor(value: Any, what: str) -> torch.Tensor:
    """``value`` (a tensor, an array, a number, or a list of those, one per image) as one tensor: a list of
    per-image tensors or arrays is stacked, so a batch read from a `datasets.Dataset` or its transform is one batch."""
    if isinstance(value, torch.Tensor):
        return value
    try:
        if isinstance(value, (list, tuple)) and value and all(hasattr(v, "shape") and len(v.shape) for v in value):
            return torch.stack([torch.as_tensor(v) for v in value])
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as error:
        reason = first_line(error)
        raise CalibrationDataError(
            f"Cannot read `{what}` as one tensor ({type(value).__name__}: {reason}): give one tensor per batch, or "
            "one array per image, all of the same shape (resize the images with your image processor)."
        ) from error


def _as_batch(item: Any, require_labels: bool = True) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``(pixel_values, labels, name of the labels entry)`` of one batch (a dict, or an ``(inputs, labels)`` pair)."""
    if isinstance(item, dict) or hasattr(item, "keys"):
        keys = sorted(item.keys())
        if "pixel_values" not in item:
            raise CalibrationDataError(
                f"A calibration batch needs a `pixel_values` entry (images after your image processor); it has no "
                f"`pixel_values`: its rows have {keys}. Apply your image processor first (e.g. "
                "`dataset.with_transform(...)` returning `pixel_values` and `labels`)."
            )
        label_key = next((key for key in LABEL_KEYS if key in item), None)
        if label_key is None and not require_labels:
            return _as_tensor(item["pixel_values"], "pixel_values"), torch.empty(0, dtype=torch.long), "labels"
        if label_key is None:
            raise CalibrationDataError(
                "The calibration data has no labels: data-dependent utilities need the downstream loss, so each "
                f"batch needs a `labels` entry (got keys {keys})."
            )
        pixels = _as_tensor(item["pixel_values"], "pixel_values")
        return pixels, _as_tensor(item[label_key], label_key), label_key
    if isinstance(item, (tuple, list)) and len(item) >= 2:
        return _as_tensor(item[0], "pixel_values"), _as_tensor(item[1], "labels"), "labels"
    raise CalibrationDataError(
        f"Cannot read a calibration batch from a {type(item).__name__}: expected a dict with `pixel_values` and "
        "`labels`, or an (inputs, labels) tuple."
    )


def iter_batches(data: Any, num_batches: int, batch_size: int = 32, *, require_labels: bool = True) -> Iterator[Batch]:
    """Yields at most ``num_batches`` ``(pixel_values, labels)`` batches from ``data``, each checked as it is read
    ([`check_batch`]).

    Args:
        data: a `torch.utils.data.DataLoader` (or any iterable of batches: dicts with ``pixel_values`` and
            ``labels``, or ``(inputs, labels)`` tuples), or a `datasets.Dataset` or `datasets.IterableDataset`
            whose rows (read through its transform or format, if it has one) have those entries (read in order,
            ``batch_size`` rows at a time).
        num_batches: how many batches to take.
        batch_size: rows per batch when ``data`` is a `datasets.Dataset`.
        require_labels: when False, batches without labels are accepted (their labels come back empty).

    Raises:
        CalibrationDataError: when ``data`` is None, empty, has no labels (and labels are required), or a batch is
            not a finite float image batch with one integer class index per image.
    """
    if data is None:
        raise CalibrationDataError(
            "This strategy scores weights on downstream data: pass `data=` (a DataLoader or "
            "a datasets.Dataset with `pixel_values` and `labels`)."
        )
    source = _hf_dataset_batches(data, batch_size) if _is_hf_dataset(data) else data
    count = 0
    for item in itertools.islice(source, num_batches):
        pixel_values, labels, label_key = _as_batch(item, require_labels)
        check_batch(count, pixel_values, labels, label_key)
        count += 1
        yield pixel_values, labels
    if count == 0:
        raise CalibrationDataError("The calibration data yielded no batch.")


def check_batch(index: int, pixel_values: torch.Tensor, labels: torch.Tensor, label_key: str = "labels") -> None:
    """Raises a [`CalibrationDataError`] naming batch ``index`` (0-based) and the entry at fault unless its pixel
    values are a finite float batch (batch size first; images: (N, C, H, W)) and its labels one class index per
    image, of an integer dtype, and >= 0. Float labels are refused even when their values are whole numbers: a float
    column usually means a regression target or a wrong column, and reading it as classes would truncate it. Empty
    labels pass (BatchNorm re-estimation reads no labels). That the labels are below the head's number of outputs is
    checked where the model's outputs are known ([`downstream_loss`]). An item that looks like one sample (one
    label, for one image) is named as such: per-sample data (a torch Dataset, a list of per-image rows) must be
    batched first."""
    where = f"Calibration batch {index}"
    if _one_sample(pixel_values, labels):
        raise CalibrationDataError(
            f"{where} looks like a single sample, not a batch: its `{label_key}` is one class index (shape "
            f"{tuple(labels.shape)}) and its `pixel_values` one image (shape {tuple(pixel_values.shape)}). Pass "
            "batches: wrap per-sample data (a torch Dataset, a list of per-image rows) in a DataLoader, e.g. "
            "`DataLoader(dataset, batch_size=32)`, or pass a `datasets.Dataset`, which is read in batches."
        )
    if pixel_values.dim() < 2 or pixel_values.shape[0] == 0:
        raise CalibrationDataError(
            f"{where}: `pixel_values` must be a batch, batch size first (images: (N, C, H, W)), got shape "
            f"{tuple(pixel_values.shape)}."
        )
    if not pixel_values.is_floating_point():
        raise CalibrationDataError(
            f"{where}: `pixel_values` must be float images (your image processor's output), got dtype "
            f"{pixel_values.dtype}: apply the model's image processor (it rescales and normalizes) first."
        )
    bad = int((~torch.isfinite(pixel_values)).sum())
    if bad:
        raise CalibrationDataError(
            f"{where} holds {bad} NaN or infinite pixel values (of {pixel_values.numel()}): clean or drop those "
            "images; they would make every score, and any re-estimated BatchNorm statistic, NaN."
        )
    if labels.numel() == 0:
        return
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        example = labels.reshape(-1)[0].item()
        raise CalibrationDataError(
            f"{where}: `{label_key}` must hold integer class indices (an integer dtype such as int64), got dtype "
            f"{labels.dtype} (e.g. {example!r}). Float labels are not rounded or truncated: cast the column to "
            f"integers (e.g. `dataset.cast_column({label_key!r}, ClassLabel(names=...))`) if they are classes."
        )
    if labels.dim() != 1 or labels.shape[0] != pixel_values.shape[0]:
        raise CalibrationDataError(
            f"{where}: `{label_key}` must hold one class index per image ({pixel_values.shape[0]}), got shape "
            f"{tuple(labels.shape)}."
        )
    if int(labels.min()) < 0:
        raise CalibrationDataError(f"{where}: `{label_key}` must be >= 0 (class indices), got {int(labels.min())}.")


def _one_sample(pixel_values: torch.Tensor, labels: torch.Tensor) -> bool:
    """Whether an item is one sample rather than a batch: a scalar label, or one label with an unbatched image
    (C, H, W) whose first dimension is not 1."""
    if labels.dim() == 0:
        return True
    return labels.numel() == 1 and pixel_values.dim() == 3 and pixel_values.shape[0] != 1


def _is_hf_dataset(data: Any) -> bool:
    """Whether ``data`` is a `datasets.Dataset` or `datasets.IterableDataset` (duck-typed: `datasets` is imported
    only where it is used)."""
    return hasattr(data, "column_names") and hasattr(data, "features") and hasattr(data, "__getitem__")


def _hf_dataset_batches(data: Any, batch_size: int) -> Iterable[Any]:
    """``data``'s rows, ``batch_size`` at a time and in order, read through its transform or format (its column
    names are the raw ones): sliced from a `datasets.Dataset`, streamed from a `datasets.IterableDataset` (which has
    no length)."""
    if hasattr(data, "__len__"):
        return (data[start : start + batch_size] for start in range(0, len(data), batch_size))
    return data.iter(batch_size=batch_size)


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of the model's first floating parameter."""
    for param in model.parameters():
        if param.is_floating_point():
            return param.device, param.dtype
    return torch.device("cpu"), torch.float32


def _logits(output: Any) -> torch.Tensor:
    """The class scores in a model's output: a tensor, its ``logits``, or the first entry of a tuple (plain modules).

    Raises:
        ValueError: for an output without class scores (a backbone without a classification head), naming it.
    """
    logits = getattr(output, "logits", output)
    if isinstance(logits, (tuple, list)) and logits:
        logits = logits[0]
    if isinstance(logits, torch.Tensor):
        return logits
    fields = f" (fields {list(output.keys())})" if hasattr(output, "keys") else ""
    raise ValueError(
        f"The model returned a {type(output).__name__}{fields} without `logits`: the downstream loss needs class "
        "scores, so the model needs a classification head. Load it with one (e.g. "
        "`AutoModelForImageClassification.from_pretrained(..., num_labels=N)`), or give a module whose output is the "
        "logits tensor."
    )


def downstream_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Cross-entropy of ``model`` on one batch; works for transformers models and for plain modules (their output
    the logits, or a tuple that starts with them).

    Raises:
        ValueError: when the model's output holds no logits (no classification head).
        CalibrationDataError: when a label is not below the head's number of outputs.
    """
    device, dtype = model_device_dtype(model)
    pixel_values, labels = batch
    pixel_values = pixel_values.to(device=device, dtype=dtype)
    labels = labels.to(device=device, dtype=torch.long)
    logits = _logits(model(pixel_values))
    if labels.numel() and int(labels.max()) >= logits.shape[-1]:
        raise CalibrationDataError(
            f"The calibration labels go up to {int(labels.max())}, but the model's head has {logits.shape[-1]} "
            "outputs: give the model a head for the data's classes (e.g. `from_pretrained(..., num_labels=N, "
            "ignore_mismatched_sizes=True)`) before restoring."
        )
    return F.cross_entropy(logits.float(), labels)


class ReplayableBatches:
    """Reads batches from ``source`` on demand and replays them: every reader sees the same batches, in the same
    order, and the source is read at most once, only as far as the furthest reader went.

    A restore reads its calibration data several times (scoring, BatchNorm re-estimation, diagnostics before and
    after). A one-pass iterator would give each step other batches, and a shuffling DataLoader another order; wrapped
    here, every step of one restore reads the same batches, whether the data came from the user or from a Trainer.

    Example:

    ```python
    >>> from hf_plasticity.core.data import ReplayableBatches
    >>> batches = ReplayableBatches(iter([1, 2, 3]))
    >>> list(zip(range(2), batches)), list(batches)
    ([(0, 1), (1, 2)], [1, 2, 3])
    ```
    """

    def __init__(self, source: Iterable[Any]) -> None:
        self.source = source
        self.read: list[Any] = []
        self._iterator: Iterator[Any] | None = None
        self._exhausted = False

    def __iter__(self) -> Iterator[Any]:
        position = 0
        while True:
            if position < len(self.read):
                yield self.read[position]
                position += 1
                continue
            if self._exhausted:
                return
            if self._iterator is None:
                self._iterator = iter(self.source)
            try:
                item = next(self._iterator)
            except StopIteration:
                self._exhausted = True
                return
            self.read.append(item)


def replayable(data: Any) -> Any:
    """``data`` wrapped in [`ReplayableBatches`]; None, a `datasets.Dataset` (read in order, ``batch_size`` rows at a
    time, the same way each time) and data already wrapped are returned as they are."""
    if data is None or isinstance(data, ReplayableBatches) or _is_hf_dataset(data):
        return data
    return ReplayableBatches(data)
