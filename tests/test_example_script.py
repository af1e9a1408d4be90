"""examples/train_accelerate.py runs offline (a tiny ConvNeXt), restores before building its optimizer from
`plasticity_param_groups`, and resumes from its own checkpoint with the same groups."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "train_accelerate.py"


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--report-to", "none", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def test_the_example_trains_with_a_reinit_lr_and_resumes(tmp_path):
    common = ["--strategy", "reinit_layers", "--reinit-lr", "1e-3", "--max-steps", "4", "--save-every", "2"]
    first = run(*common, "--output-dir", str(tmp_path / "run"))
    assert first.returncode == 0, first.stderr[-3000:]
    assert "step 4" in first.stdout
    record = json.loads((tmp_path / "run" / "final" / "config.json").read_text())["plasticity"]
    assert record["redrawn"]["whole"] == ["convnext.encoder.stages.1.layers.1", "convnext.layernorm"]
    resumed = run(
        *common, "--output-dir", str(tmp_path / "resumed"), "--resume", str(tmp_path / "run" / "checkpoint-2")
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]  # load_state found the same optimizer groups
    assert "step 4" in resumed.stdout


def test_a_reinit_lr_after_a_partial_redraw_is_refused(tmp_path):
    done = run("--strategy", "selective", "--reinit-lr", "1e-3", "--max-steps", "2", "--output-dir", str(tmp_path))
    assert done.returncode != 0
    assert "PartialRedrawError" in done.stderr and "one learning rate per tensor" in done.stderr
