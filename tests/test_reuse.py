"""A run that would train exactly what a run of the results file trained copies its curves (benchmarks.reuse)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import reuse, study
from benchmarks.reuse import find_identical, training_signature

MODEL, TARGET = "efficientnet_lite0", "digits"
TINY = {"max_train": 60, "max_test": 20, "image_size": 32}
ROOT = Path(__file__).resolve().parents[1]


def _old_key(record):
    """The training of a record from before signatures were stored, rebuilt from its fields (test-only)."""
    arm = study.ARMS.get(record["arm"])
    if arm is None or "recipe" not in record:
        return None
    strategy_knobs = study.split_knobs(record["knobs"])[1]
    return json.dumps([record["model"], record["target"], record["budget"], record["seed"], arm.strategy,
                       {**arm.params, **strategy_knobs}, record["recipe"], record["n"], record.get("device", "cpu"),
                       record["test_acc"] is not None], sort_keys=True)  # fmt: skip


def test_every_pair_of_committed_runs_that_trained_the_same_thing_trained_the_same_bits():
    """The premise of reusing: identical CPU training gives identical curves (and the check is not vacuous)."""
    twins = 0
    for path in sorted((ROOT / "benchmarks" / "results" / "v3").glob("*.jsonl")):
        first: dict[str, dict] = {}
        for line in path.open():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a study running here appends to the file
                continue
            key = _old_key(record)
            if key is None or "reused" in record or record.get("device", "cpu") != "cpu":
                continue
            if key in first:
                twins += 1
                for field in ("val_acc", "test_acc", "train_loss"):
                    assert record[field] == first[key][field], (path.name, record["arm"], first[key]["arm"])
            first.setdefault(key, record)
    assert twins >= 100


def test_the_code_version_names_torch_and_changes_with_any_source_file(tmp_path, monkeypatch):
    import torch

    version = reuse.code_version()
    assert version.startswith(f"torch {torch.__version__}, source ")
    for package in reuse.CODE_PACKAGES:  # a copy of the sources, one byte changed: another version
        (tmp_path / package).mkdir()
        for path in (ROOT / package).rglob("*.py"):
            target = tmp_path / package / path.relative_to(ROOT / package)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    (tmp_path / "benchmarks" / "reuse.py").write_bytes((ROOT / "benchmarks" / "reuse.py").read_bytes())
    monkeypatch.setattr(reuse, "__file__", str(tmp_path / "benchmarks" / "reuse.py"))
    reuse.code_version.cache_clear()
    try:
        assert reuse.code_version() == version  # the same bytes
        (tmp_path / "hf_plasticity" / "__init__.py").write_text("# changed\n", "utf-8")
        reuse.code_version.cache_clear()
        assert reuse.code_version() != version
    finally:
        reuse.code_version.cache_clear()


def _arms():
    return {
        "standard": study.StudyArm("standard", grid={"backbone_lr": (1e-3,)}),
        "redraw": study.StudyArm("redraw", "reinit_layers", {}, grid={"backbone_lr": (1e-3,)}),
        "redraw_twin": study.StudyArm("redraw_twin", "reinit_layers", {}, grid={"backbone_lr": (1e-3,)}),
        "other": study.StudyArm("other", "reinit_layers", {}, grid={"backbone_lr": (3e-3,)}),
    }


def _settings(results, **kwargs):
    return study.StudySettings(
        models=[MODEL], targets=[TARGET], arms=["redraw", "redraw_twin", "other"], budgets=["short"],
        results=str(results), tuning_seeds=(100,), confirmation_seeds=(0, 1), **TINY, **kwargs,
    )  # fmt: skip


def test_an_arm_that_trains_what_another_trained_copies_its_runs_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "ARMS", _arms())
    monkeypatch.setattr(study, "BUDGETS", {"short": 2})
    assert study.run_study(_settings(tmp_path), progress=False)["done"] == 4 * 3
    records = study.load_results(tmp_path / f"{MODEL}__{TARGET}.jsonl")
    by_key = {study.run_key(r): r for r in records}
    for record in records:
        if record["arm"] == "redraw_twin":  # the same restore and recipe as redraw: copied
            source = by_key[record["reused"]]
            assert source["arm"] == "redraw" and source["seed"] == record["seed"]
            assert source["phase"] == record["phase"] and source["signature"] == record["signature"]
            for key in ("val_acc", "test_acc", "train_loss", "epoch_seconds"):
                assert record[key] == source[key]
            assert record["reinitialized"] == source["reinitialized"] > 0  # its own restore ran
        else:  # standard restores nothing, other trains at another rate: trained
            assert "reused" not in record
    signatures = {(r["arm"], r["phase"], r["seed"]): r["signature"] for r in records}
    assert signatures["standard", "confirm", 0] != signatures["redraw", "confirm", 0]
    assert signatures["other", "confirm", 0] != signatures["redraw", "confirm", 0]
    # the copy is what training again gives: the twin's confirmation run in a folder of its own trains
    twin_run = next(r for r in records if r["arm"] == "redraw_twin" and r["phase"] == "confirm")
    task = study.make_task(_settings(tmp_path / "fresh"), MODEL, TARGET, study.ARMS["redraw_twin"],
                           twin_run["knobs"], "short", "confirm", twin_run["seed"])  # fmt: skip
    trained = study.run_one(task)
    assert "reused" not in trained and trained["signature"] == twin_run["signature"]
    assert (trained["val_acc"], trained["test_acc"], trained["train_loss"]) == (
        twin_run["val_acc"], twin_run["test_acc"], twin_run["train_loss"],
    )  # fmt: skip


@pytest.mark.parametrize("change", [{"calibration_batches": 2}, {"val_fraction": 0.2}])
def test_a_setting_that_shapes_the_data_or_the_restore_gives_another_signature(tmp_path, monkeypatch, change):
    monkeypatch.setattr(study, "BUDGETS", {"short": 1})
    knobs = {"backbone_lr": 1e-3}
    tasks = [
        study.make_task(_settings(tmp_path, **extra), MODEL, TARGET, study.ARMS["auto"], knobs, "short", "tune", 100)
        for extra in ({}, change)
    ]
    runs = [study.run_one(task) for task in tasks]
    assert runs[0]["signature"] != runs[1]["signature"]


def test_a_line_being_written_or_a_run_without_a_signature_is_passed_over(tmp_path):
    path = tmp_path / "m__t.jsonl"
    old = {"arm": "standard", "seed": 0, "test_acc": [0.5]}  # recorded before signatures
    signed = {**old, "signature": "abc"}
    path.write_text(json.dumps(old) + "\n" + json.dumps(signed)[:20])  # the last line half written
    assert find_identical(path, "abc") is None
    lines = [old, {**signed, "reused": "x"}, signed]
    path.write_text("\n\n".join(json.dumps(line) for line in lines) + "\n")
    assert find_identical(path, "abc") == signed  # a copy is never the source
    assert find_identical(tmp_path / "missing.jsonl", "abc") is None
    assert training_signature({"a": 1, "b": [1, 2]}) == training_signature({"b": [1, 2], "a": 1})
