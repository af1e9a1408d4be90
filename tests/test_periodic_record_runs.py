"""The periodic resets a model's record counts, across the ways a training run ends or continues: a resume from a
checkpoint (on the model that trained past it, or on one reloaded from an earlier fine-tune), the best checkpoint
loaded back at the end, a one-shot restore after the resets, and a run continued by another library version."""

from __future__ import annotations

import json

import pytest

from hf_plasticity import PlasticityCallback, PlasticityTrainer, RifleConfig, prepare_pretrained, restore_record
from hf_plasticity.core.record import record_periodic_reset

from . import periodic_strategy
from .periodic_strategy import EveryNConfig
from .test_callback import run, training_args
from .test_training import learnable_dataset

SETTINGS = dict(max_steps=6, save_strategy="steps", save_steps=3)


@pytest.fixture(autouse=True, scope="module")
def every_n_strategy():
    periodic_strategy.register()
    yield
    periodic_strategy.unregister()


def counted(model) -> list[tuple[str, int, int]]:
    record = restore_record(model)
    return [] if record is None else [(e.strategy, e.resets, e.total_reinitialized) for e in record.periodic]


def periodic_callback() -> PlasticityCallback:
    return PlasticityCallback(EveryNConfig(every_n_steps=2), restore=False, announce=False)


def test_a_resume_on_the_model_that_trained_past_the_checkpoint_counts_each_reset_once(make_model, tmp_path):
    """Old code: a notebook run stopped after step 5 (resets at 2 and 4) and resumed from checkpoint-3 on the same
    model object counted 4 resets, the one at step 4 twice; a straight run has 3."""
    straight = make_model("convnext")
    run(straight, tmp_path / "straight", periodic_callback(), **SETTINGS)
    model = make_model("convnext")
    run(model, tmp_path / "run", periodic_callback(), stop_at=5, **SETTINGS)
    assert counted(model)[0][1] == 2
    run(
        model, tmp_path / "run", periodic_callback(), resume=str(tmp_path / "run" / "out" / "checkpoint-3"), **SETTINGS
    )
    assert counted(model) == counted(straight) and counted(straight)[0][1] == 3


def test_a_resumed_second_fine_tune_keeps_the_first_one_s_resets_and_its_own(make_model, tmp_path):
    """Old code: a second fine-tune of a model that already counted resets, stopped and resumed by rerunning the
    script (the model reloaded from the first fine-tune), lost the resets before its checkpoint."""
    first = make_model("convnext")
    run(first, tmp_path / "first", periodic_callback(), **SETTINGS)
    first.save_pretrained(tmp_path / "first_saved")
    load = lambda: type(first).from_pretrained(tmp_path / "first_saved")  # noqa: E731
    straight = load()
    run(straight, tmp_path / "straight", periodic_callback(), **SETTINGS)
    run(load(), tmp_path / "second", periodic_callback(), stop_at=3, **SETTINGS)
    resumed = load()
    checkpoint = str(tmp_path / "second" / "out" / "checkpoint-3")
    run(resumed, tmp_path / "second", periodic_callback(), resume=checkpoint, **SETTINGS)
    assert counted(resumed) == counted(straight) and counted(straight)[0][1] == 6


def test_the_best_checkpoint_loaded_back_counts_the_resets_its_weights_went_through(make_model, tmp_path):
    """Old code: with ``load_best_model_at_end`` the model held checkpoint-2's weights (1 reset) while its record, and
    the final save, counted the 3 resets of the whole run."""
    model = make_model("convnext")
    scores = iter(range(100))
    args = training_args(
        tmp_path, max_steps=6, save_strategy="steps", save_steps=2, eval_strategy="steps", eval_steps=2,
        load_best_model_at_end=True, metric_for_best_model="score", greater_is_better=True,
    )  # fmt: skip
    trainer = PlasticityTrainer(
        model=model,
        args=args,
        train_dataset=learnable_dataset(64),
        eval_dataset=learnable_dataset(16),
        compute_metrics=lambda _: {"score": -float(next(scores))},  # the first evaluation is the best
        callbacks=[periodic_callback()],
    )
    trainer.train()
    best = json.loads((tmp_path / "out" / "checkpoint-2" / "config.json").read_text())["plasticity"]["periodic"]
    assert trainer.state.best_model_checkpoint.endswith("checkpoint-2") and [e["resets"] for e in best] == [1]
    assert [resets for _, resets, _ in counted(model)] == [1]
    trainer.save_model(str(tmp_path / "final"))
    final = json.loads((tmp_path / "final" / "config.json").read_text())["plasticity"]["periodic"]
    assert final == best


def test_a_one_shot_restore_after_periodic_resets_keeps_them_in_its_record(make_model):
    """Old code: the one-shot restore's record replaced the periodic list (the recipe was kept, the resets the weights
    went through were dropped from the record and the card)."""
    model = make_model("convnext")
    for _ in range(2):
        record_periodic_reset(model, "rifle", RifleConfig().to_dict(), 51)
    before = restore_record(model).periodic
    prepare_pretrained(model, "reinit_layers")
    record = restore_record(model)
    assert record.strategy == "reinit_layers" and record.total_reinitialized > 0 and record.periodic == before
    prepare_pretrained(model, "reinit_layers", force=True)
    assert restore_record(model).periodic == before


def test_a_run_continued_by_another_library_version_counts_in_the_same_entry(make_model):
    """Old code: entries were matched on the whole config, version stamp included, so one strategy with one setting
    had two rows after an upgrade."""
    model = make_model("convnext")
    config = RifleConfig().to_dict()
    record_periodic_reset(model, "rifle", config, 3)
    record_periodic_reset(model, "rifle", dict(config, hf_plasticity_version="99.0.0"), 4)
    record_periodic_reset(model, "rifle", dict(config, seed=config["seed"] + 1), 5)  # another setting: its own row
    assert counted(model) == [("rifle", 2, 7), ("rifle", 1, 5)]
