"""The arms of a comparison: what is done to the loaded model before fine-tuning, and its optimizer.

Every arm trains the pretrained backbone at the backbone learning rate and the new parameters at the "own" learning
rate. Every arm but ``recommended`` is tuned on the same two-dimensional grid:

- ``standard``: plain fine-tuning; the own learning rate is the classification head's.
- ``restore``: the library's default restore (`LayerReinitConfig()`: the last eighth of the blocks and the final norm
  re-drawn), the re-drawn blocks and the head at the own learning rate. (Called ``recipe`` before
  [`FineTuneRecipe`] existed; that name is refused.)
- ``control``: the learning-rate-only control: the same top blocks at the same own learning rate, NOT re-drawn
  (`plasticity_param_groups(..., redrawn=...)`); it tells a gain of the re-draw from a gain of the learning rate.
- ``lp_ft``: LP-FT (Kumar et al., ICLR 2022), the published anchor: the head alone with the backbone frozen for the
  first third of the epochs (the linear probe, [`PROBE_FRACTION`]: recorded with each run, and a resume refuses runs
  of another, [`other_probe_fractions`]), then everything for the rest, each phase with its own optimizer and warmup +
  cosine schedule; the own learning rate is the head's in both phases, the backbone learning rate the fine-tuning
  phase's ([`probe_epochs`]; refused below 2 epochs: [`check_lp_ft`]).
- ``recommended``: one fine-tune instead of a sweep, not tuned: each run calls [`recommend_recipe`] on its freshly
  loaded model (the first 256 images of the training split shuffled with the run's seed, the budget nearest to the
  epochs) and trains at the backbone and head rates it returns, with no re-draw.
- any strategy name (``selective``, ``auto``, ...): that strategy's default config, as its schedule says: its
  restore before training (data-dependent ones score on training batches), and for a strategy that acts during
  training (``redo``'s resets every 1000 steps, ``cbp``'s every step, ``rifle``'s new head at epochs 1 and 2) its
  resets during every run, through the library's [`PlasticityCallback`] (``restore=False``: the restore before
  training is this module's); blocks it re-draws whole before training and the head at the own learning rate
  (parameters re-drawn in part stay at the backbone's: a torch optimizer has one learning rate per tensor). An arm
  that acts during training only and could not act in the comparison's runs is refused before any run
  ([`check_periodic_arms`]: ``rifle`` with fewer than 3 epochs, ``cbp`` in runs too short for a replacement).
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

from .splits import ComparisonInputError

STANDARD, RESTORE, CONTROL, RECOMMENDED = "standard", "restore", "control", "recommended"
LP_FT = "lp_ft"
#: The arms a comparison runs when none are named (``lp_ft`` is named with ``--arms``: it adds a tuned arm's runs).
DEFAULT_ARMS = (STANDARD, RESTORE, CONTROL, RECOMMENDED)
BUILT_IN_ARMS = (*DEFAULT_ARMS, LP_FT)
#: Arms whose learning rates no validation grid chooses: they only have confirmation runs.
UNTUNED_ARMS = frozenset({RECOMMENDED})
#: Arm names of earlier versions, and why each is refused (records under them are not read either).
RENAMED_ARMS = {
    "recipe": "The arm 'recipe' was renamed 'restore' (the default restore, re-drawn blocks at the own learning "
    "rate); the sweep-free recipe (recommend_recipe's rates, not tuned) is the arm 'recommended'.",
}
#: Training batches a data-dependent strategy scores on.
CALIBRATION_BATCHES = 8
#: Training images the ``recommended`` arm's diagnostic pass reads (as many as the rule's fit read).
RECIPE_SAMPLES = 256
#: The share of the epochs the ``lp_ft`` arm spends on its linear probe (the head alone): fixed, not tuned; why 1/3 is
#: in [`probe_epochs`].
PROBE_FRACTION = 1 / 3
#: The probe fraction of ``lp_ft`` records written before the records carried it (``probe_fraction``): the only one
#: compare used until then. Kept apart from [`PROBE_FRACTION`], which a later version may change.
FIRST_PROBE_FRACTION = 1 / 3


def is_tuned(arm: str) -> bool:
    """Whether ``arm``'s learning rates are chosen on the validation grid (every arm but ``recommended``)."""
    return arm not in UNTUNED_ARMS


