"""A comparison from loaded inputs to its report: the three splits ([`make_splits`]), every run still missing from the
output folder (a resumed comparison adds only those) and the report ([`run_comparison`]).

What the output folder holds, whether it is resumed, started afresh or refused, and its lock are
[`hf_plasticity.comparison.output_folder`]'s; the settings that identify a comparison are
[`hf_plasticity.comparison.settings`]'s.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .launch import is_main_process
from .output_folder import save_settings, start_afresh
from .report import summarize, write_report
from .runner import CONFIRM, RunSpec, train_run
from .settings import ComparisonSettings
from .splits import ComparisonInputError, stratified_split, stratified_subset, with_class_labels
from .store import RunStore
from .tuning import TUNE_SEEDS, run_schedule, tuning_table


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Within it, transformers shows no progress bar (loading weights) and logs errors only (not the new head's
    warning); both are restored on exit."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def make_splits(
    train: Any, val: Any | None, test: Any | None, label: str, settings: ComparisonSettings
) -> tuple[Any, Any, Any, dict[str, str]]:
    """The training, validation and test splits (carved, stratified, from ``train`` where not given; the training
    split then cut to ``max_train_samples``, stratified), and how each was made.

    Raises:
        ComparisonInputError: when ``max_train_samples`` is below the number of classes (a stratified subset keeps one
            example of each), or the data is too small to carve a split.
    """
    train = with_class_labels(train, label)
    classes = len(train.unique(label))
    if settings.max_train_samples is not None and settings.max_train_samples < classes:
        raise ComparisonInputError(
            f"max_train_samples is {settings.max_train_samples}, fewer than the {classes} classes of split "
            f"{settings.split!r}: a stratified subset keeps at least one example of each class. Pass "
            f"--max-train-samples {classes} or more, or none to train on the whole split."
        )
    how = {"train": f"split {settings.split!r}"}
    if test is None:
        train, test = stratified_split(train, label, settings.test_fraction, settings.split_seed, "test")
        how["test"] = (
            f"{settings.test_fraction:.0%} of {settings.split!r}{_at_least_one_per_class(len(test))}, stratified "
            f"(seed {settings.split_seed})"
        )
    else:
        how["test"] = f"split {settings.test_split!r}"
    if val is None:
        train, val = stratified_split(train, label, settings.val_fraction, settings.split_seed, "val")
        how["val"] = (
            f"{settings.val_fraction:.0%} of the rest of {settings.split!r}{_at_least_one_per_class(len(val))}, "
            "stratified"
        )
    else:
        how["val"] = f"split {settings.val_split!r}"
    if settings.max_train_samples is not None and settings.max_train_samples < len(train):
        train = stratified_subset(train, label, settings.max_train_samples, settings.split_seed)
        how["train"] += f", {settings.max_train_samples} examples of it (stratified)"
    elif settings.max_train_samples is not None:
        how["train"] += f", all {len(train)} examples of it (max_train_samples is {settings.max_train_samples})"
    return train, val, test, how


def _at_least_one_per_class(rows: int) -> str:
    """The carved split's real size: a share of a small split is raised to one example per class."""
    return f" ({rows} examples; at least one per class)"


def run_comparison(
    settings: ComparisonSettings,
    *,
    arms: Sequence[str],
    seeds: int,
    output: str,
    load_model: Callable[[], Any],
    splits: tuple[Any, Any, Any],
    calibration: Any,
    overwrite: bool,
    split_notes: dict[str, str],
    identity: dict[str, Any],
    progress: bool = True,
) -> dict[str, Any]:
    """Runs (or resumes) the comparison and writes its report; returns the summary (also ``summary.json``).

    Args:
        settings: the comparison's settings.
        arms: the validated arm names.
        seeds: the number of paired confirmation seeds.
        output: the output folder (checked with [`hf_plasticity.comparison.output_folder.check_output`]).
        load_model: returns the pretrained model with its new head.
        splits: the training, validation and test datasets, yielding ``pixel_values`` and ``labels``.
        calibration: training batches for data-dependent strategies.
        overwrite: start afresh in a folder that holds a comparison (its own files are deleted:
            [`hf_plasticity.comparison.output_folder.start_afresh`]).
        split_notes: how each split was made (for the report).
        identity: the model's and the data's identity (recorded in ``settings.json`` and the summary).
        progress: show the bar over the runs.
    """
    main = is_main_process()
    if main:
        os.makedirs(output, exist_ok=True)
        if overwrite:
            start_afresh(output)
        save_settings(output, settings, identity)
    # Every process reads the records as they were at the start (no process can add one before all of them reach
    # the first run, whose DDP steps need every process); after --overwrite none of them reads the old ones.
    store = RunStore(output, write=main, read=not overwrite)
    train, val, test = splits

    with quiet_transformers():  # one bar over the runs, not a weight-loading bar and a new-head warning per run
        chosen = _run_all(settings, arms, seeds, store, load_model, splits, calibration, progress and main)
    summary = summarize(arms, chosen, store.phase(CONFIRM), seeds=range(seeds))
    summary.update(
        settings=settings.to_dict(),
        identity=identity,
        splits={"how": split_notes, "sizes": {"train": len(train), "val": len(val), "test": len(test)}},
        tuning={"seeds": list(TUNE_SEEDS), "grid": tuning_table(arms, settings.grid, store)},
        output=os.path.abspath(output),
    )
    if main:
        write_report(summary, output)
    return summary


def _run_all(
    settings: ComparisonSettings,
    arms: Sequence[str],
    seeds: int,
    store: RunStore,
    load_model: Callable[[], Any],
    splits: tuple[Any, Any, Any],
    calibration: Any,
    progress: bool,
) -> dict[str, tuple[float, float]]:
    """Every run still missing from ``store``, in a scratch folder for the `Trainer`; returns the chosen configs."""
    train, val, test = splits
    with tempfile.TemporaryDirectory(prefix="hf-plasticity-compare-") as workdir:

        def train_one(spec: RunSpec) -> dict[str, Any]:
            return train_run(
                spec,
                load_model=load_model,
                train=train,
                val=val,
                test=test if spec.phase == CONFIRM else None,
                budget=settings.budget,
                workdir=workdir,
                calibration=calibration,
            )

        return run_schedule(arms, settings.grid, list(range(seeds)), store, train_one, progress=progress)
