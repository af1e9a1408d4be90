"""A run that would train exactly what a run of the results file trained copies its curves (benchmarks.reuse)."""

from __future__ import annotations

import glob
import json

import pytest

from benchmarks import study
from benchmarks.reuse import find_identical, signature_of_record, training_signature

MODEL, TARGET = "efficientnet_lite0", "digits"
TINY = {"max_train": 60, "max_test": 20, "image_size": 32}
BASE = {
    "model": "vit_tiny",
    "target": "digits",
    "budget": "short",
    "seed": 0,
    "strategy": None,
    "strategy_params": {},
    "recipe": {"epochs": 3, "backbone_lr": 1e-3, "head_lr": 3e-3},
    "n": {"train": 8, "val": 4, "test": 4},
    "device": "cpu",
    "evaluates_test": True,
    "image_size": None,
}
CHANGES = {
    "model": "resnet_tiny",
    "target": "textures",
    "budget": "long",
    "seed": 1,
    "strategy": "dash",
    "strategy_params": {"lambda_min": 0.3},
    "recipe": {"epochs": 3, "backbone_lr": 3e-3, "head_lr": 3e-3},
    "n": {"train": 9, "val": 4, "test": 4},
    "device": "cuda",
    "evaluates_test": False,
    "image_size": 224,
}


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_every_ingredient_of_a_run_changes_its_signature(field):
    assert training_signature(**BASE) == training_signature(**dict(BASE))
    assert training_signature(**BASE) != training_signature(**{**BASE, field: CHANGES[field]})


def test_every_pair_of_committed_runs_with_one_signature_trained_the_same_bits():
    """The premise of reusing: identical CPU training gives identical curves (and the check is not vacuous)."""
    twins = 0
    for path in sorted(glob.glob("benchmarks/results/v3/*.jsonl")):
        first: dict[str, dict] = {}
        for line in open(path):
            record = json.loads(line)
            signature = signature_of_record(record, study.ARMS)
            if signature is None or "reused" in record or record["device"] != "cpu":
                continue
            if signature in first:
                twins += 1
                for key in ("val_acc", "test_acc", "train_loss"):
                    assert record[key] == first[signature][key], (path, record["arm"], first[signature]["arm"])
            first.setdefault(signature, record)
    assert twins >= 100


def _settings(tmp_path, **kwargs):
    return study.StudySettings(
        models=[MODEL], targets=[TARGET], arms=["twin", "other"], budgets=["short"], results=str(tmp_path),
        tuning_seeds=(100,), confirmation_seeds=(0, 1), **TINY, **kwargs,
    )  # fmt: skip


def test_an_arm_that_trains_what_another_trained_copies_its_runs_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "ARMS", {
        "standard": study.StudyArm("standard", grid={"backbone_lr": (1e-3,)}),
        "twin": study.StudyArm("twin", grid={"backbone_lr": (1e-3,)}),  # trains exactly what standard trains
        "other": study.StudyArm("other", grid={"backbone_lr": (3e-3,)}),
    })  # fmt: skip
    monkeypatch.setattr(study, "BUDGETS", {"short": 2})
    settings = _settings(tmp_path)
    assert study.run_study(settings, progress=False)["done"] == 3 * 3
    records = study.load_results(tmp_path / f"{MODEL}__{TARGET}.jsonl")
    by_key = {study.run_key(r): r for r in records}
    for record in records:
        if record["arm"] == "twin":
            source = by_key[record["reused"]]
            assert source["arm"] == "standard" and source["seed"] == record["seed"]
            assert source["phase"] == record["phase"] and source["recipe"] == record["recipe"]
            for key in ("val_acc", "test_acc", "train_loss", "epoch_seconds"):
                assert record[key] == source[key]
        else:
            assert "reused" not in record  # standard trained first; other's rate differs
    # the copy is what training again gives: the twin's confirmation run in a folder of its own trains
    fresh = tmp_path / "fresh"
    twin_run = next(r for r in records if r["arm"] == "twin" and r["phase"] == "confirm")
    task = study.make_task(_settings(fresh), MODEL, TARGET, study.ARMS["twin"], twin_run["knobs"], "short", "confirm",
                           twin_run["seed"])  # fmt: skip
    trained = study.run_one(task)
    assert "reused" not in trained
    assert (trained["val_acc"], trained["test_acc"], trained["train_loss"]) == (
        twin_run["val_acc"], twin_run["test_acc"], twin_run["train_loss"],
    )  # fmt: skip


def test_a_line_being_written_or_an_unknown_arm_is_passed_over(tmp_path):
    record = {"arm": "standard", "model": "m", "target": "t", "budget": "short", "seed": 0, "knobs": {},
              "recipe": {"epochs": 3}, "n": {"train": 1, "val": 1}, "device": "cpu", "test_acc": [0.5]}  # fmt: skip
    signature = signature_of_record(record, study.ARMS)
    path = tmp_path / "m__t.jsonl"
    unknown = {**record, "arm": "no_such_arm"}
    path.write_text(json.dumps(unknown) + "\n" + json.dumps(record)[:40])  # the last line half written
    assert signature_of_record(unknown, study.ARMS) is None
    assert find_identical(path, signature, study.ARMS) is None
    path.write_text(json.dumps(unknown) + "\n\n" + json.dumps(record) + "\n")
    assert find_identical(path, signature, study.ARMS) == record
    assert find_identical(tmp_path / "missing.jsonl", signature, study.ARMS) is None