def probe_epochs(epochs: int) -> int:
    """The epochs of the ``lp_ft`` arm's linear probe in runs of ``epochs`` epochs: ``round(PROBE_FRACTION * epochs)``,
    as the benchmark counts them (1 of 3, 3 of 9); the fine-tuning phase has the rest.

    The share is fixed at 1/3 instead of tuned. The benchmark tuned it with the learning rates on the validation split
    (``benchmarks/study.py``, ``ARMS["lp_ft"]``: ``probe_fraction`` 1/3 or 2/3), and its version-3 records
    (``benchmarks/results/v3/*.jsonl``: the ``lp_ft`` confirmation runs, which train at the configuration the
    validation tuning chose) show 1/3 chosen in 30 of its 34 tunings (pair x budget): 17 of 20 on the short budget (3
    epochs), 13 of 14 on the long one (9 epochs). The 4 that chose 2/3 are all on ``shapes_ctrl``, the in-domain
    control target whose pretrained features already fit (ConvNeXt and ResNet short, ViT short and long); every
    atypical target chose 1/3. Tuning it in compare would double the arm's grid for a choice the benchmark made one way
    almost every time.

    Example:

    ```python
    >>> from hf_plasticity.comparison.arms import probe_epochs
    >>> [probe_epochs(epochs) for epochs in (1, 2, 3, 5, 9)]
    [0, 1, 1, 2, 3]

    ```
    """
    return round(PROBE_FRACTION * epochs)


def recorded_probe_fraction(record: dict[str, Any]) -> float | None:
    """The share of the epochs an ``lp_ft`` run's linear probe took, as its record says (``probe_fraction``;
    [`FIRST_PROBE_FRACTION`] for a record written before it was recorded); None for a run of another arm."""
    if record.get("arm") != LP_FT:
        return None
    fraction = record.get("probe_fraction")
    return FIRST_PROBE_FRACTION if fraction is None else float(fraction)


def other_probe_fractions(records: Iterable[dict[str, Any]]) -> list[float]:
    """The probe fractions of ``lp_ft`` records other than this version's [`PROBE_FRACTION`], sorted (none when every
    ``lp_ft`` run probed for the current share): runs recorded so would be pooled with new ones in one arm.

    Example:

    ```python
    >>> from hf_plasticity.comparison.arms import other_probe_fractions
    >>> other_probe_fractions([{"arm": "lp_ft"}, {"arm": "lp_ft", "probe_fraction": 2 / 3}, {"arm": "standard"}])
    [0.6666666666666666]

    ```
    """
    fractions = {recorded_probe_fraction(record) for record in records} - {None}
    return sorted(fraction for fraction in fractions if fraction != PROBE_FRACTION)


def check_lp_ft(arms: Iterable[str], epochs: int) -> None:
    """Refuses, before any run, an ``lp_ft`` arm whose runs cannot hold both of its phases: a probe of at least one
    epoch and a fine-tuning phase of at least one (``--epochs 1`` has a probe of 0 epochs: the arm would be standard
    fine-tuning under LP-FT's name).

    Raises:
        ComparisonInputError: naming the arm, the epochs and what to do.
    """
    probe = probe_epochs(epochs)
    if LP_FT in arms and not 1 <= probe < epochs:
        raise ComparisonInputError(
            f"Arm 'lp_ft' cannot run its two phases in {epochs} epoch{'s' if epochs != 1 else ''}: it trains the head "
            f"alone for {PROBE_FRACTION:.0%} of the epochs (rounded: {probe}), then everything for the rest, and "
            "each phase needs one epoch or more. Pass --epochs 2 or more, or drop lp_ft from --arms."
        )


