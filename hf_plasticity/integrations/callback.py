"""`PlasticityCallback`: plasticity restoration and monitoring inside a [`PlasticityTrainer`] run.

A thin layer over [`PlasticityController`]: the Trainer's events call the controller, its metrics go through
`Trainer.log` (so they reach every ``report_to`` integration), and its state travels with the checkpoint. The trainer
is given to it explicitly ([`PlasticityTrainer`] does it), never looked up; what transformers does not document is in
[`hf_plasticity.integrations.trainer_adapter`].
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from ..core.architectures import get_layout
from ..core.collectives import (
    ShardedModelError,
    fingerprint_differences,
    is_main_process,
    parameter_fingerprint,
    process_group_warning,
    run_on_main,
    sharded_parameters,
)
from ..core.config import PlasticityConfig
from ..core.param_groups import plasticity_param_groups
from ..core.recipe import FineTuneRecipe, budget_for_epochs, check_recipe, refuse_rates_with_recipe
from ..core.record import record_recipe, restore_record
from ..core.redrawn import redrawn_parameters
from ..core.unwrap import unwrap_model
from ..core.validators import check_flag, check_number
from ..diagnostics.recipe import recommend_recipe
from .controller import PREFIX, PlasticityController, RestoreMode, check_restore_mode
from .trainer_adapter import (
    base_loader,
    ensure_saved_state,
    resuming,
    saved_state,
    tensorboard_writers,
    trains_together,
)

logger = logging.getLogger(__name__)


class ResumeMismatchError(RuntimeError):
    """A resumed run does not hold the weights its checkpoint was saved with."""


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


NOT_IN_A_PLASTICITY_TRAINER = (
    "PlasticityCallback runs inside a PlasticityTrainer, which owns what a callback cannot change (the optimizer's "
    "groups, the files of every save, the model card): write `PlasticityTrainer(...)` where you wrote `Trainer(...)` "
    "(the same arguments: `from hf_plasticity import PlasticityTrainer`), or put `PlasticityTrainerMixin` first among "
    "the bases of your own Trainer subclass."
)


#: The callback's arguments that decide the optimizer's groups and rates: a resume must not change them.
RATE_ARGUMENTS = ("reinit_lr", "head_lr", "layer_decay", "redrawn", "recipe")


class PlasticityCallback(TrainerCallback, ExportableState):
    """Restores plasticity before training, gives re-drawn blocks their own learning rate, applies periodic
    strategies during training and logs plasticity metrics, inside a [`PlasticityTrainer`] run.

    - **One-shot restore** (any one-shot strategy) when the Trainer creates its optimizer, before the model is wrapped
      for several processes; calibration batches come from the Trainer's train dataloader. It runs once per training
      run: never again on a resume. The console shows one line saying what was re-drawn (or why nothing was;
      ``announce=False`` keeps it to the logger).
    - **Own learning rates** (``reinit_lr``, ``head_lr``, ``layer_decay``): the optimizer ``args.optim`` names, over
      [`plasticity_param_groups`]: the backbone at ``args.learning_rate`` (with ``layer_decay``, lower towards the
      input), the re-drawn blocks at ``reinit_lr``, the head at ``head_lr``. The Trainer's scheduler scales every
      group alike; a resume builds the same groups from the checkpoint's record.
    - **A recipe instead of learning rates** (``recipe="auto"``, experimental): before the optimizer exists, one
      diagnostic pass on 256 training images chooses the backbone's and the head's learning rates
      ([`recommend_recipe`], for the budget nearest to the run's epochs: about 3 or about 9), the optimizer is built
      with them (``args.learning_rate`` is not used), nothing is re-drawn, and the recipe is recorded with the model
      and shown in its card. A resume builds the same groups from the recipe saved with the checkpoint.
    - **Periodic strategies** (ReDo every N steps, selective threshold mode every T steps, continual backprop, RIFLE
      at given epochs), each resetting the optimizer state of the entries it re-draws, and each counted in the
      model's record (its ``periodic`` list: strategy, config, resets, entries), also with ``restore=False``: the
      checkpoints' ``config.json`` and card say what was done.
    - **Metrics** through `Trainer.log`: ``plasticity/restore/*`` after the restore, ``plasticity/<strategy>/*``
      (resets and entries re-initialized) every ``log_every`` steps, ``plasticity/dormant_ratio``,
      ``plasticity/insignificant_grad_share``, ... every ``diagnostics_every`` steps. Main process only.
    - **Output**: every save (final and checkpoints), every push (those during training too) and the Trainer's card
      carry ``plasticity_config.json`` and the card's plasticity section, with every optimizer group's learning rate.
    - **Resume-safe**: its state is saved in every checkpoint (``trainer_state.json``) and read back on resume, whether
      or not ``restore_callback_states_from_checkpoint`` is set. A resume whose weights differ from the checkpoint's
      (the transformers 5.x ViT resume bug, huggingface/transformers#48805) stops with [`ResumeMismatchError`]
      instead of training on from the wrong weights.
    - **Multi-process** (DDP): rank 0 reads data and plans, every rank applies the same plan: parameters stay
      bitwise identical. A launch whose processes would not train together is warned about. FSDP / DeepSpeed
      ZeRO-3 are refused (restore before wrapping with [`prepare_pretrained`]).

    Errors are raised at `PlasticityTrainer(...)` or at the start of training, never mid-way: a data-dependent
    strategy without a train dataset, a model without supported layers, a bad period, FSDP, two callbacks (or the same
    one twice), a plain `Trainer`.

    Args:
        config: the strategy: a config, a strategy name, or None for the default one-shot restore
            (`LayerReinitConfig()`: the last eighth of the blocks, at least one).
        restore: ``None`` (default): do the one-shot restore, unless the model was already restored (a restored
            checkpoint, or [`prepare_pretrained`] before building the Trainer): training then continues from it, its
            re-drawn blocks still at ``reinit_lr``; ``True``: do it, and fail on an already restored model;
            ``"force"``: do it even on an already restored model; ``False``: never (periodic strategy and monitoring
            only).
        reinit_lr: learning rate of the parameters the restore re-drew whole (None: the backbone's).
        head_lr: learning rate of the classification head (None: ``reinit_lr``: it is new too).
        layer_decay: layer-wise learning-rate decay over the pretrained blocks (None: none).
        redrawn: which parameters get ``reinit_lr`` instead of what the restore re-drew (``{"whole": [names]}``): e.g.
            the last blocks, "boosted" without re-drawing them (with ``restore=False``).
        log_every: log the periodic reset counts every this many steps (default: the Trainer's ``logging_steps``).
        diagnostics_every: run [`diagnose`] on probe batches every this many steps, and once before training
            (default: never).
        diagnostics_batches: probe batches per diagnostics pass (each costs about one training step).
        check_resume: on resume, check that the model holds the checkpoint's weights.
        recipe: ``"auto"``: choose the learning rates from one diagnostic pass on the train dataset (experimental:
            a first fit on the benchmark's tuning records, see [`recommend_recipe`]); or a [`FineTuneRecipe`] to
            train at its rates. The recipe re-draws nothing, so ``restore`` then defaults to False; ``restore=True``
            or ``"force"``, ``reinit_lr``, ``head_lr``, ``layer_decay`` and ``redrawn`` are refused with it.
        announce: print the callback's own lines on the console (main process: what the restore re-drew or why
            nothing was, a resume, the recipe). False silences only those lines: they still go to the
            ``hf_plasticity.integrations.callback`` logger at INFO, its metrics still go through `Trainer.log`, and
            whatever else the run prints (other callbacks, the user's code) is left alone. Saved with the callback's
            state, so a resume built from a checkpoint keeps it.

    Example:

    ```python
    >>> from transformers import TrainingArguments
    >>> from hf_plasticity import PlasticityCallback, PlasticityTrainer
    >>> callback = PlasticityCallback(reinit_lr=1e-3, layer_decay=0.9, diagnostics_every=100)
    >>> trainer = PlasticityTrainer(model=model, args=TrainingArguments("out", report_to=["tensorboard"]),
    ...                             train_dataset=train_ds, callbacks=[callback])  # doctest: +SKIP
    >>> trainer.train()  # doctest: +SKIP
    ```
    """

    def __init__(
        self,
        config: PlasticityConfig | str | dict | None = None,
        *,
        restore: RestoreMode = None,
        reinit_lr: float | None = None,
        head_lr: float | None = None,
        layer_decay: float | None = None,
        redrawn: dict[str, list[str]] | None = None,
        log_every: int | None = None,
        diagnostics_every: int | None = None,
        diagnostics_batches: int = 2,
        check_resume: bool = True,
        recipe: FineTuneRecipe | str | dict | None = None,
        announce: bool = True,
    ) -> None:
        if isinstance(recipe, dict):  # a recipe saved in a checkpoint's callback state
            recipe = FineTuneRecipe.from_dict(recipe)
        check_recipe(recipe, allow_auto=True)
        if recipe is not None:
            check_restore_mode(restore)
            refuse_rates_with_recipe(
                recipe, reinit_lr=reinit_lr, head_lr=head_lr, layer_decay=layer_decay, redrawn=redrawn
            )
            if restore is True or restore == "force":
                raise ValueError(
                    f"`recipe` re-draws nothing (its rates were measured on fine-tunes without a re-draw), so "
                    f"`restore={restore!r}` cannot go with it: drop `restore=` (or pass False), or drop `recipe=`."
                )
            restore = False
        check_number("reinit_lr", reinit_lr, low=0, allow_none=True)
        check_number("head_lr", head_lr, low=0, allow_none=True)
        check_number("layer_decay", layer_decay, low=0, high=1, low_open=True, allow_none=True)
        if redrawn is not None and not isinstance(redrawn, dict):
            raise ValueError(f'`redrawn` must be a dict such as {{"whole": [module names]}} or None, got {redrawn!r}.')
        check_flag("check_resume", check_resume)
        check_flag("announce", announce)
        self.controller = PlasticityController(
            config,
            restore=restore,
            log_every=log_every,
            diagnostics_every=diagnostics_every,
            diagnostics_batches=diagnostics_batches,
        )
        self.reinit_lr, self.head_lr, self.layer_decay, self.redrawn = reinit_lr, head_lr, layer_decay, redrawn
        #: The recipe as given: ``"auto"``, a [`FineTuneRecipe`], or None.
        self.recipe = recipe
        #: The [`FineTuneRecipe`] the optimizer is built with (``recipe``, or the one ``"auto"`` chose), or None.
        self.resolved_recipe: FineTuneRecipe | None = recipe if isinstance(recipe, FineTuneRecipe) else None
        self.log_every = log_every
        self.check_resume = check_resume
        #: Whether the callback's own lines are printed on the console (see ``announce`` above).
        self.announce = announce
        #: Every metric dict this callback logged, with its step (main process).
        self.history: list[dict[str, float]] = []
        #: The trainer this callback runs in ([`PlasticityTrainer`] sets it).
        self.trainer: Any = None
        self._model: nn.Module | None = None
        self._saved_fingerprint: dict[str, list[float]] | list[float] | None = None
        self._pending: list[dict[str, float]] = []  # metrics waiting for an event where logging is safe
        self._prepared = False  # the run's set-up (restore or resume) is done
        self._built_groups = False  # the trainer's optimizer was built from `param_groups`

    def bind(self, trainer: Any) -> PlasticityCallback:
        """Ties the callback to ``trainer`` (what [`PlasticityTrainer`] does for the callbacks it is given).

        Returns:
            The callback itself.
        """
        self.trainer = trainer
        return self

    @property
    def own_rates(self) -> bool:
        """Whether the callback builds the optimizer (``reinit_lr``, ``head_lr``, ``layer_decay``, ``redrawn`` or
        ``recipe``)."""
        rates = (self.reinit_lr, self.head_lr, self.layer_decay, self.redrawn, self.recipe)
        return any(value is not None for value in rates)

    # ---------------------------------------------------------------------------------------------- ExportableState
    def state(self) -> dict[str, Any]:
        controller = self.controller
        return {
            "args": {
                "config": controller.config.to_dict(),
                "restore": controller.restore_mode,
                "reinit_lr": self.reinit_lr,
                "head_lr": self.head_lr,
                "layer_decay": self.layer_decay,
                "redrawn": self.redrawn,
                "log_every": self.log_every,
                "diagnostics_every": controller.diagnostics_every,
                "diagnostics_batches": controller.diagnostics_batches,
                "check_resume": self.check_resume,
                "recipe": self.recipe.to_dict() if isinstance(self.recipe, FineTuneRecipe) else self.recipe,
                "announce": self.announce,
            },
            "attributes": {"plasticity_state": self.plasticity_state},
        }

    @property
    def plasticity_state(self) -> dict[str, Any]:
        """The controller state and a fingerprint of the weights, as saved in a checkpoint."""
        model = self._model
        fingerprint = (
            parameter_fingerprint(unwrap_model(model)) if model is not None and not sharded_parameters(model) else None
        )
        recipe = self.resolved_recipe.to_dict() if self.resolved_recipe is not None else None
        return {"controller": _to_json(self.controller.state_dict()), "fingerprint": fingerprint, "recipe": recipe}

    @plasticity_state.setter
    def plasticity_state(self, value: dict[str, Any]) -> None:
        self.controller.load_state_dict(_from_json(value.get("controller") or {}))
        self._saved_fingerprint = value.get("fingerprint")
        if value.get("recipe") is not None:
            self.resolved_recipe = FineTuneRecipe.from_dict(value["recipe"])

    # ------------------------------------------------------------------------------------- called by the trainer
    def prepare(
        self,
        trainer: Any,
        model: nn.Module,
        *,
        dataloader: Any = None,
        optimizer: Any = None,
        build: Callable[[], Any] | None = None,
    ) -> None:
        """The run's set-up, before the optimizer exists ([`PlasticityTrainer`]'s `create_optimizer` calls it): the
        one-shot restore, or on a resume the checkpoint's state and restore record put back. Once per run.

        Args:
            trainer: the trainer.
            model: the model it trains.
            dataloader: its training data loader (default: the trainer's).
            optimizer: its optimizer, when it exists already.
            build: what the run builds from the restore, the optimizer: called last inside the restore's transaction,
                so that an error it raises undoes the restore; called after the set-up when nothing is restored.
                Default: the optimizer groups, built and dropped (the check alone).
        """
        build = build or (lambda: self._groups(model, trainer.args))
        if self._prepared:
            build()
            return
        self.bind(trainer)
        self._check_alone(trainer)
        self._start_run()  # before a resume puts the checkpoint's state back
        resume = resuming(trainer)
        self._model = model
        controller = self.controller
        state = trainer.state
        if resume:
            saved = saved_state(state, type(self).__name__) or {}
            self._refuse_other_rates(saved.get("args") or {})
            exported = saved.get("attributes", {}).get("plasticity_state")
            if exported:
                self.plasticity_state = exported
            controller.resume(model)
        if controller.log_every is None:
            controller.log_every = max(1, int(state.logging_steps or 1))
        has_data = trainer.train_dataset is not None
        if dataloader is None and has_data and is_main_process():  # read lazily (also by a BatchNorm re-estimate)
            dataloader = trainer.get_train_dataloader()
        controller.data = base_loader(dataloader) if dataloader is not None else None
        controller.validate(model, has_data=has_data)
        if self.recipe is not None:
            self._resolve_recipe(trainer, model, dataloader, resume)
        controller.prefetch()
        report = None
        if not resume:
            report = controller.restore(model, optimizer=optimizer, check=build)
            if report is not None:
                self._announce(report.one_line())
                self._log(controller.restore_metrics(report), state)
            else:
                reason = "the recipe re-draws nothing" if self.recipe is not None else controller.skip_reason
                self._skipped(reason or "nothing to do", state)
        elif controller.does_restore and not controller.restored:
            self._skipped(
                f"resuming at step {state.global_step} from a checkpoint saved without PlasticityCallback; the "
                "one-shot restore only runs before the first optimizer step",
                state,
            )
            controller.restored = True
        else:
            self._announce(f"resuming at step {state.global_step}: the one-shot restore is not repeated")
        if report is None:  # nothing restored: built outside a transaction, with nothing to undo
            build()
        self._prepared = True

    def param_groups(self, model: nn.Module, args: Any) -> list[dict[str, Any]] | None:
        """The optimizer groups with the callback's own learning rates (None without ``reinit_lr``, ``head_lr``,
        ``layer_decay`` or ``redrawn``: the Trainer's own optimizer then)."""
        if not self.own_rates:
            return None
        self._built_groups = True
        return self._groups(model, args)

    def _groups(self, model: nn.Module, args: Any) -> list[dict[str, Any]] | None:
        """[`param_groups`] without marking the optimizer as built: also the restore's last check, inside its
        transaction, so that groups that cannot be built (``reinit_lr`` on a partial re-draw) undo the restore."""
        if not self.own_rates:
            return None
        if self.resolved_recipe is not None:
            return plasticity_param_groups(model, recipe=self.resolved_recipe, weight_decay=args.weight_decay)
        return plasticity_param_groups(
            model,
            lr=args.learning_rate,
            reinit_lr=self.reinit_lr,
            head_lr=self.head_lr,
            weight_decay=args.weight_decay,
            layer_decay=self.layer_decay,
            redrawn=self.redrawn,
        )

    # ------------------------------------------------------------------------------------------------------ events
    def on_init_end(self, args, state, control, model: nn.Module | None = None, **kwargs):
        trainer = self._trainer_or_fail()
        self._check_alone(trainer)
        if getattr(trainer, "is_fsdp_enabled", False):
            raise ShardedModelError(
                "PlasticityCallback cannot re-initialize FSDP-sharded parameters: restore before wrapping, i.e. "
                "call `prepare_pretrained(model, config, data=...)` before creating the Trainer, and drop the "
                "callback (or use `PlasticityCallback(restore=False)` without periodic strategy for monitoring)."
            )
        if self.recipe == "auto" and trainer.train_dataset is None:
            raise ValueError(
                "PlasticityCallback(recipe='auto') reads the train dataset to choose the learning rates: give the "
                "Trainer a `train_dataset`, or pass a FineTuneRecipe."
            )
        if model is not None:
            self._model = model
            self.controller.validate(model, has_data=trainer.train_dataset is not None)
            if self.redrawn is not None:  # a name the model lacks, refused before anything changes
                redrawn_parameters(unwrap_model(model), self.redrawn, argument="redrawn")
        warning = process_group_warning(trains_together(args))
        if warning:
            warnings.warn(warning, stacklevel=2)

    def on_train_begin(self, args, state, control, model=None, optimizer=None, train_dataloader=None, **kwargs):
        trainer = self._trainer_or_fail()
        if not self._prepared:  # the optimizer did not come from PlasticityTrainer.create_optimizer
            if self.own_rates and not self._built_groups:
                raise ValueError(
                    "PlasticityCallback(reinit_lr=..., head_lr=..., layer_decay=...) builds the optimizer in "
                    "PlasticityTrainer.create_optimizer, which this run did not call (an optimizer given with "
                    "`optimizers=`, or DeepSpeed): drop those arguments, or let the Trainer create its optimizer."
                )
            self.prepare(trainer, model, dataloader=train_dataloader, optimizer=optimizer)
        self._model = model
        resume = resuming(trainer)
        if resume:
            self._check_weights(state, model)
        ensure_saved_state(state, type(self).__name__, self.state())
        self.controller.attach(model)
        if self.controller.diagnostics_every and not resume:
            self._log_diagnostics(self.controller.diagnostics(), state)
        self._flush()

    def on_step_begin(self, args, state, control, **kwargs):
        self._flush()  # the metrics of the previous step, still at its step number

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        diagnosed = self.controller.last_diagnostics
        metrics = self.controller.step(state.global_step, epoch=state.epoch or 0.0, optimizer=optimizer)
        if metrics:
            self._log(metrics, state)
        if self.controller.last_diagnostics is not diagnosed:
            self._figure_to_tensorboard(state)

    def on_push_begin(self, args, state, control, **kwargs):
        # A push during training (`hub_strategy` other than "end") uploads the output folder after copying only
        # transformers' own files into it from the checkpoint: the plasticity files go there first, so that every
        # push, not only the last, carries them (the run's current record, the one the copied weights were saved with).
        if self.trainer is not None:
            self.trainer._add_plasticity_files(args.output_dir)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if args.load_best_model_at_end and state.best_model_checkpoint and model is not None:
            self.controller.best_loaded(model, state.best_model_checkpoint)  # the record counts what those weights saw
        self._log(self.controller.flush(), state)
        self._flush()
        self.controller.detach()
        self._prepared = False

    # ----------------------------------------------------------------------------------------------------- helpers
    def _refuse_other_rates(self, saved: dict[str, Any]) -> None:
        """Refuses to resume a checkpoint whose run built its optimizer with other rates than this callback asks for:
        the optimizer state the `Trainer` loads from the checkpoint carries the checkpoint's rates, so the new ones
        would be silently ignored."""
        current = self.state()["args"]
        differ = [key for key in RATE_ARGUMENTS if key in saved and saved[key] != current[key]]
        if differ:
            shown = ", ".join(f"{key}={saved[key]!r} there, {current[key]!r} here" for key in differ)
            raise ValueError(
                f"PlasticityCallback resumes a checkpoint whose optimizer was built with other rates ({shown}): the "
                "optimizer state loaded from the checkpoint keeps its learning rates, so these would be ignored. "
                "Resume with the checkpoint's values (or `restore_callback_states_from_checkpoint=True`), or start a "
                "new run."
            )

    def _start_run(self) -> None:
        """Forgets the previous run of this callback (a second `Trainer.train()`, a `model_init` trial): the
        controller's run state, the weights' fingerprint and a recipe ``"auto"`` chose for the previous model."""
        self.controller.start_run()
        self.controller.log_every = self.log_every
        self._saved_fingerprint = None
        if self.recipe == "auto":
            self.resolved_recipe = None

    def _resolve_recipe(self, trainer: Any, model: nn.Module, dataloader: Any, resume: bool) -> None:
        """The recipe the optimizer is built with: the checkpoint's on a resume, else the one given, else (``"auto"``)
        one diagnostic pass on rank 0, shared with every process; recorded on the model."""
        state = trainer.state
        if self.resolved_recipe is None and resume:
            raise ValueError(
                "PlasticityCallback(recipe='auto') resumes from a checkpoint saved without its recipe, and the "
                "trained weights would give another one: pass the first run's recipe (`recipe=FineTuneRecipe(...)`, "
                "e.g. from the first run's config.json, `restore_record(model).recipe`)."
            )
        if self.resolved_recipe is not None and not resume:
            self._announce(f"recipe: {self.resolved_recipe.describe()}; the Trainer's learning_rate is not used")
        if self.resolved_recipe is None:
            data = base_loader(dataloader) if dataloader is not None else None
            self.resolved_recipe = run_on_main(
                lambda: recommend_recipe(model, data, budget=_run_budget(trainer.args, dataloader), record=False)
            )
            recipe = self.resolved_recipe
            self._announce(f"recipe: {recipe.describe()}; the Trainer's learning_rate is not used")
            metrics = {
                f"{PREFIX}/recipe/backbone_lr": recipe.backbone_lr,
                f"{PREFIX}/recipe/head_lr": recipe.head_lr,
                f"{PREFIX}/recipe/last_over_peak": recipe.last_over_peak,
                f"{PREFIX}/recipe/seconds": recipe.seconds,
            }
            self._log(metrics, state)
        record = restore_record(model)
        if record is None or record.recipe != self.resolved_recipe:
            record_recipe(model, self.resolved_recipe)

    def _trainer_or_fail(self) -> Any:
        if self.trainer is None:
            raise TypeError(NOT_IN_A_PLASTICITY_TRAINER)
        return self.trainer

    def _check_alone(self, trainer: Any) -> None:
        """One PlasticityCallback per Trainer, however it was added: two (or one twice) would each restore and
        reset."""
        mine = [c for c in trainer.callback_handler.callbacks if isinstance(c, PlasticityCallback)]
        if len(mine) > 1:
            what = "the same one twice" if all(c is mine[0] for c in mine) else f"{len(mine)}"
            raise ValueError(
                f"Give the Trainer one PlasticityCallback (it has {what}, so each would restore and reset the model); "
                "combine a one-shot restore with prepare_pretrained and one callback for the periodic strategy."
            )

    def _is_main(self) -> bool:
        return self.trainer is None or self.trainer.is_world_process_zero()

    def _announce(self, line: str) -> None:
        """One line to the logger (INFO) and, unless ``announce`` is False, on the console (main process), visible
        whatever the logging set-up and around progress bars."""
        logger.info(line)
        if self.announce and self._is_main():
            from tqdm.auto import tqdm

            tqdm.write(f"hf-plasticity: {line}", file=sys.stdout)

    def _log_diagnostics(self, metrics: dict[str, float], state) -> None:
        self._log(metrics, state)
        self._figure_to_tensorboard(state)

    def _figure_to_tensorboard(self, state) -> None:
        """The plasticity picture of the latest diagnostics (dashed: the run's first), re-drawn blocks shaded, as a
        figure in TensorBoard when the Trainer reports to it and matplotlib is installed."""
        controller = self.controller
        if not self._is_main() or controller.last_diagnostics is None or self.trainer is None:
            return
        writers = tensorboard_writers(self.trainer)
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
        self._announce(f"no one-shot restore: {reason}")
        self._log({f"{PREFIX}/restore/skipped": 1.0}, state)

    def _check_weights(self, state, model: nn.Module) -> None:
        """On a resume: the model must hold the weights the checkpoint was saved with."""
        if not (self.check_resume and self._saved_fingerprint and not sharded_parameters(model)):
            return
        differ = fingerprint_differences(parameter_fingerprint(unwrap_model(model)), self._saved_fingerprint)
        if differ:
            rule = get_layout(model).rule
            hint = f" {rule.resume_hint}" if rule is not None and rule.resume_hint else ""
            shown = ", ".join(differ[:3]) + (f" and {len(differ) - 3} more" if len(differ) > 3 else "")
            raise ResumeMismatchError(
                f"Resuming at step {state.global_step}, the model's weights differ from the weights saved with the "
                f"checkpoint ({shown}), so training would go on from the wrong weights.{hint} Pass "
                "`check_resume=False` to PlasticityCallback to skip this check."
            )

    def _log(self, metrics: dict[str, float], state) -> None:
        """Queues ``metrics`` for `Trainer.log` at the next event where logging leaves the Trainer's own logging as it
        was (see `trainer_adapter.SAFE_LOG_EVENTS`): the step they belong to is still the current one then."""
        if not metrics or not self._is_main():
            return
        self.history.append({**metrics, "step": state.global_step})
        self._pending.append(dict(metrics))

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        for metrics in pending:
            self.trainer.log(metrics)


def _run_budget(args: Any, dataloader: Any) -> str:
    """The fitted budget nearest to the run's length: ``num_train_epochs``, or ``max_steps`` in epochs of the train
    dataloader when it is set (the Trainer then ignores ``num_train_epochs``).

    Raises:
        ValueError: with ``max_steps`` set and training data of unknown length (an iterable dataset), whose epochs
            cannot be counted.
    """
    if args.max_steps <= 0 or dataloader is None:  # no data: `recommend_recipe` says what it needs
        return budget_for_epochs(float(args.num_train_epochs))
    try:
        batches = len(dataloader)
    except TypeError:  # a DataLoader over an iterable dataset has `__len__`, which raises
        batches = 0
    if not batches:
        raise ValueError(
            f"PlasticityCallback(recipe='auto') picks the recipe fitted for the run's length in epochs, and this run "
            f"trains max_steps={args.max_steps} steps on data of unknown length (an iterable dataset), so its epochs "
            "cannot be counted: pass the recipe for your budget, `recipe=recommend_recipe(model, data, "
            "budget='short')` (about 3 epochs) or `budget='long'` (about 9)."
        )
    return budget_for_epochs(args.max_steps * args.gradient_accumulation_steps / batches)
