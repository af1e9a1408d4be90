"""Everything hf-plasticity relies on in `transformers.Trainer` that transformers does not document as API.

The integration otherwise uses documented hooks only: the callback events and their arguments, the public
`Trainer.log`, `Trainer.get_train_dataloader`, `Trainer.callback_handler`, and the methods the `Trainer` documents as
overridable (`create_optimizer`, `save_model`, `create_model_card`). What is left is here, in one place, each item
pinned by ``tests/test_trainer_adapter.py`` (which fails when the installed transformers behaves otherwise) and by the
transformers range in ``pyproject.toml``:

- the order of a `Trainer.train` call that resumes: the checkpoint's `TrainerState` (with its step) and weights are
  loaded before `create_optimizer`, the optimizer's state into the groups it created after it, and
  ``on_train_begin`` comes last ([`resuming`]);
- a `Trainer.log` from ``on_train_begin``, ``on_step_begin`` or ``on_train_end`` leaves the Trainer's own logging as
  it was (``CallbackHandler.on_step_begin`` resets ``should_log`` before the callbacks run; ``on_log`` resets it
  again, so a log from ``on_step_end`` would drop the Trainer's loss at that step) ([`SAFE_LOG_EVENTS`]);
- checkpoints are written through `Trainer.save_model` (so an override of it sees every checkpoint folder);
- an `ExportableState` callback's saved state lives in ``state.stateful_callbacks[class name]`` (a list when the
  class had several instances), and resuming a checkpoint saved without such a callback fails at the next checkpoint
  save with ``KeyError`` unless the state gets an entry for it ([`saved_state`], [`ensure_saved_state`]);
- the Trainer's data loader is Accelerate's wrapper, whose ``base_dataloader`` is the plain torch loader that one
  process may read alone (the wrapper synchronizes RNG states across processes when iterated) ([`base_loader`]);
- `TensorBoardCallback` keeps its writer as ``tb_writer`` ([`tensorboard_writers`]);
- processes launched together (``torchrun``, ``accelerate launch``) train together only when
  ``TrainingArguments.parallel_mode`` is a distributed one: on CPU without ``use_cpu=True`` it is not, while
  ``world_size`` still reads the launcher's ([`trains_together`]).
"""

from __future__ import annotations

from typing import Any

#: Events from which a callback may call `Trainer.log` without changing the Trainer's own logging.
SAFE_LOG_EVENTS = ("on_train_begin", "on_step_begin", "on_train_end")


def resuming(trainer: Any) -> bool:
    """Whether the `Trainer.train` call in progress resumes a checkpoint; valid from `create_optimizer` on (the
    checkpoint's state, with its step, is loaded before the optimizer is created)."""
    return trainer.state.global_step > 0


def saved_state(state: Any, name: str) -> dict[str, Any] | None:
    """The state an `ExportableState` callback of class ``name`` saved in the checkpoint being resumed, or None."""
    saved = (state.stateful_callbacks or {}).get(name)
    if isinstance(saved, list):  # transformers keeps a list when a class has several instances
        saved = saved[-1] if saved else None
    return saved or None


def ensure_saved_state(state: Any, name: str, exported: dict[str, Any]) -> None:
    """Gives a resumed state an entry for callback ``name`` when its checkpoint was saved without one (transformers
    5.x fails at the next checkpoint save with ``KeyError: name`` otherwise)."""
    state.stateful_callbacks = state.stateful_callbacks or {}
    state.stateful_callbacks.setdefault(name, exported)


def base_loader(dataloader: Any) -> Any:
    """The plain torch data loader under the Trainer's (Accelerate's) wrapper, for reading on one process only."""
    return getattr(dataloader, "base_dataloader", dataloader)


def tensorboard_writers(trainer: Any) -> list[Any]:
    """The TensorBoard writers of the Trainer's reporting callbacks (empty when it does not report to TensorBoard)."""
    from transformers.integrations import TensorBoardCallback

    return [
        c.tb_writer
        for c in trainer.callback_handler.callbacks
        if isinstance(c, TensorBoardCallback) and getattr(c, "tb_writer", None) is not None
    ]


def trains_together(args: Any) -> bool:
    """Whether a `Trainer` built from the `TrainingArguments` ``args`` trains its processes together (DDP or another
    distributed mode). On CPU without ``use_cpu=True`` it does not, even under ``torchrun`` or ``accelerate launch``,
    where ``args.world_size`` still reads the launcher's: each process then trains a copy of its own."""
    from transformers.training_args import ParallelMode

    return args.parallel_mode not in (ParallelMode.NOT_PARALLEL, ParallelMode.NOT_DISTRIBUTED)
