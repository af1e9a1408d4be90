"""PlasticityCallback inside real (tiny) Trainer runs: the one-shot restore, periodic resets, metrics in TensorBoard,
a real resume from checkpoint, and the errors raised at construction / at the start of training."""

from __future__ import annotations

import glob
import json
import logging

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments

from hf_plasticity import (
    AlreadyRestoredError,
    ContinualBackpropConfig,
    LayerReinitConfig,
    PlasticityCallback,
    PlasticityConfig,
    PlasticityController,
    PlasticityTrainer,
    ResumeMismatchError,
    ScopeError,
    SelectiveReinitConfig,
    available_strategies,
    prepare_pretrained,
    restore_record,
)
from hf_plasticity.core.optim import unwrap_optimizer

from . import periodic_strategy
from .models import batches
from .periodic_strategy import EveryNConfig
from .test_training import learnable_dataset


@pytest.fixture(autouse=True, scope="module")
def every_n_strategy():
    periodic_strategy.register()
    yield
    periodic_strategy.unregister()


def training_args(tmp_path, **overrides) -> TrainingArguments:
    settings = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=16,
        max_steps=4,
        learning_rate=1e-3,
        logging_steps=2,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    settings.update(overrides)
    return TrainingArguments(**settings)


class StopAt(TrainerCallback):
    """Ends training after step ``step`` (after its checkpoint): a crash that keeps the learning-rate schedule."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        control.should_training_stop = state.global_step >= self.step


def run(model, tmp_path, callback, train=None, resume=None, stop_at=None, **overrides) -> Trainer:
    trainer = PlasticityTrainer(
        model=model,
        args=training_args(tmp_path, **overrides),
        train_dataset=train or learnable_dataset(64),
        callbacks=[callback] + ([StopAt(stop_at)] if stop_at else []),
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def logged(trainer: Trainer, key: str) -> list[tuple[int, float]]:
    return [(log["step"], log[key]) for log in trainer.state.log_history if key in log]


def params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


# ------------------------------------------------------------------------------------------------ one-shot restore
def test_restore_before_first_step_equals_prepare_pretrained(make_model, tmp_path):
    model, reference = make_model("convnext"), make_model("convnext")
    prepare_pretrained(reference)  # the default: LayerReinitConfig() (1 of these 3 blocks)
    callback = PlasticityCallback()
    trainer = run(model, tmp_path, callback, max_steps=1, learning_rate=0.0)  # lr 0: only the restore changes weights
    after, expected = params(model), params(reference)
    assert all(torch.equal(after[name], expected[name]) for name in expected)
    assert model.config.plasticity["strategy"] == "reinit_layers"
    assert logged(trainer, "plasticity/restore/reinitialized") == [
        (0, reference.config.plasticity["total_reinitialized"])
    ]


def test_data_dependent_restore_reads_the_train_dataloader(make_model, tmp_path):
    model = make_model("resnet")
    callback = PlasticityCallback(SelectiveReinitConfig(utility="grad_x_weight", fraction=0.05, calibration_batches=2))
    trainer = run(model, tmp_path, callback, max_steps=1)
    read = callback.controller.data.read  # batches of the Trainer's loader, read once and replayed
    assert len(read) == 2
    assert read[0]["pixel_values"].shape[0] == 16
    [(step, count)] = logged(trainer, "plasticity/restore/reinitialized")
    assert step == 0 and count > 0


def test_already_restored_model_is_not_restored_twice(make_model, tmp_path):
    model = make_model("convnext")
    prepare_pretrained(model, LayerReinitConfig(num_blocks=2))
    before = params(model)
    trainer = run(model, tmp_path, PlasticityCallback(), max_steps=1, learning_rate=0.0)
    assert not logged(trainer, "plasticity/restore/reinitialized")
    assert all(torch.equal(p, before[n]) for n, p in params(model).items())
    with pytest.raises(AlreadyRestoredError, match="already restored"):
        run(model, tmp_path, PlasticityCallback(restore=True), max_steps=1)


# ------------------------------------------------------------------------------------------------ console lines
CALLBACK_LOGGER = "hf_plasticity.integrations.callback"


class PrintsAtTrainBegin(TrainerCallback):
    """A user's callback that prints a line of its own during training."""

    LINE = "user's line: training begins"

    def on_train_begin(self, args, state, control, **kwargs):
        print(self.LINE)


