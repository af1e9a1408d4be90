"""A fine-tuning recipe read from one diagnostic pass: the learning rates, without a sweep (experimental).

The rule reads one number off the nearest-class-mean probe that [`diagnose`] (and the ``auto`` strategy) compute per
backbone block: ``last / peak``, the last block's probe accuracy over the best block's. When the last block separates
the downstream classes (nearly) as well as any block, the data is close to what the model was pretrained on and the
backbone gets a small learning rate; below the threshold it gets a large one, and the head's rate goes with the side.
A ViT's backbone rate is a fitted factor lower.

The rule is a **first fit**: its constants ([`FITTED_RULE`], the one place they live) come from the benchmark's tuning
records (validation accuracy of the standard fine-tune's learning-rate grid; docs/BENCHMARKS.md, "Toward a sweep-free
recipe"), for the benchmark's small models trained with AdamW (weight decay 0.05), a 10% linear warmup then cosine
decay, batch 32, about 3 ("short") or 9 ("long") epochs. The fit chooses among backbone rates up to a cap, itself
chosen on held-out validation regret (3e-3: above it one ConvNeXt pair collapsed). On validation, each pair held out
of the fit (cap included), it lost 0.4-5.5 points on average per group of pairs (budget, in-domain or atypical data,
CNN or ViT) and up to 33 on one pair; fitted on every pair, 1.45 points on average (worst 7.2) on the short budget
and 0.67 (worst 2.71) on the long one. Its 10-seed test confirmation against a tuned sweep is in docs/BENCHMARKS.md
("Where the confirmation stands").

A recipe re-draws nothing: the rates were measured on fine-tunes without a re-draw, and in the same benchmark a
re-draw did not beat the tuned standard fine-tune on average (docs/BENCHMARKS.md, version 2).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from .validators import check_int, check_number

#: The training budgets the rule was fitted for: about 3 epochs ("short") and about 9 ("long").
Budget = Literal["short", "long"]
BUDGETS: tuple[str, ...] = ("short", "long")
#: The model families the rule knows: ``"transformer"`` (a ViT) gets the fitted factor on its backbone rate.
TRANSFORMER = "transformer"


@dataclass(frozen=True)
class RuleFit:
    """One budget's fitted rule: the threshold on ``last / peak`` and the rates on each side of it."""

    epochs: int
    threshold: float
    backbone_lr_at_or_above: float
    head_lr_at_or_above: float
    backbone_lr_below: float
    head_lr_below: float
    transformer_factor: float


# The fitted constants, and the only place they live. Refit them with
#     python -m benchmarks.recipe_rule benchmarks/results/v2
# (its "Fitted on every pair" lines, `probe` rule with the ViT factor, under the cap it chose): docs/BENCHMARKS.md,
# "Toward a sweep-free recipe: a learning-rate rule read from the diagnostics". Measured on the benchmark's small
# models with AdamW (weight decay 0.05), 10% linear warmup then cosine decay, batch 32; 256 training images for the
# probe.
FITTED_RULE: dict[str, RuleFit] = {
    "short": RuleFit(
        epochs=3,
        threshold=0.9862653419053184,  # 0.986; the fit's own value, so the library and the fit split alike
        backbone_lr_at_or_above=1e-4 / 3,  # 3.3e-5
        head_lr_at_or_above=1e-3,
        backbone_lr_below=3e-3,
        head_lr_below=1e-3,
        transformer_factor=1 / 3,
    ),
    "long": RuleFit(
        epochs=9,
        threshold=0.9730800137756859,  # 0.973
        backbone_lr_at_or_above=1e-4,
        head_lr_at_or_above=1e-3 / 3,  # 3.3e-4
        backbone_lr_below=3e-3,
        head_lr_below=1e-3,
        transformer_factor=1 / 3,
    ),
}
#: How far a recorded threshold may be from the installed one and still be the same fit: earlier versions wrote the
#: fitted thresholds to three digits.
THRESHOLD_DIGITS_TOLERANCE = 5e-4
#: Images the probe of the fit read per pair (8 batches of 32).
FITTED_PROBE_SAMPLES = 256


