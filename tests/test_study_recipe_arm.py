"""The study's recipe arm (issue 27, point 3): not tuned on a grid, its rates come from the library's
`recommend_recipe` on the run's training split, recorded per run, and its test regret against the tuned standard arm
in the report and the pooled estimates."""

from __future__ import annotations

import pytest
import torch

from benchmarks import study
from hf_plasticity.core.recipe import FITTED_RULE

MODEL, TARGET = "efficientnet_lite0", "digits"
TINY = {"max_train": 60, "max_test": 20, "image_size": 32}


def test_the_recipe_arm_is_one_untuned_configuration_of_version_3_only():
    arm = study.ARMS["recipe"]
    assert arm.recommended and arm.grid == {} and arm.strategy is None
    assert "recipe" in study.V3_ARMS and "recipe" not in study.DEFAULT_ARMS  # version 2's arms stay
    assert study._grid(arm, {}) == [{}]
    # its one configuration, without reading validation: no records, or records that would favour another one
    assert study.choose([], arm, "short", {}, "third_seed", (102,)) == {}
    other = {"config": study.config_key("recipe", {"backbone_lr": 1e-3}), "budget": "short", "phase": "tune",
             "seed": 100, "val_acc": [1.0], "knobs": {"backbone_lr": 1e-3}}  # fmt: skip
    assert study.choose([other], arm, "short", {}, "first") == {}
    assert study.edge_extensions(arm, {}, {}) is None  # nothing to extend


def _splits(seed_free_settings: study.StudySettings):
    """The training split and the test split a study run of ``MODEL`` on ``TARGET`` uses, made here by hand."""
    from benchmarks.data import as_tensors, load_target
    from benchmarks.recipe import stratified_split

    data = load_target(TARGET, TINY["image_size"], max_train=TINY["max_train"], max_test=TINY["max_test"])
    images, labels = as_tensors(data["train"])
    keep, _ = stratified_split(labels, seed_free_settings.val_fraction, seed=0)
    return (images[keep], labels[keep]), as_tensors(data["test"]), data["train"].features["labels"].num_classes


def test_the_recipe_arm_runs_recommend_recipe_s_rates_on_training_images_only_and_resumes(tmp_path, monkeypatch):
    import benchmarks.recipe
    import hf_plasticity
    from benchmarks.models import load_model
    from benchmarks.study_report import markdown, summarize
    from benchmarks.training import calibration_data

    calls = {"recommend": [], "fine_tune": []}
    recommend, fine_tune = hf_plasticity.recommend_recipe, benchmarks.recipe.fine_tune_v2

    def spy_recommend(model, data, **kwargs):
        calls["recommend"].append((data, kwargs))
        return recommend(model, data, **kwargs)

    def spy_fine_tune(model, train, val, test, recipe, *args, **kwargs):
        calls["fine_tune"].append(test)
        return fine_tune(model, train, val, test, recipe, *args, **kwargs)

    monkeypatch.setattr(hf_plasticity, "recommend_recipe", spy_recommend)
    monkeypatch.setattr(benchmarks.recipe, "fine_tune_v2", spy_fine_tune)
    monkeypatch.setattr(study, "ARMS", {
        "standard": study.StudyArm("standard", grid={"backbone_lr": (1e-3,)}),
        "recipe": study.ARMS["recipe"],
    })  # fmt: skip
    # the long budget at one epoch: the rule's long-budget threshold (0.973) differs from the short one's (0.986)
    monkeypatch.setattr(study, "BUDGETS", {"long": 1})
    settings = study.StudySettings(
        models=[MODEL], targets=[TARGET], arms=["recipe"], budgets=["long"], results=str(tmp_path),
        tuning_seeds=(100,), confirmation_seeds=(0, 1), **TINY,
    )  # fmt: skip
    assert study.run_study(settings, progress=False)["done"] == 3 + 3  # each arm: one tuning run, two confirmations
    records = study.load_results(tmp_path / f"{MODEL}__{TARGET}.jsonl")
    assert len(calls["fine_tune"]) == len(records)  # one run at a time: the calls are in the records' order
    recipe_runs = [r for r in records if r["arm"] == "recipe"]
    assert sorted((r["phase"], r["seed"]) for r in recipe_runs) == [("confirm", 0), ("confirm", 1), ("tune", 100)]
    assert len(calls["recommend"]) == len(recipe_runs)  # one pass per recipe run, none for standard
    assert all(r.get("recommended") is None for r in records if r["arm"] == "standard")

    train, test, num_labels = _splits(settings)
    for record, (data, kwargs) in zip(recipe_runs, calls["recommend"]):
        seed = record["seed"]
        expected = calibration_data(train, 8, 32, seed)  # 256 images (all there are here) of the training split
        assert torch.equal(torch.cat([b["pixel_values"] for b in data]),
                           torch.cat([b["pixel_values"] for b in expected]))  # fmt: skip
        assert kwargs == {"budget": "long", "samples": 256, "record": False}
        # the same model and data through the library directly: the rates the run trained at, and what it read
        direct = recommend(load_model(MODEL, num_labels, seed=seed), expected, budget="long", record=False)
        chosen = record["recommended"]
        assert (record["recipe"]["backbone_lr"], record["recipe"]["head_lr"]) == (direct.backbone_lr, direct.head_lr)
        assert (chosen["backbone_lr"], chosen["head_lr"]) == (direct.backbone_lr, direct.head_lr)
        assert chosen["last_over_peak"] == pytest.approx(direct.last_over_peak, abs=1e-9)
        assert chosen["threshold"] == direct.threshold == FITTED_RULE["long"].threshold and chosen["budget"] == "long"
        assert chosen["samples"] == direct.samples == len(train[1]) and chosen["seconds"] > 0
        assert record["knobs"] == {} and record["config"] == study.config_key("recipe", {})
    # tuning runs never read the test split: the fine-tune gets none, the pass gets training images only
    for record, test_given in zip(records, calls["fine_tune"]):
        assert (test_given is None) == (record["phase"] == "tune")
        assert (record["test_acc"] is None) == (record["phase"] == "tune")

    assert study.run_study(settings, progress=False) == {"done": 0, "skipped": 6}  # resumable
    assert len(calls["recommend"]) == len(recipe_runs)  # and nothing re-run
    # ... but not after the shipped rule was refitted: the arm's key lacks the rule, so it would mix two rules
    import dataclasses

    from hf_plasticity.core import recipe as recipe_module

    path = tmp_path / f"{MODEL}__{TARGET}.jsonl"
    before = path.read_bytes()
    refit = dataclasses.replace(recipe_module.FITTED_RULE["long"], head_lr_at_or_above=1e-2, head_lr_below=1e-2)
    with monkeypatch.context() as patch:
        patch.setitem(recipe_module.FITTED_RULE, "long", refit)
        with pytest.raises(ValueError, match=r"holds 3 runs of the arm 'recipe' .*another fit of the rule"):
            study.run_study(settings, progress=False)
    assert path.read_bytes() == before and len(calls["recommend"]) == len(recipe_runs)

    text = markdown(tmp_path)
    overview = text.split("### efficientnet_lite0 on digits")[0]
    assert "| recipe - standard |" in overview
    row = next(line for line in overview.splitlines() if line.startswith(f"| {MODEL} | {TARGET}"))
    (recipe_row,) = [r for r in summarize(records, "long", one_device=True) if r["arm"] == "recipe"]
    assert recipe_row["diff"] is not None and recipe_row["diff"].n == 2
    assert f"| {recipe_row['diff']} |" in row  # the recipe's test regret against the tuned standard arm
    direct_rate = f"{recipe_runs[0]['recipe']['backbone_lr']:g}"
    assert f"| recipe | recommend_recipe: backbone_lr {direct_rate} x" in text
    assert recipe_row["robustness"] is None  # not tuned on the lr grid: no robustness over it


