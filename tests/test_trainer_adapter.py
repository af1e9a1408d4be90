"""Pins what `hf_plasticity.integrations.trainer_adapter` relies on in the installed transformers and is not
documented: each test fails when transformers behaves otherwise, so a new release that changes it is caught here
(then adapt the adapter and the transformers range in pyproject.toml), not by a silently wrong training run."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import ExportableState

from hf_plasticity.integrations.trainer_adapter import (
    SAFE_LOG_EVENTS,
    base_loader,
    ensure_saved_state,
    resuming,
    saved_state,
    tensorboard_writers,
)

from .test_callback import StopAt, training_args
from .test_training import learnable_dataset


def first_weight(model) -> torch.Tensor:
    return next(model.parameters()).detach().clone()


class Order(Trainer):
    """Records what `create_optimizer` and ``on_train_begin`` see of a resume."""

    def create_optimizer(self, model=None):
        self.seen = {"create_optimizer": (resuming(self), first_weight(self.model))}
        optimizer = super().create_optimizer(model)
        self.seen["optimizer state at creation"] = len(optimizer.state)
        return optimizer


class SeeTrainBegin(TrainerCallback):
    def __init__(self, trainer_box: list) -> None:
        self.box = trainer_box

    def on_train_begin(self, args, state, control, model=None, optimizer=None, train_dataloader=None, **kwargs):
        trainer = self.box[0]
        trainer.seen["optimizer state at train begin"] = len(optimizer.state)
        trainer.seen["on_train_begin"] = (resuming(trainer), first_weight(model))
        trainer.seen["loader"] = base_loader(train_dataloader)


def test_a_resume_loads_state_and_weights_before_create_optimizer_and_the_optimizer_state_after(make_model, tmp_path):
    settings = dict(max_steps=4, save_strategy="steps", save_steps=2)
    Trainer(model=make_model("convnext"), args=training_args(tmp_path, **settings),
            train_dataset=learnable_dataset(64), callbacks=[StopAt(2)]).train()  # fmt: skip
    model = make_model("convnext")
    fresh = first_weight(model)
    box: list = []
    trainer = Order(model=model, args=training_args(tmp_path, **settings), train_dataset=learnable_dataset(64),
                    callbacks=[SeeTrainBegin(box)])  # fmt: skip
    box.append(trainer)
    trainer.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-2"))
    resumed_at_create, weight_at_create = trainer.seen["create_optimizer"]
    resumed_at_begin, weight_at_begin = trainer.seen["on_train_begin"]
    assert resumed_at_create and resumed_at_begin  # the checkpoint's step is known when the optimizer is created
    assert not torch.equal(weight_at_create, fresh) and torch.equal(weight_at_create, weight_at_begin)  # weights too
    assert trainer.seen["optimizer state at creation"] == 0  # the optimizer's state is loaded into its groups later
    assert trainer.seen["optimizer state at train begin"] > 0
    assert isinstance(trainer.seen["loader"], DataLoader)  # Accelerate's wrapper keeps the torch loader underneath


class LogFrom(TrainerCallback):
    def __init__(self, event: str, box: list) -> None:
        self.box = box
        setattr(self, event, self._log)

    def _log(self, args, state, control, **kwargs):
        self.box[0].log({"extra": 1.0})


@pytest.mark.parametrize("event, kept", [*[(e, True) for e in SAFE_LOG_EVENTS], ("on_step_end", False)])
def test_a_log_from_the_safe_events_keeps_the_trainers_own_logging(make_model, tmp_path, event, kept):
    box: list = []
    trainer = Trainer(model=make_model("convnext"), args=training_args(tmp_path, max_steps=4, logging_steps=1),
                      train_dataset=learnable_dataset(64), callbacks=[LogFrom(event, box)])  # fmt: skip
    box.append(trainer)
    trainer.train()
    losses = [log["step"] for log in trainer.state.log_history if "loss" in log]
    assert (losses == [1, 2, 3, 4]) is kept  # from on_step_end, `on_log` clears `should_log` set for this step


class SavesSeen(Trainer):
    def save_model(self, output_dir=None, _internal_call=False):
        self.saved = [*getattr(self, "saved", []), output_dir]
        super().save_model(output_dir, _internal_call=_internal_call)


def test_checkpoints_are_written_through_save_model(make_model, tmp_path):
    trainer = SavesSeen(model=make_model("convnext"), train_dataset=learnable_dataset(64),
                        args=training_args(tmp_path, max_steps=2, save_strategy="steps", save_steps=2))  # fmt: skip
    trainer.train()
    assert trainer.saved == [str(tmp_path / "out" / "checkpoint-2")]


class Stateful(TrainerCallback, ExportableState):
    def __init__(self, value: int = 0) -> None:
        self.value = value

    def state(self) -> dict:
        return {"args": {"value": self.value}, "attributes": {}}


class FillIn(Stateful):
    def on_train_begin(self, args, state, control, **kwargs):
        ensure_saved_state(state, type(self).__name__, self.state())
        assert saved_state(state, type(self).__name__) == self.state()


def test_resuming_a_checkpoint_without_a_stateful_callbacks_entry_needs_one(make_model, tmp_path):
    settings = dict(max_steps=4, save_strategy="steps", save_steps=2)
    Trainer(model=make_model("convnext"), args=training_args(tmp_path, **settings),
            train_dataset=learnable_dataset(64), callbacks=[StopAt(2)]).train()  # fmt: skip
    checkpoint = str(tmp_path / "out" / "checkpoint-2")
    for callback, fails in ((Stateful(), True), (FillIn(), False)):
        trainer = Trainer(model=make_model("convnext"), args=training_args(tmp_path, **settings),
                          train_dataset=learnable_dataset(64), callbacks=[callback])  # fmt: skip
        if fails:
            with pytest.raises(KeyError, match="Stateful"):
                trainer.train(resume_from_checkpoint=checkpoint)
        else:
            trainer.train(resume_from_checkpoint=checkpoint)
            assert trainer.state.global_step == 4


def test_the_tensorboard_writer_is_found(make_model, tmp_path):
    box: list = []

    class Writers(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            box.append(len(tensorboard_writers(trainer)))

    args = training_args(tmp_path, max_steps=1, report_to=["tensorboard"])
    trainer = Trainer(
        model=make_model("convnext"), args=args, train_dataset=learnable_dataset(16), callbacks=[Writers()]
    )
    trainer.train()
    assert box == [1]
