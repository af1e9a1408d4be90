"""The ``recommended`` arm of `hf-plasticity compare` / `hf_plasticity.compare` (one fine-tune at `recommend_recipe`'s
rates instead of a sweep), and the arm ``recipe`` renamed ``restore``: on a tiny local ViT and a saved dataset of 300
training images (more than the 256 the pass reads, so each seed's pass reads other images): not tuned, trained at the
rates `recommend_recipe` returns on the seed's shuffle of the training split, the report against its records, a
resume through the CLI, the refusals of the old name and of records written under it."""

from __future__ import annotations

import inspect
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats
from transformers import AutoModelForImageClassification, ViTImageProcessor

from hf_plasticity import compare, recommend_recipe
from hf_plasticity.cli.main import main
from hf_plasticity.comparison.report import markdown, summarize
from hf_plasticity.comparison.store import RunStore
from hf_plasticity.comparison.tuning import run_schedule

from .models import IMAGE_SIZE, pretrained
from .test_compare import records

BUDGET = dict(seeds=2, epochs=1, batch_size=32, backbone_lrs=(1e-3,), own_lrs=(1e-2,))
SPLITS = dict(val_split="validation", test_split="test")
ARMS = ("standard", "recommended")


def _images(rng: np.random.Generator, labels: list[int]) -> list[Image.Image]:
    """Noisy colour fields, the classes' mean colours close enough that the tiny ViT's probe accuracies fall below 1
    and differ between two draws of 256 images (its last/peak, 0.979, then falls below the short budget's 0.986)."""
    images = []
    for label in labels:
        pixels = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3)) + [120 + 10 * label, 120, 120 - 10 * label]
        pixels += rng.normal(0, 60, (IMAGE_SIZE, IMAGE_SIZE, 3))
        images.append(Image.fromarray(np.clip(pixels, 0, 255).astype("uint8")))
    return images


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny 'pretrained' ViT with its image processor, and a `save_to_disk` dataset: train 300, validation and
    test 20 images of 2 classes."""
    from datasets import ClassLabel, Dataset, DatasetDict

    root = tmp_path_factory.mktemp("recommended")
    pretrained("vit", root / "tiny-vit")
    ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(root / "tiny-vit")
    rng = np.random.default_rng(0)
    parts = {}
    for name, size in (("train", 300), ("validation", 20), ("test", 20)):
        labels = [i % 2 for i in range(size)]
        parts[name] = Dataset.from_dict({"img": _images(rng, labels), "label": labels}).cast_column(
            "label", ClassLabel(names=["circle", "square"])
        )
    DatasetDict(parts).save_to_disk(str(root / "data"))
    return root


@pytest.fixture(scope="module")
def reference(workspace, tmp_path_factory):
    """``compare(..., arms=("standard", "recommended"))`` on 2 seeds: ``(summary, output folder)``."""
    output = tmp_path_factory.mktemp("reference") / "out"
    summary = compare(str(workspace / "tiny-vit"), str(workspace / "data"), output=str(output), arms=ARMS,
                      progress=False, **SPLITS, **BUDGET)  # fmt: skip
    return summary, output


def direct_recipe(workspace, seed: int):
    """`recommend_recipe` called directly on the model and the first 256 images of the training split shuffled with
    ``seed``, for the short budget (1 epoch), in batches of 32 as the comparison reads them."""
    from datasets import load_from_disk

    model = AutoModelForImageClassification.from_pretrained(
        workspace / "tiny-vit", num_labels=2, ignore_mismatched_sizes=True
    )
    processor = ViTImageProcessor.from_pretrained(workspace / "tiny-vit")
    rows = load_from_disk(str(workspace / "data"))["train"].shuffle(seed=seed)[:256]
    pixels = processor([image.convert("RGB") for image in rows["img"]], return_tensors="pt")["pixel_values"]
    labels = torch.tensor(rows["label"])
    data = [{"pixel_values": pixels[i : i + 32], "labels": labels[i : i + 32]} for i in range(0, 256, 32)]
    return recommend_recipe(model, data, budget="short", record=False)


def _without_cost(recipe: dict) -> dict:
    return {key: value for key, value in recipe.items() if key not in ("seconds", "epoch_share")}


# ------------------------------------------------------------------------------------------------ the arm
def test_recommended_is_not_tuned_and_trains_at_the_rates_recommend_recipe_returns(workspace, reference):
    summary, output = reference
    runs = records(output)
    assert sorted((r["phase"], r["arm"], r["seed"]) for r in runs) == [
        ("confirm", "recommended", 0), ("confirm", "recommended", 1), ("confirm", "standard", 0),
        ("confirm", "standard", 1), ("tune", "standard", 1000),
    ]  # fmt: skip
    assert "recommended" not in summary["tuning"]["grid"]  # no validation run chose its rates
    confirm = {(r["arm"], r["seed"]): r for r in runs if r["phase"] == "confirm"}
    direct = {seed: direct_recipe(workspace, seed) for seed in (0, 1)}
    for seed in (0, 1):
        run = confirm[("recommended", seed)]
        expected = direct[seed]
        assert run["key"] == f"confirm/recommended/seed={seed}"
        assert _without_cost(run["recipe"]) == _without_cost(expected.to_dict())  # what it read, and chose
        assert run["recipe"]["samples"] == 256 and run["recipe"]["epoch_share"] == pytest.approx(256 / 300)
        assert run["config"] == {"backbone_lr": expected.backbone_lr, "own_lr": expected.head_lr}  # trained at them
        assert run["redrawn"] is None  # a recipe re-draws nothing
        assert run["head_init"] == confirm[("standard", seed)]["head_init"]  # paired with standard's seed
        assert confirm[("standard", seed)]["recipe"] is None
    # each seed's pass read other images (the seed's shuffle), so it measured other probe accuracies
    assert direct[0].block_probe_accuracy != direct[1].block_probe_accuracy
    assert summary["arms"]["recommended"]["recipes"] == {str(s): confirm[("recommended", s)]["recipe"] for s in (0, 1)}
    assert summary["arms"]["recommended"]["tuned"] is False and summary["arms"]["standard"]["tuned"] is True


def test_report_row_and_verdict_match_the_records(reference):
    summary, output = reference
    confirm = {(r["arm"], r["seed"]): r for r in records(output) if r["phase"] == "confirm"}
    standard = [confirm[("standard", s)]["test_accuracy"] for s in (0, 1)]
    recommended = [confirm[("recommended", s)]["test_accuracy"] for s in (0, 1)]
    text = (output / "report.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| recommended |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    rates = [confirm[("recommended", s)]["config"] for s in (0, 1)]
    backbone = sorted({rate["backbone_lr"] for rate in rates})
    assert cells[1] == " to ".join(f"{value:.3g}" for value in backbone)  # the rates the passes chose
    assert cells[2] == f"{rates[0]['own_lr']:.3g}"
    assert cells[3] == f"{100 * np.mean(recommended):.2f}"
    half = stats.t.ppf(0.975, 1) * np.std(recommended, ddof=1) / np.sqrt(2)  # the t interval, by hand
    low, high = max(np.mean(recommended) - half, 0), min(np.mean(recommended) + half, 1)  # cut at 0 and 100%
    assert cells[4] == f"[{100 * low:.2f}, {100 * high:.2f}]"
    differences = np.subtract(recommended, standard)
    difference, half = differences.mean(), stats.t.ppf(0.975, 1) * np.std(differences, ddof=1) / np.sqrt(2)
    shown = f"{100 * difference:+.2f}"
    assert cells[5] == ("0.00" if shown in ("+0.00", "-0.00") else shown)  # zero up to rounding is neither side
    low, high = max(difference - half, -1), min(difference + half, 1)  # cut at -100 and +100 points
    assert cells[6] == f"[{100 * low:+.2f}, {100 * high:+.2f}]"
    entry = summary["arms"]["recommended"]["difference_to_standard"]
    assert entry["mean"] == pytest.approx(difference)
    sentence = next(s for s in summary["verdict"].split(". ") if "Without a sweep" in s)
    level = shown in ("+0.00", "-0.00")  # on a split this small, a mean difference this close to 0 is 0
    lost = "matches" if level else "loses" if difference < 0 else "gains"
    assert f"the recommended recipe (rates from one diagnostic pass, not tuned) {lost}" in sentence
    if not level:
        assert f"{abs(100 * difference):.2f} points" in sentence
    assert "recommended (not tuned): recommend_recipe read 256 training images per seed" in text
    assert summary["verdict"] in text


def test_cli_resumes_it_with_one_more_seed(workspace, reference, tmp_path, capsys):
    """The CLI, in the Python API's folder with one more seed, adds only that seed's two runs; the records of the
    first seeds (and so their recipes) are kept, not recomputed."""
    output = tmp_path / "copy"
    shutil.copytree(reference[1], output)
    before = records(output)
    argv = ["compare", str(workspace / "tiny-vit"), "--data", str(workspace / "data"), "--val-split", "validation",
            "--test-split", "test", "--arms", *ARMS, "--seeds", "3", "--epochs", "1", "--batch-size", "32",
            "--backbone-lrs", "0.001", "--own-lrs", "0.01", "--output", str(output), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    after = records(output)
    assert after[: len(before)] == before
    assert sorted((r["arm"], r["seed"]) for r in after[len(before) :]) == [("recommended", 2), ("standard", 2)]
    assert next(r for r in after if r["arm"] == "recommended" and r["seed"] == 2)["recipe"]["samples"] == 256
    summary = json.loads((output / "summary.json").read_text())
    assert summary["seeds"] == [0, 1, 2] and "| recommended |" in printed and summary["verdict"] in printed
    assert (
        summary["arms"]["recommended"]["test_accuracy"]["0"]
        == reference[0]["arms"]["recommended"]["test_accuracy"]["0"]
    )


# ------------------------------------------------------------------------------------------------ defaults, names
def test_default_arms_and_help_name_every_arm(capsys):
    assert inspect.signature(compare).parameters["arms"].default == ("standard", "restore", "control", "recommended")
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for arm in ("standard:", "restore:", "control:", "recommended:"):
        assert arm in help_text
    assert "(default: standard restore control recommended)" in help_text


def test_the_old_arm_name_is_refused_before_anything_is_written(workspace, tmp_path, capsys):
    argv = ["compare", str(workspace / "tiny-vit"), "--data", str(workspace / "data"), "--arms", "standard",
            "recipe", "--output", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1, error
    assert "renamed 'restore'" in error and "is the arm 'recommended'" in error
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="renamed 'restore'"):
        compare(str(workspace / "tiny-vit"), str(workspace / "data"), output=str(tmp_path / "o"), arms=["recipe"])
    assert not (tmp_path / "o").exists()


def test_records_under_the_old_name_are_refused_not_mixed(workspace, reference, tmp_path):
    """A folder whose records were written under the old arm name ``recipe`` is not resumed (neither read as
    ``restore`` nor rewritten): the error names the rename and --overwrite; the files are left as they were."""
    output = tmp_path / "old"
    shutil.copytree(reference[1], output)
    old = {"key": "confirm/recipe/bb=0.001/own=0.01/seed=0", "phase": "confirm", "arm": "recipe", "seed": 0}
    with open(output / "runs.jsonl", "a") as handle:
        handle.write(json.dumps(old) + "\n")
    files = {path.name: path.read_bytes() for path in output.iterdir()}
    with pytest.raises(ValueError, match="holds runs of the arm 'recipe'.*renamed 'restore'.*--overwrite"):
        compare(str(workspace / "tiny-vit"), str(workspace / "data"), output=str(output), arms=ARMS, progress=False,
                **SPLITS, **BUDGET)  # fmt: skip
    assert {path.name: path.read_bytes() for path in output.iterdir()} == files


@pytest.mark.parametrize(
    "field, factor", [("threshold", 0.5), ("backbone_lr_below", 0.5), ("head_lr_below", 0.5), ("epochs", 0.01)]
)
def test_runs_of_another_fit_of_the_rule_are_refused_not_mixed(workspace, reference, tmp_path, monkeypatch, field,
                                                               factor):  # fmt: skip
    """A folder whose ``recommended`` runs were chosen by another fit of the rule (the installed one refitted since) is
    not resumed: the report would pool two rules in one arm. The error names the seeds and --overwrite; the files are
    left as they were. With the rule they ran under, the same folder is recognised as current. (``epochs``: the short
    fit's epochs moved so far that the comparison's 1 epoch now reads as the long budget.)"""
    import dataclasses

    from hf_plasticity.comparison.arms import seeds_of_another_rule
    from hf_plasticity.core import recipe

    output = tmp_path / "earlier"
    shutil.copytree(reference[1], output)
    assert seeds_of_another_rule(records(output), BUDGET["epochs"]) == []
    fit = recipe.FITTED_RULE["short"]
    monkeypatch.setitem(recipe.FITTED_RULE, "short", dataclasses.replace(fit, **{field: getattr(fit, field) * factor}))
    read = {r["seed"]: r["recipe"] for r in records(output) if r["arm"] == "recommended"}
    below = {seed for seed, r in read.items() if r["last_over_peak"] < r["threshold"]}
    changed = sorted(below if field in ("backbone_lr_below", "head_lr_below") else read)
    assert changed, "the fixture's passes should fall below the threshold (see _images)"
    assert seeds_of_another_rule(records(output), BUDGET["epochs"]) == changed
    files = {path.name: path.read_bytes() for path in output.iterdir()}
    refusal = r"runs of the arm 'recommended' \(seeds [0-9, ]+\).*another fit.*--overwrite"
    with pytest.raises(ValueError, match=refusal):
        compare(str(workspace / "tiny-vit"), str(workspace / "data"), output=str(output), arms=ARMS, progress=False,
                **SPLITS, **BUDGET)  # fmt: skip
    assert {path.name: path.read_bytes() for path in output.iterdir()} == files


def test_a_launch_whose_processes_would_not_train_together_is_refused_before_a_record(
    workspace, tmp_path, monkeypatch
):
    """Two processes launched (WORLD_SIZE 2) whose Trainer would not be distributed (here: compare's DDP options
    taken away, as a CPU launch without ``use_cpu`` is): each would train its own copy on its share of the data, so
    compare stops before the first run is recorded. (tests/test_distributed.py checks under a real ``torchrun`` that
    compare's options do give DDP on CPU.)"""
    from hf_plasticity.comparison import runner

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(runner, "_ddp_options", lambda: {})
    output = tmp_path / "out"
    with pytest.raises(RuntimeError, match="compare cannot run this launch.*does not train them together"):
        compare(str(workspace / "tiny-vit"), str(workspace / "data"), output=str(output), arms=ARMS, progress=False,
                **SPLITS, **{**BUDGET, "seeds": 1})  # fmt: skip
    assert not (output / "runs.jsonl").exists() or records(output) == []  # no run recorded


def test_too_few_images_for_the_pass_are_refused_before_anything_is_written(workspace, tmp_path):
    """Three training images, two of one class: the pass's probe needs two classes with two images or more."""
    from datasets import ClassLabel, Dataset, DatasetDict

    def split(labels):
        rows = {"img": _images(np.random.default_rng(1), labels), "label": labels}
        return Dataset.from_dict(rows).cast_column("label", ClassLabel(names=["circle", "square"]))

    DatasetDict({"train": split([0, 0, 1]), "validation": split([0, 1]), "test": split([0, 1])}).save_to_disk(
        str(tmp_path / "small")
    )
    with pytest.raises(ValueError, match=r"on seed 0 would read 3 training images of 2 classes \(\{0: 2, 1: 1\}\)"):
        compare(str(workspace / "tiny-vit"), str(tmp_path / "small"), output=str(tmp_path / "out"), arms=ARMS,
                progress=False, **SPLITS, **BUDGET)  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_a_pass_that_cannot_choose_rates_is_refused_before_anything_is_written(workspace, tmp_path):
    """Two images, each labelled with both classes: two classes with two images each, as the label check asks, yet
    every image's nearest class mean is the other class's (its own class's mean, without it, is the other image), so
    the probe scores 0 on every block and no rate can be chosen: refused up front, not after the tuning."""
    from datasets import ClassLabel, Dataset, DatasetDict

    pair = _images(np.random.default_rng(2), [0, 1])

    def split(images, labels):
        rows = {"img": images, "label": labels}
        return Dataset.from_dict(rows).cast_column("label", ClassLabel(names=["circle", "square"]))

    DatasetDict({"train": split(pair * 2, [0, 0, 1, 1]), "validation": split(pair, [0, 1]),
                 "test": split(pair, [0, 1])}).save_to_disk(str(tmp_path / "ambiguous"))  # fmt: skip
    with pytest.raises(ValueError, match=r"diagnostic pass cannot choose its rates on this training split \(4 images"):
        compare(str(workspace / "tiny-vit"), str(tmp_path / "ambiguous"), output=str(tmp_path / "out"), arms=ARMS,
                progress=False, **SPLITS, **{**BUDGET, "seeds": 1})  # fmt: skip
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------ parts
def test_schedule_runs_no_tuning_for_the_untuned_arm(tmp_path):
    ran = []

    def train(spec):
        ran.append((spec.phase, spec.arm, spec.backbone_lr, spec.own_lr, spec.seed))
        return {"key": spec.key, "phase": spec.phase, "val_accuracy": 0.5}

    chosen = run_schedule(["standard", "recommended"], [(1.0, 2.0), (3.0, 2.0)], [0, 1], RunStore(str(tmp_path)),
                          train, progress=False)  # fmt: skip
    assert chosen == {"standard": (1.0, 2.0), "recommended": None}
    assert [r for r in ran if r[1] == "recommended"] == [
        ("confirm", "recommended", None, None, 0),
        ("confirm", "recommended", None, None, 1),
    ]


def test_table_shows_the_range_of_the_rates_chosen_over_the_seeds():
    """Two seeds whose passes fell on either side of the threshold: the table shows both backbone rates, the note what
    each pass read, and the rows' numbers are those of the records."""
    recipes = [
        {"backbone_lr": 1e-4 / 9, "head_lr": 1e-3, "budget": "short", "last_over_peak": 0.99, "threshold": 0.986,
         "samples": 256},
        {"backbone_lr": 1e-3, "head_lr": 1e-3, "budget": "short", "last_over_peak": 0.9, "threshold": 0.986,
         "samples": 256},
    ]  # fmt: skip
    records_ = []
    for seed, (recipe, accuracies) in enumerate(zip(recipes, [(0.8, 0.7), (0.9, 0.85)])):
        for arm, accuracy, config in (("standard", accuracies[0], (1e-4, 1e-3)),
                                      ("recommended", accuracies[1], (recipe["backbone_lr"], 1e-3))):  # fmt: skip
            records_.append({"arm": arm, "seed": seed, "test_accuracy": accuracy, "val_curve": [0.5],
                             "recipe": recipe if arm == "recommended" else None,
                             "config": {"backbone_lr": config[0], "own_lr": config[1]}})  # fmt: skip
    summary = summarize(["standard", "recommended"], {"standard": (1e-4, 1e-3), "recommended": None}, records_)
    summary["settings"] = {"model": "m", "data": "d"}
    text = markdown(summary)
    assert "| recommended | 1.11e-05 to 0.001 | 0.001 | 77.50 |" in text
    assert "last/peak probe accuracy 0.900 to 0.990 (threshold 0.986)" in text
    assert summary["arms"]["recommended"]["difference_to_standard"]["mean"] == pytest.approx(-0.075)
    assert summary["verdict"].startswith(
        "Without a sweep, the recommended recipe (rates from one diagnostic pass, not tuned) loses 7.50 points to the "
        "tuned standard fine-tuning [95% CI"
    )


def test_every_process_trains_at_rank_0_s_recipe(workspace, tmp_path, monkeypatch):
    """Under a distributed launch the pass runs on rank 0 and its recipe is broadcast: a process other than rank 0
    trains at the recipe it receives and runs no pass of its own (two passes could differ by rounding on GPUs)."""
    from hf_plasticity import FineTuneRecipe
    from hf_plasticity.comparison import arms, runner
    from hf_plasticity.core import collectives

    rank_0 = FineTuneRecipe(backbone_lr=7e-4, head_lr=5e-3, budget="short", last_over_peak=0.5, threshold=0.986)
    passes = []
    monkeypatch.setattr(runner, "recipe_for_run", lambda *a, **k: passes.append(a) or arms.recipe_for_run(*a, **k))

    def as_rank_1(fn):  # the real run_on_main, as seen from rank 1 of a process group whose rank 0 sent `rank_0`
        with monkeypatch.context() as patch:
            patch.setattr(collectives, "is_distributed", lambda: True)
            patch.setattr(collectives, "is_main_process", lambda: False)
            patch.setattr(collectives, "broadcast_object", lambda obj, src=0: ("ok", rank_0))
            return collectives.run_on_main(fn)

    monkeypatch.setattr(runner, "run_on_main", as_rank_1)
    output = tmp_path / "out"
    compare(str(workspace / "tiny-vit"), str(workspace / "data"), output=str(output), arms=ARMS, progress=False,
            **SPLITS, **{**BUDGET, "seeds": 1})  # fmt: skip
    (run,) = [r for r in records(output) if r["arm"] == "recommended"]
    assert passes == []  # no pass on this process
    assert run["config"] == {"backbone_lr": 7e-4, "own_lr": 5e-3} and run["recipe"] == rank_0.to_dict()