def test_the_overview_shows_the_recipe_column_only_with_a_recipe_arm():
    from benchmarks.study_report import _overview_lines

    pair = {"model": MODEL, "target": TARGET, "budget": "short", "atypical": True, "one_device": True,
            "final": {"standard": {0: 90.0, 1: 80.0, 2: 85.0}},
            "devices": {"standard": dict.fromkeys(range(3), "cpu")}, "worst": {}}  # fmt: skip
    assert "recipe - standard" not in "\n".join(_overview_lines([pair]))  # version 2's overview as it was
    with_recipe = {**pair, "final": {**pair["final"], "recipe": {0: 89.0, 1: 78.0, 2: 86.0}},
                   "devices": {**pair["devices"], "recipe": dict.fromkeys(range(3), "cpu")}}  # fmt: skip
    lines = _overview_lines([with_recipe])
    header = next(line for line in lines if line.startswith("| model"))
    row = next(line for line in lines if line.startswith(f"| {MODEL}"))
    assert header.split(" | ")[-2] == "recipe - standard"
    assert row.split(" | ")[-2].startswith("-0.67 [")  # (-1 - 2 + 1) / 3


def test_the_recipe_arm_s_regret_is_pooled_across_pairs():
    from benchmarks.pooled import POOLED_ARMS, pool

    assert "recipe" in POOLED_ARMS

    def pair(target, regret):
        return {"model": MODEL, "target": target, "budget": "short", "atypical": True, "one_device": True,
                "final": {"standard": {0: 90.0, 1: 80.0}, "recipe": {0: 90.0 + regret, 1: 80.0 + regret}},
                "devices": {"standard": {0: "cpu", 1: "cpu"}, "recipe": {0: "cpu", 1: "cpu"}}}  # fmt: skip

    pairs = [pair("digits", -1.0), pair("textures", -3.0), pair("spectrograms", 1.0)]
    (recipe,) = [row for row in pool(pairs) if row.arm == "recipe"]
    assert len(recipe.pairs) == 3 and recipe.estimate.mean == pytest.approx(-1.0)
    assert not [row for row in pool(pairs[:2]) if row.arm == "recipe"]  # under 3 pairs: not pooled


def test_the_recipe_arm_has_no_robustness_over_the_lr_grid():
    """Its tuning runs train at the pass's rate, which may be on the shared lr grid: not a grid's worst case."""
    from benchmarks.study_report import lr_robustness

    run = {"arm": "recipe", "budget": "short", "phase": "tune", "config": study.config_key("recipe", {}),
           "recipe": {"backbone_lr": 3e-3}, "val_acc": [0.9], "recommended": {"backbone_lr": 3e-3}}  # fmt: skip
    assert lr_robustness([run], "recipe", "short") is None
    assert lr_robustness([{**run, "recommended": None}], "recipe", "short") == (0.9, 0.9)  # a tuned arm's would count
