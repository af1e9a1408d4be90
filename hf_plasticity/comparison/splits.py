"""The comparison's three splits: training, validation (for tuning) and test (scored once per confirmation run).

A split the data does not provide is carved from the training split, stratified by class with
`datasets.Dataset.train_test_split(stratify_by_column=...)`: the test split first, then the validation split from what
is left, so the three are disjoint and keep the class proportions.
"""

from __future__ import annotations

from typing import Any


class ComparisonInputError(ValueError):
    """The comparison cannot run on this input (data, arms, options, output folder); nothing was written."""


def with_class_labels(dataset: Any, label: str) -> Any:
    """``dataset`` with its integer label column typed as a `ClassLabel` (stratified splitting needs one)."""
    from datasets import ClassLabel

    feature = dataset.features[label]
    if isinstance(feature, ClassLabel):
        return dataset
    values = dataset.unique(label)
    if not values:
        raise ComparisonInputError(
            f"The data has no examples (its label column {label!r} is empty): pass labelled images."
        )
    negative = sorted(value for value in values if isinstance(value, int) and value < 0)
    if negative and all(isinstance(value, int) for value in values):
        raise ComparisonInputError(
            f"The label column {label!r} holds negative labels {negative} (-1 usually means 'no label'); compare "
            "needs a class index >= 0 for every image: drop the unlabelled rows "
            f"(`dataset.filter(lambda row: row[{label!r}] >= 0)`) or pass a labelled split."
        )
    if not all(isinstance(value, int) and value >= 0 for value in values):
        raise ComparisonInputError(
            f"The label column {label!r} holds {type(values[0]).__name__} values; compare needs class indices "
            "(a ClassLabel column, as imagefolder and most Hub image datasets have, or non-negative integers)."
        )
    return dataset.cast_column(label, ClassLabel(names=[str(i) for i in range(max(values) + 1)]))


#: Per carved split, the options that change its size or give it instead.
_SPLIT_OPTIONS = {
    "test": "a smaller --test-fraction, or a split of the data as the test split with --test-split",
    "val": "a smaller --val-fraction, or a split of the data as the validation split with --val-split",
}


def stratified_split(dataset: Any, label: str, size: float | int, seed: int, what: str) -> tuple[Any, Any]:
    """``(rest, held_out)``: ``size`` examples (an int) or that share (a float) of ``dataset`` held out, with the
    class proportions of ``dataset``, seeded.

    Args:
        dataset: the split to carve from.
        label: its `ClassLabel` column.
        size: the held-out split's size or share (raised to one example per class).
        seed: the seed of the draw.
        what: the held-out split (``"test"`` or ``"val"``), named in a refusal with the options that help.

    Raises:
        ComparisonInputError: when the data is too small to hold out at least one example of each class and keep one.
    """
    classes = len(dataset.unique(label))
    count = size if isinstance(size, int) else round(size * len(dataset))
    count = max(count, classes)
    if len(dataset) - count < classes:
        remedy = _SPLIT_OPTIONS.get(what, "more examples")
        raise ComparisonInputError(
            f"Too few examples to carve the {what} split: {len(dataset)} examples of {classes} classes, and the "
            f"{what} split and the rest each need at least one example per class. Pass more images, or {remedy}."
        )
    try:
        parts = dataset.train_test_split(test_size=count, stratify_by_column=label, seed=seed)
    except ValueError as error:  # e.g. a class with a single example
        raise ComparisonInputError(f"Cannot carve a stratified {what} split: {error}") from error
    return parts["train"], parts["test"]


def stratified_subset(dataset: Any, label: str, count: int, seed: int) -> Any:
    """``count`` examples of ``dataset`` with its class proportions (at least one of each class), seeded: what
    ``max_train_samples`` keeps of the training split. Unlike [`stratified_split`], what is left out needs no
    example of each class: a subset one example short of the split is fine.

    The subset is the held-out part of `datasets.Dataset.train_test_split` (stratified) where that split can be
    drawn (what is left out holds one example per class or more, and each class two), so comparisons recorded before
    keep their subset; otherwise (fewer left out than there are classes, or a class of one example) each class keeps
    its share of ``count`` rounded by largest remainder (at least one example, at most all of its examples), drawn
    with ``seed``.

    Raises:
        ComparisonInputError: when ``count`` is below the number of classes.

    Example:

    ```python
    >>> from datasets import ClassLabel, Dataset
    >>> dataset = Dataset.from_dict({"label": [0] * 12 + [1] * 7}).cast_column("label", ClassLabel(names=["a", "b"]))
    >>> sorted(stratified_subset(dataset, "label", 18, seed=0)["label"]).count(0)
    11
    ```
    """
    import numpy as np

    labels = np.asarray(dataset[label])
    classes, sizes = np.unique(labels, return_counts=True)
    if count >= len(labels):
        return dataset
    if count < len(classes):
        raise ComparisonInputError(
            f"A stratified subset of {count} examples cannot keep one example of each of the {len(classes)} classes."
        )
    if len(labels) - count >= len(classes):
        try:
            return dataset.train_test_split(test_size=count, stratify_by_column=label, seed=seed)["test"]
        except ValueError:  # a class with a single example: drawn below instead
            pass
    shares = sizes * count / len(labels)
    keep = np.minimum(np.maximum(np.floor(shares).astype(int), 1), sizes)
    while keep.sum() > count:  # the class kept furthest above its share gives one back (never its last)
        keep[max(np.flatnonzero(keep > 1), key=lambda i: keep[i] - shares[i])] -= 1
    while keep.sum() < count:  # the class furthest below its share gets one more
        keep[max(np.flatnonzero(keep < sizes), key=lambda i: shares[i] - keep[i])] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(labels == value), size=n, replace=False) for value, n in zip(classes, keep)]
    return dataset.select(sorted(int(index) for index in np.concatenate(chosen)))
