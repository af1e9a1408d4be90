"""Each `train()` of a `PlasticityTrainer` is a run of its own, and a run whose optimizer cannot be built changes
nothing: a second `train()` and every `model_init` trial restore their own model and start the periodic schedule over;
groups that cannot be built (``reinit_lr`` over a partial re-draw, a ``redrawn`` name the model lacks) undo the restore
or are refused before it."""

from __future__ import annotations

import pytest
import torch

from hf_plasticity import (
    LayerReinitConfig,
    PartialRedrawError,
    PlasticityCallback,
    PlasticityTrainer,
    RifleConfig,
    SelectiveReinitConfig,
    restore_record,
)

from .models import pretrained
from .test_callback import logged, params, training_args
from .test_training import learnable_dataset


def test_every_model_init_trial_restores_its_own_model(tmp_path):
    """`model_init` gives each `train()` a fresh model (a hyperparameter search's trials): each is restored."""
    (tmp_path / "base").mkdir()
    trainer = PlasticityTrainer(
        model_init=lambda: pretrained("convnext", tmp_path / "base", torch.float32),
        args=training_args(tmp_path, max_steps=1),
        train_dataset=learnable_dataset(32),
        callbacks=[PlasticityCallback(LayerReinitConfig())],
    )
    restored = []
    for _ in range(2):
        trainer.train()
        record = restore_record(trainer.model)
        restored.append((trainer.model, None if record is None else record.total_reinitialized))
    (first, first_count), (second, second_count) = restored
    assert second is not first
    assert first_count and second_count == first_count  # the same restore of the same base, not "nothing to do"
    assert trainer.plasticity_callback.controller.restore_summary.total_reinitialized == second_count


def test_a_second_train_starts_the_periodic_schedule_over(make_model, tmp_path):
    """RIFLE re-draws the head at epoch 1 of each run, not once per callback."""
    model = make_model("resnet")
    callback = PlasticityCallback(RifleConfig(epochs=[1.0]))
    trainer = PlasticityTrainer(model=model, args=training_args(tmp_path, max_steps=-1, num_train_epochs=2),
                                train_dataset=learnable_dataset(32), callbacks=[callback])  # fmt: skip
    resets = []
    for _ in range(2):
        trainer.train()  # a fresh TrainerState each time: its log holds this run's resets only
        resets.append((logged(trainer, "plasticity/rifle/resets"), callback.controller.total_resets))
    assert resets == [([(2, 1.0)], 1), ([(2, 1.0)], 1)]  # epoch 1 ends at step 2 (2 batches per epoch)
    # the model went through both: its record counts both resets (RIFLE acts during training only: no restore)
    record = restore_record(model)
    assert record.strategy == "none" and [(e.strategy, e.resets) for e in record.periodic] == [("rifle", 2)]
    assert record.periodic[0].total_reinitialized == 2 * sum(p.numel() for p in model.classifier.parameters())


def test_groups_that_cannot_be_built_undo_the_restore(make_model, tmp_path):
    """A selective re-draw changes part of each tensor, so `reinit_lr` cannot be given to it: the error comes from
    inside the restore, which is undone (weights, record)."""
    model = make_model("resnet")
    before = params(model)
    callback = PlasticityCallback(SelectiveReinitConfig(fraction=0.05), reinit_lr=1e-2)
    trainer = PlasticityTrainer(model=model, args=training_args(tmp_path, max_steps=1),
                                train_dataset=learnable_dataset(32), callbacks=[callback])  # fmt: skip
    with pytest.raises(PartialRedrawError, match="one learning rate per tensor"):
        trainer.train()
    assert all(torch.equal(p, before[n]) for n, p in params(model).items())
    assert restore_record(model) is None and trainer.optimizer is None


def test_a_redrawn_name_the_model_lacks_is_refused_when_the_trainer_is_built(make_model, tmp_path):
    model = make_model("convnext")
    before = params(model)
    with pytest.raises(ValueError, match=r"convnext\.encoder\.stage\.1"):
        PlasticityTrainer(model=model, args=training_args(tmp_path, max_steps=1), train_dataset=learnable_dataset(32),
                          callbacks=[PlasticityCallback(redrawn={"whole": ["convnext.encoder.stage.1"]})])  # fmt: skip
    assert all(torch.equal(p, before[n]) for n, p in params(model).items()) and restore_record(model) is None


def test_an_optimizer_that_cannot_be_built_undoes_the_restore(make_model, tmp_path):
    """The optimizer is built inside the restore's transaction too: its own error leaves the model as it was."""
    model = make_model("convnext")
    before = params(model)
    trainer = PlasticityTrainer(
        model=model,
        args=training_args(tmp_path, max_steps=1),
        train_dataset=learnable_dataset(32),
        callbacks=[PlasticityCallback(LayerReinitConfig(), reinit_lr=1e-2)],
        optimizer_cls_and_kwargs=(torch.optim.AdamW, {"betas": (0.9, 1.5)}),
    )
    with pytest.raises(ValueError, match="beta"):
        trainer.train()
    assert all(torch.equal(p, before[n]) for n, p in params(model).items())
    assert restore_record(model) is None and trainer.optimizer is None
    trainer.optimizer_cls_and_kwargs = (torch.optim.AdamW, {})
    trainer.train()  # the same trainer, now with an optimizer it can build: restored and trained
    assert restore_record(model).strategy == "reinit_layers"
    assert {g["name"] for g in trainer.optimizer.param_groups} >= {"redrawn", "head"}


def test_a_resume_with_other_rates_than_the_checkpoint_s_is_refused(make_model, tmp_path):
    """The optimizer state a resume loads keeps the checkpoint's learning rates: a new head_lr would be ignored."""
    settings = dict(max_steps=2, save_strategy="steps", save_steps=1)

    def run(head_lr: float, resume: str | None = None) -> PlasticityTrainer:
        trainer = PlasticityTrainer(model=make_model("resnet"), args=training_args(tmp_path, **settings),
                                    train_dataset=learnable_dataset(32),
                                    callbacks=[PlasticityCallback(head_lr=head_lr)])  # fmt: skip
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    run(head_lr=1e-2)
    checkpoint = str(tmp_path / "out" / "checkpoint-1")
    with pytest.raises(ValueError, match=r"other rates \(head_lr=0\.01 there, 0\.05 here\)"):
        run(head_lr=5e-2, resume=checkpoint)
    resumed = run(head_lr=1e-2, resume=checkpoint)  # the same rates: resumed
    assert resumed.state.global_step == 2