@contextlib.contextmanager
def probing(model: Any) -> Iterator[list[Any]]:
    """Within it, only the classification head of ``model`` can train: every other parameter that needs a gradient is
    frozen (``requires_grad=False``), so an optimizer built inside it over [`plasticity_param_groups`] holds the
    head's parameters alone; on exit (also on an error) they need a gradient again. Yields the frozen parameters.
    """
    from ..core.architectures import get_layout

    layout = get_layout(model)
    frozen = [param for name, param in model.named_parameters() if param.requires_grad and not layout.in_head(name)]
    for param in frozen:
        param.requires_grad_(False)
    try:
        yield frozen
    finally:
        for param in frozen:
            param.requires_grad_(True)


def head_modules(model: Any) -> list[Any]:
    """The modules of ``model``'s classification head, as its layout names them (for [`probe_mode`])."""
    from ..core.architectures import get_layout

    modules = dict(model.named_modules())
    return [modules[name] for name in get_layout(model).head]


def probe_mode(model: Any, head: list[Any]) -> None:
    """The linear probe's modes, as the benchmark's: the model in eval mode but its head (``head``: its
    [`head_modules`]), so the frozen features are the pretrained ones (no dropout, no BatchNorm statistics updated);
    the head in training mode."""
    model.eval()
    for module in head:
        module.train()


def check_arms(arms: Iterable[str]) -> list[str]:
    """The arm names, validated: known, each once, ``standard`` (the baseline of every difference) among them.

    Raises:
        ComparisonInputError: for an unknown, renamed or repeated arm, or without ``standard``.
    """
    from ..core.config import available_strategies

    arms = list(arms)
    accepted = [*BUILT_IN_ARMS, *available_strategies()]
    for arm in arms:
        if arm in RENAMED_ARMS:
            raise ComparisonInputError(RENAMED_ARMS[arm])
        if arm not in accepted:
            raise ComparisonInputError(f"Unknown arm {arm!r}. Accepted: {', '.join(accepted)}.")
    if len(set(arms)) != len(arms):
        raise ComparisonInputError(f"--arms names an arm twice: {' '.join(arms)}.")
    if STANDARD not in arms:
        raise ComparisonInputError("--arms must include standard: every arm is compared with standard fine-tuning.")
    return arms


def _strategy_config(arm: str) -> Any:
    """The default config of strategy arm ``arm``, or None for a built-in arm (or a name that is no strategy)."""
    from ..core.config import available_strategies, get_config_class

    return get_config_class(arm)() if arm not in BUILT_IN_ARMS and arm in available_strategies() else None


def periodic_config(arm: str) -> Any:
    """The default config of strategy arm ``arm`` when its schedule acts during training (``redo``, ``cbp``,
    ``rifle``), else None (a built-in arm, or a strategy that acts before training only): the arm's runs apply its
    resets through a [`PlasticityCallback`].

    Example:

    ```python
    >>> from hf_plasticity.comparison.arms import periodic_config
    >>> periodic_config("cbp").strategy, periodic_config("selective"), periodic_config("restore")
    ('cbp', None, None)

    ```
    """
    from ..strategies.base import get_strategy

    config = _strategy_config(arm)
    return config if config is not None and get_strategy(config).schedule.periodic else None


def arm_title(arm: str) -> str:
    """What ``arm`` does, as the verdict names it: ``"a selective restore"`` (``"an auto restore"``) for a strategy
    that acts before training, ``"training with cbp's periodic resets"`` for one that acts during training only, ``"a
    redo restore with its periodic resets"`` for one that does both; the arm's name for a built-in arm (or a name that
    is no strategy).

    Example:

    ```python
    >>> from hf_plasticity.comparison.arms import arm_title
    >>> arm_title("selective"), arm_title("rifle")
    ('a selective restore', "training with rifle's periodic resets")

    ```
    """
    from ..strategies.base import get_strategy

    config = _strategy_config(arm)
    if config is None:
        return arm
    schedule = get_strategy(config).schedule
    article = "an" if arm[:1] in "aeiou" else "a"
    if not schedule.periodic:
        return f"{article} {arm} restore"
    if not schedule.before_training:
        return f"training with {arm}'s periodic resets"
    return f"{article} {arm} restore with its periodic resets"


