"""`hf-plasticity compare` and `hf_plasticity.compare`: does a restore help on MY model and data?

A fair comparison on the user's own model and data: standard fine-tuning, the default restore (the re-drawn blocks
and the head at their own learning rate), the learning-rate-only control (the same blocks at the same learning rate,
not re-drawn) and any strategy named, each tuned on a validation split, and the sweep-free recommended recipe
(`recommend_recipe`'s rates, chosen per run from one diagnostic pass, not tuned); then every arm trained on paired
seeds and scored once on a test split; resumable; with a report (table with 95% CIs, verdict, learning curves,
difference plot, JSON summary).

Example:

```bash
hf-plasticity compare facebook/convnext-tiny-224 --data ./my-images --epochs 3 --seeds 3 --output cmp
```
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

from ..comparison.arms import (
    DEFAULT_ARMS,
    RECOMMENDED,
    check_arms,
    check_lp_ft,
    check_periodic_arms,
    check_recipe_data,
    check_recipe_pass,
)
from ..comparison.identity import data_identity, model_identity
from ..comparison.launch import is_main_process, world_size
from ..comparison.output_folder import check_output, output_lock
from ..comparison.session import make_splits, quiet_transformers, run_comparison
from ..comparison.settings import ComparisonSettings
from ..comparison.splits import ComparisonInputError
from ..core.validators import check_number, check_positive_int
from ._common import (
    CommandError,
    add_data_arguments,
    check_output_dir,
    checked,
    load_data,
    load_model,
    load_processor,
    reports_errors,
)

DEFAULTS = ComparisonSettings(model="", data="")
#: What each built-in arm is, for the help.
ARMS_HELP = (
    "standard: plain fine-tuning, tuned (required: the baseline of every difference); "
    "restore: the default restore, its re-drawn blocks and the head at the own lr, tuned; "
    "control: the same blocks and the head at the own lr, not re-drawn, tuned; "
    "recommended: no sweep, the backbone and head lrs recommend_recipe chooses per seed from one forward pass over "
    "256 training images, not tuned (only --seeds runs); "
    "lp_ft: LP-FT (Kumar et al., ICLR 2022), the published anchor: the head alone with the backbone frozen for a "
    "third of the epochs, then everything, each phase with its own schedule; the own lr is the head's, tuned (2 "
    "epochs or more); "
    "or a strategy name (selective, auto, ...): its default config, tuned; one that acts during training (redo, cbp, "
    "rifle) applies its resets in its runs, and is refused if it could not act in them"
)


def _input(call: Any, *args: Any, **kwargs: Any) -> Any:
    """A loader of the command line, its one-line refusal raised as a [`ComparisonInputError`] (a ValueError)."""
    try:
        return call(*args, **kwargs)
    except CommandError as error:
        raise ComparisonInputError(str(error)) from error


def _check_distinct_splits(settings: ComparisonSettings) -> None:
    """Refuses a validation or test split that is the training split or each other: tuning or testing on the images
    trained on (or tuning on the test) would make the comparison meaningless."""
    named = {
        option: value
        for option, value in (("split", settings.split), ("val_split", settings.val_split),
                              ("test_split", settings.test_split))
        if value is not None
    }  # fmt: skip
    if len(set(named.values())) < len(named):
        given = ", ".join(f"{option} {value!r}" for option, value in named.items())
        raise ComparisonInputError(
            f"The training, validation and test splits must be three different splits; got {given} "
            "(--split, --val-split, --test-split). Leave the validation or test split unset to carve it from the "
            "training split."
        )


#: The largest seed `datasets` accepts for a carved split (numpy's seeds are 32-bit).
MAX_SPLIT_SEED = 2**32 - 1


def _check_split_seed(name: str, value: Any) -> None:
    """Raises a `ValueError` naming ``name`` unless ``value`` is an integer in [0, 2**32 - 1] (the seeds `datasets`
    draws a carved split with)."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_SPLIT_SEED:
        raise ValueError(f"`{name}` must be an integer in [0, {MAX_SPLIT_SEED}], got {value!r}.")


