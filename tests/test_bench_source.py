"""The bench's source pretraining: the recipe's parts, resume, the cache, and the refusal of under-trained models.

No real pretraining here: the refusal is tested on fake cache entries, the loop on micro sizes (seconds).
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from benchmarks.models import (
    METRICS_FILE,
    PRETRAIN_RECIPES,
    UnderTrainedSourceError,
    cache_path,
    get_spec,
    load_model,
    pretrain_source_model,
    read_source_metrics,
    require_pretrained_source,
    transformers_model_from_config,
)
from benchmarks.pretrain import (
    FLAT_EPOCHS,
    SOURCE_ACC_THRESHOLD,
    PretrainConfig,
    check_source_curve,
    train_source,
)
from benchmarks.training import augment

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fake_cache_entry(cache_dir, name: str, test_acc: list[float], with_model: bool = False):
    """A cache folder for `name`'s registered recipe that records `test_acc` as its source curve (no training)."""
    spec = get_spec(name)
    path = cache_path(spec, PRETRAIN_RECIPES[name], cache_dir)
    path.mkdir(parents=True)
    if with_model:
        torch.manual_seed(0)
        transformers_model_from_config(spec, num_labels=10).save_pretrained(path)
    n = len(test_acc)
    curve = {
        "epoch": list(range(1, n + 1)),
        "lr": [1e-3] * n,
        "train_loss": [1.0] * n,
        "train_acc": test_acc,
        "val_acc": test_acc,
        "test_acc": test_acc,
        "epoch_seconds": [1.0] * n,
    }
    metrics = {
        "model": name,
        "recipe": dataclasses.asdict(PRETRAIN_RECIPES[name]),
        "parameters": 1,
        "final_test_acc": test_acc[-1],
        "curve": curve,
        "wall_seconds": float(n),
        "threads": 1,
        "loadavg_1min": {"start": 0.0, "end": 0.0},
    }
    (path / METRICS_FILE).write_text(json.dumps(metrics))
    return path


def test_check_source_curve_needs_the_threshold_and_flat_last_epochs():
    passing = check_source_curve([0.5, 0.93, 0.935, 0.94])
    assert passing["passed"] and passing["plateau_epoch"] == 2
    rising = check_source_curve([0.80, 0.86, 0.91])  # above the threshold, but still rising
    assert rising["above_threshold"] and not rising["flat"] and not rising["passed"]
    low = check_source_curve([0.585, 0.585, 0.585])  # flat, below
    assert low["flat"] and not low["above_threshold"] and not low["passed"]
    assert not check_source_curve([0.95])["passed"]  # fewer epochs than the flatness window
    assert check_source_curve([0.9] * FLAT_EPOCHS)["threshold"] == SOURCE_ACC_THRESHOLD


def test_a_source_model_that_is_still_rising_is_refused(tmp_path):
    fake_cache_entry(tmp_path / "cache", "vit_tiny", [0.70, 0.86, 0.91])
    with pytest.raises(UnderTrainedSourceError, match=r"vit_tiny: the last 3 epochs are not flat"):
        require_pretrained_source("vit_tiny", tmp_path / "cache")


def test_augment_is_seeded_and_shapes_are_kept():
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    assert torch.equal(augment(images, torch.Generator().manual_seed(0), 0, False), images)
    a = augment(images, torch.Generator().manual_seed(1), 2, True)
    b = augment(images, torch.Generator().manual_seed(1), 2, True)
    assert a.shape == images.shape and torch.equal(a, b)
    flipped = augment(images, torch.Generator().manual_seed(0), 0, True)
    for img, out in zip(images, flipped):
        assert torch.equal(out, img) or torch.equal(out, img.flip(-1))


def test_pretrain_config_rejects_bad_values():
    with pytest.raises(ValueError, match="lr"):
        PretrainConfig(lr=0)
    with pytest.raises(ValueError, match="warmup_ratio"):
        PretrainConfig(warmup_ratio=1.5)
    with pytest.raises(ValueError, match="accepted values"):
        PretrainConfig.from_dict({"epochs": 2, "lrr": 1e-3})


