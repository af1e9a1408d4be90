"""Every notebook in ``notebooks/`` runs headless, offline, in test mode; the repository copies carry no outputs.

Each notebook is executed with nbclient in a kernel started from this interpreter (a kernelspec written to a
temporary folder, so the venv's Python runs it whatever ``python`` is on PATH), with ``HF_PLASTICITY_NOTEBOOK_TEST=1``
(tiny models and data from ``hf_plasticity.notebook_utils``) and the Hub offline. The Hub notebook pushes to the
test-only local Hub server of ``tests/hub_server.py``. A cell that raises fails the test, with the cell's traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("sklearn")

from nbclient.exceptions import CellExecutionError  # noqa: E402

from .hub_server import LocalHub  # noqa: E402

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
KERNEL_NAME = "hf-plasticity-test"
TIMEOUT_PER_CELL = 300


def test_the_notebooks_exist():
    names = {path.name for path in NOTEBOOKS}
    assert {"01_quickstart.ipynb", "02_diagnostics.ipynb", "03_hub.ipynb", "04_multi_gpu.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_outputs_are_cleared(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}, cell {i} has outputs: clear them (python notebooks/_build.py)"
            assert cell.execution_count is None, f"{path.name}, cell {i} has an execution count"


def test_notebooks_match_their_generator():
    result = subprocess.run(
        [sys.executable, str(NOTEBOOK_DIR / "_build.py"), "--check"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_has_badge_install_and_parameters(path):
    nb = nbformat.read(path, as_version=4)
    assert f"notebooks/{path.name}" in nb.cells[0].source and "colab-badge" in nb.cells[0].source
    assert "HF_PLASTICITY_NOTEBOOK_TEST" in nb.cells[1].source
    assert "%pip install" in nb.cells[2].source and "if not TEST_MODE" in nb.cells[2].source
    assert any("parameters" in cell.metadata.get("tags", []) for cell in nb.cells)


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory):
    """A kernelspec that starts this interpreter (the venv's), found through JUPYTER_PATH."""
    root = tmp_path_factory.mktemp("jupyter")
    spec = root / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": KERNEL_NAME, "language": "python"}))
    return root


def _kernel_env(kernel_dir: Path, workdir: Path, extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "HF_PLASTICITY_NOTEBOOK_TEST": "1",
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "HF_HOME": str(workdir / "hf-home"),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "MPLBACKEND": "Agg",
            "OMP_NUM_THREADS": "1",  # the tiny models run faster on one thread, and CI machines are shared
            "TOKENIZERS_PARALLELISM": "false",
            "JUPYTER_PATH": str(kernel_dir),
            "PYTHONWARNINGS": "ignore",
        }
    )
    env.pop("HF_ENDPOINT", None)
    env.update(extra)
    return env


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_test_mode(path, kernel_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_dir))
    nb = nbformat.read(path, as_version=4)
    pushes = path.name == "03_hub.ipynb"
    with LocalHub() if pushes else contextlib.nullcontext() as hub:
        extra = hub.env(tmp_path / "hf-home") if pushes else {}
        client = nbclient.NotebookClient(
            nb,
            kernel_name=KERNEL_NAME,
            timeout=TIMEOUT_PER_CELL,
            resources={"metadata": {"path": str(tmp_path)}},  # the notebook's working directory
        )
        try:
            client.execute(env=_kernel_env(kernel_dir, tmp_path, extra))
        except CellExecutionError as error:
            message = re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # the kernel colours its tracebacks
            pytest.fail(f"{path.name} failed:\n{message}", pytrace=False)
        if pushes:
            assert hub.repos, "the Hub notebook pushed nothing to the local Hub"


def test_readme_lists_every_notebook():
    readme = (NOTEBOOK_DIR.parent / "README.md").read_text()
    for path in NOTEBOOKS:
        assert f"(notebooks/{path.name})" in readme, f"README's Notebooks table misses {path.name}"


def test_test_mode_switch_and_helpers_reject_unknown_names(monkeypatch, tmp_path):
    from hf_plasticity import notebook_utils

    for value, expected in (("1", True), ("true", True), ("", False), ("0", False), ("false", False)):
        monkeypatch.setenv(notebook_utils.TEST_MODE_ENV, value)
        assert notebook_utils.notebook_test_mode() is expected
    with pytest.raises(ValueError, match="accepted values"):
        notebook_utils.tiny_image_dataset("cifar10")
    with pytest.raises(ValueError, match="accepted values"):
        notebook_utils.tiny_pretrained_checkpoint("swin", tmp_path)