def check_periodic_arms(arms: Iterable[str], model: Any, *, examples: int, batch_size: int, epochs: int) -> None:
    """Refuses, before any run, a strategy arm that acts during training only and cannot do so as its schedule says in
    this comparison's runs (a strategy that also acts before training, such as ``redo``, is never refused: its restore
    still runs):

    - resets at given epochs (``rifle``'s new head at epochs 1 and 2) at or after the end of training: at the last
      step, the run would be scored right after a reset instead of after training on from it, or never;
    - continual backprop (``cbp``) replacing no unit: its units become replaceable after ``maturity`` steps (its
      default for the model's kind: 10000 for a transformer, 1000 for a CNN) and are replaced at ``replacement_rate``
      per step, so a run too short to reach one replacement in any layer would be standard fine-tuning under its name.

    Args:
        arms: the validated arm names.
        model: the freshly loaded model (read; hooks added and removed).
        examples: training examples.
        batch_size: examples per device and step.
        epochs: the runs' epochs.

    Raises:
        ComparisonInputError: naming the arm, why it cannot act in these runs and what to do.
    """
    from ..strategies.base import get_strategy

    per_epoch = math.ceil(examples / batch_size)
    steps = epochs * per_epoch  # on one process: the most any launch takes
    for arm in arms:
        config = periodic_config(arm)
        if config is None or get_strategy(config).schedule.before_training:
            continue
        why = _late_resets(config, epochs) or _no_replacement(config, model, steps)
        if why:
            raise ComparisonInputError(
                f"Arm {arm!r} cannot run as its schedule says in this comparison's runs ({epochs} "
                f"epoch{'s' if epochs != 1 else ''} of {per_epoch} step{'s' if per_epoch != 1 else ''}): {why}. "
                f"Drop {arm} from --arms, or train longer (--epochs, more training data)."
            )


def _late_resets(config: Any, epochs: int) -> str | None:
    """Why resets at given epochs (RIFLE's) cannot serve a run of ``epochs`` epochs, or None."""
    reset_epochs = getattr(config, "epochs", None)
    if not isinstance(reset_epochs, (list, tuple)):
        return None
    late = [epoch for epoch in reset_epochs if epoch >= epochs]
    if not late:
        return None
    shown = ", ".join(f"{epoch:g}" for epoch in reset_epochs)
    return (
        f"it resets at epochs {shown} (its default {type(config).__name__}), and its reset at epoch {late[0]:g} would "
        "come at the last step (the run scored right after it, not after training on from it) or never; it needs "
        f"--epochs {math.floor(max(reset_epochs)) + 1} or more"
    )


def _no_replacement(config: Any, model: Any, steps: int) -> str | None:
    """Why continual backprop replaces no unit in ``steps`` steps (its fractional count reaches one in no layer), or
    None (also for another strategy)."""
    from ..core.messages import first_line
    from ..strategies.base import get_strategy

    strategy = get_strategy(config)
    if not strategy.needs_attach or not hasattr(strategy, "maturity"):
        return None
    try:
        strategy.attach(model)  # resolves the units and the defaults for the model's kind, as a run does
    except ValueError as error:
        return f"its units cannot be found on this model ({first_line(error)})"
    try:
        units = max((len(state["age"]) for state in strategy.state.values()), default=0)
        rate, maturity = strategy.rate, strategy.maturity
    finally:
        strategy.detach()
    if rate * units * max(0, steps - maturity) >= 1:
        return None
    return (
        f"with replacement rate {rate:g} and maturity {maturity} steps (its defaults for this model), a layer of at "
        f"most {units} units replaces none in {steps} steps, so the arm would be standard fine-tuning under its name"
    )


