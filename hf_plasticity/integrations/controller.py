"""`PlasticityController`: drives one strategy through a training run, in any training loop.

The Trainer callback is a thin layer over it; users of a plain Accelerate (or torch) loop call it directly:
[`PlasticityController.restore`] once before training, [`PlasticityController.step`] after every optimizer step.
Every restore and every periodic reset goes through the restore pipeline
([`hf_plasticity.pipeline.restore.restore`]), the
same path as [`prepare_pretrained`]: on several processes, rank 0 plans and every process applies the same plan.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable
from typing import Any, Literal

from torch import nn

from ..core.collectives import is_main_process
from ..core.config import PlasticityConfig, check_positive_int, resolve_config
from ..core.data import ReplayableBatches, replayable
from ..core.record import (
    PeriodicResets,
    RestoreRecord,
    blocks_restore,
    read_record,
    record_periodic,
    restore_record,
    write_record,
)
from ..core.unwrap import check_restorable, unwrap_model
from ..core.validators import check_flag, check_int, check_number
from ..pipeline import restore as pipeline
from ..pipeline.report import PlasticityReport
from ..pipeline.restore import AlreadyRestoredError
from ..strategies.base import Strategy, get_strategy

logger = logging.getLogger(__name__)

PREFIX = "plasticity"

#: The ``restore`` argument: None (restore unless already restored), True, False or "force".
RestoreMode = Literal["force"] | bool | None


def check_restore_mode(restore: Any) -> None:
    """Raises a `ValueError` unless ``restore`` is None, True, False or ``"force"`` (``0`` and ``1`` are refused: a
    flag is a flag)."""
    if isinstance(restore, str) and restore == "force":
        return
    try:
        check_flag("restore", restore, allow_none=True)
    except ValueError:
        raise ValueError(f"`restore` must be None, True, False or 'force', got {restore!r}.") from None


class PlasticityController:
    """Applies a plasticity strategy before and during training, resets the optimizer state of what it re-draws,
    and measures plasticity as training goes.

    - [`~PlasticityController.restore`]: the one-shot restore, once per training run (its ``restored`` flag is part
      of [`~PlasticityController.state_dict`], so a resumed run never repeats it);
    - [`~PlasticityController.attach`]: once, when training starts (a periodic strategy's hooks, if any);
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
        restore: ``None`` (default): do the one-shot restore unless the model already carries a restore record (a
            restored checkpoint, or [`prepare_pretrained`]): training then continues from it; ``True``: do it, and
            fail if the model was already restored; ``"force"``: do it even then; ``False``: never (periodic resets
            and diagnostics only). Every periodic reset is counted in the model's record all the same (its
            ``periodic`` list; a record of strategy ``"none"`` when there was no one-shot restore).
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
        restore: RestoreMode = None,
        log_every: int | None = None,
        diagnostics_every: int | None = None,
        diagnostics_batches: int = 2,
    ) -> None:
        check_positive_int("log_every", log_every, allow_none=True)
        check_positive_int("diagnostics_every", diagnostics_every, allow_none=True)
        check_positive_int("diagnostics_batches", diagnostics_batches)
        check_restore_mode(restore)
        self.config = resolve_config(config, pipeline.DEFAULT_STRATEGY)
        self.data = data
        self.restore_mode = restore
        self.log_every = log_every
        self.diagnostics_every = diagnostics_every
        self.diagnostics_batches = diagnostics_batches
        self._attached = False
        self.start_run()

    def start_run(self) -> None:
        """Forgets the previous run before a new one (a second `Trainer.train()`, each `model_init` trial of a
        hyperparameter search): its model, its restore, its counters and diagnostics, and the strategy's running state
        (a fresh strategy of the same config, so a schedule's done epochs start over)."""
        self.detach()
        self.strategy: Strategy = get_strategy(self.config)
        self.model: nn.Module | None = None
        #: Why the last `restore` call did nothing (None when it restored, or was not called).
        self.skip_reason: str | None = None
        #: The first and the latest diagnostics of this run ([`DiagnosticsReport`]s, rank 0 only).
        self.first_diagnostics: Any = None
        self.last_diagnostics: Any = None
        # checkpointed state
        self.restored = False
        self.restore_summary: RestoreRecord | None = None
        #: The periodic resets in the model's record ([`PeriodicResets`], per strategy and config), as of the start of
        #: the run and after each of its resets: a checkpoint saves them, and a resume puts them back on the model.
        self.periodic_resets: list[PeriodicResets] = []
        #: Whether the checkpoint this run resumed from saved ``periodic_resets`` (those saved before the periodic
        #: resets were recorded did not).
        self.periodic_saved = False
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
    def data(self) -> Any:
        """The calibration / probe batches: a data loader or iterator is read once, on demand, and replayed to every
        reader ([`ReplayableBatches`]: the restore, each periodic scoring and each diagnostics pass see the same
        batches). Only rank 0 reads."""
        return self._batches

    @data.setter
    def data(self, source: Any) -> None:
        self._batches = replayable(source)

    @property
    def does_restore(self) -> bool:
        """Whether a one-shot restore is configured (it may still be skipped for an already restored model)."""
        return self.strategy.schedule.before_training and self.restore_mode is not False

    @property
    def periodic(self) -> bool:
        """Whether the strategy acts during training."""
        return self.strategy.schedule.periodic

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
        scoring = self.calibration_batches if (restoring or self.periodic) else 0
        return max(scoring, self.diagnostics_batches if self.diagnostics_every else 0)

    def validate(self, model: nn.Module, *, has_data: bool) -> None:
        """Raises a clear error now for what would otherwise fail during training.

        Checks that the model has layers the strategy supports, that its parameters are not sharded, and that data
        exists when the strategy scores on data or diagnostics are asked for.
        """
        model = unwrap_model(model)
        check_restorable(model)
        self.strategy.validate(model)
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
    def prefetch(self) -> None:
        """Reads the batches the strategy and the diagnostics will need now (rank 0 only; nothing on other ranks or
        when no data is needed), so that nothing is read from the training data loader in the middle of an epoch."""
        needed = self.batches_needed
        if not (needed and is_main_process()):
            return
        if self._batches is None:
            raise ValueError(f"Strategy {self.name!r} or the diagnostics need data: pass `data=`.")
        if isinstance(self._batches, ReplayableBatches):
            for _ in itertools.islice(self._batches, needed):
                pass

    def _scoring_data(self) -> Any:
        return self._batches if is_main_process() else None

    # ------------------------------------------------------------------------------------------------ the restore
    def restore(
        self, model: nn.Module, *, optimizer: Any = None, check: Callable[[], Any] | None = None
    ) -> PlasticityReport | None:
        """The one-shot restore, before the first optimizer step; a no-op when already done (also after a resume).

        Args:
            model: the model.
            optimizer: its optimizer, if it exists already (the state of re-drawn entries is reset).
            check: called last inside the restore's transaction, the record written: an error it raises undoes the
                whole restore (e.g. building the optimizer groups the run will use).

        Returns:
            The [`PlasticityReport`], or None when nothing was done.
        """
        model = unwrap_model(model)
        self.model = model
        if self.restored or not self.does_restore:
            if not self.restored:
                self.skip_reason = (
                    "restore=False (periodic resets and monitoring only)"
                    if self.restore_mode is False
                    else f"{self.name} acts during training only"
                )
            self.restored = True
            return None
        record = restore_record(model)
        if blocks_restore(record):
            if self.restore_mode is None:
                self.skip_reason = (
                    f"the model was already restored ({record.strategy}, in its plasticity record), training "
                    "continues from it; pass restore='force' to restore it again"
                )
                logger.info("Skipping the one-shot restore: %s.", self.skip_reason)
                self.restored = True
                return None
            if self.restore_mode is True:
                raise AlreadyRestoredError(
                    f"This model was already restored ({record.strategy}): pass `restore=None` to continue "
                    "training it as it is (its re-drawn blocks keep their own learning rate), or `restore='force'` to "
                    "restore it again."
                )
        report = pipeline.restore(
            model,
            self.strategy,
            data=self._scoring_data(),
            optimizer=optimizer,
            force=self.restore_mode == "force",
            check=check,
        )
        self.restored = True
        self.restore_summary = report.record()
        logger.info("One-shot restore (%s): %s entries re-initialized", self.name, report.total_reinitialized)
        return report

    def resume(self, model: nn.Module) -> None:
        """After a resume: puts the one-shot restore's record back on ``model`` when it lacks it (a model rebuilt from
        the base checkpoint), and sets its periodic resets to those the checkpoint saved, whatever the model carries
        now (a model that trained past the checkpoint counts resets that will be redone; one reloaded from an earlier
        fine-tune lacks this run's): later checkpoints and the final save then count each reset once."""
        model = unwrap_model(model)
        self.model = model
        record = restore_record(model)
        if self.restore_summary and record is None:
            write_record(model, self.restore_summary)
            record = self.restore_summary
        if self.periodic_saved:
            _set_periodic(model, record, self.periodic_resets)
        elif self.periodic_resets and (record is None or not record.periodic):  # a checkpoint of an earlier version
            record_periodic(model, self.periodic_resets)

    def best_loaded(self, model: nn.Module, checkpoint: str) -> None:
        """After the `Trainer` loaded the weights of its best checkpoint back (``load_best_model_at_end``): sets the
        model's periodic resets to those that checkpoint saved in its ``config.json``, the resets those weights went
        through, not those of the steps after it. Nothing changes for a checkpoint without ``config.json`` (a model
        that is not a transformers model: its count stays the whole run's)."""
        if not self.periodic or not os.path.isfile(os.path.join(checkpoint, "config.json")):
            return
        model = unwrap_model(model)
        saved = read_record(checkpoint)
        periodic = saved.periodic if saved is not None else []
        _set_periodic(model, restore_record(model), periodic)
        self.periodic_resets = list(periodic)

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
        model = unwrap_model(model)
        self.model = model
        if self.periodic:
            check_restorable(model)
            record = restore_record(model)  # each reset is counted in the record: a broken one is refused here
            self.periodic_resets = list(record.periodic) if record is not None else []  # what a checkpoint saves
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

        Raises:
            ValueError: when ``step`` is not an integer >= 1 (booleans and floats refused: a reset's draws are
                seeded by its step) or ``epoch`` is not a finite number >= 0.
            RuntimeError: before [`~PlasticityController.attach`] (or [`~PlasticityController.restore`]), and, for a
                strategy that reads activations during training (continual backprop), before
                [`~PlasticityController.attach`].
        """
        check_int("step", step, low=1)
        check_number("epoch", epoch, low=0)
        if self.model is None:
            raise RuntimeError("Call `attach(model)` (or `restore(model)`) before `step`.")
        strategy = self.strategy
        if self.periodic and strategy.needs_attach and not self._attached:
            raise RuntimeError(
                f"Strategy {self.name!r} reads the hidden activations of the training steps through hooks that "
                "`attach` registers: call `controller.attach(model)` before training (after `restore`), then `step` "
                "after every optimizer step (and `detach()` at the end)."
            )
        if self.periodic and strategy.due(step=step, epoch=epoch):
            report = pipeline.restore(self.model, strategy, data=self._scoring_data(), optimizer=optimizer, step=step)
            strategy.schedule.fired(step=step, epoch=epoch)
            self.periodic_resets = list(restore_record(self.model).periodic)  # the pipeline counted the reset there
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
        rank 0 (empty elsewhere). The model's gradients, modes and the RNG state are left as they were. The full
        report is kept as ``last_diagnostics`` (and the run's first as ``first_diagnostics``)."""
        if not is_main_process() or self.model is None:
            return {}
        from ..diagnostics.diagnose import diagnose

        report = diagnose(self.model, self._batches, batches=self.diagnostics_batches)
        self.first_diagnostics = self.first_diagnostics or report
        self.last_diagnostics = report
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
            "restore_summary": None if self.restore_summary is None else self.restore_summary.to_dict(),
            "periodic_resets": [entry.to_dict() for entry in self.periodic_resets],
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
        if isinstance(self.restore_summary, dict):  # a JSON checkpoint of the callback: the typed record again
            self.restore_summary = RestoreRecord.from_dict(self.restore_summary, source="the callback's saved state")
        self.periodic_saved = "periodic_resets" in state
        try:  # states saved before the periodic resets were recorded have none
            self.periodic_resets = [PeriodicResets.from_dict(entry) for entry in state.get("periodic_resets") or []]
        except ValueError as error:
            raise ValueError(f"The saved state's `periodic_resets` is broken: {error}.") from None
        self.strategy.load_state_dict(state.get("strategy_state") or {})


def _set_periodic(model: nn.Module, record: RestoreRecord | None, periodic: list[PeriodicResets]) -> None:
    """Sets the periodic resets of ``model`` (``record``: the record it carries) to ``periodic``; writes nothing when
    neither holds any (no record of strategy ``"none"`` that says nothing)."""
    if periodic or (record is not None and record.periodic):
        record_periodic(model, periodic)
