"""The one Trainer route, `PlasticityTrainer` + `PlasticityCallback`, built as transformers' official
`run_image_classification.py` builds its `Trainer`: the recommended recipe (restore, re-drawn blocks and head at their
own learning rates, layer decay) with every guarantee, on ViT and ConvNeXt, fresh and resumed; a plain `Trainer`, two
callbacks, the same callback twice and non-flag flags refused; an already restored checkpoint continued or restored
again on request."""

from __future__ import annotations

import pytest
import torch
from huggingface_hub import ModelCard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import Trainer

from hf_plasticity import (
    AlreadyRestoredError,
    PlasticityCallback,
    PlasticityConfig,
    PlasticityController,
    PlasticityTrainer,
    ResumeMismatchError,
    prepare_pretrained,
)
from hf_plasticity.integrations.modelcard import SECTION_END, SECTION_START

from .official_example import official_args, official_trainer
from .test_callback import StopAt, params
from .test_training import learnable_dataset

RECIPE = dict(reinit_lr=1e-3, head_lr=2e-3, layer_decay=0.9)


def console(capsys) -> list[str]:
    return [line for line in capsys.readouterr().out.splitlines() if line.startswith("hf-plasticity:")]


def rates(trainer: Trainer) -> dict[str, float]:
    return {group["name"]: group["initial_lr"] for group in trainer.optimizer.param_groups}


@pytest.mark.parametrize("arch", ["vit", "convnext"])
def test_the_recipe_on_the_official_example_gives_every_guarantee(make_model, tmp_path, capsys, arch):
    model = make_model(arch)
    trainer = official_trainer(model, official_args(tmp_path / "out"), [PlasticityCallback(**RECIPE)])
    trainer.train()
    # one console line saying what was re-drawn
    [line] = console(capsys)
    record = model.config.plasticity
    assert f"re-initialized {record['total_reinitialized']:,} of" in line
    # the metrics through Trainer.log, and the Trainer's own logging intact
    history = trainer.state.log_history
    assert [log["step"] for log in history if "plasticity/restore/reinitialized" in log] == [0]
    assert [log["step"] for log in history if "loss" in log] == [2, 4]
    # the groups: re-drawn blocks and head at their own rates, the backbone decayed towards the input
    groups = rates(trainer)
    assert groups["redrawn"] == 1e-3 and groups["head"] == 2e-3
    backbone = [lr for name, lr in groups.items() if name.startswith("backbone")]
    assert max(backbone) <= 1e-4 and min(backbone) < max(backbone)
    redrawn = {id(p) for g in trainer.optimizer.param_groups if g["name"].startswith("redrawn") for p in g["params"]}
    last = record["redrawn"]["whole"][0]
    assert all(id(p) in redrawn for n, p in model.named_parameters() if n.startswith(last + "."))
    # the output folder: plasticity_config.json, the Trainer's card with the section and every group's rate
    trainer.save_model()
    trainer.evaluate()
    trainer.create_model_card()
    out = tmp_path / "out"
    assert PlasticityConfig.from_pretrained(out).strategy == "reinit_layers"
    card = ModelCard.load(out / "README.md")
    assert "generated_from_trainer" in card.data.tags and "reinit_layers" in card.data.tags
    section = card.text[card.text.index(SECTION_START) : card.text.index(SECTION_END)]
    for name, lr in groups.items():
        assert f"| `{name}` | {lr:.3g} |" in section


def test_the_recipe_warns_when_launched_processes_would_not_train_together(make_model, tmp_path, monkeypatch):
    args = official_args(tmp_path / "out")
    assert args.world_size == 1  # (the devices are set up now, as in the process `torchrun` started)
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun on CPU without use_cpu: the Trainer is not distributed
    with pytest.warns(UserWarning, match="does not train them together.*each of the 2 processes trains its own"):
        official_trainer(make_model("convnext"), args, [PlasticityCallback(**RECIPE)])


@pytest.mark.parametrize("arch", ["vit", "convnext"])
def test_a_resume_on_the_recipe_continues_or_stops_at_wrong_weights(make_model, tmp_path, arch):
    """ConvNeXt resumes into the same groups and ends bitwise where an uninterrupted run ends; transformers 5.24
    resumes a ViT without its encoder layers (huggingface/transformers#48805), which must stop the run."""
    settings = dict(max_steps=4, save_strategy="steps", save_steps=2)
    straight = make_model(arch)
    official_trainer(
        straight, official_args(tmp_path / "straight", **settings), [PlasticityCallback(**RECIPE)]
    ).train()
    first = official_trainer(make_model(arch), official_args(tmp_path / "out", **settings),
                             [PlasticityCallback(**RECIPE), StopAt(2)])  # fmt: skip
    first.train()
    resumed = make_model(arch)
    trainer = official_trainer(resumed, official_args(tmp_path / "out", **settings), [PlasticityCallback(**RECIPE)])
    checkpoint = str(tmp_path / "out" / "checkpoint-2")
    if arch == "vit":
        with pytest.raises(ResumeMismatchError, match="48805"):
            trainer.train(resume_from_checkpoint=checkpoint)
        return
    trainer.train(resume_from_checkpoint=checkpoint)
    assert rates(trainer) == rates(first)
    expected = params(straight)
    assert all(torch.equal(p, expected[n]) for n, p in params(resumed).items())