def _shuffled(train: Any, seed: int) -> Any:
    """``train`` in ``seed``'s order (`datasets.Dataset.shuffle`; its index mapping kept in memory, not cached next to
    the user's data)."""
    return train.shuffle(seed=seed, keep_in_memory=True)


def check_recipe_data(train: Any, label: str, seeds: int) -> None:
    """Refuses, before any run, a training split on which the ``recommended`` arm's pass of some seed would read
    fewer than two classes with two images or more (the least its probe compares).

    Args:
        train: the training split, with its label column (the rows in the order the runs get them).
        label: the label column's name.
        seeds: the confirmation seeds ``0 .. seeds-1``.

    Raises:
        ComparisonInputError: naming the seed, what its pass would read and what is accepted.
    """
    from collections import Counter

    for seed in range(seeds):
        labels = _shuffled(train.select_columns([label]), seed)[:RECIPE_SAMPLES][label]
        counts = Counter(labels)
        if sum(count >= 2 for count in counts.values()) < 2:
            raise ComparisonInputError(
                f"The recommended arm's diagnostic pass on seed {seed} would read {len(labels)} training images of "
                f"{len(counts)} classes ({dict(sorted(counts.items()))}); its probe needs two classes with two images "
                "or more: give more training data, or drop recommended from --arms."
            )


def check_recipe_pass(model: Any, train: Any, *, epochs: float, batch_size: int) -> None:
    """Runs the ``recommended`` arm's diagnostic pass once before any run (seed 0's, as [`recipe_for_run`] runs it),
    so that a training split on which it cannot choose rates is refused up front rather than at the arm's first run,
    after the whole tuning: with few images its probe can tell no class apart on any block. (With up to
    [`RECIPE_SAMPLES`] training images every seed's pass reads the same images; with more, 256 of them.)

    Args:
        model: the freshly loaded model (read, not changed).
        train: the training split, yielding ``pixel_values`` and ``labels``.
        epochs: the runs' epochs (the budget the rule reads).
        batch_size: images per forward pass.

    Raises:
        ComparisonInputError: naming what the pass read and what to do.
    """
    from ..core.messages import first_line

    try:
        recipe_for_run(model, train, seed=0, epochs=epochs, batch_size=batch_size)
    except ValueError as error:
        raise ComparisonInputError(
            f"The recommended arm's diagnostic pass cannot choose its rates on this training split ({len(train)} "
            f"images, seed 0): {first_line(error)} Give more training data, or drop recommended from --arms."
        ) from error


def recipe_for_run(model: Any, train: Any, *, seed: int, epochs: float, batch_size: int) -> Any:
    """The ``recommended`` arm's [`FineTuneRecipe`] for one run: [`recommend_recipe`] on ``model`` (freshly loaded,
    not restored), reading the first [`RECIPE_SAMPLES`] images of ``train.shuffle(seed=seed)`` (the same images for
    every process and every rerun of that seed), for ``budget_for_epochs(epochs)``; nothing is recorded on the model.

    Args:
        model: the run's model, before training.
        train: the training split, a `datasets.Dataset` yielding ``pixel_values`` and ``labels``.
        seed: the run's seed.
        epochs: the run's epochs (the budget the rule reads: ``"short"`` below about 5.2 epochs, else ``"long"``).
        batch_size: images per forward pass.
    """
    from ..core.recipe import budget_for_epochs
    from ..diagnostics.recipe import recommend_recipe

    images = _shuffled(train, seed)
    return recommend_recipe(
        model, images, budget=budget_for_epochs(epochs), samples=RECIPE_SAMPLES, batch_size=batch_size, record=False
    )


