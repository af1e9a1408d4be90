"""The fine-tuning recipe (issue 27.1): the learning rates read off one diagnostic pass, through the public API.

The rule on given probe accuracies (the benchmark's fitted numbers, each side of each threshold, monotone in
``last / peak``), `recommend_recipe` on tiny models whose last block does or does not keep the classes apart, the
record (round trip, older records, save / load), the card, the parameter groups and optimizer, the Trainer route with
no learning rate given, and bad input refused before anything changes.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from huggingface_hub import ModelCard
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import TrainingArguments

from hf_plasticity import (
    CalibrationDataError,
    FineTuneRecipe,
    PlasticityCallback,
    PlasticityTrainer,
    RecordError,
    RestoreRecord,
    diagnose,
    plasticity_optimizer,
    plasticity_param_groups,
    prepare_pretrained,
    recommend_recipe,
    restore_record,
)
from hf_plasticity.core.recipe import FITTED_RULE
from hf_plasticity.integrations.modelcard import SECTION_END, SECTION_START, build_model_card

from .models import tiny_vision_transformer
from .official_example import official_trainer
from .test_callback import StopAt, params
from .test_record import TODAYS_RECORD
from .test_training import learnable_dataset

#: The benchmark's fitted rule (docs/BENCHMARKS.md, "Fitted on every pair"), written out here on purpose: the test
#: fails when the library's constants drift from the documented fit.
SHORT = dict(threshold=0.9862653419053184, high=3.3e-5, head_high=1e-3, low=3e-3, head_low=1e-3, vit=1 / 3)
LONG = dict(threshold=0.9730800137756859, high=1e-4, head_high=3.3e-4, low=3e-3, head_low=1e-3, vit=1 / 3)
FITS = {"short": SHORT, "long": LONG}


def close(a: float, b: float) -> bool:
    return abs(a - b) <= 0.011 * b  # the documented numbers have two significant digits


def probe_with_ratio(ratio: float, peak: float = 0.8) -> list[float]:
    """Probe accuracies whose last / peak is ``ratio`` (the peak in the middle)."""
    return [0.3, peak, peak * ratio]


# ------------------------------------------------------------------------------------------------------ the rule
@pytest.mark.parametrize("budget", ["short", "long"])
@pytest.mark.parametrize("family", ["cnn", "transformer"])
def test_the_rule_gives_the_fitted_rates_on_each_side_of_the_threshold(budget, family):
    fit = FITS[budget]
    factor = fit["vit"] if family == "transformer" else 1.0
    at = FineTuneRecipe.from_probe(probe_with_ratio(1.0), budget=budget, family=family)
    below = FineTuneRecipe.from_probe(probe_with_ratio(fit["threshold"] - 0.002), budget=budget, family=family)
    exactly = FineTuneRecipe.from_probe([0.3, 1.0, fit["threshold"]], budget=budget, family=family)
    assert exactly.backbone_lr == at.backbone_lr  # at the threshold: the small rate
    assert close(at.backbone_lr, fit["high"] * factor) and close(at.head_lr, fit["head_high"])
    assert close(below.backbone_lr, fit["low"] * factor) and close(below.head_lr, fit["head_low"])
    assert at.threshold == fit["threshold"] and at.budget == budget and at.family == family


@settings(max_examples=60, deadline=None)
@given(
    a=st.floats(0.0, 1.0),
    b=st.floats(0.0, 1.0),
    peak=st.floats(0.05, 1.0),
    budget=st.sampled_from(["short", "long"]),
    family=st.sampled_from(["cnn", "transformer", "mlp"]),
)
def test_the_backbone_rate_never_rises_as_the_last_block_gets_closer_to_the_peak(a, b, peak, budget, family):
    low_ratio, high_ratio = sorted((a, b))
    lower = FineTuneRecipe.from_probe(probe_with_ratio(low_ratio, peak), budget=budget, family=family)
    higher = FineTuneRecipe.from_probe(probe_with_ratio(high_ratio, peak), budget=budget, family=family)
    assert higher.backbone_lr <= lower.backbone_lr
    fit = FITS[budget]
    for recipe in (lower, higher):  # the small rate exactly when last / peak reaches the threshold
        small = recipe.last_over_peak >= recipe.threshold
        assert (recipe.backbone_lr <= 1e-4) == small  # the small rates: 3.3e-5 (short), 1e-4 (long); ViT lower
        assert close(recipe.head_lr, fit["head_high"] if small else fit["head_low"])  # the head goes with the side


@settings(max_examples=40, deadline=None)
@given(
    ratio=st.floats(0.0, 1.0),
    budget=st.sampled_from(["short", "long"]),
    family=st.sampled_from(["cnn", "transformer"]),
    field=st.sampled_from(["threshold", "backbone_lr_at_or_above", "head_lr_at_or_above", "backbone_lr_below",
                           "head_lr_below", "transformer_factor"]),
)  # fmt: skip
def test_a_recipe_knows_whether_the_installed_rule_chose_it(ratio, budget, family, field):
    """True for what the rule gives (also after a round trip through the record's dict), False once the installed
    rule is refitted where this recipe's pass reads it (what `compare` and the benchmark refuse to resume), and for a
    recipe written by hand."""
    import dataclasses

    from hf_plasticity.core import recipe as recipe_module

    recipe = FineTuneRecipe.from_probe(probe_with_ratio(ratio, 0.8), budget=budget, family=family)
    recorded = FineTuneRecipe.from_dict(json.loads(json.dumps(recipe.to_dict())))  # as a record holds it
    assert recipe.is_from_installed_rule() and recorded.is_from_installed_rule()
    unreadable = FineTuneRecipe.from_dict({**recipe.to_dict(), "block_probe_accuracy": [0.5, None]})  # by hand
    assert not unreadable.is_from_installed_rule()  # the rule cannot read a last block without accuracy: False
    assert not FineTuneRecipe(backbone_lr=recipe.backbone_lr, head_lr=recipe.head_lr).is_from_installed_rule()
    fit = recipe_module.FITTED_RULE[budget]
    refit = dataclasses.replace(fit, **{field: getattr(fit, field) / 2})
    at_or_above = recipe.last_over_peak >= fit.threshold
    moved = {  # does the refit change what this recipe's pass reads to?
        "threshold": True,
        "backbone_lr_at_or_above": at_or_above,
        "head_lr_at_or_above": at_or_above,
        "backbone_lr_below": not at_or_above,
        "head_lr_below": not at_or_above,
        "transformer_factor": family == "transformer",
    }[field]
    original = dict(recipe_module.FITTED_RULE)
    try:
        recipe_module.FITTED_RULE[budget] = refit
        assert recipe.is_from_installed_rule() is not moved
    finally:
        recipe_module.FITTED_RULE.update(original)


@pytest.mark.parametrize("budget", ["short", "long"])
def test_a_recipe_recorded_with_the_threshold_to_three_digits_is_the_installed_rule_s_unless_the_rounding_chose(
    budget,
):
    """Earlier versions shipped the thresholds rounded (0.986, 0.973): their records stay the installed rule's, except
    a pass that read between the rounded and the fitted value, where the rounded rule chose the other side."""
    threshold = FITS[budget]["threshold"]
    rounded = round(threshold, 3)
    for ratio, chose_the_other_side in [(0.5, False), (1.0, False), ((rounded + threshold) / 2, True)]:
        now = FineTuneRecipe.from_probe(probe_with_ratio(ratio), budget=budget, family="cnn")
        rates = (now.backbone_lr, now.head_lr)
        if chose_the_other_side:  # the rounded rule put this read at or above its threshold
            fit = FITTED_RULE[budget]
            rates = (fit.backbone_lr_at_or_above, fit.head_lr_at_or_above)
        old = {**now.to_dict(), "threshold": rounded, "backbone_lr": rates[0], "head_lr": rates[1]}
        assert FineTuneRecipe.from_dict(old).is_from_installed_rule() is not chose_the_other_side


def test_the_feature_is_the_last_block_over_the_best_one():
    recipe = FineTuneRecipe.from_probe([0.5, None, 0.9, 0.45], budget="short")
    assert recipe.last_over_peak == pytest.approx(0.5)
    assert recipe.block_probe_accuracy == (0.5, None, 0.9, 0.45)


# ------------------------------------------------------------------------------------------- recommend_recipe
def labelled(n: int = 48, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Classes told apart by their brightest channel: every block of a tiny model separates them."""
    data = learnable_dataset(n, seed)
    pixels, labels = data["pixel_values"], data["labels"]
    return [{"pixel_values": pixels[i : i + 16], "labels": labels[i : i + 16]} for i in range(0, n, 16)]


@torch.no_grad()
def blind_last_blocks(model) -> None:
    """ResNet: the first block of the last stage outputs a constant (its convolutions and its shortcut zeroed), so
    the blocks from there on separate nothing while the first block still does."""
    layer = model.resnet.encoder.stages[1].layers[0]
    for module in layer.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.weight.zero_()


@pytest.mark.parametrize("budget", ["short", "long"])
def test_recommend_recipe_reads_each_side_of_the_threshold_off_the_model(make_model, budget):
    fit = FITS[budget]
    keeps = make_model("resnet")
    recipe = recommend_recipe(keeps, labelled(), budget=budget)
    assert recipe.last_over_peak >= fit["threshold"] and close(recipe.backbone_lr, fit["high"])
    blind = make_model("resnet")
    blind_last_blocks(blind)
    recipe = recommend_recipe(blind, labelled(), budget=budget)
    assert recipe.last_over_peak < fit["threshold"] and close(recipe.backbone_lr, fit["low"])
    assert recipe.family == "cnn" and recipe.samples == 48 and recipe.seconds > 0


def test_a_vit_gets_the_fitted_factor_and_the_pass_reads_at_most_samples_images(make_model):
    model = make_model("vit")
    recipe = recommend_recipe(model, learnable_dataset(64), samples=40, batch_size=16)
    assert recipe.family == "transformer" and recipe.samples == 40
    assert recipe.epoch_share == pytest.approx(40 / 64)  # a datasets.Dataset: its size is known
    expected = SHORT["high"] if recipe.last_over_peak >= SHORT["threshold"] else SHORT["low"]
    assert close(recipe.backbone_lr, expected * SHORT["vit"])


def test_a_streamed_dataset_gives_the_recipe_its_rows_give(make_model):
    """A `datasets.IterableDataset` (streamed, no length) is read like the `datasets.Dataset` of its rows."""
    model = make_model("vit")
    rows = learnable_dataset(64)
    streamed = rows.to_iterable_dataset().with_format("torch")
    assert not hasattr(streamed, "__len__")
    read = recommend_recipe(model, rows, samples=40, batch_size=16, record=False)
    recipe = recommend_recipe(model, streamed, samples=40, batch_size=16, record=False)
    assert recipe.block_probe_accuracy == read.block_probe_accuracy and recipe.backbone_lr == read.backbone_lr
    assert recipe.samples == 40 and recipe.epoch_share is None  # its size is unknown


@pytest.mark.parametrize("wrapper", [torch.nn.DataParallel, torch.compile], ids=["DataParallel", "compile"])
def test_a_wrapped_model_gets_the_recipe_of_the_model_inside(make_model, wrapper):
    """The probe once read a wrapped ResNet's stages as its blocks (two accuracies instead of three)."""
    model = make_model("resnet")
    expected = recommend_recipe(model, labelled(), record=False)
    recipe = recommend_recipe(wrapper(model), labelled(), record=False)
    assert len(recipe.block_probe_accuracy) == 3
    assert {**recipe.to_dict(), "seconds": 0} == {**expected.to_dict(), "seconds": 0}


def test_features_that_overflow_are_refused_not_read_as_in_domain_data(make_model):
    """NaN block outputs once scored class 0's share on every block, a last/peak of 1.0: the small backbone rate."""
    model = make_model("vit")
    loud = [{"pixel_values": b["pixel_values"] * 1e30, "labels": b["labels"]} for b in labelled()]
    with pytest.raises(CalibrationDataError, match="NaN or infinite values .* the model overflows"):
        recommend_recipe(model, loud)
    assert restore_record(model) is None


def test_a_vision_transformer_outside_the_architecture_table_gets_the_vit_factor_too():
    """A DeiT embeds its patches with a convolution; the rule must not train it at a CNN's backbone rate."""
    recipe = recommend_recipe(tiny_vision_transformer("deit"), learnable_dataset(32), samples=32, batch_size=16)
    expected = SHORT["high"] if recipe.last_over_peak >= SHORT["threshold"] else SHORT["low"]
    assert recipe.family == "transformer" and close(recipe.backbone_lr, expected * SHORT["vit"])


@pytest.mark.parametrize("arch", ["resnet", "vit"])
def test_the_forward_only_pass_reads_the_probe_diagnose_reads_and_leaves_the_model_as_it_was(make_model, arch):
    model = make_model(arch)
    model.train()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    recipe = recommend_recipe(model, labelled(), record=False)
    assert recipe.block_probe_accuracy == tuple(diagnose(model, labelled()).block_probe_accuracy)
    assert model.training and all(m.training for m in model.modules()) and restore_record(model) is None
    assert all(torch.equal(t, before[n]) for n, t in model.state_dict().items())  # BatchNorm statistics too
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


# ---------------------------------------------------------------------------------------------------- the record
def test_the_recipe_is_recorded_and_survives_to_dict_and_save_pretrained(make_model, tmp_path):
    model = make_model("convnext")
    recipe = recommend_recipe(model, labelled())
    record = restore_record(model)
    assert record.recipe == recipe and record.strategy == "none" and record.total_reinitialized == 0
    assert RestoreRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record
    model.save_pretrained(tmp_path / "ckpt")
    loaded = type(model).from_pretrained(tmp_path / "ckpt")
    assert restore_record(loaded).recipe == recipe
    prepare_pretrained(loaded)  # a recipe-only record does not block a restore


def test_an_older_record_reads_without_a_recipe_and_a_broken_recipe_is_named():
    older = dict(TODAYS_RECORD, schema_version=2)
    assert RestoreRecord.from_dict(older).recipe is None
    broken = dict(older, recipe={"backbone_lr": "fast", "head_lr": 1e-3})
    with pytest.raises(RecordError, match="its `recipe` is unreadable: `backbone_lr` must be a finite number"):
        RestoreRecord.from_dict(broken)
    with pytest.raises(RecordError, match="a recipe has no field 'lr'"):
        RestoreRecord.from_dict(dict(older, recipe={"backbone_lr": 1e-3, "head_lr": 1e-3, "lr": 1}))


def test_the_card_shows_the_recipe(make_model):
    model = make_model("vit")
    recipe = recommend_recipe(model, labelled())
    card = build_model_card(restore_record(model), model=model)
    section = card.text[card.text.index(SECTION_START) : card.text.index(SECTION_END)]
    assert "### Fine-tuning recipe (experimental)" in section and "nothing was re-initialized" in card.text
    assert f"| backbone learning rate | {recipe.backbone_lr:.3g} |" in section
    assert f"| last / peak probe accuracy | {recipe.last_over_peak:.4f} (threshold 0.9863) |" in section
    assert "10 seeds per pair" in section and "up to 33 on one pair" in section and "up to 3.3 on one pair" in section
    assert "fine-tuning-recipe" in card.data.tags and "none" not in card.data.tags


@pytest.mark.parametrize("diagnostics", [False, True])
def test_a_restore_after_the_recipe_keeps_it_in_the_record_config_json_and_the_card(make_model, tmp_path, diagnostics):
    model = make_model("vit")
    recipe = recommend_recipe(model, labelled())
    report = prepare_pretrained(model, data=labelled(), diagnostics=diagnostics)
    record = restore_record(model)
    assert report.recipe == recipe and record.recipe == recipe and record.strategy == "reinit_layers"
    assert record.total_reinitialized > 0 and bool(record.diagnostics) is diagnostics
    model.save_pretrained(tmp_path / "ckpt")
    loaded = type(model).from_pretrained(tmp_path / "ckpt")
    assert restore_record(loaded) == record
    card = build_model_card(restore_record(loaded), model=loaded)
    assert "### Fine-tuning recipe (experimental)" in card.text and "fine-tuning-recipe" in card.data.tags
    # The recipe's rates are what they were: the re-drawn blocks train at its backbone rate.
    groups = {g["name"]: g["lr"] for g in plasticity_param_groups(loaded, recipe=restore_record(loaded).recipe)}
    assert groups["backbone"] == recipe.backbone_lr and "redrawn" in groups and groups["redrawn"] == recipe.backbone_lr
    # A restore again (force) keeps it too; a failed restore leaves the record, recipe and all, as it was.
    prepare_pretrained(loaded, "shrink_perturb", force=True)
    assert restore_record(loaded).recipe == recipe and restore_record(loaded).strategy == "shrink_perturb"
    with pytest.raises(CalibrationDataError):
        prepare_pretrained(loaded, "auto", force=True)  # needs data
    assert restore_record(loaded).recipe == recipe and restore_record(loaded).strategy == "shrink_perturb"


# ------------------------------------------------------------------------------------- parameter groups, optimizer
def test_the_parameter_groups_and_the_optimizer_carry_the_recipes_rates(make_model, tmp_path):
    model = make_model("convnext")
    recipe = FineTuneRecipe(backbone_lr=2e-3, head_lr=7e-4)
    groups = plasticity_param_groups(model, recipe=recipe, weight_decay=0.05)
    rates = {g["name"]: g["lr"] for g in groups}
    assert rates == {"backbone": 2e-3, "backbone.no_decay": 2e-3, "head": 7e-4, "head.no_decay": 7e-4}
    assert sorted(id(p) for g in groups for p in g["params"]) == sorted(id(p) for p in model.parameters())
    args = TrainingArguments(str(tmp_path), use_cpu=True, report_to=[])
    optimizer = plasticity_optimizer(model, args, recipe=recipe)
    assert {g["name"]: g["lr"] for g in optimizer.param_groups} == rates


# ---------------------------------------------------------------------------------------------- the Trainer route
def default_args(output_dir, **overrides) -> TrainingArguments:
    """TrainingArguments with no learning rate: the user gives none."""
    settings = dict(output_dir=str(output_dir), remove_unused_columns=False, per_device_train_batch_size=8,
                    max_steps=2, save_strategy="no", report_to=[], use_cpu=True, seed=0, logging_steps=1)  # fmt: skip
    settings.update(overrides)
    return TrainingArguments(**settings)


def test_the_trainer_route_trains_at_the_recipes_rates_with_no_learning_rate_given(make_model, tmp_path, capsys):
    model = make_model("convnext")
    before = params(model)
    trainer = official_trainer(model, default_args(tmp_path / "out"), [PlasticityCallback(recipe="auto")])
    trainer.train()
    recipe = trainer.plasticity_callback.resolved_recipe
    assert recipe.budget == "short" and recipe.samples == 32  # 2 steps of a 32-image set: the short budget
    rates = {g["name"]: g["initial_lr"] for g in trainer.optimizer.param_groups}
    assert set(rates) == {"backbone", "backbone.no_decay", "head", "head.no_decay"}
    assert rates["backbone"] == recipe.backbone_lr and rates["head"] == recipe.head_lr
    assert recipe.backbone_lr != trainer.args.learning_rate
    assert any(not torch.equal(p, before[n]) for n, p in params(model).items())  # it trained
    out = capsys.readouterr().out
    [line] = [line for line in out.splitlines() if line.startswith("hf-plasticity: recipe:")]
    assert "no re-draw" in line and "learning_rate is not used" in line
    assert "hf-plasticity: no one-shot restore: the recipe re-draws nothing" in out
    assert restore_record(model).recipe == recipe and restore_record(model).total_reinitialized == 0
    assert any(log.get("plasticity/recipe/backbone_lr") == recipe.backbone_lr for log in trainer.state.log_history)
    trainer.save_model()
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert f"| backbone learning rate | {recipe.backbone_lr:.3g} |" in card.text
    assert f"| `backbone` | {recipe.backbone_lr:.3g} |" in card.text  # the learning-rate table of the run
    assert not (tmp_path / "out" / "plasticity_config.json").exists()  # no restore, no strategy config


def test_the_trainer_route_trains_at_a_given_recipes_rates_and_records_it(make_model, tmp_path):
    model = make_model("vit")
    recipe = FineTuneRecipe(backbone_lr=2e-5, head_lr=7e-4)
    trainer = official_trainer(model, default_args(tmp_path, max_steps=1), [PlasticityCallback(recipe=recipe)])
    trainer.train()
    rates = {g["name"]: g["initial_lr"] for g in trainer.optimizer.param_groups}
    assert rates == {"backbone": 2e-5, "backbone.no_decay": 2e-5, "head": 7e-4, "head.no_decay": 7e-4}
    assert restore_record(model).recipe == recipe and restore_record(model).total_reinitialized == 0


def test_the_trainer_route_reads_the_long_budget_off_the_epochs(make_model, tmp_path):
    trainer = official_trainer(make_model("resnet"), default_args(tmp_path, max_steps=-1, num_train_epochs=9),
                               [PlasticityCallback(recipe="auto"), StopAt(1)])  # fmt: skip
    trainer.train()
    recipe = trainer.plasticity_callback.resolved_recipe
    side = "high" if recipe.last_over_peak >= LONG["threshold"] else "low"
    assert recipe.budget == "long" and recipe.threshold == LONG["threshold"]
    assert close(recipe.backbone_lr, LONG[side]) and close(recipe.head_lr, LONG[f"head_{side}"])


def test_the_trainer_route_on_streamed_data_asks_for_a_budget_it_cannot_count(make_model, tmp_path):
    """With `max_steps` and data of unknown length the run's epochs cannot be counted: it says so before anything
    changes, and trains at a recipe given for the budget."""
    streamed = learnable_dataset(32).to_iterable_dataset().with_format("torch")
    model = make_model("resnet")
    before = params(model)
    trainer = PlasticityTrainer(model, default_args(tmp_path), train_dataset=streamed,
                                callbacks=[PlasticityCallback(recipe="auto")])  # fmt: skip
    with pytest.raises(ValueError, match=r"max_steps=2 steps on data of unknown length .* budget='short'"):
        trainer.train()
    assert all(torch.equal(p, before[n]) for n, p in params(model).items()) and restore_record(model) is None
    recipe = recommend_recipe(model, streamed, budget="short", record=False)
    trainer = PlasticityTrainer(model, default_args(tmp_path), train_dataset=streamed,
                                callbacks=[PlasticityCallback(recipe=recipe)])  # fmt: skip
    trainer.train()
    assert {g["name"]: g["initial_lr"] for g in trainer.optimizer.param_groups}["backbone"] == recipe.backbone_lr
    assert any(not torch.equal(p, before[n]) for n, p in params(model).items())


def test_a_resume_keeps_the_first_runs_recipe(make_model, tmp_path, capsys):
    settings = dict(max_steps=4, save_strategy="steps", save_steps=2)
    first = official_trainer(make_model("convnext"), default_args(tmp_path, **settings),
                             [PlasticityCallback(recipe="auto"), StopAt(2)])  # fmt: skip
    first.train()
    recipe = first.plasticity_callback.resolved_recipe
    capsys.readouterr()
    resumed = official_trainer(make_model("convnext"), default_args(tmp_path, **settings),
                               [PlasticityCallback(recipe="auto")])  # fmt: skip
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    assert resumed.plasticity_callback.resolved_recipe == recipe
    assert {g["name"]: g["initial_lr"] for g in resumed.optimizer.param_groups}["backbone"] == recipe.backbone_lr
    assert "recipe:" not in capsys.readouterr().out  # read from the checkpoint, not measured again


# ------------------------------------------------------------------------------------------------------ refused
@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(backbone_lr=-1e-3, head_lr=1e-3), ValueError, "`backbone_lr` must be a finite number > 0"),
        (dict(backbone_lr=1e-3, head_lr="1e-3"), ValueError, "`head_lr` must be a finite number > 0"),
        (dict(backbone_lr=1e-3, head_lr=1e-3, budget="medium"), ValueError, r"`budget` must be one of \['short'"),
    ],
)
def test_a_bad_recipe_is_refused(kwargs, error, message):
    with pytest.raises(error, match=message):
        FineTuneRecipe(**kwargs)


