"""`PlasticityController`: drives one strategy through a training run, in any training loop.

The Trainer callback is a thin layer over it; users of a plain Accelerate (or torch) loop call it directly:
[`PlasticityController.restore`] once before training, [`PlasticityController.step`] after every optimizer step.
On several processes, rank 0 plans and every process applies the same plan (see [`hf_plasticity.distributed`]).
"""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from .config import PlasticityConfig, get_config_class
from .data import iter_batches
from .distributed import check_not_sharded, is_main_process, share_plan
from .engine import AlreadyRestoredError, apply_strategy_plan, default_config, record_restore, restore_record
from .report import PlasticityReport
from .strategies.base import Strategy, get_strategy
from .targeting import resolve_targets

logger = logging.getLogger(__name__)

PREFIX = "plasticity"


def as_config(config: PlasticityConfig | str | dict | None) -> PlasticityConfig:
    """A validated private copy of ``config`` (a config, a strategy name, a config dict, or None: the default).

    The copy goes through ``from_dict``, so ``__post_init__`` validation runs again even when a field was changed
    after the config was built (e.g. ``config.every_n_steps = 0``).
    """
    if config is None:
        config = default_config()
    elif isinstance(config, str):
        config = get_config_class(config)()
    elif isinstance(config, dict):
        config = PlasticityConfig.from_dict(config)
    elif not isinstance(config, PlasticityConfig):
        raise TypeError(
            "`config` must be a PlasticityConfig, a strategy name, a config dict or None, "
            f"got {type(config).__name__}."
        )
    return PlasticityConfig.from_dict(config.to_dict())


