"""Every notebook in ``notebooks/`` runs headless and offline with tiny settings; its reviewable source matches it.

Each notebook's source is a jupytext percent-format ``.py`` (linted like the rest of the code); the committed
``.ipynb`` is written from it by ``notebooks/sync.py``, with no outputs. The notebooks hold no test branch: as
papermill does, the test inserts a cell after the one tagged ``parameters`` that sets tiny values (a tiny local
checkpoint, ``imagefolder`` datasets, a local accuracy metric, from ``tests/notebook_fixtures.py``), and nbclient skips
the cells tagged ``skip-execution`` (the Colab install cell). The kernel runs this interpreter, offline; the Hub
notebook pushes to the local test server of ``tests/hub_server.py``. A cell that raises fails the test, with the cell's
traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("jupytext")
pytest.importorskip("sklearn")

from nbclient.exceptions import CellExecutionError  # noqa: E402

from . import notebook_fixtures  # noqa: E402
from .hub_server import LocalHub  # noqa: E402

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
KERNEL_NAME = "hf-plasticity-test"
TIMEOUT_PER_CELL = 300


def test_the_notebooks_exist_with_their_sources():
    names = {path.name for path in NOTEBOOKS}
    assert {"01_quickstart.ipynb", "02_diagnostics.ipynb", "03_hub.ipynb", "04_multi_gpu.ipynb"} <= names
    assert all(path.with_suffix(".py").is_file() for path in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_outputs_are_cleared(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}, cell {i} has outputs: clear them (python notebooks/sync.py)"
            assert cell.execution_count is None, f"{path.name}, cell {i} has an execution count"


def test_notebooks_match_their_sources():
    result = subprocess.run(
        [sys.executable, str(NOTEBOOK_DIR / "sync.py"), "--check"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_has_badge_install_and_parameters_but_no_test_branch(path):
    nb = nbformat.read(path, as_version=4)
    assert f"notebooks/{path.name}" in nb.cells[0].source and "colab-badge" in nb.cells[0].source
    assert "%pip install" in nb.cells[1].source and "skip-execution" in nb.cells[1].metadata.get("tags", [])
    assert sum("parameters" in cell.metadata.get("tags", []) for cell in nb.cells) == 1
    code = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")
    assert not re.search(r"TEST_MODE|NOTEBOOK_TEST|notebook_utils|tiny_", code), "a test branch in the notebook"


# ---------------------------------------------------------------------------------------------------- execution
def _free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    """Tiny stand-ins, made once: checkpoints, imagefolder datasets, the accuracy metric."""
    root = tmp_path_factory.mktemp("notebook-fixtures")
    return {
        "vit": notebook_fixtures.tiny_checkpoint("vit", root / "vit"),
        "convnext": notebook_fixtures.tiny_checkpoint("convnext", root / "convnext"),
        "resnet": notebook_fixtures.tiny_checkpoint("resnet", root / "resnet"),
        "digits": notebook_fixtures.image_folder("digits", root / "digits", n_train=320, n_test=160),
        "shapes": notebook_fixtures.image_folder("shapes", root / "shapes", n_train=32, n_test=8),
        "metric": notebook_fixtures.accuracy_metric(root / "metric"),
    }


def tiny_parameters(name: str, fixtures: dict[str, str]) -> dict:
    """What the test puts after each notebook's parameters cell."""
    vit, digits, metric = fixtures["vit"], fixtures["digits"], fixtures["metric"]
    if name == "01_quickstart":
        return dict(MODEL_ID=vit, DATASET_ID=digits, MAX_TRAIN=320, MAX_TEST=160, EPOCHS=2, LEARNING_RATE=1e-3,
                    METRIC=metric)  # fmt: skip
    if name == "02_diagnostics":
        return dict(
            MODELS={"ViT": fixtures["vit"], "ConvNeXt": fixtures["convnext"], "ResNet": fixtures["resnet"]},
            DATASETS={"typical (shapes)": (fixtures["shapes"], "image", "label", "train"),
                      "atypical (digits)": (digits, "image", "label", "train")},
            BATCHES=2, BATCH_SIZE=16,
        )  # fmt: skip
    if name == "03_hub":
        return dict(MODEL_ID=vit, DATASET_ID=digits, MAX_TRAIN=64, BATCH_SIZE=16, REPO_ID="tester/tiny-vit-restored")
    if name == "04_multi_gpu":
        return dict(MODEL_ID=vit, DATASET_ID=digits, MAX_TRAIN=128, MAX_TEST=64, EPOCHS=1, BATCH_SIZE=16,
                    LEARNING_RATE=1e-3, METRIC=metric, NUM_PROCESSES=2, PORT=_free_port())  # fmt: skip
    raise ValueError(f"No tiny parameters for {name}.")


def inject_parameters(nb, values: dict) -> None:
    """Inserts a cell that sets ``values`` right after the cell tagged ``parameters`` (what papermill does)."""
    (index,) = [i for i, cell in enumerate(nb.cells) if "parameters" in cell.metadata.get("tags", [])]
    source = "\n".join(f"{key} = {value!r}" for key, value in values.items())
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    cell["id"] = "injected-parameters"
    nb.cells.insert(index + 1, cell)


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
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "HF_HOME": str(workdir / "hf-home"),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "OMP_NUM_THREADS": "1",  # the tiny models run faster on one thread, and CI machines are shared
            "TOKENIZERS_PARALLELISM": "false",
            "JUPYTER_PATH": str(kernel_dir),
            "PYTHONWARNINGS": "ignore",
        }
    )
    env.pop("HF_ENDPOINT", None)
    env.pop("MPLBACKEND", None)  # the kernel's inline backend shows figures (the test process itself runs on Agg)
    env.update(extra)
    return env


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_with_tiny_parameters(path, fixtures, kernel_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_dir))
    nb = nbformat.read(path, as_version=4)
    inject_parameters(nb, tiny_parameters(path.stem, fixtures))
    pushes = path.name == "03_hub.ipynb"
    with LocalHub() if pushes else contextlib.nullcontext() as hub:
        extra = hub.env(tmp_path / "hf-home") if pushes else {}
        client = nbclient.NotebookClient(
            nb,
            kernel_name=KERNEL_NAME,
            timeout=TIMEOUT_PER_CELL,
            skip_cells_with_tag="skip-execution",
            resources={"metadata": {"path": str(tmp_path)}},  # the notebook's working directory
        )
        try:
            client.execute(env=_kernel_env(kernel_dir, tmp_path, extra))
        except CellExecutionError as error:
            message = re.sub(r"\x1b\[[0-9;]*m", "", str(error))  # the kernel colours its tracebacks
            pytest.fail(f"{path.name} failed:\n{message}", pytrace=False)
        if pushes:
            assert set(hub.repos["tester/tiny-vit-restored"].head.files) >= {"plasticity.png", "README.md"}
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    if path.stem in ("01_quickstart", "02_diagnostics"):  # the plasticity picture is shown
        assert any("image/png" in o.get("data", {}) for o in outputs)


def test_readme_lists_every_notebook():
    readme = (NOTEBOOK_DIR.parent / "README.md").read_text()
    for path in NOTEBOOKS:
        assert f"(notebooks/{path.name})" in readme, f"README's Notebooks table misses {path.name}"