def seeds_of_another_rule(records: Iterable[dict[str, Any]], epochs: float) -> list[int]:
    """The seeds of ``recommended`` records whose rates the installed rule would not choose from what their pass read,
    or read for another budget than ``epochs`` now maps to: they were recorded under another fit of [`FITTED_RULE`]
    (a library version whose rule was refitted since).

    Args:
        records: a comparison's run records.
        epochs: the comparison's epochs.
    """
    from ..core.recipe import FineTuneRecipe, budget_for_epochs

    budget = budget_for_epochs(epochs)
    seeds = []
    for record in records:
        if record.get("arm") != RECOMMENDED or not record.get("recipe"):
            continue
        recipe = FineTuneRecipe.from_dict(record["recipe"])
        if recipe.budget != budget or not recipe.is_from_installed_rule():
            seeds.append(record["seed"])
    return sorted(seeds)


def prepare_arm(
    arm: str, model: Any, args: Any, *, own_lr: float, calibration: Any = None, recipe: Any = None
) -> tuple[Any, dict[str, Any] | None]:
    """Prepares ``model`` for ``arm`` (a restore, or nothing) and returns its optimizer for the `Trainer`. (A strategy
    arm's resets during training, if its schedule has any, are the run's: see [`periodic_config`]; so is ``lp_ft``'s
    probe phase: this is the optimizer of its fine-tuning phase, standard's.)

    Args:
        arm: the arm's name.
        model: the freshly loaded model (modified in place by a restore).
        args: the run's `TrainingArguments` (``args.learning_rate`` is the backbone's learning rate).
        own_lr: the learning rate of the head and of the re-drawn (or, for the control, boosted) blocks.
        calibration: a re-iterable of training batches, for data-dependent strategies.
        recipe: the ``recommended`` arm's [`FineTuneRecipe`] (from [`recipe_for_run`]); its rates are used.

    Returns:
        `(torch.optim.Optimizer, dict | None)`: the optimizer, and which parameters get the own learning rate
        besides the head (``{"whole": [...], "partial": [...]}`` as a restore record names them; None for standard,
        lp_ft and recommended).
    """
    from transformers import Trainer

    from ..core.param_groups import plasticity_param_groups
    from ..integrations.trainer_optimizer import plasticity_optimizer
    from ..pipeline.restore import prepare_pretrained

    if arm in (STANDARD, LP_FT):  # no record on the model: only the head gets the own learning rate (lp_ft: in its
        # fine-tuning phase; its probe's optimizer is the run's, over the head alone)
        return plasticity_optimizer(model, args, reinit_lr=own_lr), None
    if arm == RECOMMENDED:
        if recipe is None:
            raise ValueError("The recommended arm trains at a recipe's rates: pass `recipe=` (from recipe_for_run).")
        return plasticity_optimizer(model, args, recipe=recipe), None
    if arm == RESTORE:
        report = prepare_pretrained(model)
        return plasticity_optimizer(model, args, reinit_lr=own_lr), report.redrawn
    if arm == CONTROL:  # what the default restore would re-draw, found on a copy; the model itself is not touched
        redrawn = prepare_pretrained(copy.deepcopy(model)).redrawn
        groups = plasticity_param_groups(
            model, lr=args.learning_rate, reinit_lr=own_lr, weight_decay=args.weight_decay, redrawn=redrawn
        )
        optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
        return optimizer_cls(groups, **optimizer_kwargs), redrawn
    from ..core.config import get_config_class

    config = get_config_class(arm)()
    data = list(islice(calibration, CALIBRATION_BATCHES)) if config.requires_data else None
    if config.requires_data and not data:
        raise ComparisonInputError(f"Arm {arm!r} needs training data to score on, and there is none.")
    report = prepare_pretrained(model, config, data=data, diagnostics=False)
    partial = bool(report.redrawn.get("partial"))
    reinit_lr = args.learning_rate if partial else own_lr
    return plasticity_optimizer(model, args, reinit_lr=reinit_lr, head_lr=own_lr), report.redrawn