def budget_for_epochs(epochs: float) -> str:
    """The fitted budget nearest to ``epochs`` on a log scale: ``"short"`` below sqrt(3 * 9) ~ 5.2 epochs, else
    ``"long"``.

    Example:

    ```python
    >>> from hf_plasticity.core.recipe import budget_for_epochs
    >>> budget_for_epochs(3), budget_for_epochs(10)
    ('short', 'long')
    ```
    """
    check_number("epochs", epochs, low=0, low_open=True)
    cut = math.sqrt(FITTED_RULE["short"].epochs * FITTED_RULE["long"].epochs)
    return "short" if epochs < cut else "long"


def _check_budget(budget: Any, allow_none: bool = False) -> None:
    if budget is None and allow_none:
        return
    if not isinstance(budget, str) or budget not in BUDGETS:
        raise ValueError(
            f"`budget` must be one of {list(BUDGETS)} (about {FITTED_RULE['short'].epochs} or "
            f"{FITTED_RULE['long'].epochs} epochs: the budgets the rule was fitted for), got {budget!r}."
        )


@dataclass(frozen=True)
class FineTuneRecipe:
    """The learning rates of a fine-tune, chosen from one diagnostic pass instead of a sweep (experimental).

    [`recommend_recipe`] makes one from the model's probe on the training data; [`plasticity_param_groups`],
    [`plasticity_optimizer`] and [`PlasticityCallback`] (``recipe=``) take it in place of learning rates. It is
    recorded in the model's [`RestoreRecord`] (``config.json``) and shown in the model card. A recipe re-draws
    nothing (its rates were measured on fine-tunes without a re-draw), and re-drawn blocks of a model restored
    otherwise get no rate of their own from it.

    The rule is a first fit on the benchmark's tuning records (docs/BENCHMARKS.md, "Toward a sweep-free recipe"):
    against a tuned sweep, each pair held out of the fit, it lost 0.4-5.5 validation points on average per group of
    pairs and up to 33 on one pair; its 10-seed test confirmation is in the same document. The rates were measured with
    AdamW (weight decay 0.05), a 10% warmup then cosine decay, batch 32.

    Attributes:
        backbone_lr: learning rate of the pretrained backbone (everything but the head).
        head_lr: learning rate of the classification head.
        budget: the training budget the rule was read for (``"short"``: about 3 epochs, ``"long"``: about 9), or
            None for a recipe written by hand.
        last_over_peak: the feature the rule read: the last block's probe accuracy over the best block's.
        threshold: the rule's threshold on ``last_over_peak`` for ``budget`` (the small backbone rate at or above).
        family: the model family the rule read (``"transformer"`` for a ViT, ``"cnn"``, ``"mlp"``).
        block_probe_accuracy: the probe accuracy of every backbone block, in depth order.
        samples: training images the diagnostic pass read.
        seconds: how long the diagnostic pass took.
        epoch_share: ``samples`` over the training set's size, when it is known: an upper bound of the pass's cost
            in epochs (it does one forward pass per image, no backward pass and no optimizer step).

    Example:

    ```python
    >>> from hf_plasticity import FineTuneRecipe
    >>> recipe = FineTuneRecipe.from_probe([0.40, 0.62, 0.55], budget="short", family="cnn")
    >>> round(recipe.last_over_peak, 3), recipe.backbone_lr, recipe.head_lr  # 0.887 < 0.986: a large backbone rate
    (0.887, 0.003, 0.001)
    >>> FineTuneRecipe.from_dict(recipe.to_dict()) == recipe
    True
    ```
    """

    backbone_lr: float
    head_lr: float
    budget: Budget | None = None
    last_over_peak: float | None = None
    threshold: float | None = None
    family: str | None = None
    block_probe_accuracy: tuple[float | None, ...] = field(default_factory=tuple)
    samples: int = 0
    seconds: float = 0.0
    epoch_share: float | None = None

    def __post_init__(self) -> None:
        check_number("backbone_lr", self.backbone_lr, low=0, low_open=True)
        check_number("head_lr", self.head_lr, low=0, low_open=True)
        _check_budget(self.budget, allow_none=True)
        check_number("last_over_peak", self.last_over_peak, low=0, high=1, allow_none=True)
        check_number("threshold", self.threshold, low=0, high=1, allow_none=True)
        if self.family is not None and not isinstance(self.family, str):
            raise ValueError(f"`family` must be a string such as 'transformer' or 'cnn' or None, got {self.family!r}.")
        if not isinstance(self.block_probe_accuracy, (tuple, list)):
            raise ValueError(f"`block_probe_accuracy` must be a list of numbers, got {self.block_probe_accuracy!r}.")
        for accuracy in self.block_probe_accuracy:
            check_number("block_probe_accuracy", accuracy, low=0, high=1, allow_none=True)
        object.__setattr__(self, "block_probe_accuracy", tuple(self.block_probe_accuracy))
        check_int("samples", self.samples, low=0)
        check_number("seconds", self.seconds, low=0)
        check_number("epoch_share", self.epoch_share, low=0, allow_none=True)

    @classmethod
    def from_probe(
        cls,
        block_probe_accuracy: list[float | None],
        *,
        budget: Budget = "short",
        family: str = "cnn",
        samples: int = 0,
        seconds: float = 0.0,
        epoch_share: float | None = None,
    ) -> FineTuneRecipe:
        """The fitted rule ([`FITTED_RULE`]) applied to per-block probe accuracies.

        ``last / peak`` at or above the budget's threshold: backbone lr 3.3e-5 and head lr 1e-3 (short), or 1e-4 and
        3.3e-4 (long); below it: backbone lr 3e-3 and head lr 1e-3 (both budgets); for ``family="transformer"`` (a
        ViT, or any model with self-attention) the backbone lr x1/3.

        Args:
            block_probe_accuracy: the probe accuracy of every backbone block in depth order
                (`DiagnosticsReport.block_probe_accuracy`); blocks without one (None) are skipped for the peak.
            budget: ``"short"`` (about 3 epochs) or ``"long"`` (about 9).
            family: the model family (`get_layout(model).family`).
            samples, seconds, epoch_share: the diagnostic pass's cost, kept in the recipe.

        Raises:
            ValueError: for an unknown budget, or when the last block or every block has no accuracy (or the best
                one is 0).
        """
        _check_budget(budget)
        if not isinstance(family, str):
            raise ValueError(f"`family` must be a string such as 'transformer' or 'cnn', got {family!r}.")
        if not isinstance(block_probe_accuracy, (list, tuple)) or not block_probe_accuracy:
            raise ValueError(f"`block_probe_accuracy` must be a non-empty list, got {block_probe_accuracy!r}.")
        scored = [a for a in block_probe_accuracy if a is not None]
        last = block_probe_accuracy[-1]
        if last is None or not scored or max(scored) <= 0:
            raise ValueError(
                "The recipe reads the last block's probe accuracy over the best block's, which needs an accuracy for "
                f"the last block and a best one above 0; got {list(block_probe_accuracy)} (too few samples per "
                "class? the probe needs two classes with two samples or more)."
            )
        fit = FITTED_RULE[budget]
        ratio = last / max(scored)
        if ratio >= fit.threshold:
            backbone, head = fit.backbone_lr_at_or_above, fit.head_lr_at_or_above
        else:
            backbone, head = fit.backbone_lr_below, fit.head_lr_below
        if family == TRANSFORMER:
            backbone *= fit.transformer_factor
        return cls(
            backbone_lr=backbone,
            head_lr=head,
            budget=budget,
            last_over_peak=ratio,
            threshold=fit.threshold,
            family=family,
            block_probe_accuracy=tuple(block_probe_accuracy),
            samples=samples,
            seconds=seconds,
            epoch_share=epoch_share,
        )

    def is_from_installed_rule(self) -> bool:
        """Whether the installed rule ([`FITTED_RULE`]), applied to what this recipe's pass read, chooses its rates and
        threshold: False for a recipe recorded under another fit of the rule (an earlier library version) or written
        by hand. A threshold that an earlier version wrote to three digits (0.986 for 0.98627) is the same fit's: the
        rates, compared exactly, tell whether the rounding changed this recipe's choice.

        Example:

        ```python
        >>> from hf_plasticity import FineTuneRecipe
        >>> FineTuneRecipe.from_probe([0.40, 0.62, 0.55], budget="short").is_from_installed_rule()
        True
        >>> FineTuneRecipe(backbone_lr=3e-3, head_lr=1e-3).is_from_installed_rule()  # by hand
        False
        ```
        """
        if self.budget is None or self.family is None or self.threshold is None or not self.block_probe_accuracy:
            return False
        try:
            now = FineTuneRecipe.from_probe(list(self.block_probe_accuracy), budget=self.budget, family=self.family)
        except ValueError:  # accuracies the rule cannot read (written by hand): not the rule's choice
            return False
        same_threshold = abs(now.threshold - self.threshold) <= THRESHOLD_DIGITS_TOLERANCE
        return (now.backbone_lr, now.head_lr) == (self.backbone_lr, self.head_lr) and same_threshold

    def describe(self) -> str:
        """One line: the rates, and what the rule read (or that the recipe was written by hand)."""
        rates = f"backbone lr {self.backbone_lr:.3g}, head lr {self.head_lr:.3g}"
        if self.last_over_peak is None or self.threshold is None:
            return f"{rates} (a recipe given by hand), no re-draw"
        side = ">=" if self.last_over_peak >= self.threshold else "<"
        cost = f" on {self.samples} images in {self.seconds:.2f} s"
        if self.epoch_share is not None:
            cost += f" ({self.epoch_share:.1%} of an epoch's images)"
        return (
            f"{rates} ({self.budget} budget, {self.family}: last/peak probe accuracy {self.last_over_peak:.4f} "
            f"{side} {self.threshold:.4f}{cost}), no re-draw"
        )

    def to_dict(self) -> dict[str, Any]:
        """The recipe as a JSON-able dict (what the record in ``config.json`` holds)."""
        data = asdict(self)
        data["block_probe_accuracy"] = list(self.block_probe_accuracy)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> FineTuneRecipe:
        """Reads a recipe written by [`~FineTuneRecipe.to_dict`], validating every field.

        Raises:
            ValueError: when ``data`` is not a dict, lacks ``backbone_lr`` or ``head_lr``, has an unknown key, or a
                value of the wrong type.
        """
        if not isinstance(data, dict):
            raise ValueError(f"a recipe must be a dict, got a {type(data).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"a recipe has no field {unknown[0]!r} (its fields: {sorted(known)})")
        missing = [key for key in ("backbone_lr", "head_lr") if key not in data]
        if missing:
            raise ValueError(f"a recipe needs `{missing[0]}`")
        values = dict(data)
        if "block_probe_accuracy" in values:
            if not isinstance(values["block_probe_accuracy"], list):
                raise ValueError(f"`block_probe_accuracy` is {values['block_probe_accuracy']!r}, not a list")
            values["block_probe_accuracy"] = tuple(values["block_probe_accuracy"])
        return cls(**values)


def check_recipe(recipe: Any, *, allow_auto: bool = False) -> None:
    """Raises a `TypeError` naming what was given unless ``recipe`` is a [`FineTuneRecipe`] (or None; or ``"auto"``
    when ``allow_auto``)."""
    auto = allow_auto and isinstance(recipe, str) and recipe == "auto"
    if recipe is None or isinstance(recipe, FineTuneRecipe) or auto:
        return
    accepted = "a FineTuneRecipe (from `recommend_recipe(model, data)`)" + (", 'auto'" if allow_auto else "")
    raise TypeError(f"`recipe` must be {accepted} or None, got {recipe!r}.")


def refuse_rates_with_recipe(recipe: FineTuneRecipe | str | None, **rates: Any) -> None:
    """Raises a `ValueError` naming the first of ``rates`` (learning-rate arguments) given together with ``recipe``:
    a recipe sets the learning rates, one source of them at a time."""
    given = [name for name, value in rates.items() if value is not None]
    if recipe is not None and given:
        raise ValueError(
            f"`recipe` sets the learning rates, so `{given[0]}` cannot be given with it: drop `{given[0]}=`, or drop "
            "`recipe=` and give the rates yourself."
        )
