"""Downstream image data for the command line: an `imagefolder` directory, a folder written by
`Dataset.save_to_disk`, or a Hub dataset id, turned into ``pixel_values`` / ``labels`` batches with the model's
image processor.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch

from ..core.messages import first_line
from .hub import HubUnreachableError, hub_access


class DataLoadError(ValueError):
    """The downstream data cannot be loaded or has no image and label columns."""


def load_image_dataset(source: str, split: str = "train"):
    """Loads one split of an image-classification dataset.

    Args:
        source: an `imagefolder` directory (one sub-folder per class, or ``train/``, ``test/`` split folders), a
            folder written by `datasets.Dataset.save_to_disk`, or a Hub dataset id.
        split: the split to read.

    Returns:
        `datasets.Dataset`

    Raises:
        DataLoadError: when the source cannot be read, the split does not exist, or it has no image column.

    Example:

    ```python
    >>> dataset = load_image_dataset("path/to/images")  # doctest: +SKIP
    >>> class_names(dataset)  # doctest: +SKIP
    ['cats', 'dogs']
    ```
    """
    import datasets

    datasets.disable_progress_bars()
    try:
        if is_saved_dataset(source):
            loaded = datasets.load_from_disk(source)
        elif os.path.isdir(source):
            with _no_download_count():
                loaded = datasets.load_dataset("imagefolder", data_dir=source)
        elif os.path.exists(source):
            raise DataLoadError(f"Data {source!r} is a file; pass an imagefolder directory or a Hub dataset id.")
        elif os.path.isabs(source) or source.startswith((".", "~")) or source.count("/") > 1:
            raise DataLoadError(f"Cannot load data {source!r}: no such directory.")
        else:
            loaded = datasets.load_dataset(source, **_download_mode(hub_access(source, "dataset")))
    except DataLoadError:
        raise
    except HubUnreachableError as error:  # already one clear line
        raise DataLoadError(str(error)) from error
    except Exception as error:
        reason = first_line(error)
        kind = "an imagefolder directory" if os.path.isdir(source) else "a directory, nor a loadable Hub dataset"
        raise DataLoadError(f"Cannot load data {source!r} (not {kind}): {reason}") from error
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DataLoadError(f"Data {source!r} has no split {split!r}; it has {sorted(loaded)}.")
        loaded = loaded[split]
    image_column(loaded)
    if label_column(loaded) is None and os.path.isdir(source):
        classes = sorted({os.path.basename(os.path.dirname(path)) for path in _image_paths(loaded)})
        raise DataLoadError(
            f"Data {source!r} has {len(classes)} class folder{'s' if len(classes) != 1 else ''} ({', '.join(classes)})"
            ": an image-classification dataset needs one sub-folder per class, and at least two classes."
        )
    return loaded


def is_saved_dataset(source: str) -> bool:
    """Whether ``source`` is a folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk` (it holds a
    ``state.json`` or a ``dataset_dict.json``), read with `datasets.load_from_disk`."""
    return os.path.isdir(source) and any(
        os.path.isfile(os.path.join(source, name)) for name in ("state.json", "dataset_dict.json")
    )


@contextlib.contextmanager
def _no_download_count() -> Iterator[None]:
    """Within it, `datasets.load_dataset` does not count the load on the Hub: for a packaged builder on local files
    (``"imagefolder"``) it would otherwise send a HEAD request (a DNS lookup and a connection, up to 3 s without a
    network) whenever ``HF_HUB_OFFLINE`` is not set. The setting is restored on exit."""
    from datasets import config

    before = config.HF_UPDATE_DOWNLOAD_COUNTS
    config.HF_UPDATE_DOWNLOAD_COUNTS = False
    try:
        yield
    finally:
        config.HF_UPDATE_DOWNLOAD_COUNTS = before


def _download_mode(hub_kwargs: dict[str, Any]) -> dict[str, Any]:
    """`load_dataset` keywords for the Hub access [`hub_access`] found (the cache only when the Hub is unreachable)."""
    return {"download_mode": "reuse_cache_if_exists"} if hub_kwargs.get("local_files_only") else {}


def _image_paths(dataset: Any) -> list[str]:
    """The file paths behind the image column (without decoding the images)."""
    from datasets import Image

    name = image_column(dataset)
    rows = dataset.cast_column(name, Image(decode=False))[name]
    return [row.get("path") or "" for row in rows]


def image_column(dataset: Any) -> str:
    """The name of the dataset's image column (an `Image` feature, else ``image`` / ``img``)."""
    from datasets import Image

    for name, feature in dataset.features.items():
        if isinstance(feature, Image):
            return name
    for name in ("image", "img"):
        if name in dataset.column_names:
            return name
    raise DataLoadError(f"The data has no image column; its columns are {dataset.column_names}.")


def label_column(dataset: Any) -> str | None:
    """The name of the label column (a `ClassLabel` feature, else ``label`` / ``labels``), or None."""
    from datasets import ClassLabel

    for name, feature in dataset.features.items():
        if isinstance(feature, ClassLabel):
            return name
    return next((n for n in ("label", "labels") if n in dataset.column_names), None)


def class_names(dataset: Any) -> list[str] | None:
    """The class names of a `ClassLabel` label column, or None."""
    from datasets import ClassLabel

    name = label_column(dataset)
    feature = dataset.features.get(name) if name else None
    return list(feature.names) if isinstance(feature, ClassLabel) else None


def with_pixel_values(dataset: Any, processor: Any, *, seed: int | None = 0):
    """The dataset, shuffled with ``seed`` (None: kept in order), with rows turned into ``pixel_values`` (the
    processor's output) and ``labels`` on the fly."""
    image_name, label_name = image_column(dataset), label_column(dataset)
    if label_name is None:
        raise DataLoadError(f"The data has no label column; its columns are {dataset.column_names}.")
    dtype = str(getattr(dataset.features[label_name], "dtype", ""))
    if not dtype.startswith(("int", "uint")):
        raise DataLoadError(
            f"The label column {label_name!r} holds {dtype or type(dataset.features[label_name]).__name__} values; "
            "it must hold integer class indices (a ClassLabel or an integer column). Float labels are not rounded or "
            "truncated."
        )
    if seed is not None:
        dataset = dataset.shuffle(seed=seed)

    from datasets import Image

    dataset = dataset.cast_column(image_name, Image(decode=False))  # decoded below, so a broken file is named

    def transform(batch: dict[str, list]) -> dict[str, Any]:
        images = [_decode(item) for item in batch[image_name]]
        pixel_values = processor(images, return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixel_values, "labels": torch.as_tensor(batch[label_name])}

    return dataset.with_transform(transform)


def _decode(item: dict[str, Any]):
    """One RGB PIL image from a ``{"path", "bytes"}`` row; a file that cannot be read is named in the error."""
    import io

    from PIL import Image as PILImage

    path = item.get("path")
    try:
        source = io.BytesIO(item["bytes"]) if item.get("bytes") else path
        with PILImage.open(source) as image:
            return image.convert("RGB")
    except (OSError, ValueError) as error:
        raise DataLoadError(f"Cannot read image {path or '(bytes)'}: {error}") from error


class BatchProgress:
    """Re-iterable batches of a processed dataset with a tqdm progress bar per pass (each pass starts a new bar).

    Args:
        dataset: a dataset from [`with_pixel_values`].
        batch_size: rows per batch.
        description: the bar's label.
        progress: False for no bar.
    """

    def __init__(self, dataset: Any, batch_size: int, description: str = "batches", progress: bool = True) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.description = description
        self.progress = progress

    def __len__(self) -> int:
        return -(-len(self.dataset) // self.batch_size)

    def _batches(self) -> Iterator[dict[str, torch.Tensor]]:
        for start in range(0, len(self.dataset), self.batch_size):
            rows = self.dataset[start : start + self.batch_size]
            yield {"pixel_values": rows["pixel_values"], "labels": rows["labels"]}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        """Yields the batches; the bar appears with the first batch read (1/N, never 0) and counts what the reader
        takes, out of the data's N batches."""
        if not self.progress:
            yield from self._batches()
            return
        from tqdm.auto import tqdm

        bar = None
        try:
            for batch in self._batches():
                if bar is None:
                    bar = tqdm(total=len(self), initial=1, desc=self.description, unit="batch", leave=False)
                else:
                    bar.update(1)
                yield batch
        finally:
            if bar is not None:
                bar.close()
