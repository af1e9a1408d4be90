"""Smoke tests of the benchmark harness and the offline demo at micro sizes (seconds each)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.data import PHOTO_SPLIT_COLOURS, as_tensors, load_target, photo_crop_box
from benchmarks.demo import DemoSettings, run_demo
from benchmarks.models import PretrainConfig, load_model, pretrain_source_model
from benchmarks.study_report import first_epoch_reaching
from benchmarks.training import batches, calibration_data, epoch_order, find_head

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", ["digits", "textures", "spectrograms", "photos", "shapes_ctrl"])
def test_targets_are_deterministic_datasets(name):
    first = load_target(name, 16, max_train=40, max_test=30)
    second = load_target(name, 16, max_train=40, max_test=30)
    x, y = as_tensors(first["train"])
    assert x.shape == (40, 3, 16, 16) and x.dtype == torch.float32
    assert len(first["test"]) == 30
    assert x.min() >= -1.0 - 1e-5 and x.max() <= 1.0 + 1e-5
    assert first["train"].features["labels"].num_classes == 10
    assert torch.equal(x, as_tensors(second["train"])[0]) and torch.equal(y, as_tensors(second["train"])[1])


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), height=st.integers(240, 1000), width=st.integers(240, 1000))
def test_photo_crops_of_different_splits_share_no_pixel(seed, height, width):
    rng = np.random.default_rng(seed)
    boxes = [[photo_crop_box(height, width, colour, rng) for _ in range(30)] for colour in (0, 1, 2)]
    covered = [np.zeros((height, width), dtype=bool) for _ in boxes]
    for mask, crops in zip(covered, boxes):
        for top, left, side in crops:
            assert 0 <= top and top + side <= height and 0 <= left and left + side <= width and side >= 40
            mask[top : top + side, left : left + side] = True
    assert not (covered[0] & covered[1]).any() and not (covered[0] & covered[2]).any()
    assert not (covered[1] & covered[2]).any()


def test_photos_has_its_own_validation_split():
    data = load_target("photos", 16, max_train=50, max_test=20)
    assert set(data) == {"train", "validation", "test"} and len(data["validation"]) == 20
    assert sorted(PHOTO_SPLIT_COLOURS.values()) == [0, 1, 2]


@pytest.mark.parametrize("name, blocks", [("efficientnet_lite0", 16), ("efficientnet_lite1", 21)])
def test_efficientnet_lite_loads_imagenet_weights_and_a_seeded_head(name, blocks):
    from benchmarks.models import get_spec, load_efficientnet_lite
    from hf_plasticity import get_layout

    model = load_model(name, 10, seed=3)
    again = load_model(name, 10, seed=3)
    layout = get_layout(model)
    assert layout.head == ["_fc"] and len(layout.blocks) == blocks
    assert model._fc.out_features == 10 and torch.equal(model._fc.weight, again._fc.weight)
    stem = model._conv_stem.weight
    assert stem.std() > 0.05 and not torch.equal(stem, type(model).from_name(name.replace("_", "-"))._conv_stem.weight)
    assert model._bn0.momentum == get_spec(name).bn_momentum
    with pytest.raises(ValueError, match="lite0"):
        load_efficientnet_lite("lite9", 10)


def test_efficientnet_lite_is_channels_last_and_predicts_what_the_contiguous_model_predicts():
    from benchmarks.models import load_efficientnet_lite

    model = load_model("efficientnet_lite0", 10, seed=3).eval()
    contiguous = load_efficientnet_lite("lite0", 10, seed=3, bn_momentum=0.1).eval()
    convolutions = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convolutions and all(w.is_contiguous(memory_format=torch.channels_last) for w in convolutions)
    assert not contiguous._conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
    images = torch.randn(4, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(images), contiguous(images), atol=1e-4, rtol=1e-4)


def test_efficientnet_lite_has_units_for_redo():
    """Its convolutions are a package's `Conv2d` subclass and its blocks depthwise-separable: each block's depthwise
    channels are units (read by the project conv), as are the last project conv's and the conv head's."""
    from hf_plasticity import ReDoConfig, prepare_pretrained, unit_groups

    model = load_model("efficientnet_lite0", 10, seed=3)
    pairs = [(g.producer, g.consumer) for g in unit_groups(model)]
    assert sorted(pairs) == sorted([
        *[(f"_blocks.{i}._depthwise_conv", f"_blocks.{i}._project_conv") for i in range(16)],
        ("_blocks.0._project_conv", "_blocks.1._expand_conv"),  # block 1 has no skip connection (stride 2)
        ("_blocks.15._project_conv", "_conv_head"),
        ("_conv_head", "_fc"),
    ])  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    data = [{"pixel_values": torch.randn(8, 3, 48, 48, generator=generator), "labels": torch.arange(8) % 10}]
    report = prepare_pretrained(model, ReDoConfig(tau=0.5), data=data, diagnostics=False)
    written = {t.name: t.reinitialized for t in report.tensors}
    assert sum(n for name, n in written.items() if name.endswith("_depthwise_conv.weight")) > 0


def test_memory_format_benchmark_prints_both_formats_and_their_ratio(capsys):
    from benchmarks import memory_format

    threads = torch.get_num_threads()  # the command sets it for the process: keep the suite's
    memory_format.main(["--model", "resnet_tiny", "--rounds", "2", "--steps", "1", "--batch-size", "2",
                        "--threads", str(threads)])  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"resnet_tiny, 32 px, batch 2, {threads} thread(s):"
    assert [line.split(":")[0].strip() for line in lines[1:]] == [
        "contiguous",
        "channels_last",
        "channels_last / contiguous",
    ]
    assert float(lines[-1].split(": ")[1]) > 0
    with pytest.raises(ValueError, match="at least 2"):
        memory_format.step_seconds(torch.nn.Conv2d(3, 1, 1), image_size=4, rounds=1)


def test_unknown_target_is_named():
    with pytest.raises(ValueError, match="digits"):
        load_target("mnist", 16)


def test_first_epoch_reaching():
    assert first_epoch_reaching([0.1, 0.5, 0.9], 0.5) == 2
    assert first_epoch_reaching([0.1, 0.2], 0.5) is None
    assert first_epoch_reaching([0.3, 0.7], 0.7 + 1e-10) == 2  # a tie within the tolerance counts


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 70), batch_size=st.integers(1, 32), seed=st.integers(0, 1000), epoch=st.integers(-1, 20))
def test_the_dataloader_batches_are_the_hand_sliced_order_and_draw_nothing_from_torch(n, batch_size, seed, epoch):
    images, labels = torch.randn(n, 3, 2, 2), torch.arange(n)
    order = epoch_order(n, seed, epoch)
    torch.manual_seed(7)
    got = list(batches((images, labels), batch_size, order))
    after = torch.rand(3)  # the global generator seeds the head, the restore and dropout: untouched by the loader
    torch.manual_seed(7)
    assert torch.equal(after, torch.rand(3))
    expected = [order[first : first + batch_size] for first in range(0, n, batch_size)]
    assert len(got) == len(expected)
    for (batch, batch_labels), idx in zip(got, expected):
        assert torch.equal(batch, images[idx]) and torch.equal(batch_labels, labels[idx])
    in_order = [batch_labels for _, batch_labels in batches((images, labels), batch_size)]
    assert torch.equal(torch.cat(in_order), labels)
    calibration = calibration_data((images, labels), 2, batch_size, seed)  # the first batches of the order of epoch -1
    first = epoch_order(n, seed, -1)[: 2 * batch_size]
    assert torch.equal(torch.cat([b["labels"] for b in calibration]), first) and len(calibration) <= 2


def test_demo_tiny_writes_table_json_and_plot(tmp_path):
    result = run_demo(DemoSettings.tiny(str(tmp_path)), log=None)
    table = (tmp_path / "demo_table.md").read_text()
    assert "regret vs best of sweep" in table and "recipe (no sweep)" in table and "best of the sweep" in table
    assert (tmp_path / "learning_curves.png").read_bytes()[:8] == PNG_MAGIC
    saved = json.loads((tmp_path / "demo_results.json").read_text())
    assert [arm["label"] for arm in saved["arms"]] == ["default", "best of the sweep", "recipe (no sweep)"]
    assert all(len(arm["test_acc"]) == 2 for arm in saved["arms"]) and len(saved["sweep"]) == 3
    default, best, recipe = result["arms"]
    # the best of the sweep is the run with the best final validation accuracy, and its regret is 0 by definition
    assert best["val_acc"][-1] == max(run["val_acc"][-1] for run in result["sweep"]) and best["regret"] == 0
    assert default["backbone_lr"] == 1e-4 and default["runs"] == 1 and best["runs"] == 3
    assert default["regret"] == pytest.approx(100 * (best["test_acc"][-1] - default["test_acc"][-1]))
    # the recipe's rates are the library's, read off the diagnostic pass (not given by the demo)
    rule = result["recipe"]
    assert (recipe["backbone_lr"], recipe["head_lr"]) == (rule["backbone_lr"], rule["head_lr"])
    assert rule["seconds"] > 0 and rule["samples"] > 0 and rule["budget"] == "short"


def test_demo_ties_on_validation_favour_neither_rate():
    from benchmarks.demo import best_of_sweep

    runs = [{"backbone_lr": lr, "head_lr": 1e-3, "val_acc": [0.9], "test_acc": [0.5]} for lr in (1e-4, 1e-3, 3e-3)]
    picked = best_of_sweep(runs)["backbone_lr"]
    assert best_of_sweep(list(reversed(runs)))["backbone_lr"] == picked  # not the first or last listed
    runs[2]["val_acc"] = [0.95]
    assert best_of_sweep(runs)["backbone_lr"] == 3e-3


def test_tiny_transformers_model_is_pretrained_once_and_gets_a_new_head(tmp_path):
    pretrain = PretrainConfig(epochs=1, n_train=64)
    path = pretrain_source_model("resnet_tiny", cache_dir=tmp_path, pretrain=pretrain)
    assert (path / "config.json").exists() and (path / "source_metrics.json").exists()
    metrics = json.loads((path / "source_metrics.json").read_text())
    assert metrics["cpu"] == torch.backends.cpu.get_cpu_capability()  # the kernels it ran (source_identity)
    stamp = (path / "source_metrics.json").stat().st_mtime_ns
    assert pretrain_source_model("resnet_tiny", cache_dir=tmp_path, pretrain=pretrain) == path
    assert (path / "source_metrics.json").stat().st_mtime_ns == stamp

    # One epoch on 64 images is far from pretrained: this checks the code path, so the refusal is switched off.
    a = load_model("resnet_tiny", 7, seed=0, cache_dir=tmp_path, pretrain=pretrain, allow_undertrained=True)
    b = load_model("resnet_tiny", 7, seed=0, cache_dir=tmp_path, pretrain=pretrain, allow_undertrained=True)
    c = load_model("resnet_tiny", 7, seed=1, cache_dir=tmp_path, pretrain=pretrain, allow_undertrained=True)
    head_a, head_c = find_head(a)[1], find_head(c)[1]
    assert head_a.out_features == 7
    assert torch.equal(head_a.weight, find_head(b)[1].weight)
    assert not torch.equal(head_a.weight, head_c.weight)
    body = "resnet.embedder.embedder.convolution.weight"
    assert torch.equal(a.state_dict()[body], c.state_dict()[body])


def test_cli_commands_run_at_micro_size(tmp_path, capsys):
    from benchmarks.__main__ import main

    assert main(["demo", "--tiny", "--output", str(tmp_path / "demo")]) == 0
    assert (tmp_path / "demo" / "learning_curves.png").read_bytes()[:8] == PNG_MAGIC
    assert main(["report", str(tmp_path / "missing")]) == 2  # `report` is `python -m benchmarks.study_report`
    assert "No results folder" in capsys.readouterr().err
    assert main([]) == 2
    listed = capsys.readouterr().out
    assert all(f" {command} " in listed for command in ("demo", "study", "report", "pretrain", "sweep"))


@pytest.mark.slow
def test_full_demo_recipe_is_within_the_sweep_on_the_atypical_pair(tmp_path):
    result = run_demo(DemoSettings(output_dir=str(tmp_path)), log=None)
    default, best, recipe = result["arms"]
    assert recipe["regret"] <= 2.0  # the worst-pair target, on one seed
    assert result["recipe"]["cost_epochs"] < 0.1  # the diagnostic pass: a few percent of one epoch


def test_paired_differences_have_t_intervals():
    from scipy import stats

    from benchmarks.stats import mean_interval, paired_difference

    values = [0.5, 1.5, -0.2, 0.9, 1.1]
    expected = stats.t.interval(0.95, len(values) - 1, loc=sum(values) / 5, scale=stats.sem(values))
    interval = mean_interval(values)
    assert interval.low == pytest.approx(expected[0]) and interval.high == pytest.approx(expected[1])
    treatment, control = {0: 91.0, 1: 93.0, 2: 92.5, 7: 50.0}, {0: 90.0, 1: 92.0, 2: 91.0, 3: 10.0}
    paired = paired_difference(treatment, control)  # seeds 0, 1, 2 only
    assert paired.n == 3 and paired.mean == pytest.approx((1 + 1 + 1.5) / 3) and paired.excludes_zero
    with pytest.raises(ValueError, match="share no seed"):
        paired_difference({1: 1.0}, {2: 1.0})


@settings(max_examples=40, deadline=None)
@given(diffs=st.lists(st.floats(-50, 50, allow_nan=False).map(lambda v: round(v, 2)), min_size=1, max_size=12))
def test_a_paired_difference_is_the_interval_of_the_seed_by_seed_differences(diffs):
    from benchmarks.stats import mean_interval, paired_difference

    control = {seed: 80.0 for seed in range(len(diffs))}
    treatment = {seed: 80.0 + d for seed, d in enumerate(diffs)}
    paired, direct = paired_difference(treatment, control), mean_interval([treatment[s] - 80.0 for s in control])
    assert paired.n == direct.n == len(diffs) and paired.mean == direct.mean
    assert paired.low == pytest.approx(direct.low, abs=1e-9) and paired.high == pytest.approx(direct.high, abs=1e-9)
    assert paired.low <= paired.mean <= paired.high
    if len(set(treatment.values())) == 1:  # equal differences (or one seed): no spread, an interval of zero width
        assert paired.low == paired.high == paired.mean


# ------------------------------------------------------------------------------------------- version 2: the study
def test_grids_that_end_on_their_best_value_are_extended():
    from benchmarks.study import StudyArm, choose, config_key, edge_extensions

    arm = StudyArm("standard", grid={"backbone_lr": (1e-4, 1e-3), "head_lr": (1e-3,)})
    val = {1e-4: 0.5, 1e-3: 0.7}
    records = [
        {"config": config_key("standard", {"backbone_lr": lr, "head_lr": 1e-3}), "budget": "short", "phase": "tune",
         "val_acc": [0.1, acc], "knobs": {"backbone_lr": lr, "head_lr": 1e-3}}
        for lr, acc in val.items()
    ]  # fmt: skip
    best = choose(records, arm, "short", {})
    assert best == {"backbone_lr": 1e-3, "head_lr": 1e-3}
    assert edge_extensions(arm, best, {}) == {"backbone_lr": (3e-3,)}  # the best is the top edge: one step up
    assert choose(records, arm, "short", {"backbone_lr": (3e-3,)}) is None  # its runs are missing
    interior = edge_extensions(arm, {"backbone_lr": 1e-3, "head_lr": 1e-3}, {"backbone_lr": (3e-3, 1e-2)})
    assert interior is None  # the extension limit


def test_dash_shrink_floor_is_extended_toward_its_bounds_and_other_knobs_are_not():
    from benchmarks.study import ARMS, StudyArm, edge_extensions

    dash = ARMS["dash"]
    assert dash.grid["lambda_min"] == (0.3, 0.6, 0.9)
    assert edge_extensions(dash, {"backbone_lr": 1e-3, "lambda_min": 0.9}, {}) == {"lambda_min": (0.95,)}
    assert edge_extensions(dash, {"backbone_lr": 1e-3, "lambda_min": 0.95}, {"lambda_min": (0.95,)}) == {
        "lambda_min": (0.95, 0.975)  # half-way to 1 (no shrink) each time, never 1 itself
    }
    assert edge_extensions(dash, {"backbone_lr": 1e-3, "lambda_min": 0.3}, {}) == {"lambda_min": (0.15,)}
    assert edge_extensions(dash, {"backbone_lr": 3e-3, "lambda_min": 0.9}, {}) == {
        "backbone_lr": (9e-3,),
        "lambda_min": (0.95,),
    }
    assert edge_extensions(dash, {"backbone_lr": 1e-3, "lambda_min": 0.6}, {}) is None
    decay = StudyArm("layer_decay", grid={"backbone_lr": (1e-3, 3e-3), "layer_decay": (0.65, 0.8)})
    assert edge_extensions(decay, {"backbone_lr": 2e-3, "layer_decay": 0.8}, {}) is None  # a decay is not extended


def test_a_micro_study_tunes_on_validation_confirms_on_fresh_seeds_and_resumes(tmp_path, monkeypatch):
    from benchmarks import study
    from benchmarks.study_report import markdown

    monkeypatch.setattr(study, "ARMS", {
        "standard": study.StudyArm("standard", grid={"backbone_lr": (1e-3,)}),
        "reinit_top": study.StudyArm("reinit_top", "reinit_layers", {}, grid={"backbone_lr": (1e-3,),
                                                                               "reinit_lr": (None, 3e-3)}),
        "boost_top": study.StudyArm("boost_top", grid={"backbone_lr": (1e-3,), "boosted_blocks": ("default",),
                                                       "reinit_lr": (3e-3,)}),
    })  # fmt: skip
    monkeypatch.setattr(study, "BUDGETS", {"short": 1})
    settings = study.StudySettings.for_protocol(  # version 2's: no tie seeds (tests/test_study_v3.py has version 3)
        "v2", models=["efficientnet_lite0"], targets=["digits"], arms=["reinit_top", "boost_top"], budgets=["short"],
        results=str(tmp_path), tuning_seeds=(100,), confirmation_seeds=(0, 1), max_train=60, max_test=30,
        image_size=32, calibration_batches=1, jobs=2,
    )  # fmt: skip
    counts = study.run_study(settings, progress=False)  # two worker processes; the parent writes the results
    records = study.load_results(tmp_path / "efficientnet_lite0__digits.jsonl")
    tuned = [r for r in records if r["phase"] == "tune"]
    confirmed = [r for r in records if r["phase"] == "confirm"]
    assert counts["done"] == len(records) == 4 + 6  # 4 tuning configurations, 3 arms x 2 confirmation seeds
    assert {r["seed"] for r in tuned} == {100} and {r["seed"] for r in confirmed} == {0, 1}
    assert all(r["test_acc"] is None for r in tuned) and all(len(r["test_acc"]) == 1 for r in confirmed)
    assert all(r["n"]["val"] > 0 and len(r["val_acc"]) == 1 for r in records)
    assert {r["device"] for r in records} == {"cpu"}
    boosted = next(r for r in records if r["arm"] == "boost_top")
    assert boosted["recipe"]["boosted_blocks"] == 2 and boosted["reinitialized"] == 0  # high lr, no re-draw
    assert next(r for r in records if r["arm"] == "reinit_top")["reinitialized"] > 0
    assert study.run_study(settings, progress=False) == {"done": 0, "skipped": 10}  # resumable
    text = markdown(tmp_path)
    assert "### efficientnet_lite0 on digits, short budget (1 epochs)" in text
    assert "| efficientnet_lite0 | digits (atypical) | short |" in text.split("### efficientnet_lite0")[0]
    assert "| reinit_top |" in text and "| boost_top |" in text and "| standard |" in text
    from benchmarks.study_report import plot_differences

    figure = plot_differences(tmp_path, tmp_path / "differences.png")
    assert figure is not None and figure.read_bytes()[:8] == PNG_MAGIC
    tuning_only = tmp_path / "tuning"
    tuning_only.mkdir()
    (tuning_only / "efficientnet_lite0__digits.jsonl").write_text("".join(json.dumps(r) + "\n" for r in tuned))
    text = markdown(tuning_only)
    assert "short budget (1 epochs): tuning, not confirmed" in text and "test" not in text.split("|---|")[0]
    assert "| reinit_top | backbone_lr=0.001" in text
    assert plot_differences(tuning_only, tuning_only / "differences.png") is None


def test_a_strategy_knob_in_the_grid_reaches_the_strategy_config(monkeypatch):
    from benchmarks import study

    monkeypatch.setattr(study, "BUDGETS", {"short": 1})
    settings = study.StudySettings(
        models=["efficientnet_lite0"], targets=["digits"], max_train=40, max_test=20, image_size=32,
        calibration_batches=1,
    )  # fmt: skip

    def run(arm: study.StudyArm, knobs: dict) -> dict:
        return study.run_one(study.make_task(settings, "efficientnet_lite0", "digits", arm, knobs, "short",
                                         "tune", 100))  # fmt: skip

    dash = study.ARMS["dash"]
    assert "lambda_min" in dash.grid
    assert study.split_knobs({"backbone_lr": 1e-3, "lambda_min": 0.5}) == ({"backbone_lr": 1e-3}, {"lambda_min": 0.5})
    unchanged = run(dash, {"backbone_lr": 1e-3, "lambda_min": 1.0})  # lambda_min=1 shrinks nothing
    shrunk = run(dash, {"backbone_lr": 1e-3, "lambda_min": 0.3})
    assert unchanged["reinitialized"] == 0 < shrunk["reinitialized"]
    assert "lambda_min" not in unchanged["recipe"]
    with pytest.raises(ValueError, match="restores nothing"):
        run(study.ARMS["standard"], {"backbone_lr": 1e-3, "lambda_min": 0.5})


def test_report_marks_a_choice_on_the_edge_of_the_tried_grid():
    from benchmarks.study_report import _knobs, edge_knobs

    def run(lr, head_lr):
        return {
            "arm": "standard",
            "budget": "short",
            "phase": "tune",
            "knobs": {"backbone_lr": lr, "head_lr": head_lr},
        }

    records = [run(lr, head) for lr in (1e-3, 3e-3, 9e-3) for head in (1e-3, 3e-3)]
    chosen = {"backbone_lr": 3e-3, "head_lr": 1e-3}
    assert edge_knobs(records, "standard", "short", chosen) == {"head_lr"}
    assert _knobs(chosen, {"head_lr"}) == "backbone_lr=0.003, head_lr=0.001 (edge)"
    assert edge_knobs(records, "standard", "long", chosen) == set()


def test_report_shows_the_configuration_the_confirmation_ran_even_on_a_validation_tie():
    from benchmarks.study_report import summarize

    def run(config, lr, phase, seed, val, test=None):
        return {"arm": "standard", "budget": "short", "phase": phase, "config": config, "knobs": {"backbone_lr": lr},
                "seed": seed, "val_acc": [val], "test_acc": test, "recipe": {"backbone_lr": lr},
                "restore_seconds": 0.0, "epoch_seconds": 1.0}  # fmt: skip

    records = [run("a", 1e-3, "tune", 100, 0.9), run("b", 3e-3, "tune", 100, 0.9)]  # a tie on validation
    records += [run("b", 3e-3, "confirm", seed, 0.9, [0.8]) for seed in (0, 1)]
    (row,) = summarize(records, "short")
    assert row["knobs"] == {"backbone_lr": 3e-3} and row["val"] == 90.0 and row["seeds"] == 2
    assert row["restore_epochs"] == 0.0
    for r in records:
        r["device"] = "cuda"  # a GPU run's clock does not measure the restore's cost
    assert summarize(records, "short")[0]["restore_epochs"] is None


def test_overview_pairs_the_restore_and_the_control_with_standard_by_seed(tmp_path):
    from benchmarks.study_report import overview

    def run(arm, seed, test, lr=1e-3, phase="confirm"):
        return {"arm": arm, "budget": "short", "phase": phase, "config": arm, "knobs": {"backbone_lr": lr},
                "seed": seed, "val_acc": [0.5], "test_acc": [test], "recipe": {"backbone_lr": lr},
                "restore_seconds": 0.0, "epoch_seconds": 1.0}  # fmt: skip

    tests = {"standard": (0.50, 0.60, 0.70), "reinit_top": (0.60, 0.80, 0.70), "boost_top": (0.50, 0.70)}
    records = [run(arm, seed, acc) for arm, accs in tests.items() for seed, acc in enumerate(accs)]
    (tmp_path / "efficientnet_lite0__photos.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert overview(tmp_path / "missing") == []
    (row,) = [line for line in overview(tmp_path) if line.startswith("| efficientnet_lite0")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "photos (control)" and cells[3] == "60.0 (3)"
    assert cells[4].startswith("+10.00 [")  # reinit_top - standard: (+10, +20, 0) / 3, seed by seed
    assert cells[5].startswith("+5.00 [") and cells[5].endswith("(2 seeds)")  # boost_top shares seeds 0 and 1
    assert cells[6].startswith("+10.00 [") and cells[7] == "–"  # restore - control on seeds 0, 1; no auto arm


def test_tally_counts_pairs_by_where_the_paired_interval_lies(tmp_path):
    from benchmarks.study_report import tally

    def run(arm, seed, test, phase="confirm", lr=1e-3, val=0.5):
        return {"arm": arm, "budget": "short", "phase": phase, "config": f"{arm}-{lr}", "knobs": {"backbone_lr": lr},
                "seed": seed, "val_acc": [val], "test_acc": [test], "recipe": {"backbone_lr": lr},
                "restore_seconds": 0.0, "epoch_seconds": 1.0}  # fmt: skip

    def write(name, tests, worst):
        records = [run(arm, seed, acc) for arm, accs in tests.items() for seed, acc in enumerate(accs)]
        records += [run(arm, 100, val, "tune", lr, val) for arm, val in worst.items() for lr in (3e-4, 1e-3, 3e-3)]
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))

    base = (0.50, 0.60, 0.70)
    write(
        "resnet_tiny__digits",
        {"standard": base, "reinit_top": (0.60, 0.71, 0.80)},
        {"standard": 0.5, "reinit_top": 0.6},
    )
    write(
        "convnext_tiny__textures",
        {"standard": base, "reinit_top": (0.40, 0.51, 0.60)},
        {"standard": 0.5, "reinit_top": 0.52},
    )
    write(
        "vit_tiny__digits", {"standard": base, "reinit_top": (0.50, 0.70, 0.60)}, {"standard": 0.5, "reinit_top": 0.6}
    )
    write("resnet_tiny__textures", {"standard": base, "reinit_top": (0.9, 0.9)}, {})  # still confirming: left out
    write("vit_tiny__shapes_ctrl", {"standard": base, "reinit_top": (0.40, 0.50, 0.60)}, {})
    assert tally(tmp_path / "missing") == []
    lines = tally(tmp_path)
    control = lines[lines.index("#### short budget, in-domain controls") :]
    atypical = lines[lines.index("#### short budget, atypical targets") : lines.index(control[0])]
    (row,) = [line for line in atypical if line.startswith("| reinit_top - standard")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "3" and cells[2] == "1: resnet_tiny digits +10.33" and cells[3] == "1"
    assert cells[4] == "1: convnext_tiny textures -9.67"
    assert any(
        line.startswith("| reinit_top - standard | 1 | 0: – | 0 | 1: vit_tiny shapes_ctrl -10.00") for line in control
    )
    (robust,) = [line for line in lines if line.startswith("Worst validation")]
    assert "reinit_top on CNN pairs: 1 of 2" in robust and "reinit_top on ViT pairs: 1 of 1" in robust


def test_the_report_writes_its_tables_between_the_doc_markers_and_nowhere_else(tmp_path):
    from benchmarks.study_report import DOC_MARKERS, write_into_doc

    doc = tmp_path / "BENCHMARKS.md"
    before, after = "# Benchmarks\n\nProse that stays.\n", "\n### Next section\n\nMore prose.\n"
    doc.write_text(f"{before}{DOC_MARKERS[0]}\nold tables\n{DOC_MARKERS[1]}{after}")
    write_into_doc("### Overview\n\n| a |\n|---|\n", doc)
    text = doc.read_text()
    assert text == f"{before}{DOC_MARKERS[0]}\n#### Overview\n\n| a |\n|---|\n{DOC_MARKERS[1]}{after}"
    write_into_doc("### Overview\n\n| b |\n", doc)  # again: replaced, not appended
    assert "| a |" not in doc.read_text() and doc.read_text().count("#### Overview") == 1

    doc.write_text(f"{DOC_MARKERS[1]}\n{DOC_MARKERS[0]}\n")  # out of order
    with pytest.raises(ValueError, match="needs the lines"):
        write_into_doc("### Overview\n", doc)
    assert doc.read_text() == f"{DOC_MARKERS[1]}\n{DOC_MARKERS[0]}\n"


def _run_with_an_unwritable_record(task: dict) -> dict:
    """A study run for the test below (module level: a worker process finds it by name): leaves a marker and returns
    a record that cannot be written as JSON (the parent fails while writing the first result)."""
    import time

    (Path(task["settings"]["results"]) / f"ran-{task['knobs']['backbone_lr']}").touch()
    time.sleep(0.5)
    return {"not JSON": {task["seed"]}}


def test_a_failure_stops_the_study_instead_of_running_the_rest(tmp_path, monkeypatch):
    from benchmarks import study

    lrs = tuple(float(i) for i in range(1, 17))
    monkeypatch.setattr(study, "ARMS", {"standard": study.StudyArm("standard", grid={"backbone_lr": lrs})})
    monkeypatch.setattr(study, "run_one", _run_with_an_unwritable_record)
    settings = study.StudySettings(models=["resnet_tiny"], targets=["digits"], arms=["standard"], budgets=["short"],
                                   results=str(tmp_path), tuning_seeds=(100,), jobs=2)  # fmt: skip
    with pytest.raises(TypeError, match="JSON serializable"):
        study.run_study(settings, progress=False)
    ran = list(tmp_path.glob("ran-*"))
    assert 1 <= len(ran) < len(lrs) // 2  # the runs not started yet were cancelled
    assert study.load_results(tmp_path / "resnet_tiny__digits.jsonl") == []


def test_the_benchmark_doc_holds_the_tables_of_the_committed_results():
    from benchmarks.study_report import doc_tables, markdown, tables_in_doc

    root = Path(__file__).resolve().parents[1]
    expected = doc_tables(markdown(root / "benchmarks/results/v2"))
    assert tables_in_doc(root / "docs/BENCHMARKS.md") == expected, (
        "docs/BENCHMARKS.md's tables differ from the committed results': run "
        "`python -m benchmarks.study_report --doc docs/BENCHMARKS.md` and re-read the prose against them"
    )


def test_a_re_confirmed_arm_counts_only_its_last_configuration():
    from benchmarks.study_report import confirmation_runs

    def run(arm, config, seed, acc):
        return {"arm": arm, "config": config, "seed": seed, "budget": "short", "phase": "confirm", "test_acc": [acc]}

    records = [run("standard", "s", 0, 0.9), run("standard", "s", 1, 0.9), run("dash", "old", 0, 0.5)]
    records += [run("dash", "old", 1, 0.5), run("dash", "new", 0, 0.8)]  # a new choice, confirmed on one seed so far
    runs = confirmation_runs(records, "short")
    assert {seed: r["config"] for seed, r in runs["dash"].items()} == {0: "new"}  # seed 1 of "old" no longer counts
    assert set(runs["standard"]) == {0, 1}


def test_the_committed_records_were_made_on_the_splits_the_code_makes():
    """The study's records do not store their split: a change of split (another algorithm, e.g. scikit-learn's
    `train_test_split`, draws other examples and other per-class counts) would mix old and new data in a resumed
    study. The split sizes of every committed digits run are the ones the code makes now."""
    from benchmarks.recipe import stratified_split
    from benchmarks.study import StudySettings, folder_protocol, load_results

    root = Path(__file__).resolve().parents[1] / "benchmarks/results/v2"
    assert (
        folder_protocol(root)["val_fraction"] == StudySettings.for_protocol("v2", models=[], targets=[]).val_fraction
    )
    data = load_target("digits", 8)
    keep, held = stratified_split(as_tensors(data["train"])[1], folder_protocol(root)["val_fraction"], seed=0)
    expected = {"train": len(keep), "val": len(held), "test": len(data["test"])}
    for path in sorted(root.glob("*__digits.jsonl")):
        assert {json.dumps(r["n"], sort_keys=True) for r in load_results(path)} == {
            json.dumps(expected, sort_keys=True)
        }


def test_the_benchmark_brings_its_own_requirements_and_the_package_none_of_them():
    """`pip install hf-plasticity` pulls none of the benchmark's requirements; `make setup` installs them (so `make
    test` and `make demo` work on a fresh clone), and they cover every third-party module benchmarks/ imports."""
    import ast
    import re
    from importlib.metadata import packages_distributions

    import tomllib

    root = Path(__file__).resolve().parents[1]
    requirements = {
        re.split(r"[<>=\s#]", line, maxsplit=1)[0].lower()
        for line in (root / "benchmarks/requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    runtime = {re.split(r"[<>=\[\s]", dep, maxsplit=1)[0].lower() for dep in project["dependencies"]}
    assert "bench" not in project["optional-dependencies"] and not requirements & runtime
    assert "torch" not in requirements  # the Makefile installs torch==2.13.0 first; nothing may pull another
    setup = (root / "Makefile").read_text().split("\nsetup:")[1].split("\n\n")[0]
    assert '"torch==2.13.0"' in setup.splitlines()[1] and "-r benchmarks/requirements.txt" in setup

    imported = set()
    for path in (root / "benchmarks").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    distributions = packages_distributions()
    third_party = {module for module in imported if module in distributions and module not in {"hf_plasticity"}}
    provided = requirements | runtime | {"numpy", "filelock", "tqdm"}  # numpy, tqdm: transformers' own requirements
    missing = {m for m in third_party if not {d.lower() for d in distributions[m]} & provided}
    assert not missing, f"benchmarks/ imports {missing}: add them to benchmarks/requirements.txt"
