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


def stratified_split(dataset: Any, label: str, size: float | int, seed: int, what: str) -> tuple[Any, Any]:
    """``(rest, held_out)``: ``size`` examples (an int) or that share (a float) of ``dataset`` held out, with the
    class proportions of ``dataset``, seeded.

    Raises:
        ComparisonInputError: when the data is too small to hold out at least one example of each class and keep one.
    """
    classes = len(dataset.unique(label))
    count = size if isinstance(size, int) else round(size * len(dataset))
    count = max(count, classes)
    if len(dataset) - count < classes:
        raise ComparisonInputError(
            f"Too few examples to carve the {what} split: {len(dataset)} examples of {classes} classes; each split "
            f"needs at least one example per class (pass a larger --data or the split with --{what}-split)."
        )
    try:
        parts = dataset.train_test_split(test_size=count, stratify_by_column=label, seed=seed)
    except ValueError as error:  # e.g. a class with a single example
        raise ComparisonInputError(f"Cannot carve a stratified {what} split: {error}") from error
    return parts["train"], parts["test"]