@pytest.mark.parametrize("announce", [True, False])
def test_announce_false_silences_the_callbacks_console_line_and_nothing_else(make_model, tmp_path, capsys, caplog,
                                                                             announce):  # fmt: skip
    """The restore's one console line goes to stdout only with ``announce=True``; the logger gets it either way, and
    what another callback prints during training still shows."""
    trainer = PlasticityTrainer(
        model=make_model("convnext"),
        args=training_args(tmp_path, max_steps=1),
        train_dataset=learnable_dataset(32),
        callbacks=[PlasticityCallback(announce=announce), PrintsAtTrainBegin()],
    )
    with caplog.at_level(logging.INFO, logger=CALLBACK_LOGGER):
        trainer.train()
    out = capsys.readouterr().out
    assert PrintsAtTrainBegin.LINE in out
    logged_lines = [record.getMessage() for record in caplog.records if record.name == CALLBACK_LOGGER]
    assert logged_lines and "re-" in logged_lines[0]  # what the restore re-drew, logged with or without the console
    if announce:
        assert all(f"hf-plasticity: {line}" in out for line in logged_lines)
    else:
        assert "hf-plasticity:" not in out


def test_announce_survives_a_resume_that_rebuilds_the_callback_from_the_checkpoint(make_model, tmp_path, capsys):
    """With ``restore_callback_states_from_checkpoint`` transformers builds the callback again from its saved
    arguments: ``announce=False`` is among them, so the resumed run prints no "resuming at step" line either."""
    settings = dict(max_steps=4, save_strategy="steps", save_steps=2, restore_callback_states_from_checkpoint=True)
    run(make_model("convnext"), tmp_path, PlasticityCallback(announce=False), stop_at=2, **settings)
    saved = json.loads((tmp_path / "out" / "checkpoint-2" / "trainer_state.json").read_text())
    assert saved["stateful_callbacks"]["PlasticityCallback"]["args"]["announce"] is False
    capsys.readouterr()
    trainer = run(make_model("convnext"), tmp_path, PlasticityCallback(),  # announce left at its default here
                  resume=str(tmp_path / "out" / "checkpoint-2"), **settings)  # fmt: skip
    live = next(c for c in trainer.callback_handler.callbacks if isinstance(c, PlasticityCallback))
    assert live.announce is False
    assert "hf-plasticity:" not in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ periodic resets
def test_periodic_resets_write_the_plan_and_zero_the_optimizer_state(make_model, tmp_path):
    model = make_model("convnext")
    callback = PlasticityCallback(EveryNConfig(every_n_steps=2), log_every=4)
    trainer = run(model, tmp_path, callback, max_steps=4)
    strategy = callback.controller.strategy
    assert strategy.steps == [2, 4]
    # The reset at step 4 is the last write: its entries hold the planned values and zero Adam moments.
    optimizer = unwrap_optimizer(trainer.optimizer)
    for reset in strategy.plan_step(model, step=4).resets:
        assert torch.equal(reset.tensor.detach().view(-1)[reset.index], reset.values)
        state = optimizer.state[reset.tensor]
        assert not state["exp_avg"].view(-1)[reset.index].any()
        assert not state["exp_avg_sq"].view(-1)[reset.index].any()
        assert state["exp_avg"].view(-1).count_nonzero() > reset.index.numel()  # the rest is untouched
    [(step, resets)] = logged(trainer, "plasticity/test_every_n/resets")
    assert (step, resets) == (4, 2.0)


def test_a_periodic_only_run_leaves_a_record_that_says_what_was_done(make_model, tmp_path):
    """Old code: with ``restore=False`` the periodic resets left no record, so the checkpoints' config.json and card
    said nothing of them."""
    model = make_model("convnext")
    config = EveryNConfig(every_n_steps=2)
    callback = PlasticityCallback(config, restore=False)
    run(model, tmp_path, callback, max_steps=4, save_strategy="steps", save_steps=4)
    record = restore_record(model)
    assert (record.strategy, record.total_reinitialized, record.recipe) == ("none", 0, None)  # no one-shot restore
    [entry] = record.periodic
    assert (entry.strategy, entry.resets) == ("test_every_n", 2)
    assert entry.total_reinitialized == callback.controller.total_reinitialized > 0
    assert entry.config == config.to_dict()
    checkpoint = tmp_path / "out" / "checkpoint-4"
    assert restore_record(type(model).from_pretrained(checkpoint)) == record
    card = (checkpoint / "README.md").read_text()
    assert "## Periodic re-initialization (hf-plasticity)" in card and "no one-shot restore" in card
    assert f"| `test_every_n` | 2 | {entry.total_reinitialized:,} |" in card and "recipe" not in card
    assert not (checkpoint / "plasticity_config.json").exists()  # the config of a restore: there was none
    prepare_pretrained(model)  # the record does not block a one-shot restore of the fine-tuned model