def test_an_already_restored_checkpoint_continues_or_is_restored_again(make_model, tmp_path, capsys):
    model = make_model("convnext")
    prepare_pretrained(model)  # e.g. a restored checkpoint from the Hub
    before = params(model)
    trainer = official_trainer(model, official_args(tmp_path / "a", max_steps=1, learning_rate=0.0),
                               [PlasticityCallback(**RECIPE)])  # fmt: skip
    trainer.train()
    [line] = console(capsys)
    assert "already restored (reinit_layers" in line and "pass restore='force' to restore it again" in line
    assert rates(trainer)["redrawn"] == 1e-3  # its re-drawn blocks still train at their own rate
    assert all(torch.equal(p, before[n]) for n, p in params(model).items())
    strict = official_trainer(model, official_args(tmp_path / "b"), [PlasticityCallback(restore=True, **RECIPE)])
    with pytest.raises(AlreadyRestoredError, match=r"pass `restore=None` to continue .* `restore='force'`"):
        strict.train()
    assert all(torch.equal(p, before[n]) for n, p in params(model).items())  # refused before anything changed
    again = official_trainer(model, official_args(tmp_path / "c", max_steps=1),
                             [PlasticityCallback(restore="force", **RECIPE)])  # fmt: skip
    again.train()
    assert [log["step"] for log in again.state.log_history if "plasticity/restore/reinitialized" in log] == [0]


def test_own_rates_and_an_optimizer_of_ones_own_are_refused_together(make_model, tmp_path):
    model = make_model("convnext")
    with pytest.raises(ValueError, match="drop `optimizers=`"):
        PlasticityTrainer(model=model, args=official_args(tmp_path), train_dataset=learnable_dataset(16),
                          optimizers=(torch.optim.SGD(model.parameters(), lr=0.1), None),
                          callbacks=[PlasticityCallback(reinit_lr=1e-3)])  # fmt: skip


# ------------------------------------------------------------------------------------------------- refused
def test_a_plain_trainer_is_refused_with_what_to_do(make_model, tmp_path):
    args = official_args(tmp_path, max_steps=1)
    with pytest.raises(TypeError, match=r"write `PlasticityTrainer\(...\)` where you wrote `Trainer\(...\)`"):
        Trainer(model=make_model("convnext"), args=args, train_dataset=learnable_dataset(16),
                callbacks=[PlasticityCallback()])  # fmt: skip
    trainer = Trainer(model=make_model("convnext"), args=args, train_dataset=learnable_dataset(16))
    trainer.add_callback(PlasticityCallback())
    before = params(trainer.model)
    with pytest.raises(TypeError, match="PlasticityTrainerMixin"):
        trainer.train()
    assert all(torch.equal(p, before[n]) for n, p in params(trainer.model).items())


def test_the_same_callback_twice_is_refused(make_model, tmp_path):
    """Two different instances were refused; the same instance twice ran every periodic reset twice."""
    callback = PlasticityCallback()
    with pytest.raises(ValueError, match="one PlasticityCallback .*the same one twice"):
        PlasticityTrainer(model=make_model("convnext"), args=official_args(tmp_path),
                          train_dataset=learnable_dataset(16), callbacks=[callback, callback])  # fmt: skip
    trainer = PlasticityTrainer(model=make_model("convnext"), args=official_args(tmp_path),
                                train_dataset=learnable_dataset(16), callbacks=[callback])  # fmt: skip
    trainer.add_callback(callback)
    with pytest.raises(ValueError, match="the same one twice"):
        trainer.train()


NOT_FLAGS = st.one_of(
    st.integers(), st.floats(), st.text().filter(lambda s: s != "force"), st.lists(st.booleans(), max_size=2)
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=NOT_FLAGS)
def test_restore_check_resume_and_announce_take_flags_only(value):
    """`x not in (None, True, False)` let 0 and 1 (and 0.0, 1.0) through as flags."""
    for build in (PlasticityController, PlasticityCallback):
        with pytest.raises(ValueError, match="`restore` must be None, True, False or 'force'"):
            build(restore=value)
    for flag in ("check_resume", "announce"):
        with pytest.raises(ValueError, match=f"`{flag}` must be True or False"):
            PlasticityCallback(**{flag: value})


def test_a_second_train_call_keeps_the_groups_and_does_not_restore_again(make_model, tmp_path):
    model = make_model("convnext")
    trainer = official_trainer(model, official_args(tmp_path, max_steps=1), [PlasticityCallback(**RECIPE)])
    trainer.train()
    groups = rates(trainer)
    trainer.train()  # the Trainer keeps its optimizer: the same groups, and the one-shot restore is not repeated
    assert rates(trainer) == groups
    assert [log for log in trainer.state.log_history if "plasticity/restore/reinitialized" in log] == []