def test_interrupted_pretraining_resumes_to_the_same_weights(tmp_path):
    from .models import build

    config = PretrainConfig(epochs=3, lr=1e-3, batch_size=8, n_train=24)
    torch.manual_seed(0)
    images, labels = torch.randn(24, 3, 32, 32), torch.randint(0, 3, (24,))
    torch.manual_seed(0)
    straight = build("convnext")
    expected = train_source(straight, (images, labels), config, val=(images, labels))

    class Stop(Exception):
        pass

    def stop_after_two(row):
        if row["epoch"] == 2:
            raise Stop

    torch.manual_seed(0)
    first = build("convnext")
    with pytest.raises(Stop):
        train_source(
            first, (images, labels), config, state_dir=tmp_path, val=(images, labels), on_epoch=stop_after_two
        )
    torch.manual_seed(1)  # a different init: the resume must overwrite it
    resumed = build("convnext")
    result = train_source(resumed, (images, labels), config, state_dir=tmp_path, val=(images, labels))
    assert result["sessions"] == 2 and result["curve"]["epoch"] == [1, 2, 3]
    assert result["curve"]["val_acc"] == expected["curve"]["val_acc"]
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="another recipe"):
        train_source(build("convnext"), (images, labels), PretrainConfig(epochs=4, n_train=24), state_dir=tmp_path)


def test_pretrained_source_model_saves_curve_plot_and_check(tmp_path):
    recipe = PretrainConfig(epochs=1, n_train=64, batch_size=32)
    path = pretrain_source_model("resnet_tiny", cache_dir=tmp_path, pretrain=recipe)
    metrics = read_source_metrics("resnet_tiny", tmp_path, recipe)
    assert metrics["recipe"]["epochs"] == 1 and metrics["n_train"] == 64
    assert set(metrics["curve"]) >= {"train_loss", "val_acc", "test_acc", "lr"}
    assert metrics["final_test_acc"] == metrics["curve"]["test_acc"][-1]
    assert metrics["check"]["passed"] is False  # one epoch on 64 images: far from pretrained
    assert (path / "source_curve.png").read_bytes()[:8] == PNG_MAGIC
    assert not path.with_name(path.name + ".partial").exists()
    # Another recipe is another cache entry: an under-trained checkpoint is never reused for the registered recipe.
    assert cache_path(get_spec("resnet_tiny"), PRETRAIN_RECIPES["resnet_tiny"], tmp_path) != path
    with pytest.raises(UnderTrainedSourceError, match="resnet_tiny"):
        require_pretrained_source("resnet_tiny", tmp_path, recipe)
    with pytest.raises(UnderTrainedSourceError, match=r"resnet_tiny: source test accuracy .* threshold 90%"):
        load_model("resnet_tiny", 3, cache_dir=tmp_path, pretrain=recipe)  # every harness loads through this


def test_cli_pretrain_reports_and_fails_on_an_undertrained_model(tmp_path, capsys):
    from benchmarks.__main__ import main

    fake_cache_entry(tmp_path, "resnet_tiny", [0.955, 0.96, 0.962], with_model=True)
    fake_cache_entry(tmp_path, "convnext_tiny", [0.5, 0.57, 0.585], with_model=True)
    args = ["pretrain", "--cache-dir", str(tmp_path), "--no-progress", "--output", str(tmp_path / "o")]
    assert main([*args, "--models", "resnet_tiny"]) == 0
    assert f"| resnet_tiny | 1 | {PRETRAIN_RECIPES['resnet_tiny'].epochs} |" in capsys.readouterr().out
    assert (tmp_path / "o" / "source_curves.png").read_bytes()[:8] == PNG_MAGIC
    saved = json.loads((tmp_path / "o" / "source_pretraining.json").read_text())
    assert saved["resnet_tiny"]["final_test_acc"] == 0.962
    assert main([*args, "--models", "resnet_tiny", "convnext_tiny"]) == 1
    out = capsys.readouterr().out
    assert "under-trained: convnext_tiny: source test accuracy 58.5%" in out


