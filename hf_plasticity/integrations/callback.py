"""`PlasticityCallback`: plasticity restoration and monitoring inside a transformers `Trainer` run.

A thin layer over [`PlasticityController`]: the Trainer's events call the controller, its metrics go through
``trainer.log`` (so they reach every ``report_to`` integration), and its state travels with the checkpoint.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import sys
import warnings
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from ..core.architectures import get_layout
from ..core.collectives import (
    ShardedModelError,
    fingerprints_match,
    parameter_fingerprint,
    process_group_warning,
    sharded_parameters,
)
from ..core.config import PlasticityConfig
from ..core.unwrap import unwrap_model
from .controller import PREFIX, PlasticityController
from .hub import add_plasticity_files

logger = logging.getLogger(__name__)


class ResumeMismatchError(RuntimeError):
    """A resumed run does not hold the weights its checkpoint was saved with."""


def find_trainer(max_depth: int = 12) -> Any:
    """The `transformers.Trainer` whose method is calling the current callback event, or None.

    Callback events carry the model, optimizer and data loaders but not the Trainer; events are always called
    synchronously from a Trainer method, so the Trainer is ``self`` in one of the calling frames.
    """
    from transformers import Trainer

    frame = sys._getframe(1)
    for _ in range(max_depth):
        if frame is None:
            return None
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, Trainer):
            return candidate
        frame = frame.f_back
    return None


def _to_json(value: Any) -> Any:
    if torch.is_tensor(value):
        return {"__tensor__": value.detach().cpu().tolist(), "dtype": str(value.dtype).removeprefix("torch.")}
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if "__tensor__" in value:
            return torch.tensor(value["__tensor__"], dtype=getattr(torch, value["dtype"]))
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


class PlasticityCallback(TrainerCallback, ExportableState):
    """Restores plasticity before training, applies periodic strategies during training, and logs plasticity
    metrics, inside a [`~transformers.Trainer`] run.

    - **One-shot restore** (any one-shot strategy) right before the first optimizer step, in place, so the
      optimizer keeps training the same parameters; calibration batches come from the Trainer's train dataloader.
      It runs once per training run: never again on a resume.
    - **Periodic strategies** (ReDo every N steps, selective threshold mode every T steps, continual backprop, RIFLE
      at given epochs), each resetting the optimizer state of the entries it re-draws.
    - **Metrics** through ``trainer.log``: ``plasticity/restore/*`` after the restore, ``plasticity/<strategy>/*``
      (resets and entries re-initialized) every ``log_every`` steps, ``plasticity/dormant_ratio``,
      ``plasticity/insignificant_grad_share``, ... every ``diagnostics_every`` steps. Main process only.
    - **Resume-safe**: its state is saved in every checkpoint (``trainer_state.json``) and read back on resume, whether
      or not ``restore_callback_states_from_checkpoint`` is set. A resume whose weights differ from the checkpoint's
      (the transformers 5.x ViT resume bug, huggingface/transformers#48805) stops with [`ResumeMismatchError`]
      instead of training on from the wrong weights.
    - **Multi-process** (DDP): rank 0 reads data and plans, every rank applies the same plan: parameters stay
      bitwise identical. FSDP / DeepSpeed ZeRO-3 are refused (restore before wrapping with [`prepare_pretrained`]).

    Errors are raised at `Trainer` construction or at the start of training, never mid-way: a data-dependent
    strategy without a train dataset, a model without supported layers, a bad period, FSDP.

    Args:
        config: the strategy: a config, a strategy name, or None for the default one-shot restore
            (`LayerReinitConfig()`: the last eighth of the blocks, at least one).
        restore: ``None`` (default): do the one-shot restore unless the model was already restored (for example with
            [`prepare_pretrained`] before building the Trainer); ``True``: do it, and fail on an already restored
            model; ``False``: never (periodic strategy and monitoring only).
        log_every: log the periodic reset counts every this many steps (default: the Trainer's ``logging_steps``).
        diagnostics_every: run [`diagnose`] on probe batches every this many steps, and once before training
            (default: never).
        diagnostics_batches: probe batches per diagnostics pass (each costs about one training step).
        check_resume: on resume, check that the model holds the checkpoint's weights.

    Example:

    ```python
    >>> from transformers import Trainer, TrainingArguments
    >>> from hf_plasticity import PlasticityCallback, ReDoConfig
    >>> callback = PlasticityCallback(ReDoConfig(every_n_steps=500), diagnostics_every=100)
    >>> trainer = Trainer(model=model, args=TrainingArguments("out", report_to=["tensorboard"]),
    ...                   train_dataset=train_ds, callbacks=[callback])  # doctest: +SKIP
    >>> trainer.train()  # doctest: +SKIP
    ```
    """

    def __init__(
        self,
        config: PlasticityConfig | str | dict | None = None,
        *,
        restore: bool | None = None,
        log_every: int | None = None,
        diagnostics_every: int | None = None,
        diagnostics_batches: int = 2,
        check_resume: bool = True,
    ) -> None:
        self.controller = PlasticityController(
            config,
            restore=restore,
            log_every=log_every,
            diagnostics_every=diagnostics_every,
            diagnostics_batches=diagnostics_batches,
        )
        self.log_every = log_every
        self.check_resume = check_resume
        self.history: list[dict[str, float]] = []
        self._trainer: Any = None
        self._model: nn.Module | None = None
        self._saved_fingerprint: list[float] | None = None
        self._warned_no_trainer = False

    def bind(self, trainer: Any) -> PlasticityCallback:
        """Ties the callback to ``trainer`` for logging. Rarely needed: the callback finds the Trainer that calls it.

        Example: ``trainer.add_callback(PlasticityCallback(...).bind(trainer))``.
        """
        self._trainer = trainer
        return self

    # ---------------------------------------------------------------------------------------------- ExportableState
    def state(self) -> dict[str, Any]:
        controller = self.controller
        return {
            "args": {
                "config": controller.config.to_dict(),
                "restore": controller.restore_mode,
                "log_every": self.log_every,
                "diagnostics_every": controller.diagnostics_every,
                "diagnostics_batches": controller.diagnostics_batches,
                "check_resume": self.check_resume,
            },
            "attributes": {"plasticity_state": self.plasticity_state},
        }

    @property
    def plasticity_state(self) -> dict[str, Any]:
        """The controller state and a fingerprint of the weights, as saved in a checkpoint."""
        model = self._model
        fingerprint = parameter_fingerprint(model) if model is not None and not sharded_parameters(model) else None
        return {"controller": _to_json(self.controller.state_dict()), "fingerprint": fingerprint}

    @plasticity_state.setter
    def plasticity_state(self, value: dict[str, Any]) -> None:
        self.controller.load_state_dict(_from_json(value.get("controller") or {}))
        self._saved_fingerprint = value.get("fingerprint")

    # ------------------------------------------------------------------------------------------------------ events
    def on_init_end(self, args, state, control, model: nn.Module | None = None, **kwargs):
        self._model = model
        self._trainer = self._trainer or find_trainer()
        trainer = self._trainer
        has_data = True  # without the trainer, checked again at the start of training
        if trainer is not None:
            self._check_alone(trainer)
            if getattr(trainer, "is_fsdp_enabled", False):
                raise ShardedModelError(
                    "PlasticityCallback cannot re-initialize FSDP-sharded parameters: restore before wrapping, i.e. "
                    "call `prepare_pretrained(model, config, data=...)` before creating the Trainer, and drop the "
                    "callback (or use `PlasticityCallback(restore=False)` without periodic strategy for monitoring)."
                )
            has_data = trainer.train_dataset is not None
            self._save_plasticity_files_with(trainer)
        if model is not None:
            self.controller.validate(model, has_data=has_data)
        warning = process_group_warning(args.world_size)
        if warning:
            warnings.warn(warning, stacklevel=2)

    def on_train_begin(self, args, state, control, model=None, optimizer=None, train_dataloader=None, **kwargs):
        self._trainer = self._trainer or find_trainer()
        if self._trainer is not None:  # also when added with `trainer.add_callback` after the Trainer was built
            self._check_alone(self._trainer)
            self._save_plasticity_files_with(self._trainer)
        self._model = model
        controller = self.controller
        resuming = state.global_step > 0
        if resuming:
            self._load_checkpoint_state(state, model)
            controller.resume(model)
        # A checkpoint saved without this callback has no entry for it, and transformers' checkpoint save then fails
        # with a KeyError: give it one.
        state.stateful_callbacks = state.stateful_callbacks or {}
        state.stateful_callbacks.setdefault(type(self).__name__, self.state())
        controller.data = getattr(train_dataloader, "base_dataloader", train_dataloader)
        controller.validate(model, has_data=controller.data is not None)
        if controller.log_every is None:
            controller.log_every = max(1, int(state.logging_steps or 1))
        controller.prefetch()
        if not resuming:
            report = controller.restore(model, optimizer=optimizer)
            if report is not None:
                self._announce(report.one_line(), state)
                self._log(controller.restore_metrics(report), state)
            else:
                self._skipped(controller.skip_reason or "nothing to do", state)
        elif controller.does_restore and not controller.restored:
            self._skipped(
                f"resuming at step {state.global_step} from a checkpoint saved without PlasticityCallback; the "
                "one-shot restore only runs before the first optimizer step",
                state,
            )
            controller.restored = True
        else:
            self._announce(f"resuming at step {state.global_step}: the one-shot restore is not repeated", state)
        controller.attach(model)
        if controller.diagnostics_every and not resuming:
            self._log_diagnostics(controller.diagnostics(), state)

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        diagnosed = self.controller.last_diagnostics
        metrics = self.controller.step(state.global_step, epoch=state.epoch or 0.0, optimizer=optimizer)
        if metrics:
            self._log(metrics, state)
        if self.controller.last_diagnostics is not diagnosed:
            self._figure_to_tensorboard(state)

    def on_train_end(self, args, state, control, **kwargs):
        self._log(self.controller.flush(), state)
        self.controller.detach()

    # ----------------------------------------------------------------------------------------------------- helpers
    def _check_alone(self, trainer: Any) -> None:
        """One PlasticityCallback per Trainer, however it was added: two would each restore and reset."""
        others = [c for c in trainer.callback_handler.callbacks if isinstance(c, PlasticityCallback) and c is not self]
        if others:
            raise ValueError(
                "Give the Trainer one PlasticityCallback (it has two, so each would restore and reset the model); "
                "combine a one-shot restore with prepare_pretrained and one callback for the periodic strategy."
            )

    def _announce(self, line: str, state) -> None:
        """One line on the console (main process), visible whatever the logging set-up and around progress bars."""
        logger.info(line)
        if state.is_world_process_zero:
            from tqdm.auto import tqdm

            tqdm.write(f"hf-plasticity: {line}", file=sys.stdout)

    def _log_diagnostics(self, metrics: dict[str, float], state) -> None:
        self._log(metrics, state)
        self._figure_to_tensorboard(state)

    def _figure_to_tensorboard(self, state) -> None:
        """The plasticity picture of the latest diagnostics (dashed: the run's first), re-drawn blocks shaded, as a
        figure in TensorBoard when the Trainer reports to it and matplotlib is installed."""
        from transformers.integrations import TensorBoardCallback

        controller = self.controller
        trainer = self._trainer
        if not state.is_world_process_zero or controller.last_diagnostics is None or trainer is None:
            return
        writers = [
            c.tb_writer
            for c in trainer.callback_handler.callbacks
            if isinstance(c, TensorBoardCallback) and getattr(c, "tb_writer", None) is not None
        ]
        if not writers or importlib.util.find_spec("matplotlib") is None:
            return
        from ..diagnostics.figure import plot_plasticity

        first = controller.first_diagnostics
        figure = plot_plasticity(
            controller.last_diagnostics,
            before=first if first is not controller.last_diagnostics else None,
            redrawn=controller.restore_summary.redrawn if controller.restore_summary else None,
            title=f"Plasticity by block at step {state.global_step}",
        )
        for writer in writers:
            writer.add_figure(f"{PREFIX}/blocks", figure, global_step=state.global_step, close=False)

    def _skipped(self, reason: str, state) -> None:
        self._announce(f"no one-shot restore: {reason}", state)
        self._log({f"{PREFIX}/restore/skipped": 1.0}, state)

    def _save_plasticity_files_with(self, trainer: Any) -> None:
        """After each `Trainer.save_model` (final saves and checkpoints) and `Trainer.create_model_card` (which
        rewrites README.md before a push), put ``plasticity_config.json`` and the card's plasticity section into the
        folder, so the output folder and the repository the Trainer pushes say what was re-initialized."""
        if getattr(trainer, "_hf_plasticity_saves", False):
            return
        save_model, create_model_card = trainer.save_model, trainer.create_model_card

        def add_files(folder: str | None) -> None:
            if trainer.args.should_save:
                add_plasticity_files(folder or trainer.args.output_dir, unwrap_model(trainer.model))

        @functools.wraps(save_model)
        def save_model_with_plasticity(output_dir: str | None = None, *args: Any, **kwargs: Any) -> None:
            save_model(output_dir, *args, **kwargs)
            add_files(output_dir)

        @functools.wraps(create_model_card)
        def create_model_card_with_plasticity(*args: Any, **kwargs: Any) -> None:
            create_model_card(*args, **kwargs)
            add_files(None)

        trainer.save_model = save_model_with_plasticity
        trainer.create_model_card = create_model_card_with_plasticity
        trainer._hf_plasticity_saves = True

    def _load_checkpoint_state(self, state, model: nn.Module) -> None:
        saved = (state.stateful_callbacks or {}).get(type(self).__name__)
        if isinstance(saved, list):  # transformers keeps a list when a class has several instances
            saved = saved[-1] if saved else None
        exported = (saved or {}).get("attributes", {}).get("plasticity_state")
        if exported:
            self.plasticity_state = exported
        if not (self.check_resume and self._saved_fingerprint and not sharded_parameters(model)):
            return
        if not fingerprints_match(parameter_fingerprint(model), self._saved_fingerprint):
            rule = get_layout(model).rule
            hint = f" {rule.resume_hint}" if rule is not None and rule.resume_hint else ""
            raise ResumeMismatchError(
                f"Resuming at step {state.global_step}, the model's weights differ from the weights saved with the "
                f"checkpoint, so training would go on from the wrong weights.{hint} Pass `check_resume=False` to "
                "PlasticityCallback to skip this check."
            )

    def _log(self, metrics: dict[str, float], state) -> None:
        if not metrics or not state.is_world_process_zero:
            return
        self.history.append({**metrics, "step": state.global_step})
        if self._trainer is not None:
            # `trainer.log` clears `control.should_log`: keep the Trainer's own logging (and, under DDP, the loss
            # gather that every rank enters at logging steps) as it was.
            control = self._trainer.control
            should_log = control.should_log
            self._trainer.log(dict(metrics))
            self._trainer.control.should_log = should_log
            return
        if not self._warned_no_trainer:
            logger.warning(
                "PlasticityCallback has no Trainer to log through (call `callback.bind(trainer)`): its metrics go to "
                "`trainer.state.log_history` only, not to the `report_to` integrations."
            )
            self._warned_no_trainer = True
        state.log_history.append({**metrics, "step": state.global_step})
