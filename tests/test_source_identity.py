"""A pair is never resumed from another pretrained source than the one its runs were fine-tuned from."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks import models, study
from benchmarks.source_identity import (
    IDENTITY_KEYS,
    SOURCES_FILE,
    documented_curve,
    fingerprint,
    first_difference,
    recorded_sources,
    refuse_another_source,
)

CURVE = {"train_loss": [2.3, 1.1], "train_acc": [0.1, 0.6], "val_acc": [0.1, 0.5], "test_acc": [0.1, 0.5]}


def test_a_fingerprint_reads_the_curve_and_not_its_timings():
    assert fingerprint(CURVE) == fingerprint({**CURVE, "epoch_seconds": [9.0, 8.0], "lr": [0.1, 0.2]})
    assert fingerprint(CURVE) != fingerprint({**CURVE, "train_loss": [2.3, 1.1000000000000003]})  # the last digit


@settings(max_examples=50, deadline=None)
@given(key=st.sampled_from(IDENTITY_KEYS), epoch=st.integers(0, 1), value=st.floats(allow_nan=False))
def test_any_change_of_a_recorded_value_changes_the_fingerprint_and_is_located(key, epoch, value):
    moved = {k: list(v) for k, v in CURVE.items()}
    moved[key][epoch] = value
    if value == CURVE[key][epoch]:
        assert fingerprint(moved) == fingerprint(CURVE) and first_difference(CURVE, moved) == "the curves agree"
    else:
        assert fingerprint(moved) != fingerprint(CURVE)
        assert first_difference(CURVE, moved).startswith(f"first at epoch {epoch + 1}, {key} ")


def test_a_longer_curve_is_a_difference_too():
    longer = {key: [*values, values[-1]] for key, values in CURVE.items()}
    assert first_difference(CURVE, longer) == "one curve ends at epoch 2"
    assert first_difference(longer, CURVE) == "one curve ends at epoch 2"


def test_the_documented_sources_are_the_ones_the_committed_records_came_from():
    """Pinned: rewriting docs/source_pretraining.json with another machine's pretraining (python -m benchmarks
    pretrain --output docs) would move every unmarked committed run onto that source."""
    assert {model: fingerprint(documented_curve(model)) for model in ("resnet_tiny", "convnext_tiny", "vit_tiny")} == {
        "resnet_tiny": "90a4efd91787ef55",
        "convnext_tiny": "9f8d941d7e18e1fb",
        "vit_tiny": "4e85eae602a2f32c",
    }


def test_runs_without_a_fingerprint_come_from_the_documented_source():
    documented = fingerprint(documented_curve("resnet_tiny"))
    assert recorded_sources("resnet_tiny", [{"arm": "standard"}]) == {documented}
    assert recorded_sources("resnet_tiny", [{"arm": "standard", "pretrained_source": "abc"}]) == {"abc"}
    assert recorded_sources("efficientnet_lite0", [{"arm": "standard"}]) == set()  # published weights


@pytest.mark.parametrize(
    "records, source, refused",
    [
        ([], "new", False),  # a new pair takes any source
        ([{"arm": "standard", "pretrained_source": "a"}], "a", False),
        ([{"arm": "standard", "pretrained_source": "a"}], None, False),  # nothing to check (published weights)
        ([{"arm": "standard", "pretrained_source": "a"}], "b", True),
        ([{"arm": "standard"}], "b", True),  # made from the documented source
    ],
)
def test_another_source_is_refused(records, source, refused):
    if refused:
        with pytest.raises(
            ValueError, match=r"pairs.jsonl holds runs of resnet_tiny fine-tuned from .* source cached"
        ):
            refuse_another_source("resnet_tiny", "pairs.jsonl", records, source)
    else:
        refuse_another_source("resnet_tiny", "pairs.jsonl", records, source)


def _cache_a_source(tmp_path, monkeypatch, curve):
    """A cached `resnet_tiny` source with this pretraining curve (only its metrics: nothing loads the weights)."""
    monkeypatch.setattr(models, "DEFAULT_CACHE_DIR", tmp_path / "cache")
    folder = models.cache_path(models.get_spec("resnet_tiny"), models.pretrain_recipe("resnet_tiny"))
    folder.mkdir(parents=True)
    (folder / models.METRICS_FILE).write_text(json.dumps({"curve": curve}))


def _settings(tmp_path):
    # a folder of records without study.json is version 2's
    return study.StudySettings.for_protocol(
        "v2", models=["resnet_tiny"], targets=["digits"], results=str(tmp_path / "results")
    )


def test_a_study_refuses_a_pair_made_from_another_source_before_it_writes(tmp_path, monkeypatch):
    again = {k: list(v) for k, v in documented_curve("resnet_tiny").items()}
    again["train_loss"][5] += 1e-9  # pretrained again on another CPU: the bits part
    _cache_a_source(tmp_path, monkeypatch, again)
    results = tmp_path / "results"
    results.mkdir()
    pair = results / "resnet_tiny__digits.jsonl"
    pair.write_text(json.dumps({"model": "resnet_tiny", "target": "digits", "arm": "standard"}) + "\n")
    with pytest.raises(ValueError, match="docs/source_pretraining.json's first at epoch 6, train_loss"):
        study.preflight(_settings(tmp_path))
    assert pair.read_text().count("\n") == 1 and not (results / "study.json").exists()  # nothing written


def test_a_study_asks_for_the_source_before_it_would_pretrain_it_for_a_pair_with_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "DEFAULT_CACHE_DIR", tmp_path / "cache")  # empty: nothing pretrained here
    results = tmp_path / "results"
    results.mkdir()
    (results / "resnet_tiny__digits.jsonl").write_text(json.dumps({"model": "resnet_tiny", "arm": "standard"}) + "\n")
    with pytest.raises(ValueError, match="not cached here yet: pretrain it first .python -m benchmarks pretrain"):
        study.preflight(_settings(tmp_path))
    (results / "resnet_tiny__digits.jsonl").unlink()
    study.preflight(_settings(tmp_path))  # a new pair: its first run pretrains the source


def test_the_documented_source_resumes_its_pair(tmp_path, monkeypatch):
    _cache_a_source(tmp_path, monkeypatch, documented_curve("resnet_tiny"))
    results = tmp_path / "results"
    results.mkdir()
    (results / "resnet_tiny__digits.jsonl").write_text(json.dumps({"model": "resnet_tiny", "arm": "standard"}) + "\n")
    study.preflight(_settings(tmp_path))


def test_a_run_of_another_source_is_refused_before_it_is_written(tmp_path, monkeypatch):
    """A source pretrained after the study began (by its first run) is checked run by run, as the parent writes."""
    path = tmp_path / "resnet_tiny__digits.jsonl"
    first = {
        "model": "resnet_tiny",
        "phase": "tune",
        "budget": "short",
        "config": "c",
        "seed": 100,
        "pretrained_source": "a",
    }
    path.write_text(json.dumps(first) + "\n")
    records = study.load_results(path)
    monkeypatch.setattr(study, "run_one", lambda task: {**task, "pretrained_source": "b"})
    task = {**first, "seed": 101}
    counts = {"done": 0, "skipped": 0}
    with pytest.raises(ValueError, match="resnet_tiny fine-tuned from the pretrained source \\['a'\\]"):
        study._execute([task], records, path, None, counts, False, "tune", _no_bar)
    assert path.read_text() == json.dumps(first) + "\n" and counts["done"] == 0
    monkeypatch.setattr(study, "run_one", lambda task: {**task, "pretrained_source": "a"})
    study._execute([task], records, path, None, counts, False, "tune", _no_bar)
    assert counts["done"] == 1 and path.read_text().count("\n") == 2


def _no_bar(**kwargs):
    class Bar:
        def update(self, n):
            pass

        def close(self):
            pass

    return Bar()


def test_a_report_refuses_a_pair_of_two_sources(tmp_path):
    from benchmarks.study_report import result_files

    rows = [{"model": "resnet_tiny", "arm": "standard"}, {"model": "resnet_tiny", "pretrained_source": "b"}]
    (tmp_path / "resnet_tiny__digits.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match="fine-tuned from 2 pretrained sources"):
        list(result_files(tmp_path))
    (tmp_path / "resnet_tiny__digits.jsonl").write_text(json.dumps(rows[0]) + "\n")
    assert [model for model, _, _ in result_files(tmp_path)] == ["resnet_tiny"]


def test_a_run_records_the_source_it_was_fine_tuned_from(tmp_path, monkeypatch):
    """Through the study's own run: the fingerprint of the cached source's curve, and the CPU kernels it used."""
    import torch

    monkeypatch.setattr(models, "DEFAULT_CACHE_DIR", tmp_path / "cache")
    curve = {**CURVE, "test_acc": [0.95, 0.95, 0.95, 0.95]}  # flat and above the threshold: a passing source
    folder = models.cache_path(models.get_spec("resnet_tiny"), models.pretrain_recipe("resnet_tiny"))
    models.transformers_model_from_config(models.get_spec("resnet_tiny"), 10).save_pretrained(folder)
    (folder / models.METRICS_FILE).write_text(json.dumps({"curve": curve, "recipe": {}}))
    settings = study.StudySettings(models=[], targets=[], max_train=40, max_test=20, calibration_batches=1)
    task = study.make_task(settings, "resnet_tiny", "digits", study.ARMS["standard"], {"backbone_lr": 1e-3}, "short",
                           "tune", 100)  # fmt: skip
    monkeypatch.setattr(study, "BUDGETS", {"short": 1})
    record = study.run_one(task)
    assert record["pretrained_source"] == fingerprint(curve)
    assert record["cpu"] == torch.backends.cpu.get_cpu_capability()


def test_a_folder_declares_the_source_of_its_unmarked_runs(tmp_path):
    """Version 3's convnext_tiny runs came from a source pretrained again, not the documented one."""
    (tmp_path / SOURCES_FILE).write_text(json.dumps({"resnet_tiny": {"fingerprint": "again", "evidence": "rerun"}}))
    path = tmp_path / "resnet_tiny__digits.jsonl"
    unmarked = [{"arm": "standard"}]
    assert recorded_sources("resnet_tiny", unmarked, tmp_path) == {"again"}
    assert recorded_sources("vit_tiny", unmarked, tmp_path) == {fingerprint(documented_curve("vit_tiny"))}
    refuse_another_source("resnet_tiny", path, unmarked, "again")
    with pytest.raises(ValueError, match=r"fine-tuned from the pretrained source \['again'\]"):
        refuse_another_source("resnet_tiny", path, unmarked, fingerprint(documented_curve("resnet_tiny")))
