"""What the version-3 study fixes before a pair's runs (benchmarks/held_out.py): each arm's best fixed default and the
recipe's rule, fitted without the pair; the study's ``<arm>_fixed`` and ``recipe_heldout`` arms that run them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks import held_out, study

ROOT = Path(__file__).resolve().parents[1]
A, B, C = ({"backbone_lr": lr, "head_lr": 1e-3} for lr in (1e-4, 1e-3, 3e-3))


def _tables(values: dict[str, tuple[float, float, float]], arm: str = "standard") -> dict:
    """Synthetic tuning tables: pair -> (val % at A, at B, at C) of ``arm`` (standard's best is over its own)."""
    tables = {}
    for name, (a, b, c) in values.items():
        configs = {json.dumps(k, sort_keys=True): v for k, v in zip((A, B, C), (a, b, c))}
        tables[(name, "digits", "short")] = {"standard": configs, arm: configs}
    return tables


def test_the_committed_choices_are_what_the_v2_tuning_records_give():
    committed = (ROOT / "benchmarks/results/v3" / held_out.HELD_OUT_FILE).read_text()
    assert committed == held_out.render(held_out.held_out_choices("benchmarks/results/v2"))


def test_the_fixed_default_minimizes_the_mean_regret_then_the_worst():
    # regrets (best - value): A: 0, 10, 0 -> mean 3.33; B: 2, 0, 2 -> mean 1.33; C: 30, 30, 30
    tables = _tables({"m1": (90, 88, 60), "m2": (80, 90, 60), "m3": (70, 68, 40)})
    assert held_out.best_fixed("standard", list(tables), tables) == B
    # equal means (A: 0, 4, 0; B: 2, 0, 2 -> 4/3 both): the smaller worst pair wins
    tables = _tables({"m1": (90, 88, 60), "m2": (86, 90, 60), "m3": (70, 68, 40)})
    assert held_out.best_fixed("standard", list(tables), tables) == B


def test_a_tie_goes_to_the_configuration_hash_whatever_the_grid_order():
    tables = _tables({"m1": (90, 90, 60), "m2": (80, 80, 60), "m3": (70, 70, 40)})  # A and B tie exactly
    # the rule is the smaller hash of the configuration (its JSON's repr), not the grid's order
    expected = min((A, B), key=lambda k: hashlib.sha1(repr(json.dumps(k, sort_keys=True)).encode()).hexdigest())
    assert held_out.best_fixed("standard", list(tables), tables) == expected
    reordered = {key: {arm: dict(reversed(v.items())) for arm, v in arms.items()} for key, arms in tables.items()}
    assert held_out.best_fixed("standard", list(reordered), reordered) == expected


def test_too_few_training_pairs_give_no_fixed_default():
    tables = _tables({"m1": (90, 88, 60), "m2": (80, 90, 60)})
    assert held_out.MIN_TRAINING_PAIRS == 3 and held_out.best_fixed("standard", list(tables), tables) is None


@settings(max_examples=30, deadline=None)
@given(values=st.tuples(*[st.floats(0, 100, allow_nan=False)] * 3))
def test_the_held_out_pair_never_informs_its_own_choices(values, tmp_path_factory):
    """Rewriting the held-out pair's tuning records changes neither its fixed default nor its rule."""
    folder = tmp_path_factory.mktemp("v2")
    pairs = {"resnet_tiny": (90, 88, 60), "convnext_tiny": (80, 90, 60), "efficientnet_lite0": (70, 68, 40),
             "efficientnet_lite1": (60, 65, 61), "vit_tiny": values}  # fmt: skip

    def write(model: str, accs: tuple[float, ...], probe_last: float) -> None:
        lines = [
            {"arm": "standard", "phase": "tune", "budget": "short", "knobs": k, "val_acc": [a / 100], "seed": s}
            for k, a in zip((A, B, C), accs)
            for s in (100, 101)
        ]
        lines.append({"arm": "auto", "phase": "tune", "budget": "short", "knobs": {}, "val_acc": [0.5], "seed": 100,
                      "details": {"block_probe_accuracy": [0.5, 0.9, probe_last]}})  # fmt: skip
        (folder / f"{model}__digits.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))

    for i, (model, accs) in enumerate(pairs.items()):
        write(model, accs, 0.5 + 0.1 * i)
    before = held_out.held_out_choices(folder)
    target = "resnet_tiny/digits/short"
    write("resnet_tiny", values, 0.9 - values[0] / 1000)  # another grid and another probe for the held-out pair
    after = held_out.held_out_choices(folder)
    assert after["fixed"]["standard"][target] == before["fixed"]["standard"][target]
    assert after["recipe_rule"][target] == before["recipe_rule"][target]


def test_the_study_has_a_fixed_arm_per_tuned_arm_and_the_held_out_recipe_in_version_3_only():
    assert {name for name in study.ARMS if name.endswith("_fixed")} == {f"{arm}_fixed" for arm in study.FIXED_BASES}
    for name in study.FIXED_ARMS:
        base = study.ARMS[name.removesuffix("_fixed")]
        arm = study.ARMS[name]
        assert arm.held_out and (arm.strategy, arm.params) == (base.strategy, base.params)
        assert name in study.V3_ARMS and name not in study.DEFAULT_ARMS
    assert study.ARMS["recipe_heldout"].recommended and "recipe_heldout" in study.V3_ARMS


def test_a_fixed_arm_runs_one_configuration_and_none_without_a_choice():
    choices = {"fixed": {"reinit_top": {"m/t/short": {"backbone_lr": 1e-3, "reinit_lr": None}}}, "recipe_rule": {}}
    arm = study.resolve_held_out(study.ARMS["reinit_top_fixed"], choices, "m", "t", "short")
    assert study._grid(arm, {}) == [{"backbone_lr": 1e-3, "reinit_lr": None}]
    assert study.edge_extensions(arm, study._grid(arm, {})[0], {}) is None  # one value: never extended
    assert study.resolve_held_out(study.ARMS["reinit_top_fixed"], choices, "m", "t", "long") is None
    assert study.resolve_held_out(study.ARMS["recipe_heldout"], choices, "m", "t", "short") is None
    assert study.resolve_held_out(study.ARMS["standard"], choices, "m", "t", "short") is study.ARMS["standard"]


def test_a_missing_choices_file_names_the_command_that_writes_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"python -m benchmarks\.held_out"):
        held_out.read_held_out(tmp_path)


@pytest.mark.parametrize("threshold, side", [(0.0, "at_or_above"), (1.5, "below")])
def test_the_study_runs_the_fixed_default_and_the_held_out_rule_from_the_folder_s_file(
    tmp_path, monkeypatch, threshold, side
):
    model, target = "efficientnet_lite0", "digits"
    rule = {"threshold": threshold, "at_or_above": [2e-4, 5e-4], "below": [4e-3, 2e-3], "vit_factor": 1 / 3}
    fixed = {"backbone_lr": 7e-4, "head_lr": 3e-3}
    choices = {"fixed": {"standard": {f"{model}/{target}/short": fixed}},
               "recipe_rule": {f"{model}/{target}/short": rule}}  # fmt: skip
    (tmp_path / held_out.HELD_OUT_FILE).write_text(json.dumps(choices))
    monkeypatch.setattr(study, "ARMS", {
        "standard": study.StudyArm("standard", grid={"backbone_lr": (1e-3,)}),
        "standard_fixed": study.ARMS["standard_fixed"],
        "recipe_heldout": study.ARMS["recipe_heldout"],
    })  # fmt: skip
    monkeypatch.setattr(study, "BUDGETS", {"short": 1})
    run = study.StudySettings(
        models=[model], targets=[target], arms=["standard_fixed", "recipe_heldout"], budgets=["short"],
        results=str(tmp_path), tuning_seeds=(100,), confirmation_seeds=(0,), max_train=60, max_test=20, image_size=32,
    )  # fmt: skip
    assert study.run_study(run, progress=False)["done"] == 3 * 2  # each arm: one tuning run, one confirmation
    records = study.load_results(tmp_path / f"{model}__{target}.jsonl")
    for r in (r for r in records if r["arm"] == "standard_fixed"):
        assert r["knobs"] == fixed and (r["recipe"]["backbone_lr"], r["recipe"]["head_lr"]) == (7e-4, 3e-3)
    expected = tuple(rule[side])  # efficientnet is a CNN: no ViT factor
    for r in (r for r in records if r["arm"] == "recipe_heldout"):
        assert (r["recipe"]["backbone_lr"], r["recipe"]["head_lr"]) == expected
        assert r["recommended"]["rule"] == rule and r["recommended"]["threshold"] == threshold
        assert 0 < r["recommended"]["last_over_peak"] <= 1  # read off this run's own pass


@pytest.mark.parametrize(
    "model, ratio, expected",
    [("resnet_tiny", 0.95, (2e-4, 5e-4)), ("resnet_tiny", 0.5, (4e-3, 2e-3)),
     ("vit_tiny", 0.95, (2e-4 / 3, 5e-4)), ("vit_tiny", 0.89, (4e-3 / 3, 2e-3))],
)  # fmt: skip
def test_a_held_out_rule_gives_the_side_of_its_threshold_and_the_vit_its_factor(model, ratio, expected):
    rule = {"threshold": 0.9, "at_or_above": [2e-4, 5e-4], "below": [4e-3, 2e-3], "vit_factor": 1 / 3}
    assert held_out.held_out_rates(rule, ratio, model) == pytest.approx(expected)


def test_another_rule_is_another_configuration_so_a_resumed_study_never_mixes_two():
    settings_ = study.StudySettings(models=[], targets=[])
    rules = [
        {"threshold": t, "at_or_above": [1e-4, 1e-3], "below": [3e-3, 1e-3], "vit_factor": 1.0} for t in (0.9, 0.95)
    ]
    arms = [study.resolve_held_out(study.ARMS["recipe_heldout"], {"fixed": {}, "recipe_rule": {"m/t/short": r}},
                                   "m", "t", "short") for r in rules]  # fmt: skip
    keys = {study.make_task(settings_, "m", "t", arm, {}, "short", "confirm", 0)["config"] for arm in arms}
    assert len(keys) == 2
    with pytest.raises(ValueError, match="resolve"):  # an arm not resolved for its pair is never run
        study.make_task(settings_, "m", "t", study.ARMS["recipe_heldout"], {}, "short", "confirm", 0)
    with pytest.raises(ValueError, match="resolve"):
        study.make_task(settings_, "m", "t", study.ARMS["standard_fixed"], {}, "short", "confirm", 0)


def test_a_new_folder_without_the_choices_is_refused_before_anything_is_written(tmp_path, capsys):
    folder = tmp_path / "new"
    with pytest.raises(SystemExit) as exit_info:
        study.main(["--models", "resnet_tiny", "--targets", "digits", "--budgets", "short", "--results", str(folder)])
    assert exit_info.value.code == 2 and not (folder / study.PROTOCOL_FILE).exists()
    assert f"--output {folder / held_out.HELD_OUT_FILE}" in capsys.readouterr().err
