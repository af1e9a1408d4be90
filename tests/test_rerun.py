"""`python -m benchmarks.rerun` re-trains committed runs and tells identical bits from different ones."""

from __future__ import annotations

import json

import pytest

from benchmarks import rerun, study

TINY = {"max_train": 60, "max_test": 20, "image_size": 32, "calibration_batches": 1}


@pytest.fixture
def results(tmp_path, monkeypatch):
    """A folder with one tuning and one confirmation run of a tiny version-3 study."""
    monkeypatch.setattr(study, "ARMS", {"standard": study.StudyArm("standard", grid={"backbone_lr": (1e-3,)})})
    monkeypatch.setattr(study, "BUDGETS", {"short": 1})
    settings = study.StudySettings.for_protocol(
        "v3", models=["efficientnet_lite0"], targets=["digits"], arms=["standard"], budgets=["short"],
        results=str(tmp_path), tuning_seeds=(100,), confirmation_seeds=(0,), **TINY,
    )  # fmt: skip
    assert study.run_study(settings, progress=False)["done"] == 2
    return tmp_path / "efficientnet_lite0__digits.jsonl"


def test_a_run_made_again_on_the_same_machine_trains_the_same_bits(results, capsys):
    for line in (0, 1):  # tuning (validation only) and confirmation (test too)
        committed, again = rerun.rerun(results, line)
        assert rerun.same_bits(committed, again) and again["phase"] == committed["phase"]
    assert rerun.main([str(results), "0", "1"]) == 0
    assert "2 of 2 runs train the same bits here." in capsys.readouterr().out
    assert results.read_text().count("\n") == 2  # nothing recorded


def test_a_run_whose_bits_differ_is_reported_and_fails_the_command(results, capsys):
    lines = results.read_text().splitlines()
    tampered = json.loads(lines[1])
    tampered["train_loss"][-1] += 1e-12  # a last-digit difference, as another CPU's kernels give
    results.write_text("\n".join([lines[0], json.dumps(tampered)]) + "\n")
    assert not rerun.same_bits(*rerun.rerun(results, 1))
    assert rerun.main([str(results), "1"]) == 1
    assert "line 1 (standard confirm short seed 0): DIFFERENT" in capsys.readouterr().out


def test_a_line_outside_the_file_is_refused(results):
    with pytest.raises(ValueError, match="has lines 0 to 1; got 2"):
        rerun.rerun(results, 2)