def _check_positive(name: str, value: Any, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer{' or None' if allow_none else ''}, got {value!r}.")


class PlasticityController:
    """Applies a plasticity strategy before and during training, resets the optimizer state of what it re-draws,
    and measures plasticity as training goes.

    - [`~PlasticityController.restore`]: the one-shot restore, once per training run (its ``restored`` flag is part
      of [`~PlasticityController.state_dict`], so a resumed run never repeats it);
    - [`~PlasticityController.step`]: after every optimizer step; applies the strategy's periodic resets when due and
      returns the metrics to log (reset counts every ``log_every`` steps, diagnostics every ``diagnostics_every``).

    In a multi-process run call both on every process: rank 0 reads the calibration data and plans, every process
    applies the same plan, so parameters stay bitwise identical. Metrics from diagnostics are computed on rank 0 only.

    Args:
        config: the strategy: a config, a strategy name, a config dict, or None for the default
            (`LayerReinitConfig()`: the last eighth of the blocks, at least one).
        data: calibration / probe data (a DataLoader, a `datasets.Dataset` with ``pixel_values`` and ``labels``, or a
            list of such batches). Read on rank 0 only, at most ``max(calibration_batches, diagnostics_batches)``
            batches, once; the same batches serve every periodic scoring and every diagnostics pass.
        restore: ``None`` (default): do the one-shot restore unless the model already carries a restore record (from
            [`prepare_pretrained`]); ``True``: do it, and fail if the model was already restored; ``False``: never
            (periodic resets and diagnostics only).
        log_every: report the periodic reset counts every this many steps (None: at each reset).
        diagnostics_every: run [`diagnose`] every this many steps (None: never).
        diagnostics_batches: batches per diagnostics pass (each costs about one training step).

    Example:

    ```python
    >>> import torch
    >>> from transformers import ConvNextConfig, ConvNextForImageClassification
    >>> from hf_plasticity import PlasticityController, ReDoConfig
    >>> model = ConvNextForImageClassification(ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1],
    ...                                                        num_stages=2, num_labels=3))
    >>> data = [{"pixel_values": torch.randn(4, 3, 32, 32), "labels": torch.tensor([0, 1, 2, 0])}]
    >>> controller = PlasticityController(ReDoConfig(every_n_steps=2), data=data)
    >>> optimizer = torch.optim.AdamW(model.parameters())
    >>> report = controller.restore(model, optimizer=optimizer)   # before the first step
    >>> controller.attach(model)
    >>> for step in range(1, 5):
    ...     optimizer.step()  # (forward and backward omitted)
    ...     metrics = controller.step(step, optimizer=optimizer)
    >>> sorted(metrics)
    ['plasticity/redo/reinitialized', 'plasticity/redo/reinitialized_total', 'plasticity/redo/resets']
    >>> controller.detach()

    ```
    """

    def __init__(
        self,
        config: PlasticityConfig | str | dict | None = None,
        *,
        data: Any = None,
        restore: bool | None = None,
        log_every: int | None = None,
        diagnostics_every: int | None = None,
        diagnostics_batches: int = 2,
    ) -> None:
        _check_positive("log_every", log_every)
        _check_positive("diagnostics_every", diagnostics_every)
        _check_positive("diagnostics_batches", diagnostics_batches, allow_none=False)
        if restore not in (None, True, False):
            raise ValueError(f"`restore` must be None, True or False, got {restore!r}.")
        self.config = as_config(config)
        self.strategy: Strategy = get_strategy(self.config)
        self.data = data
        self.restore_mode = restore
        self.log_every = log_every
        self.diagnostics_every = diagnostics_every
        self.diagnostics_batches = diagnostics_batches
        self.model: nn.Module | None = None
        self._batches: list[dict[str, Any]] = []
        self._attached = False
        # checkpointed state
        self.restored = False
        self.restore_summary: dict[str, Any] | None = None
        self.total_reinitialized = 0
        self.total_resets = 0
        self.pending_reinitialized = 0
        self.pending_resets = 0
        self.last_step = 0

    # ------------------------------------------------------------------------------------------------ what it needs
    @property
    def name(self) -> str:
        return self.config.strategy

    @property
    def does_restore(self) -> bool:
        """Whether a one-shot restore is configured (it may still be skipped for an already restored model)."""
        return self.strategy.one_shot and self.restore_mode is not False

    @property
    def calibration_batches(self) -> int:
        """Batches the strategy scores on (0 for a data-free strategy)."""
        if not self.strategy.requires_data:
            return 0
        return int(getattr(self.config, "calibration_batches", 8))

    @property
    def batches_needed(self) -> int:
        """Batches of probe data read once from ``data`` (0: no data needed)."""
        restoring = self.does_restore and not self.restored
        scoring = self.calibration_batches if (restoring or self.strategy.periodic) else 0
        return max(scoring, self.diagnostics_batches if self.diagnostics_every else 0)

    def validate(self, model: nn.Module, *, has_data: bool) -> None:
        """Raises a clear error now for what would otherwise fail during training.

        Checks that the model has layers the strategy supports, that its parameters are not sharded, and that data
        exists when the strategy scores on data or diagnostics are asked for.
        """
        check_not_sharded(model)
        validate = getattr(self.strategy, "validate", None)
        if callable(validate):
            validate(model)
        else:
            resolve_targets(model, self.config)  # ScopeError: no supported layers, or an empty scope
        if not has_data and self.batches_needed:
            why = (
                "the diagnostics read probe batches"
                if not self.calibration_batches
                else (f"strategy {self.name!r} scores on downstream data")
            )
            raise ValueError(
                f"No training data: {why}. Give the Trainer a `train_dataset` (or pass `data=`), choose a data-free "
                "strategy, or set `diagnostics_every=None`."
            )

    # ------------------------------------------------------------------------------------------------------- data
    def prefetch(self) -> list[dict[str, Any]]:
        """Reads the probe batches now (rank 0 only; nothing on other ranks or when no data is needed)."""
        needed = self.batches_needed
        if needed and len(self._batches) < needed and is_main_process():
            if self.data is None:
                raise ValueError(f"Strategy {self.name!r} or the diagnostics need data: pass `data=`.")
            self._batches = [
                {"pixel_values": pixels, "labels": labels} for pixels, labels in iter_batches(self.data, needed)
            ]
        return self._batches

    def _scoring_data(self) -> list[dict[str, Any]] | None:
        return self.prefetch()[: self.calibration_batches] if self.strategy.requires_data else None

    # ------------------------------------------------------------------------------------------------ the restore
    def restore(self, model: nn.Module, *, optimizer: Any = None) -> PlasticityReport | None:
        """The one-shot restore, before the first optimizer step; a no-op when already done (also after a resume).

        Returns:
            The [`PlasticityReport`], or None when nothing was done.
        """
        self.model = model
        if self.restored or not self.does_restore:
            self.restored = True
            return None
        if restore_record(model) is not None:
            if self.restore_mode is None:
                logger.info("The model was already restored (%s): skipping the one-shot restore.", self.name)
                self.restored = True
                return None
            raise AlreadyRestoredError(
                f"This model was already restored ({restore_record(model)['strategy']}); use `restore=None` or "
                "`restore=False` to train it without a second one-shot restore."
            )
        check_not_sharded(model)
        plan = self.strategy.plan(model, data=self._scoring_data()) if is_main_process() else None
        plan, details = share_plan(model, plan, self.strategy.details() if is_main_process() else None)
        report = apply_strategy_plan(model, self.strategy, plan, optimizer=optimizer)
        report.details = details or {}  # what rank 0 decided (e.g. the blocks "auto" chose), on every rank
        record_restore(model, report)
        self.restored = True
        self.restore_summary = report.summary()
        logger.info("One-shot restore (%s): %s entries re-initialized", self.name, report.total_reinitialized)
        return report

    def restore_metrics(self, report: PlasticityReport) -> dict[str, float]:
        """The numbers of a restore, as metrics to log."""
        return {
            f"{PREFIX}/restore/reinitialized": float(report.total_reinitialized),
            f"{PREFIX}/restore/share": report.share,
            f"{PREFIX}/restore/seconds": report.seconds,
        }

    # -------------------------------------------------------------------------------------------- during training
    def attach(self, model: nn.Module) -> None:
        """Starts the periodic strategy on ``model`` (the unwrapped model): registers its hooks, if any."""
        self.detach()
        self.model = model
        if self.strategy.periodic:
            check_not_sharded(model)
            self.strategy.attach(model)
            self._attached = True

    def detach(self) -> None:
        """Removes what [`~PlasticityController.attach`] added."""
        if self._attached:
            self.strategy.detach()
            self._attached = False

    def step(self, step: int, *, epoch: float = 0.0, optimizer: Any = None) -> dict[str, float]:
        """Call after optimizer step ``step`` (1-based): applies a periodic reset when due, then returns the metrics
        to log at this step (often empty).

        ``strategy.due`` is evaluated on every process from ``step`` and ``epoch`` alone, so all processes agree on
        when to enter the (collective) reset.
        """
        if self.model is None:
            raise RuntimeError("Call `attach(model)` (or `restore(model)`) before `step`.")
        strategy = self.strategy
        if strategy.periodic and strategy.due(step=step, epoch=epoch):
            main = is_main_process()
            plan = strategy.plan_step(self.model, step=step, data=self._scoring_data()) if main else None
            plan, state = share_plan(self.model, plan, strategy.state_dict() if main else None)
            if not main:
                strategy.load_state_dict(state)
            report = apply_strategy_plan(self.model, strategy, plan, optimizer=optimizer)
            self.pending_reinitialized += report.total_reinitialized
            self.pending_resets += 1
            self.total_reinitialized += report.total_reinitialized
            self.total_resets += 1
        self.last_step = step
        metrics = {}
        if self.pending_resets and (self.log_every is None or step % self.log_every == 0):
            metrics.update(self.flush())
        if self.diagnostics_every and step % self.diagnostics_every == 0:
            metrics.update(self.diagnostics())
        return metrics

    def flush(self) -> dict[str, float]:
        """The periodic reset counts since the last flush (empty when there were none)."""
        if not self.pending_resets:
            return {}
        metrics = {
            f"{PREFIX}/{self.name}/resets": float(self.pending_resets),
            f"{PREFIX}/{self.name}/reinitialized": float(self.pending_reinitialized),
            f"{PREFIX}/{self.name}/reinitialized_total": float(self.total_reinitialized),
        }
        self.pending_resets = self.pending_reinitialized = 0
        return metrics

    def diagnostics(self) -> dict[str, float]:
        """Overall plasticity numbers (dormant ratio, insignificant-gradient share, ...) on the probe batches, on
        rank 0 (empty elsewhere). The model's gradients, modes and the RNG state are left as they were."""
        if not is_main_process() or self.model is None:
            return {}
        from .diagnostics import diagnose

        batches = self.prefetch()[: self.diagnostics_batches]
        report = diagnose(self.model, batches, batches=len(batches))
        values = report.overall() if hasattr(report, "overall") else report.to_dict()
        return {
            f"{PREFIX}/{key}": float(value)
            for key, value in values.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "feature_dim"
        }

    # ------------------------------------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs (JSON-able when the strategy's state is)."""
        return {
            "strategy": self.name,
            "restored": self.restored,
            "restore_summary": self.restore_summary,
            "strategy_state": self.strategy.state_dict(),
            "total_reinitialized": self.total_reinitialized,
            "total_resets": self.total_resets,
            "pending_reinitialized": self.pending_reinitialized,
            "pending_resets": self.pending_resets,
            "last_step": self.last_step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores what [`~PlasticityController.state_dict`] returned."""
        if state.get("strategy", self.name) != self.name:
            raise ValueError(f"This state belongs to strategy {state['strategy']!r}, not {self.name!r}.")
        for key in (
            "restored",
            "restore_summary",
            "total_reinitialized",
            "total_resets",
            "pending_reinitialized",
            "pending_resets",
            "last_step",
        ):
            if key in state:
                setattr(self, key, state[key])
        self.strategy.load_state_dict(state.get("strategy_state") or {})