def test_pretrain_and_sweep_refuse_bad_input_with_one_line_and_write_nothing(tmp_path, capsys, monkeypatch):
    from benchmarks.__main__ import main

    monkeypatch.chdir(tmp_path)
    cases = {
        "--models takes the models pretrained here, not ['efficientnet_lite0']; accepted values: ['vit_tiny'": [
            "pretrain", "--models", "efficientnet_lite0"],
        "`--epochs` must be a positive integer or None, got 0": ["pretrain", "--epochs", "0"],
        "`--threads` must be a positive integer, got 0": ["pretrain", "--threads", "0"],
        "`--lrs` must be a finite number > 0, got nan": ["sweep", "--lrs", "1e-3", "nan"],  # issue 29
        "`--lrs` must be a finite number > 0, got -0.001": ["sweep", "--lrs=-1e-3"],
        "`--epochs` must be a positive integer, got 0": ["sweep", "--lrs", "1e-3", "--epochs", "0"],
        "--models takes the models pretrained here, not ['nope']": ["sweep", "--lrs", "1e-3", "--models", "nope"],
    }  # fmt: skip
    for expected, argv in cases.items():
        assert main(argv) == 2, expected
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(lines) == 1 and expected in lines[0], (expected, lines)
    assert list(tmp_path.iterdir()) == []


def test_a_sweep_refuses_a_bad_learning_rate_before_creating_its_folder(tmp_path):
    from benchmarks.sweep import sweep_learning_rates

    with pytest.raises(ValueError, match="lr must be a finite number > 0, got nan"):
        sweep_learning_rates("resnet_tiny", [1e-3, float("nan")], 1, tmp_path / "sweep")
    assert not (tmp_path / "sweep").exists()


def test_lr_sweep_scores_on_validation_and_resumes(tmp_path):
    from benchmarks.sweep import best_learning_rate, sweep_learning_rates, sweep_table

    recipe = PretrainConfig(epochs=1, n_train=64, batch_size=32)
    results = sweep_learning_rates("resnet_tiny", [1e-3, 3e-3], 1, tmp_path, pretrain=recipe)
    assert [r["lr"] for r in results] == [1e-3, 3e-3]
    assert all(r["curve"]["test_acc"] == [None] for r in results)  # the test split is never read
    assert best_learning_rate(results) in (1e-3, 3e-3)
    stamps = sorted(p.stat().st_mtime_ns for p in tmp_path.glob("*.json"))
    again = sweep_learning_rates("resnet_tiny", [1e-3, 3e-3], 1, tmp_path, pretrain=recipe)
    assert again == results and sorted(p.stat().st_mtime_ns for p in tmp_path.glob("*.json")) == stamps
    assert sum("yes" in row for row in sweep_table(results)) == 1


#: The cached source checkpoints the committed version-2 and version-3 records were trained from: a change of their
#: key pretrains the models again (hours on the CPU) and a resumed study would compare runs of two sources.
COMMITTED_SOURCES = {
    "resnet_tiny": "resnet_tiny-2febaef4d6",
    "convnext_tiny": "convnext_tiny-4baa3fc352",
    "vit_tiny": "vit_tiny-468d99d692",
}


@pytest.mark.parametrize("name", sorted(COMMITTED_SOURCES))
def test_the_source_cache_key_is_the_committed_records_and_ignores_run_time_fields(name):
    """Adding `ModelSpec.channels_last` (how a run holds its weights) once changed every small model's key; the
    memory format is not part of what pretraining trains."""
    from benchmarks.models import cache_path, get_spec, pretrain_recipe

    spec, recipe = get_spec(name), pretrain_recipe(name)
    assert cache_path(spec, recipe).name == COMMITTED_SOURCES[name]
    assert cache_path(dataclasses.replace(spec, channels_last=not spec.channels_last), recipe) == cache_path(
        spec, recipe
    )
    assert cache_path(dataclasses.replace(spec, image_size=spec.image_size + 1), recipe) != cache_path(spec, recipe)