def _check_rates(name: str, values: Any) -> None:
    """Raises a `ValueError` naming ``name`` unless ``values`` holds at least one learning rate, each > 0."""
    if not values:
        raise ValueError(f"`{name}` needs at least one learning rate.")
    for value in values:
        check_number(name, value, low=0, low_open=True)


#: The checks of the numeric options: ``(name, check, keyword arguments)``; the name is the keyword of `compare`, and
#: ``--name-with-dashes`` the command line's option.
OPTION_CHECKS: tuple[tuple[str, Callable[..., None], dict[str, Any]], ...] = (
    ("seeds", check_positive_int, {}),
    ("epochs", check_positive_int, {}),
    ("batch_size", check_positive_int, {}),
    ("max_train_samples", check_positive_int, {"allow_none": True}),
    ("val_fraction", check_number, {"low": 0, "high": 1, "low_open": True, "high_open": True}),
    ("test_fraction", check_number, {"low": 0, "high": 1, "low_open": True, "high_open": True}),
    ("backbone_lrs", _check_rates, {}),
    ("own_lrs", _check_rates, {}),
    ("weight_decay", check_number, {"low": 0}),
    ("warmup", check_number, {"low": 0, "high": 1, "high_open": True}),
    ("split_seed", _check_split_seed, {}),
)


def _check_options(settings: ComparisonSettings, seeds: int) -> None:
    _check_distinct_splits(settings)
    values = {**dataclasses.asdict(settings), "seeds": seeds}
    for name, check, kwargs in OPTION_CHECKS:
        check(name, values[name], **kwargs)


def _path_argument(name: str, value: Any) -> str:
    """``value`` as a `str` path: a `str` or an `os.PathLike` (`pathlib.Path`), turned into its `str` with
    `os.fspath` before anything else runs, a leading ``~`` expanded to the home folder (as a shell expands it on the
    command line; an API caller's ``"~/x"`` would otherwise be a folder named ``~`` in the working directory).

    Raises:
        TypeError: for anything else (naming the argument).
    """
    path = os.fspath(value) if isinstance(value, os.PathLike) else value
    if not isinstance(path, str):
        raise TypeError(f"`{name}` must be a str or a path (os.PathLike), got {type(value).__name__} {value!r}.")
    return os.path.expanduser(path)


def _check_output_path(output: str) -> None:
    """Refuses, before anything is loaded, an output folder that cannot be written: an empty path, a file or
    something else that is not a folder, a path under a file, a folder that cannot be created or written into (see
    [`check_output_dir`]; whether a non-empty folder may be used is decided later, by [`check_output`])."""
    try:
        check_output_dir(output, overwrite=True)
    except CommandError as error:
        raise ComparisonInputError(str(error)) from error


def _check_label_range(dataset: Any, label: str, what: str, source: str) -> None:
    """Refuses a split with labels outside its `ClassLabel`'s classes (-1, "no label", is common in the test splits of
    Hub datasets): a run would stop at its first evaluation, after the tuning, instead of up front."""
    import numpy as np

    count = len(dataset.features[label].names)
    if all(0 <= value < count for value in dataset.unique(label)):
        return
    labels = np.asarray(dataset.select_columns([label])[label])
    outside = (labels < 0) | (labels >= count)
    raise ComparisonInputError(
        f"Split {what!r} of {source!r} has {int(outside.sum())} of {len(labels)} examples labelled outside its "
        f"{count} classes (labels {sorted(set(labels[outside].tolist()))}; -1 means 'no label', as in many Hub test "
        f"splits): compare needs every example labelled 0 to {count - 1}. Pass another split, or filter those "
        "examples out and save the data (Dataset.filter, save_to_disk)."
    )


