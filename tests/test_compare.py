"""`hf-plasticity compare` / `hf_plasticity.compare` on a tiny local ViT and a small imagefolder of generated PNGs:
end to end (CLI and Python), resume after a SIGKILL, refusals of bad input, the report against the records, the
statistics against scipy, the record store, the tie rule and the carved splits."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy import stats
from transformers import AutoModelForImageClassification, ViTImageProcessor

from hf_plasticity import compare
from hf_plasticity.cli.main import main
from hf_plasticity.comparison.report import mean_interval, paired_difference, recommended_verdict, verdict
from hf_plasticity.comparison.session import make_splits
from hf_plasticity.comparison.settings import ComparisonSettings
from hf_plasticity.comparison.store import RunStore
from hf_plasticity.comparison.tuning import TUNE_SEEDS, run_schedule

from .models import IMAGE_SIZE, pretrained

CLASSES = ("circle", "square")  # the tiny model has 3 labels: a new head is drawn per seed
COMMAND = [sys.executable, "-m", "hf_plasticity.cli.main", "compare"]
#: Two arms, two seeds, one epoch, a 1x1 grid: 2 tuning runs and 4 confirmation runs.
BUDGET = ["--arms", "standard", "restore", "--seeds", "2", "--epochs", "1", "--batch-size", "8"]
GRID = ["--backbone-lrs", "0.001", "--own-lrs", "0.01"]
API_BUDGET = dict(arms=("standard", "restore"), seeds=2, epochs=1, batch_size=8, backbone_lrs=(1e-3,), own_lrs=(1e-2,))


def tiny_vit_and_images(root: Path) -> None:
    """Writes a tiny 'pretrained' ViT with its image processor (``root/tiny-vit``) and an imagefolder of 2 classes x
    14 images (``root/images``)."""
    pretrained("vit", root / "tiny-vit")
    ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(root / "tiny-vit")
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        (root / "images" / name).mkdir(parents=True)
        for i in range(14):
            pixels = (
                np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3)) + [150 * c, 120, 200 - 150 * c] + rng.normal(0, 30, (32, 32, 3))
            )
            Image.fromarray(np.clip(pixels, 0, 255).astype("uint8")).save(root / "images" / name / f"{i}.png")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny 'pretrained' ViT with its image processor, an imagefolder of 2 classes x 14 images, and one of a
    single class."""
    root = tmp_path_factory.mktemp("compare")
    tiny_vit_and_images(root)
    (root / "one-class" / "circle").mkdir(parents=True)
    for i in range(6):
        Image.new("RGB", (32, 32), (10 * i, 0, 0)).save(root / "one-class" / "circle" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def reference(workspace, tmp_path_factory):
    """An uninterrupted comparison through the Python API: ``(summary, output folder)``."""
    output = tmp_path_factory.mktemp("reference") / "out"
    summary = compare(str(workspace / "tiny-vit"), str(workspace / "images"), output=str(output), progress=False,
                      **API_BUDGET)  # fmt: skip
    return summary, output


def env() -> dict[str, str]:
    environment = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    environment["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1]), environment.get("PYTHONPATH", "")])
    environment.pop("HF_PLASTICITY_DEBUG", None)
    return environment


def records(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "runs.jsonl").read_text().splitlines()]


def arm_numbers(summary: dict) -> dict:
    return {arm: (e["backbone_lr"], e["own_lr"], e["test_accuracy"]) for arm, e in summary["arms"].items()}


# ------------------------------------------------------------------------------------------------ end to end
def test_cli_end_to_end_report_matches_records(workspace, tmp_path, capsys, reference):
    output = tmp_path / "out"
    output.mkdir()
    (output / "notes.txt").write_text("mine")  # not the comparison's: --overwrite keeps it
    argv = ["compare", str(workspace / "tiny-vit"), "--data", str(workspace / "images"), *BUDGET, *GRID,
            "--output", str(output), "--overwrite", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert (output / "notes.txt").read_text() == "mine"
    for name in ("runs.jsonl", "settings.json", "report.md", "summary.json", "learning_curves.png", "differences.png"):
        assert (output / name).stat().st_size > 0, name
    runs = records(output)
    assert len(runs) == 6 and len({r["key"] for r in runs}) == 6
    assert all(r["test_accuracy"] is None for r in runs if r["phase"] == "tune")  # tuning never reads the test split
    confirm = {(r["arm"], r["seed"]): r for r in runs if r["phase"] == "confirm"}
    assert sorted(confirm) == [("restore", 0), ("restore", 1), ("standard", 0), ("standard", 1)]
    for seed in (0, 1):  # paired: the same head init in both arms, another one per seed
        assert confirm[("standard", seed)]["head_init"] == confirm[("restore", seed)]["head_init"]
    assert confirm[("standard", 0)]["head_init"] != confirm[("standard", 1)]["head_init"]
    assert all(len(r["val_curve"]) == 1 and r["device"] and r["versions"]["torch"] for r in runs)
    assert all(r["redrawn"] is None for r in runs if r["arm"] == "standard")
    assert all(r["redrawn"]["whole"] for r in runs if r["arm"] == "restore")  # the restore did re-draw
    assert all(r["recipe"] is None for r in runs)  # only the recommended arm runs a recipe's pass

    # the table's numbers, recomputed from the records with scipy
    standard = [confirm[("standard", s)]["test_accuracy"] for s in (0, 1)]
    restore = [confirm[("restore", s)]["test_accuracy"] for s in (0, 1)]
    row = next(line for line in (output / "report.md").read_text().splitlines() if line.startswith("| restore |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[3] == f"{100 * np.mean(restore):.2f}"
    if math.isclose(restore[0], restore[1]):  # no spread: no interval
        assert cells[4] == "cannot be estimated (no spread over 2 seeds)"
    else:  # computed only here: scipy warns on a zero scale
        mean_low, mean_high = stats.t.interval(0.95, 1, loc=np.mean(restore), scale=stats.sem(restore))
        assert cells[4] == f"[{100 * max(mean_low, 0):.2f}, {100 * min(mean_high, 1):.2f}]"  # cut at 0 and 100%
    shown = f"{100 * (np.mean(restore) - np.mean(standard)):+.2f}"
    assert cells[5] == ("0.00" if shown in ("+0.00", "-0.00") else shown)  # zero up to rounding is neither side
    if math.isclose(restore[0] - standard[0], restore[1] - standard[1]):
        assert cells[6] == "cannot be estimated (no spread over 2 seeds)"
    else:
        low, high = stats.ttest_rel(restore, standard).confidence_interval()
        assert cells[6] == f"[{100 * max(low, -1):+.2f}, {100 * min(high, 1):+.2f}]"  # cut at -100 and +100 points
    summary = json.loads((output / "summary.json").read_text())
    assert summary["verdict"] in printed and summary["verdict"].startswith("On this data the default restore is")
    assert row in printed
    # the CLI and the Python API, on the same settings, give the same numbers (deterministic on CPU)
    assert arm_numbers(summary) == arm_numbers(reference[0])


def test_resume_after_kill(workspace, tmp_path, reference):
    """A comparison killed (SIGKILL) after its first record, with a half-written line left behind, completes on a
    rerun with no duplicate record and the numbers of an uninterrupted run."""
    output = tmp_path / "out"
    argv = [*COMMAND, str(workspace / "tiny-vit"), "--data", str(workspace / "images"), *BUDGET, *GRID,
            "--output", str(output), "--no-progress"]  # fmt: skip
    process = subprocess.Popen(argv, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    runs_file = output / "runs.jsonl"
    deadline = time.monotonic() + 240
    while not (runs_file.is_file() and runs_file.read_text().count("\n") >= 1):
        assert process.poll() is None and time.monotonic() < deadline, "the comparison ended before its first record"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = runs_file.read_text().count("\n")
    assert 1 <= done < 6 and not (output / "summary.json").exists()
    with open(runs_file, "a") as handle:
        handle.write('{"arm": "restore", "key": "confirm/re')  # a line the kill cut short
    finished = subprocess.run(argv, env=env(), capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    runs = records(output)  # every line parses: the half-written one is gone
    assert len(runs) == 6 and len({r["key"] for r in runs}) == 6
    summary = json.loads((output / "summary.json").read_text())
    assert arm_numbers(summary) == arm_numbers(reference[0])


def test_python_api_resumes_with_more_seeds(workspace, reference, tmp_path):
    """The same comparison with one more seed, in the reference's folder, only adds that seed's runs."""
    import shutil

    summary, output = reference
    copy = tmp_path / "copy"
    shutil.copytree(output, copy)
    before = {r["key"] for r in records(copy)}
    more = compare(str(workspace / "tiny-vit"), str(workspace / "images"), output=str(copy), progress=False,
                   **{**API_BUDGET, "seeds": 3})  # fmt: skip
    added = [r for r in records(copy) if r["key"] not in before]
    assert sorted((r["phase"], r["arm"], r["seed"]) for r in added) == [
        ("confirm", "restore", 2),
        ("confirm", "standard", 2),
    ]
    assert more["seeds"] == [0, 1, 2]
    assert {a: e["test_accuracy"]["0"] for a, e in more["arms"].items()} == {
        a: e["test_accuracy"]["0"] for a, e in summary["arms"].items()
    }


def test_saved_dataset_with_its_own_splits_and_a_strategy_arm_on_one_seed(workspace, tmp_path):
    """A `save_to_disk` folder with validation and test splits (used as given, not carved), a data-dependent strategy
    as an arm, one seed: the interval is undefined and the verdict says so."""
    from datasets import ClassLabel, Dataset, DatasetDict

    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(24)]
    rows = {"img": images, "labels": [i % 2 for i in range(24)]}
    full = Dataset.from_dict(rows).cast_column("labels", ClassLabel(names=["x", "y"]))
    DatasetDict({"train": full.select(range(12)), "validation": full.select(range(12, 18)),
                 "test": full.select(range(18, 24))}).save_to_disk(str(tmp_path / "saved"))  # fmt: skip
    summary = compare(str(workspace / "tiny-vit"), str(tmp_path / "saved"), output=str(tmp_path / "out"),
                      val_split="validation", test_split="test", progress=False,
                      **{**API_BUDGET, "arms": ("standard", "selective"), "seeds": 1})  # fmt: skip
    assert summary["splits"]["sizes"] == {"train": 12, "val": 6, "test": 6}
    assert summary["splits"]["how"]["test"] == "split 'test'"
    difference = summary["arms"]["selective"]["difference_to_standard"]
    assert difference["low"] is None and "undefined with one seed" in summary["verdict"]
    assert "| selective |" in (tmp_path / "out" / "report.md").read_text()
    assert all(r["redrawn"]["partial"] for r in records(tmp_path / "out") if r["arm"] == "selective")


def test_missing_extra_is_named(workspace, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy", None)  # as if scipy were not installed
    assert main(["compare", str(workspace / "tiny-vit"), "--data", str(workspace / "images"),
                 "--output", str(tmp_path / "o")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert 'needs the "compare" extra (scipy is missing)' in err
    assert 'pip install "hf-plasticity[compare]"' in err and 'pip install -e ".[compare]"' in err, err  # both installs
    assert not (tmp_path / "o").exists()


def test_two_processes_write_one_record_per_run(workspace, tmp_path):
    """Under `accelerate launch` (two CPU processes, gloo) the runs are DDP runs: one record each, one report."""
    from .test_distributed import accelerate_cli, free_port

    output = tmp_path / "out"
    command = [
        accelerate_cli(), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
        "-m", "hf_plasticity.cli.main", "compare", str(workspace / "tiny-vit"), "--data", str(workspace / "images"),
        "--arms", "standard", "restore", "--seeds", "1", "--epochs", "1", "--batch-size", "8", *GRID,
        "--output", str(output), "--no-progress",
    ]  # fmt: skip
    done = subprocess.run(command, env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = records(output)
    assert len(runs) == 4 and len({r["key"] for r in runs}) == 4
    assert all(r["device"].endswith("x 2") for r in runs)
    assert done.stdout.count("Wrote ") == 1 and (output / "summary.json").is_file()


# ------------------------------------------------------------------------------------------------ bad input
def _bad_cases(root: Path, tmp: Path) -> dict[str, tuple[list[str], str]]:
    model, images = str(root / "tiny-vit"), str(root / "images")
    taken = tmp / "taken"
    taken.mkdir()
    (taken / "something.txt").write_text("x")
    other = tmp / "other-comparison"
    other.mkdir()
    settings_json = {"hf_plasticity_compare": 1, **ComparisonSettings(model=model, data=images, epochs=7).to_dict()}
    (other / "settings.json").write_text(json.dumps(settings_json))
    old = tmp / "old-arm-name"  # a comparison with these settings whose records name the arm by its earlier name
    old.mkdir()
    (old / "settings.json").write_text(json.dumps(ComparisonSettings(model=model, data=images).to_dict()))
    record = {"key": "tune/recipe/bb=0.001/own=0.01/seed=1000", "phase": "tune", "arm": "recipe", "seed": 1000}
    (old / "runs.jsonl").write_text(json.dumps(record) + "\n")
    from datasets import Dataset

    unlabelled = tmp / "unlabelled"
    Dataset.from_dict({"image": [Image.new("RGB", (8, 8))] * 4}).save_to_disk(str(unlabelled))
    from datasets import ClassLabel, DatasetDict

    def split_of(names):
        rows = {"image": [Image.new("RGB", (8, 8))] * 4, "label": [0, 1, 0, 1]}
        return Dataset.from_dict(rows).cast_column("label", ClassLabel(names=names))

    mismatched = tmp / "mismatched"
    DatasetDict({"train": split_of(["x", "y"]), "test": split_of(["q", "x"])}).save_to_disk(str(mismatched))
    no_label = tmp / "no-label"  # a Hub-style test split: -1 for the images without a label
    test = Dataset.from_dict({"image": [Image.new("RGB", (8, 8))] * 4, "label": [0, -1, 1, -1]})
    DatasetDict({"train": split_of(["x", "y"]), "test": test.cast_column("label", ClassLabel(names=["x", "y"]))}
                ).save_to_disk(str(no_label))  # fmt: skip
    int_labels = tmp / "int-labels"  # a plain integer column, -1 where an image has no label
    Dataset.from_dict({"image": [Image.new("RGB", (8, 8))] * 6, "label": [0, 1, -1, 0, 1, 0]}).save_to_disk(
        str(int_labels)
    )
    quick = ["--arms", "standard", "--seeds", "1", "--epochs", "1", *GRID]  # runs quickly where nothing refuses it
    return {
        "unknown model": (["compare", str(tmp / "no-such-model"), "--data", images], "Cannot load model"),
        "one class": (["compare", model, "--data", str(root / "one-class")], "1 class folder"),
        # the loader's refusal (integrations.datasets_io), which speaks of class folders also for a saved dataset
        "no labels": (["compare", model, "--data", str(unlabelled)], "at least two classes"),
        "unknown arm": (["compare", model, "--data", images, "--arms", "standard", "magic"], "Unknown arm 'magic'"),
        "no standard arm": (["compare", model, "--data", images, "--arms", "restore"], "must include standard"),
        "renamed arm": (["compare", model, "--data", images, "--arms", "standard", "recipe"], "renamed 'restore'"),
        "records of a renamed arm": (["compare", model, "--data", images, "--output", str(old)], "arm 'recipe'"),
        "non-empty output": (["compare", model, "--data", images, "--output", str(taken)], "--overwrite"),
        "other comparison": (["compare", model, "--data", images, "--output", str(other)], "epochs differ"),
        "bad epochs": (["compare", model, "--data", images, "--epochs", "0"], "epochs"),
        "other classes": (["compare", model, "--data", str(mismatched), "--test-split", "test"], "other classes"),
        "unlabelled test images": (
            ["compare", model, "--data", str(no_label), "--test-split", "test", *quick],
            "Split 'test' of '" + str(no_label) + "' has 2 of 4 examples labelled outside its 2 classes (labels [-1]",
        ),
        "negative integer labels": (
            ["compare", model, "--data", str(int_labels), *quick],
            "holds negative labels [-1] (-1 usually means 'no label')",
        ),
        "test split is the training split": (
            ["compare", model, "--data", str(mismatched), "--test-split", "train"],
            "three different splits; got split 'train', test_split 'train'",
        ),
        "validation split is the test split": (
            ["compare", model, "--data", str(mismatched), "--val-split", "test", "--test-split", "test"],
            "val_split 'test', test_split 'test'",
        ),
    }


@pytest.mark.parametrize(
    "case",
    ["unknown model", "one class", "no labels", "unknown arm", "no standard arm", "renamed arm",
     "records of a renamed arm", "non-empty output", "other comparison", "bad epochs", "other classes",
     "unlabelled test images", "negative integer labels", "test split is the training split",
     "validation split is the test split"],
)  # fmt: skip
def test_bad_input_exits_2_with_one_line_and_writes_nothing(workspace, tmp_path, capsys, case):
    argv, expected = _bad_cases(workspace, tmp_path)[case]
    if "--output" not in argv:
        argv = [*argv, "--output", str(tmp_path / "fresh")]
    output = Path(argv[argv.index("--output") + 1])
    before = sorted(p.name for p in output.iterdir()) if output.is_dir() else None
    capsys.readouterr()  # the set-up's own output
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and error.startswith("hf-plasticity compare: error:"), error
    assert expected in error
    assert (sorted(p.name for p in output.iterdir()) if output.is_dir() else None) == before


def test_python_api_raises_value_error(workspace, tmp_path):
    with pytest.raises(ValueError, match="Unknown arm"):
        compare(str(workspace / "tiny-vit"), str(workspace / "images"), output=str(tmp_path / "o"), arms=["x"])
    assert not (tmp_path / "o").exists()


def test_compare_is_exported_lazily():
    code = "import sys, hf_plasticity; assert 'hf_plasticity.comparison' not in sys.modules; " \
           "from hf_plasticity import compare; assert callable(compare); print(compare.__name__)"  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], env=env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "compare", result.stderr


# ------------------------------------------------------------------------------------------------ identity
def _snapshot(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir()}


def test_a_folder_is_not_resumed_when_the_model_or_data_behind_its_paths_changed(workspace, tmp_path):
    """The same paths, other contents: three times the images, or other weights, are refused before anything is
    written, naming what changed; a comparison recorded without an identity (an earlier version) is resumed with a
    warning naming the folder, and its identity recorded from then on."""
    import shutil

    model, images, output = tmp_path / "model", tmp_path / "images", tmp_path / "out"
    shutil.copytree(workspace / "tiny-vit", model)
    shutil.copytree(workspace / "images", images)
    budget = {**API_BUDGET, "arms": ("standard",), "seeds": 1}
    compare(str(model), str(images), output=str(output), progress=False, **budget)
    saved = json.loads((output / "settings.json").read_text())
    assert saved["identity"]["data"]["splits"]["train"]["rows"] == 28
    assert saved["identity"]["model"]["source"] == str(model.resolve())
    assert set(saved["identity"]["model"]["files"]) == {"config.json", "model.safetensors", "preprocessor_config.json"}
    files = _snapshot(output)

    for name in CLASSES:  # the folder swapped for one with three times the images
        for copy in (1, 2):
            for path in sorted((images / name).glob("[0-9]*.png")):
                shutil.copy(path, images / name / f"extra{copy}-{path.name}")
    with pytest.raises(
        ValueError, match=r"another model or data.*data splits train rows: 28 then, 84 now.*--overwrite"
    ):
        compare(str(model), str(images), output=str(output), progress=False, **budget)
    assert _snapshot(output) == files
    for path in images.glob("*/extra*.png"):
        path.unlink()

    weights = (model / "model.safetensors").read_bytes()  # other weights in the same folder
    other = AutoModelForImageClassification.from_pretrained(model)
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    other.save_pretrained(model)
    with pytest.raises(ValueError, match=r"another model or data.*model files model\.safetensors: sha256 "):
        compare(str(model), str(images), output=str(output), progress=False, **budget)
    assert _snapshot(output) == files
    (model / "model.safetensors").write_bytes(weights)

    del saved["identity"]  # as an earlier version wrote it
    (output / "settings.json").write_text(json.dumps(saved))
    with pytest.warns(UserWarning, match=f"{re.escape(repr(str(output)))} holds a comparison recorded by an earlier"):
        compare(str(model), str(images), output=str(output), progress=False, **budget)
    assert len(records(output)) == 2  # resumed: nothing trained again
    assert json.loads((output / "settings.json").read_text())["identity"]["data"]["splits"]["train"]["rows"] == 28


def test_a_resume_over_runs_of_other_versions_says_the_report_pools_them(workspace, tmp_path):
    """Runs recorded with another hf-plasticity (or torch, transformers...) are resumed, with a warning naming the
    versions; runs of this one resume silently."""
    from hf_plasticity.comparison.runner import versions

    output = tmp_path / "out"
    budget = {**API_BUDGET, "arms": ("standard",), "seeds": 1}

    def run() -> None:
        compare(str(workspace / "tiny-vit"), str(workspace / "images"), output=str(output), progress=False, **budget)

    run()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run()
    assert not [w for w in caught if "other versions" in str(w.message)]
    lines = [json.loads(line) for line in (output / "runs.jsonl").read_text().splitlines()]
    lines[0]["versions"]["hf_plasticity"] = "0.0.1"
    (output / "runs.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    now = versions()["hf_plasticity"]
    with pytest.warns(UserWarning, match=rf"other versions \(hf_plasticity 0\.0\.1 \(now {re.escape(now)}\)\)"):
        run()
    assert len(records(output)) == len(lines)  # resumed: nothing trained again


def test_overwrite_deletes_and_replaces_only_a_comparison_s_files(workspace, tmp_path):
    """A folder whose settings.json and report.md are the user's holds no comparison: refused as not empty, and with
    --overwrite too (nothing deleted or replaced); an earlier version's comparison (its unmarked settings.json beside a
    runs.jsonl) is recognised, and --overwrite starts afresh there."""
    model, images = str(workspace / "tiny-vit"), str(workspace / "images")
    budget = {**API_BUDGET, "arms": ("standard",), "seeds": 1}
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "settings.json").write_text('{"learning_rate": 0.1}')
    (mine / "report.md").write_text("my notes")
    files = _snapshot(mine)
    with pytest.raises(ValueError, match="exists and is not empty"):
        compare(model, images, output=str(mine), progress=False, **budget)
    with pytest.raises(ValueError, match=r"holds no comparison.*\(settings\.json, report\.md\).*only the files of a"):
        compare(model, images, output=str(mine), progress=False, overwrite=True, **budget)
    assert _snapshot(mine) == files

    earlier = tmp_path / "earlier"
    earlier.mkdir()
    settings_json = ComparisonSettings(model=model, data=images, epochs=7).to_dict()  # no marker: an earlier version
    (earlier / "settings.json").write_text(json.dumps(settings_json))
    (earlier / "runs.jsonl").write_text(json.dumps({"key": "old", "phase": "tune", "arm": "standard"}) + "\n")
    (earlier / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds a comparison with other settings"):
        compare(model, images, output=str(earlier), progress=False, **budget)
    compare(model, images, output=str(earlier), progress=False, overwrite=True, **budget)
    assert "old" not in {r["key"] for r in records(earlier)} and len(records(earlier)) == 2
    assert json.loads((earlier / "settings.json").read_text())["hf_plasticity_compare"] == 1
    assert (earlier / "notes.txt").read_text() == "mine"


def test_starting_afresh_deletes_a_comparison_s_own_files_and_nothing_else(tmp_path):
    """`start_afresh` is the one place that knows what --overwrite deletes: every file of the comparison (its
    settings.json as `save_settings` marks it, runs.jsonl, the report and its figures), not the user's files beside
    them; and nothing at all in a folder whose settings.json is the user's."""
    from hf_plasticity.comparison.output_folder import OWN_FILES, recorded_settings, save_settings, start_afresh

    ours = tmp_path / "ours"
    ours.mkdir()
    save_settings(str(ours), ComparisonSettings(model="m", data="d"), identity={"model": {}, "data": {}})
    assert recorded_settings(str(ours))["hf_plasticity_compare"] == 1
    for name in OWN_FILES[:-1]:  # one figure missing (a comparison killed before its report): not an error
        if name != "settings.json":
            (ours / name).write_text("the comparison's")
    (ours / "notes.txt").write_text("mine")
    assert start_afresh(str(ours)) == list(OWN_FILES[:-1])
    assert [path.name for path in ours.iterdir()] == ["notes.txt"]

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "settings.json").write_text('{"learning_rate": 0.1}')
    (mine / "report.md").write_text("my notes")
    files = _snapshot(mine)
    assert start_afresh(str(mine)) == [] and _snapshot(mine) == files


@pytest.mark.parametrize("damaged", ["settings.json", "runs.jsonl"])
def test_a_damaged_file_is_named_and_nothing_is_written(workspace, reference, tmp_path, damaged):
    """A settings.json that is not JSON, or a runs.jsonl with a broken line before the last: refused with the file
    (and the line) named, the folder left as it was. (A half-written last line is dropped: test_resume_after_kill.)"""
    import shutil

    output = tmp_path / "out"
    shutil.copytree(reference[1], output)
    lines = (output / damaged).read_text().splitlines(keepends=True)
    lines[1] = lines[1][: len(lines[1]) // 2] + "\n"  # a line cut in two, the file going on after it
    (output / damaged).write_text("".join(lines))
    files = _snapshot(output)
    where = {"settings.json": "settings\\.json' is not valid JSON", "runs.jsonl": "runs\\.jsonl', line 2, is not"}
    with pytest.raises(ValueError, match=where[damaged]):
        compare(str(workspace / "tiny-vit"), str(workspace / "images"), output=str(output), progress=False,
                **API_BUDGET)  # fmt: skip
    assert _snapshot(output) == files


def test_settings_are_replaced_in_one_step(tmp_path):
    """A write that fails half-way (here a value JSON cannot hold) leaves the old settings.json whole, and no
    temporary file behind."""
    from hf_plasticity.comparison.output_folder import write_settings

    write_settings(str(tmp_path), {"hf_plasticity_compare": 1, "epochs": 3})
    before = (tmp_path / "settings.json").read_bytes()
    with pytest.raises(TypeError):
        write_settings(str(tmp_path), {"hf_plasticity_compare": 1, "epochs": 3, "z": object()})
    assert (tmp_path / "settings.json").read_bytes() == before and json.loads(before)["epochs"] == 3
    assert sorted(path.name for path in tmp_path.iterdir()) == ["settings.json"]


# ------------------------------------------------------------------------------------------------ parts
def test_statistics_against_scipy_on_known_numbers():
    treatment, control = [0.80, 0.84, 0.83, 0.86], [0.78, 0.80, 0.82, 0.81]
    differences = [t - c for t, c in zip(treatment, control)]
    half = stats.t.ppf(0.975, 3) * statistics.stdev(differences) / math.sqrt(4)
    result = paired_difference(treatment, control)
    assert result["mean"] == pytest.approx(0.03)
    assert (result["low"], result["high"]) == pytest.approx((0.03 - half, 0.03 + half))
    interval = mean_interval(treatment)
    half = stats.t.ppf(0.975, 3) * statistics.stdev(treatment) / 2
    assert (interval["mean"], interval["low"], interval["high"]) == pytest.approx(
        (0.8325, 0.8325 - half, 0.8325 + half)
    )
    single = paired_difference([0.9], [0.8])
    assert single["low"] is None and single["high"] is None
    assert "undefined with one seed" in verdict("restore", single)


@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=2, max_size=8))
@settings(max_examples=60, deadline=None)
def test_verdict_follows_the_interval(pairs):
    treatment, control = [p[0] for p in pairs], [p[1] for p in pairs]
    difference = paired_difference(treatment, control)
    sentence = verdict("restore", difference)
    if difference["low"] is None:  # every pair has the same difference
        assert difference["undefined"] == "no spread" and "not assessable" in sentence
    elif difference["low"] > 0:
        assert sentence.endswith("a detectable gain.")
    elif difference["high"] < 0:
        assert sentence.endswith("a detectable loss.")
    else:
        assert sentence.endswith("no detectable difference.")


@given(st.integers(1, 500), st.lists(st.integers(0, 500), min_size=2, max_size=10), st.integers(-500, 500))
@settings(max_examples=100, deadline=None)
def test_equal_differences_never_read_as_detectable(size, correct, shift):
    """Every seed with the same difference (two seeds both -8.33 points): the t interval would have zero width and
    exclude 0 whatever the true spread, so the verdict says it cannot be assessed, never a detectable loss or gain."""
    control = [min(c, size) / size for c in correct]
    treatment = [(min(c, size) + shift) / size for c in correct]  # accuracies need not stay in [0, 1] here
    difference = paired_difference(treatment, control)
    assert (difference["low"], difference["high"], difference["undefined"]) == (None, None, "no spread")
    for sentence in (verdict("restore", difference), recommended_verdict(difference)):
        assert "detectable" not in sentence and "not assessable" in sentence, sentence
    interval = mean_interval([control[0]] * len(control))  # every seed the same accuracy
    assert (interval["low"], interval["undefined"]) == (None, "no spread")


@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=6, unique=True), st.data())
@settings(max_examples=40, deadline=None)
def test_store_ignores_a_half_written_last_line(tmp_path_factory, seeds, data):
    directory = tmp_path_factory.mktemp("store")
    store = RunStore(str(directory))
    for seed in seeds:
        store.add({"key": f"k{seed}", "phase": "tune", "seed": seed})
    text = (directory / "runs.jsonl").read_text()
    lines = text.splitlines(keepends=True)
    cut = data.draw(st.integers(1, len(lines[-1]) - 1))  # the last line cut short anywhere (its newline missing)
    (directory / "runs.jsonl").write_text("".join(lines[:-1]) + lines[-1][:cut])
    reopened = RunStore(str(directory))
    assert sorted(reopened.records) == sorted(f"k{s}" for s in seeds[:-1])
    reopened.add({"key": "new", "phase": "tune", "seed": -1})
    assert [json.loads(line)["key"] for line in (directory / "runs.jsonl").read_text().splitlines()] == [
        *(f"k{s}" for s in seeds[:-1]),
        "new",
    ]


@pytest.mark.parametrize("reverse", [False, True])
def test_tie_rule_second_seed_then_a_hash_of_the_configuration(tmp_path, reverse):
    """Ties on the first tuning seed are trained again with the second one (only the tied configurations); still
    tied, the configuration with the smaller hash wins, whatever the grid's order; recorded runs are not run again."""
    scores = {  # (arm, backbone, own, seed) -> validation accuracy
        ("a", 1.0, 1.0, TUNE_SEEDS[0]): 0.5, ("a", 2.0, 1.0, TUNE_SEEDS[0]): 0.5, ("a", 3.0, 1.0, TUNE_SEEDS[0]): 0.4,
        ("a", 1.0, 1.0, TUNE_SEEDS[1]): 0.6, ("a", 2.0, 1.0, TUNE_SEEDS[1]): 0.7,
        ("b", 1.0, 1.0, TUNE_SEEDS[0]): 0.5, ("b", 2.0, 1.0, TUNE_SEEDS[0]): 0.5, ("b", 3.0, 1.0, TUNE_SEEDS[0]): 0.5,
        ("b", 1.0, 1.0, TUNE_SEEDS[1]): 0.5, ("b", 2.0, 1.0, TUNE_SEEDS[1]): 0.6, ("b", 3.0, 1.0, TUNE_SEEDS[1]): 0.6,
    }  # fmt: skip
    ran = []

    def train(spec):
        ran.append(spec.key)
        value = scores.get((spec.arm, spec.backbone_lr, spec.own_lr, spec.seed), 0.9)
        return {"key": spec.key, "phase": spec.phase, "val_accuracy": value}

    store = RunStore(str(tmp_path))
    grid = [(1.0, 1.0), (2.0, 1.0), (3.0, 1.0)][:: -1 if reverse else 1]
    chosen = run_schedule(["a", "b"], grid, [0], store, train, progress=False)
    hashed = min([(2.0, 1.0), (3.0, 1.0)], key=lambda c: hashlib.sha1(repr(c).encode()).hexdigest())
    assert chosen == {"a": (2.0, 1.0), "b": hashed}  # a: the second seed decides; b: still tied after it
    assert sum("/a/" in key and f"seed={TUNE_SEEDS[1]}" in key for key in ran) == 2  # (3.0, 1.0) was not tied
    assert len(ran) == 3 + 2 + 3 + 3 + 2
    again = []
    assert run_schedule(["a", "b"], grid, [0], store, lambda s: again.append(s) or {}, progress=False) == chosen
    assert again == []


def test_non_finite_logits_count_as_wrong():
    """A diverged run's NaN logits would argmax to class 0 and score the share of class 0."""
    from transformers import EvalPrediction

    from hf_plasticity.comparison.runner import accuracy

    labels = np.array([0, 0, 0, 1])
    logits = np.array([[np.nan, np.nan], [np.nan, 1.0], [np.inf, 0.0], [0.0, 2.0]])
    assert accuracy(EvalPrediction(predictions=logits, label_ids=labels)) == {"accuracy": 0.25}
    assert accuracy(EvalPrediction(predictions=(np.full((4, 2), np.nan),), label_ids=labels)) == {"accuracy": 0.0}


def test_max_train_samples_below_the_number_of_classes_is_refused_before_anything_is_written(workspace, tmp_path):
    """A stratified subset keeps one example per class: 1 example of 2 classes would silently become 2 (and the report
    would state 1)."""
    with pytest.raises(ValueError, match=r"max_train_samples is 1, fewer than the 2 classes of split 'train'.* 2 or"):
        compare(str(workspace / "tiny-vit"), str(workspace / "images"), output=str(tmp_path / "out"), progress=False,
                max_train_samples=1, **{**API_BUDGET, "arms": ("standard",), "seeds": 1})  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_carved_splits_are_disjoint_and_stratified():
    from datasets import Dataset

    labels = [0] * 40 + [1] * 20 + [2] * 20
    dataset = Dataset.from_dict({"index": list(range(80)), "label": labels})
    settings_ = ComparisonSettings(model="m", data="d", test_fraction=0.25, val_fraction=0.2, max_train_samples=24)
    train, val, test, how = make_splits(dataset, None, None, "label", settings_)
    parts = [set(part["index"]) for part in (train, val, test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert (len(test), len(val), len(train)) == (20, 12, 24)
    for part in (train, val, test):  # class proportions 2:1:1 kept
        counts = np.bincount(part["label"], minlength=3)
        assert counts[0] == 2 * counts[1] == 2 * counts[2]
    assert "stratified" in how["test"] and "stratified" in how["val"]
    assert "(20 examples; at least one per class)" in how["test"] and "(12 examples;" in how["val"]


def test_a_share_too_small_for_every_class_is_raised_and_the_note_says_by_how_much():
    """10% of 12 examples of 3 classes is 1: the carved split keeps one of each class, and its note gives the count."""
    from datasets import Dataset

    dataset = Dataset.from_dict({"index": list(range(12)), "label": [0, 1, 2] * 4})
    settings_ = ComparisonSettings(model="m", data="d", test_fraction=0.1, val_fraction=0.1)
    _, val, test, how = make_splits(dataset, None, None, "label", settings_)
    assert len(test) == len(val) == 3 and set(test["label"]) == set(val["label"]) == {0, 1, 2}
    assert how["test"].startswith("10% of 'train' (3 examples; at least one per class)")
    assert how["val"].startswith("10% of the rest of 'train' (3 examples; at least one per class)")


def test_an_empty_integer_labelled_split_is_named_not_a_raw_error():
    from datasets import Dataset, Features, Value

    from hf_plasticity.comparison.splits import ComparisonInputError, with_class_labels

    empty = Dataset.from_dict({"label": []}, features=Features({"label": Value("int64")}))
    with pytest.raises(ComparisonInputError, match=r"no examples \(its label column 'label' is empty\)"):
        with_class_labels(empty, "label")


def test_a_temporary_file_left_by_a_killed_write_does_not_make_a_folder_foreign(tmp_path):
    """A kill inside `write_settings` can leave its temporary file; the folder still counts as empty, and a user's file
    beside it does not."""
    from hf_plasticity.comparison.output_folder import check_output

    (tmp_path / ".settings.json.k3x9_q.tmp").write_text('{"hf_plasticity_co')
    settings_ = ComparisonSettings(model="m", data="d")
    assert check_output(str(tmp_path), settings_, overwrite=False, identity={}) is False
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="exists and is not empty"):
        check_output(str(tmp_path), settings_, overwrite=False, identity={})