def test_metrics_reach_tensorboard(make_model, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    callback = PlasticityCallback(EveryNConfig(every_n_steps=2), diagnostics_every=2, log_every=2)
    run(make_model("vit"), tmp_path, callback, max_steps=4, report_to=["tensorboard"])
    tags: dict[str, list[int]] = {}
    for path in glob.glob(str(tmp_path / "**" / "events.out.tfevents.*"), recursive=True):
        accumulator = EventAccumulator(path)
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            tags.setdefault(tag, []).extend(event.step for event in accumulator.Scalars(tag))
    assert sorted(tags["train/plasticity/test_every_n/reinitialized"]) == [2, 4]
    assert sorted(tags["train/plasticity/dormant_ratio"]) == [0, 2, 4]  # before training, then every 2 steps
    assert "train/plasticity/insignificant_grad_share" in tags
    assert "train/loss" in tags


def test_monitoring_leaves_training_unchanged(make_model, tmp_path):
    """Diagnostics read probe batches and run backward passes; the trained weights must not notice."""
    plain, monitored = make_model("resnet"), make_model("resnet")
    run(plain, tmp_path / "a", PlasticityCallback(restore=False), max_steps=3)
    run(monitored, tmp_path / "b", PlasticityCallback(restore=False, diagnostics_every=1), max_steps=3)
    expected = params(plain)
    assert all(torch.equal(p, expected[n]) for n, p in params(monitored).items())


# ------------------------------------------------------------------------------------------------ resume
@pytest.mark.parametrize("restore_callback_states", [False, True])
def test_resume_continues_schedules_and_never_repeats_the_restore(make_model, tmp_path, restore_callback_states):
    config = EveryNConfig(every_n_steps=2, at_start=True, scored=True)
    settings = dict(
        max_steps=6,
        save_strategy="steps",
        save_steps=3,
        restore_callback_states_from_checkpoint=restore_callback_states,
    )
    straight = make_model("convnext")
    run(straight, tmp_path / "straight", PlasticityCallback(config), **settings)

    first = make_model("convnext")
    run(first, tmp_path / "resumed", PlasticityCallback(config), stop_at=3, **settings)  # "crashes" after step 3
    resumed = make_model("convnext")  # a new process would start from the pretrained model again
    trainer = run(
        resumed,
        tmp_path / "resumed",
        PlasticityCallback(config),
        resume=str(tmp_path / "resumed" / "out" / "checkpoint-3"),
        **settings,
    )
    expected = params(straight)
    assert all(torch.equal(p, expected[n]) for n, p in params(resumed).items())
    live = next(c for c in trainer.callback_handler.callbacks if isinstance(c, PlasticityCallback))
    assert live.controller.strategy.steps == [2, 4, 6]  # step 2 from the checkpoint, 4 and 6 after the resume
    assert live.trainer is trainer  # also when transformers replaced the callback with one built from its state
    after_resume = [log for log in trainer.state.log_history if log["step"] > 3]
    assert not [log for log in after_resume if "plasticity/restore/reinitialized" in log]
    assert [log["step"] for log in after_resume if "plasticity/test_every_n/resets" in log] == [4, 6]
    # the record counts the resets before the crash too (put back on the model rebuilt from the base checkpoint)
    assert restore_record(resumed) == restore_record(straight)
    assert [(e.strategy, e.resets) for e in restore_record(resumed).periodic] == [("test_every_n", 3)]


@pytest.mark.parametrize("restore_callback_states", [False, True])
def test_the_restore_record_survives_a_resume(make_model, tmp_path, restore_callback_states):
    settings = dict(
        max_steps=4,
        save_strategy="steps",
        save_steps=2,
        restore_callback_states_from_checkpoint=restore_callback_states,
    )
    run(make_model("convnext"), tmp_path, PlasticityCallback(), stop_at=2, **settings)  # "crashes" after step 2
    resumed = make_model("convnext")  # a new process starts from the base checkpoint: no record on it
    assert getattr(resumed.config, "plasticity", None) is None
    trainer = run(resumed, tmp_path, PlasticityCallback(), resume=str(tmp_path / "out" / "checkpoint-2"), **settings)
    record = resumed.config.plasticity
    assert record["strategy"] == "reinit_layers"
    # every later checkpoint and the final save carry it; the output says what was re-initialized
    later = json.loads((tmp_path / "out" / "checkpoint-4" / "config.json").read_text())
    assert later["plasticity"] == record
    trainer.save_model(str(tmp_path / "final"))
    assert PlasticityConfig.from_pretrained(tmp_path / "final").strategy == "reinit_layers"
    # a second restore is refused without force, and fine-tuning the output again does not restore it twice
    final = type(resumed).from_pretrained(tmp_path / "final")
    with pytest.raises(AlreadyRestoredError):
        prepare_pretrained(final)
    before = params(final)
    again = run(final, tmp_path / "again", PlasticityCallback(), max_steps=1, learning_rate=0.0)
    assert not logged(again, "plasticity/restore/reinitialized")
    assert all(torch.equal(p, before[n]) for n, p in params(final).items())


def test_a_checkpoint_saved_without_the_callback_resumes_with_it(make_model, tmp_path):
    """transformers 5.24 fails at the next checkpoint save (KeyError: 'PlasticityCallback') unless the callback gives
    the resumed state an entry for itself."""
    settings = dict(max_steps=4, save_strategy="steps", save_steps=2)
    plain = Trainer(model=make_model("convnext"), args=training_args(tmp_path, **settings),
                    train_dataset=learnable_dataset(64), callbacks=[StopAt(2)])  # fmt: skip
    plain.train()
    checkpoint = str(tmp_path / "out" / "checkpoint-2")
    trainer = run(make_model("convnext"), tmp_path, PlasticityCallback(), resume=checkpoint, **settings)
    assert trainer.state.global_step == 4
    saved = json.loads((tmp_path / "out" / "checkpoint-4" / "trainer_state.json").read_text())
    assert "PlasticityCallback" in saved["stateful_callbacks"]
    assert not logged(trainer, "plasticity/restore/reinitialized")  # the one-shot restore is for step 0 only


def test_resume_into_wrong_weights_is_refused_vit(make_model, tmp_path):
    """transformers 5.24 resumes a ViT without its encoder layers (FINDINGS.md); the callback stops it."""
    settings = dict(max_steps=4, save_strategy="steps", save_steps=2)
    run(make_model("vit"), tmp_path, PlasticityCallback(restore=False), stop_at=2, **settings)
    with pytest.raises(ResumeMismatchError, match="48805"):
        run(
            make_model("vit"),
            tmp_path,
            PlasticityCallback(restore=False),
            resume=str(tmp_path / "out" / "checkpoint-2"),
            **settings,
        )


class NudgeOneWeight(TrainerCallback):
    """Changes one entry of one small tensor after the checkpoint was loaded: a resume that missed one layer."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        with torch.no_grad():
            model.convnext.layernorm.weight[0] += 1e-3


def test_a_resume_that_misses_one_small_tensor_is_refused_and_named(make_model, tmp_path):
    """Each parameter is checked on its own scale: a change far below the whole model's round-off budget (one entry
    of the final norm, 1e-3) is caught, and the message names the tensor."""
    settings = dict(max_steps=4, save_strategy="steps", save_steps=2)
    run(make_model("convnext"), tmp_path, PlasticityCallback(restore=False), stop_at=2, **settings)
    trainer = PlasticityTrainer(model=make_model("convnext"), args=training_args(tmp_path, **settings),
                                train_dataset=learnable_dataset(64),
                                callbacks=[NudgeOneWeight(), PlasticityCallback(restore=False)])  # fmt: skip
    with pytest.raises(ResumeMismatchError, match=r"\(convnext\.layernorm\.weight\)"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-2"))


def test_a_checkpoint_with_the_older_fingerprint_still_resumes_and_checks(make_model, tmp_path):
    """Checkpoints written before the per-parameter fingerprint hold three sums over all parameters."""
    settings = dict(max_steps=4, save_strategy="steps", save_steps=2)
    run(make_model("convnext"), tmp_path, PlasticityCallback(restore=False), stop_at=2, **settings)
    path = tmp_path / "out" / "checkpoint-2" / "trainer_state.json"
    saved = json.loads(path.read_text())
    state = saved["stateful_callbacks"]["PlasticityCallback"]["attributes"]["plasticity_state"]
    state["fingerprint"] = [sum(row[i] for row in state["fingerprint"].values()) for i in range(3)]
    path.write_text(json.dumps(saved))
    trainer = run(make_model("convnext"), tmp_path, PlasticityCallback(restore=False), resume=str(path.parent),
                  **settings)  # fmt: skip
    assert trainer.state.global_step == 4
    state["fingerprint"][1] *= 1.01
    path.write_text(json.dumps(saved))
    with pytest.raises(ResumeMismatchError, match=r"\(\(all parameters\)\)"):
        run(make_model("convnext"), tmp_path, PlasticityCallback(restore=False), resume=str(path.parent), **settings)


# ------------------------------------------------------------------------------------------------ bad input
class NoLayers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(3))

    def forward(self, pixel_values, labels=None):
        logits = pixel_values.mean((2, 3)) * self.scale
        return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}


def build_trainer(model, tmp_path, callback, train="default"):
    train = learnable_dataset(32) if train == "default" else train
    return PlasticityTrainer(model=model, args=training_args(tmp_path), train_dataset=train, callbacks=[callback])


def test_data_dependent_strategy_without_train_dataset_fails_at_construction(make_model, tmp_path):
    with pytest.raises(ValueError, match="No training data: strategy 'selective' scores on downstream data"):
        build_trainer(make_model("convnext"), tmp_path, PlasticityCallback(SelectiveReinitConfig()), train=None)
    with pytest.raises(ValueError, match="No training data: the diagnostics"):
        build_trainer(make_model("convnext"), tmp_path, PlasticityCallback(diagnostics_every=10), train=None)


def test_model_without_supported_layers_fails_at_construction(tmp_path):
    with pytest.raises(ScopeError, match="no supported layers"):
        build_trainer(NoLayers(), tmp_path, PlasticityCallback(EveryNConfig()))


@pytest.mark.parametrize("period", [0, -3])
def test_bad_period_is_refused(period):
    with pytest.raises(ValueError, match="`every_n_steps` must be a positive integer"):
        PlasticityCallback(EveryNConfig(every_n_steps=period))
    config = EveryNConfig()
    config.every_n_steps = period  # changed after validation: validated again by the callback
    with pytest.raises(ValueError, match="`every_n_steps` must be a positive integer"):
        PlasticityCallback(config)
    with pytest.raises(ValueError, match="`diagnostics_every` must be a positive integer"):
        PlasticityCallback(diagnostics_every=period)
    with pytest.raises(ValueError, match="`log_every` must be a positive integer"):
        PlasticityCallback(log_every=period)


def test_two_callbacks_are_refused(make_model, tmp_path):
    with pytest.raises(ValueError, match="one PlasticityCallback"):
        PlasticityTrainer(
            model=make_model("convnext"),
            args=training_args(tmp_path),
            train_dataset=learnable_dataset(32),
            callbacks=[PlasticityCallback(), PlasticityCallback(EveryNConfig())],
        )


# ------------------------------------------------------------------------------------------------ without Trainer
def test_controller_in_a_plain_loop_and_its_state_round_trip(make_model):
    model = make_model("convnext")
    data = batches(2, size=8)
    controller = PlasticityController(EveryNConfig(every_n_steps=2, at_start=True), data=data, diagnostics_every=3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    assert controller.restore(model, optimizer=optimizer) is not None
    assert controller.restore(model, optimizer=optimizer) is None  # once
    controller.attach(model)
    seen = {}
    for step in range(1, 5):
        loss = nn.functional.cross_entropy(model(data[0]["pixel_values"]).logits, data[0]["labels"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        seen[step] = controller.step(step, optimizer=optimizer)
    controller.detach()
    assert seen[1] == {} and seen[2]["plasticity/test_every_n/resets"] == 1.0
    assert "plasticity/dormant_ratio" in seen[3]
    clone = PlasticityController(EveryNConfig(every_n_steps=2, at_start=True))
    clone.load_state_dict(controller.state_dict())
    assert clone.restored and clone.strategy.steps == [2, 4] and clone.total_resets == 2


def test_a_step_that_is_not_an_optimizer_step_number_is_refused_before_anything_changes(make_model):
    """``step(2.0)`` once fired the reset of step 2 with other draws (salted "step2.0"), ``step(True)`` and NaN were
    read as steps, and ``"2"`` or None failed with a bare comparison error."""
    model = make_model("convnext")
    controller = PlasticityController(EveryNConfig(every_n_steps=1))
    controller.restore(model)
    controller.attach(model)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    not_a_step = st.one_of(
        st.integers(max_value=0), st.booleans(), st.floats(), st.none(), st.text(), st.just(torch.tensor(2))
    )

    @given(value=not_a_step)
    @settings(max_examples=40, deadline=None)
    def refused(value):
        with pytest.raises(ValueError, match="`step` must be an integer >= 1"):
            controller.step(value)
        assert controller.total_resets == 0 and controller.last_step == 0
        assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())

    refused()
    with pytest.raises(ValueError, match="`epoch` must be a finite number >= 0"):
        controller.step(1, epoch=float("nan"))
    assert controller.step(1) and controller.total_resets == 1  # an int step still resets
    controller.detach()


def continual_backprop_loop(make_model, maturity: int):
    """A restored tiny ConvNeXt with a continual-backprop controller (not attached yet), its SGD optimizer and one
    training step on a fixed batch."""
    model = make_model("convnext")
    model.train()
    data = batches(1, size=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    controller = PlasticityController(ContinualBackpropConfig(replacement_rate=0.5, maturity=maturity))
    controller.restore(model, optimizer=optimizer)

    def train_step():
        nn.functional.cross_entropy(model(data[0]["pixel_values"]).logits, data[0]["labels"]).backward()
        optimizer.step()
        optimizer.zero_grad()

    return model, controller, optimizer, train_step


def test_continual_backprop_before_attach_is_refused_not_silently_idle(make_model):
    """Without `attach` its activation hooks were never registered: `step` reset nothing, silently."""
    model, controller, optimizer, train_step = continual_backprop_loop(make_model, maturity=0)
    train_step()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with pytest.raises(RuntimeError, match=r"call `controller.attach\(model\)` before training"):
        controller.step(1, optimizer=optimizer)
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
    assert controller.total_resets == 0 and controller.strategy.last_step is None
    controller.attach(model)
    for step in range(1, 4):
        train_step()
        controller.step(step, optimizer=optimizer)
    controller.detach()
    assert controller.total_resets == 3 and controller.total_reinitialized > 0


def test_continual_backprop_attached_again_to_its_model_keeps_the_units_ages(make_model):
    """A plain loop that calls `attach` once per epoch trains as one that attaches once: re-attaching used to zero
    every unit's age and utility, so with a maturity above the epoch length no unit ever became replaceable."""

    def train(attach_every_step: bool) -> tuple[int, dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        model, controller, optimizer, train_step = continual_backprop_loop(make_model, maturity=2)
        controller.attach(model)
        for step in range(1, 7):
            if attach_every_step:
                controller.attach(model)
            train_step()
            controller.step(step, optimizer=optimizer)
        controller.detach()
        return controller.total_resets, {name: t.clone() for name, t in model.state_dict().items()}

    (once, weights_once), (again, weights_again) = train(False), train(True)
    assert once > 0 and again == once
    assert all(torch.equal(weights_once[name], weights_again[name]) for name in weights_once)


@pytest.mark.skipif("redo" not in available_strategies(), reason="ReDo is not available")
def test_redo_every_n_steps(make_model, tmp_path):
    from hf_plasticity.strategies.redo import ReDoConfig

    callback = PlasticityCallback(ReDoConfig(every_n_steps=2, tau=0.5), log_every=4, diagnostics_every=4)
    trainer = run(make_model("convnext"), tmp_path, callback, max_steps=4)
    [(step, resets)] = logged(trainer, "plasticity/redo/resets")
    assert (step, resets) == (4, 2.0)
    assert logged(trainer, "plasticity/redo/reinitialized")[0][1] > 0  # tau 0.5 finds dormant units
    assert logged(trainer, "plasticity/restore/reinitialized")[0][0] == 0  # ReDo also acts once before training
    assert len(logged(trainer, "plasticity/dormant_ratio")) == 2