def _labelled(dataset: Any, what: str, source: str) -> tuple[Any, str]:
    """The dataset with a `ClassLabel` label column of two classes or more, and that column's name."""
    from ..comparison.splits import with_class_labels
    from ..integrations.datasets_io import label_column

    label = label_column(dataset)
    if label is None:
        raise ComparisonInputError(
            f"The {what} data {source!r} has no labels (no ClassLabel, 'label' or 'labels' column; its columns are "
            f"{dataset.column_names}): compare needs labelled images."
        )
    dataset = with_class_labels(dataset, label)
    _check_label_range(dataset, label, what, source)
    classes = len(dataset.unique(label))
    if classes < 2:
        raise ComparisonInputError(
            f"The {what} data {source!r} has {classes} class; a classification comparison needs at least two."
        )
    return dataset, label


def compare(
    model: str,
    data: str,
    *,
    output: str,
    arms: Sequence[str] = DEFAULT_ARMS,
    seeds: int = 3,
    epochs: int = DEFAULTS.epochs,
    batch_size: int = DEFAULTS.batch_size,
    max_train_samples: int | None = None,
    split: str = "train",
    val_split: str | None = None,
    test_split: str | None = None,
    val_fraction: float = DEFAULTS.val_fraction,
    test_fraction: float = DEFAULTS.test_fraction,
    backbone_lrs: Sequence[float] = DEFAULTS.backbone_lrs,
    own_lrs: Sequence[float] = DEFAULTS.own_lrs,
    weight_decay: float = DEFAULTS.weight_decay,
    warmup: float = DEFAULTS.warmup,
    split_seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Does a restore help on this model and data, and what does skipping the sweep cost? A fair comparison of
    fine-tuning recipes, with a report.

    Every arm but ``recommended`` is tuned on the grid ``backbone_lrs x own_lrs`` on the validation split (one tuning
    seed; ties broken by the mean over a second tuning seed, then by a hash of the configuration, which favours neither
    small nor large learning rates), then trained with its chosen learning rates on the paired seeds ``0 .. seeds-1``
    (the same seed gives the same head init and data order in every arm) and scored once on the test split. The
    ``recommended`` arm is not tuned: each of its seeds calls [`recommend_recipe`] on the freshly loaded model (the
    first 256 images of the training split shuffled with the seed, the budget nearest to ``epochs``) and trains at the
    rates it returns, so its paired difference to the tuned standard is minus the regret of one fine-tune instead of a
    sweep. Writes ``runs.jsonl`` (one record per run; a rerun resumes), ``settings.json`` (the settings, the
    effective batch of the launch, and the identity of the model and data: a sha256 of a local data folder's files),
    ``report.md``, ``summary.json``, ``learning_curves.png`` and ``differences.png`` into ``output``, holding a lock
    there while it runs (a second comparison on the same folder is refused at once).

    Args:
        model: a local model folder (a `str` or `pathlib.Path`) or a Hub model id (an image classifier; its new head
            is sized for the data).
        data: an imagefolder directory, a folder saved with `Dataset.save_to_disk` (a `str` or `pathlib.Path`), or a
            Hub dataset id.
        output: the output folder (a `str` or `pathlib.Path`): new or empty, or holding a comparison with the same
            settings (a local path is compared as an absolute path, a grid in any order) and the same model and data
            behind their paths (resumed). It must be a folder that can be created and written into: checked first.
        arms: the arm names, or one name as a `str`: ``"standard"`` (plain fine-tuning; required: the baseline),
            ``"restore"`` (the default restore, its re-drawn blocks and the head at the own learning rate),
            ``"control"`` (the same blocks at the own learning rate, not re-drawn), ``"recommended"``
            (`recommend_recipe`'s rates per seed, not tuned), ``"lp_ft"`` (LP-FT, the published anchor: the head
            alone for a third of the epochs, then everything) and/or strategy names (their default config: its
            restore, and for ``redo``, ``cbp`` and ``rifle`` its resets during training, through
            `PlasticityCallback`). ``"recipe"``, the earlier name of ``"restore"``, is refused.
        seeds: paired confirmation seeds.
        epochs: passes over the training split in every run.
        batch_size: examples per device and step. Under a launch of several processes the effective batch is
            processes x ``batch_size``; a folder is resumed only under a launch with the effective batch it was
            recorded with.
        max_train_samples: train on a stratified subset of this many examples (None: all).
        split: the split of ``data`` to train on.
        val_split: the split to tune on (None: carved from ``split``, ``val_fraction`` of it, stratified).
        test_split: the split to score on (None: carved from ``split`` first, ``test_fraction`` of it, stratified).
        val_fraction: share of the training split held out for validation when there is no ``val_split``.
        test_fraction: share of the training split held out for the test when there is no ``test_split``.
        backbone_lrs: the backbone learning rates tried (in any order: tried and saved sorted, each once).
        own_lrs: the learning rates tried for the new parameters (the head; the re-drawn or boosted blocks).
        weight_decay: AdamW weight decay.
        warmup: share of steps with a linear warmup before the cosine decay.
        split_seed: seed of the carved splits (0 to 2**32 - 1).
        overwrite: start a new comparison in a non-empty ``output`` that holds no comparison, or one that cannot be
            resumed (other settings, model, data or effective batch): the comparison's own files there are deleted,
            with its finished runs. A folder that holds this very comparison is resumed all the same (with a warning),
            so rerunning a command that carries ``overwrite`` after a kill continues where it stopped; to discard
            finished runs of the same comparison, delete the folder.
        progress: show a progress bar over the runs.

    Returns:
        `dict`: the summary (also written as ``summary.json``): per arm the chosen learning rates (for
        ``recommended``, None and per seed the recipe its pass chose, ``recipes``), the test accuracy per seed, its
        mean and 95% CI, the paired difference to standard with its 95% CI; the verdict; the settings.

    Raises:
        TypeError: for a ``model``, ``data`` or ``output`` that is neither a `str` nor a path.
        ValueError: for bad input (an unknown model, data without labels or with one class, a split with labels outside
            its classes (-1), a validation or test split that is the training split or each other, an unknown or
            renamed arm, ``lp_ft`` below 2 epochs, a strategy arm that could not act in the runs (``rifle`` below 3
            epochs, ``cbp`` in runs too short for one replacement), an output folder that cannot be written, is not
            empty, holds a comparison that cannot be resumed (see ``overwrite``), holds records of a renamed arm or
            ``recommended`` runs of another fit of the rule, or is in use by another comparison, too few training
            images for the ``recommended`` arm's pass, or a pass that cannot choose rates on them: it runs once up
            front), before anything is written.

    Example:

    ```python
    >>> from hf_plasticity import compare
    >>> summary = compare("facebook/convnext-tiny-224", "./my-images", output="cmp", epochs=3)  # doctest: +SKIP
    >>> print(summary["verdict"])  # doctest: +SKIP
    >>> summary["arms"]["recommended"]["difference_to_standard"]["mean"]  # doctest: +SKIP
    ```
    """
    model, data, output = (_path_argument(name, value) for name, value in (("model", model), ("data", data),
                                                                           ("output", output)))  # fmt: skip
    arms = [arms] if isinstance(arms, str) else arms  # one arm's name, not its letters
    settings = ComparisonSettings(
        model=model,
        data=data,
        split=split,
        val_split=val_split,
        test_split=test_split,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        split_seed=split_seed,
        max_train_samples=max_train_samples,
        epochs=epochs,
        batch_size=batch_size,
        backbone_lrs=tuple(float(v) for v in backbone_lrs),
        own_lrs=tuple(float(v) for v in own_lrs),
        weight_decay=weight_decay,
        warmup=warmup,
        world_size=world_size(),
    )
    _check_options(settings, seeds)
    arms = check_arms(arms)
    check_lp_ft(arms, settings.epochs)
    _check_output_path(output)
    with output_lock(output):  # created here; removed again, with the lock, if a check below refuses
        return _compare(settings, arms, seeds, output, overwrite, progress)


def _compare(
    settings: ComparisonSettings, arms: list[str], seeds: int, output: str, overwrite: bool, progress: bool
) -> dict[str, Any]:
    """[`compare`] once its options are checked and the output folder is locked: loads and checks the model and
    data, decides whether the folder is resumed, runs the comparison."""
    from ..integrations.datasets_io import BatchProgress, class_names, with_pixel_values

    data, split, val_split, test_split = settings.data, settings.split, settings.val_split, settings.test_split
    train, label = _labelled(_input(load_data, data, split), split, data)
    names = class_names(train)
    loaded = {split: train}
    others = []
    for other_split in (val_split, test_split):
        if other_split is None:
            others.append(None)
            continue
        other, other_label = _labelled(_input(load_data, data, other_split), other_split, data)
        loaded[other_split] = other
        if other_label != label:
            other = other.rename_column(other_label, label)
        if class_names(other) != names:  # the same classes, by name, as the training split's indices
            try:
                other = other.align_labels_with_mapping({name: i for i, name in enumerate(names)}, label)
            except (KeyError, ValueError) as error:
                raise ComparisonInputError(
                    f"Split {other_split!r} has other classes ({class_names(other)}) than {split!r} ({names})."
                ) from error
        others.append(other)

    def fresh_model() -> Any:
        return _input(load_model, settings.model, labels=names, always_new_head=True)[0]  # a head of its own per seed

    with quiet_transformers():  # one line for a refusal below, not a weight-loading bar before it
        loaded_model = fresh_model()  # refuses an unknown model or no image classifier, before anything is written
    processor = _input(load_processor, settings.model, required=True)
    identity = {
        "model": model_identity(settings.model),
        "data": data_identity(data, loaded, progress=progress and is_main_process()),
    }
    resume = check_output(output, settings, overwrite, identity)
    train, val, test, notes = make_splits(train, others[0], others[1], label, settings)
    splits = tuple(with_pixel_values(part, processor, seed=None) for part in (train, val, test))
    check_periodic_arms(
        arms, loaded_model, examples=len(train), batch_size=settings.batch_size, epochs=settings.epochs
    )
    if RECOMMENDED in arms:
        check_recipe_data(train, label, seeds)
        check_recipe_pass(loaded_model, splits[0], epochs=settings.epochs, batch_size=settings.batch_size)
    del loaded_model
    calibration = BatchProgress(with_pixel_values(train, processor, seed=settings.split_seed), settings.batch_size,
                                progress=False)  # fmt: skip
    return run_comparison(
        settings,
        arms=arms,
        seeds=seeds,
        output=output,
        load_model=fresh_model,
        splits=splits,
        calibration=calibration,
        overwrite=overwrite and not resume,  # a folder that can be resumed is, with --overwrite too
        split_notes=notes,
        identity=identity,
        progress=progress,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="Does a restore help on my model and data, and what does skipping the sweep cost? Tuned arms vs the "
        "recommended recipe.",
        description="Fine-tunes MODEL on --data with each arm (standard fine-tuning, the default restore, the "
        "learning-rate-only control and any strategy named, each tuned on a validation split; the recommended "
        "recipe, not tuned: recommend_recipe's rates per seed), then on paired seeds scored once on a test split; "
        "prints and writes the report (table with 95% CIs, verdict, learning curves, difference plot, "
        "summary.json). Rerun the same command to resume a killed comparison (with as many processes: the "
        "effective batch must match). One comparison at a time per --output (a lock). Runs through the "
        "transformers Trainer: `accelerate launch -m hf_plasticity.cli.main compare ...` for several GPUs.",
    )
    parser.add_argument("model", metavar="MODEL", help="A local model directory or a Hub model id.")
    add_data_arguments(parser, required=True, num_labels=False)  # the head is sized for the data's classes
    parser.add_argument("--val-split", help="The split to tune on (default: carved from --split, stratified).")
    parser.add_argument("--test-split", help="The split to score on (default: carved from --split, stratified).")
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=DEFAULTS.val_fraction,
        help=f"Share of --split held out for validation (default {DEFAULTS.val_fraction}).",
    )
    parser.add_argument(
        "--test-fraction",
        type=float,
        default=DEFAULTS.test_fraction,
        help=f"Share of --split held out for the test (default {DEFAULTS.test_fraction}).",
    )
    parser.add_argument(
        "--arms",
        nargs="+",
        default=list(DEFAULT_ARMS),
        metavar="ARM",
        help=f"{ARMS_HELP} (default: {' '.join(DEFAULT_ARMS)}).",
    )
    parser.add_argument("--seeds", type=int, default=3, help="Paired confirmation seeds (default 3).")
    parser.add_argument(
        "--epochs", type=int, default=DEFAULTS.epochs, help=f"Epochs per run (default {DEFAULTS.epochs})."
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULTS.batch_size,
        help=f"Examples per device and step (default {DEFAULTS.batch_size}).",
    )
    parser.add_argument("--max-train-samples", type=int, help="Train on a stratified subset of this many examples.")
    parser.add_argument(
        "--backbone-lrs",
        type=float,
        nargs="+",
        default=list(DEFAULTS.backbone_lrs),
        metavar="LR",
        help="Backbone learning rates tried for the tuned arms (default "
        f"{' '.join(map(str, DEFAULTS.backbone_lrs))}).",
    )
    parser.add_argument(
        "--own-lrs",
        type=float,
        nargs="+",
        default=list(DEFAULTS.own_lrs),
        metavar="LR",
        help="Learning rates tried for the head and the re-drawn (or boosted) blocks of the tuned arms (default "
        f"{' '.join(map(str, DEFAULTS.own_lrs))}).",
    )
    parser.add_argument("--split-seed", type=int, default=0, help="Seed of the carved splits (default 0).")
    parser.add_argument("--output", required=True, metavar="DIR", help="Where the records and the report go.")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="Start a new comparison in a non-empty --output that holds no comparison, or one that cannot be resumed "
        "(other settings, model, data or number of processes): its comparison files are deleted, finished runs "
        "included. A folder holding this very comparison is resumed all the same, so a command that carries "
        "--overwrite can be rerun after a kill; to discard finished runs of the same comparison, delete the folder.",
    )
    parser.add_argument("--no-progress", action="store_true", help="No progress bar.")
    parser.set_defaults(func=run)  # fmt: skip


@reports_errors("compare")
def run(args: argparse.Namespace) -> int:
    if not args.data:
        raise CommandError("compare needs labelled images: pass --data DIR_OR_DATASET.")
    for name, check, kwargs in OPTION_CHECKS:  # refusals that name the option as typed: --seeds, not seeds
        value = vars(args).get(name)
        if value is not None:  # an option not given (None) is not offered as a value in the message either
            given = {key: setting for key, setting in kwargs.items() if key != "allow_none"}
            checked(check, f"--{name.replace('_', '-')}", value, **given)
    summary = compare(
        args.model,
        args.data,
        output=args.output,
        arms=args.arms,
        seeds=args.seeds,
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_train_samples=args.max_train_samples,
        split=args.split,
        val_split=args.val_split,
        test_split=args.test_split,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        backbone_lrs=args.backbone_lrs,
        own_lrs=args.own_lrs,
        split_seed=args.split_seed,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    from ..comparison.report import REPORT_FILE, markdown

    if not is_main_process():
        return 0
    print(markdown(summary), end="")
    print(f"Wrote {os.path.join(summary['output'], REPORT_FILE)}")
    return 0