def test_bad_input_to_recommend_recipe_is_refused_before_anything_changes(make_model):
    model = make_model("vit")
    before = params(model)
    config = copy.deepcopy(model.config.to_dict())
    for kwargs, message in (
        (dict(budget="medium"), r"`budget` must be one of \['short', 'long'\]"),
        (dict(budget=3), r"`budget` must be one of"),
        (dict(samples=0), "`samples` must be a positive integer"),
        (dict(record="yes"), "`record` must be True or False"),
    ):
        with pytest.raises(ValueError, match=message):
            recommend_recipe(model, labelled(), **kwargs)
    assert model.config.to_dict() == config and restore_record(model) is None
    assert all(torch.equal(p, before[n]) for n, p in params(model).items())
    prepare_pretrained(model)
    record = restore_record(model)
    with pytest.raises(ValueError, match="this model was restored .* call it on the base checkpoint"):
        recommend_recipe(model, labelled())
    assert restore_record(model) == record


def test_bad_recipe_arguments_are_refused_where_they_are_given(make_model, tmp_path):
    model = make_model("convnext")
    recipe = FineTuneRecipe(backbone_lr=1e-3, head_lr=1e-3)
    with pytest.raises(TypeError, match=r"`recipe` must be a FineTuneRecipe .* got 'auto'"):
        plasticity_param_groups(model, recipe="auto")
    with pytest.raises(ValueError, match="`recipe` sets the learning rates, so `lr` cannot be given with it"):
        plasticity_param_groups(model, lr=1e-4, recipe=recipe)
    with pytest.raises(ValueError, match="`lr` .* is required, unless a `recipe=` gives the rates"):
        plasticity_param_groups(model)
    args = TrainingArguments(str(tmp_path), use_cpu=True, report_to=[])
    with pytest.raises(ValueError, match="so `reinit_lr` cannot be given with it"):
        plasticity_optimizer(model, args, reinit_lr=1e-3, recipe=recipe)
    with pytest.raises(TypeError, match=r"`recipe` must be a FineTuneRecipe .*, 'auto' or None, got 3"):
        PlasticityCallback(recipe=3)
    with pytest.raises(TypeError, match="got 'fast'"):
        PlasticityCallback(recipe="fast")
    with pytest.raises(ValueError, match="so `head_lr` cannot be given with it"):
        PlasticityCallback(recipe="auto", head_lr=1e-3)
    with pytest.raises(ValueError, match="re-draws nothing .* `restore='force'` cannot go with it"):
        PlasticityCallback(recipe="auto", restore="force")
    with pytest.raises(ValueError, match="`restore` must be None, True, False or 'force'"):
        PlasticityCallback(recipe="auto", restore=1)
    with pytest.raises(ValueError, match="reads the train dataset"):
        PlasticityTrainer(model=model, args=default_args(tmp_path), callbacks=[PlasticityCallback(recipe="auto")])
