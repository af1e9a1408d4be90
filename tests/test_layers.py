"""The package's layers (../shared/DESIGN.md): imports point down only. import-linter checks the contracts in
pyproject.toml: cli -> integrations -> pipeline -> strategies -> diagnostics -> core, the layers inside the core, and
the lower layers free of transformers, huggingface_hub and accelerate."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))"


def lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-c", LINT], cwd=root, env=env, capture_output=True, text=True)


def test_import_contracts_are_kept():
    done = lint(ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "3 kept, 0 broken" in done.stdout


def lint_with(tmp_path: Path, module: str, line: str) -> subprocess.CompletedProcess:
    """import-linter on a copy of the package where ``module`` (a path under hf_plasticity/) ends with ``line``."""
    shutil.copytree(ROOT / "hf_plasticity", tmp_path / "hf_plasticity", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    with open(tmp_path / "hf_plasticity" / module, "a") as f:
        f.write(f"\n{line}  # noqa: E402,F401\n")
    return lint(tmp_path)


def test_a_core_module_importing_upward_breaks_the_contract(tmp_path):
    """The check can fail: in a copy of the package where the plan type imports the pipeline, it does."""
    done = lint_with(tmp_path, "core/plan.py", "from ..pipeline import restore")
    assert done.returncode == 1
    assert "hf_plasticity.core.plan -> hf_plasticity.pipeline.restore" in done.stdout


@pytest.mark.parametrize(
    "module, line, chain",
    [
        # one layer up inside the core: the validators (a leaf) importing the config
        ("core/validators.py", "from . import config", "hf_plasticity.core.validators -> hf_plasticity.core.config"),
        # the record (layer 3) importing the param groups (layer 4)
        (
            "core/record.py",
            "from . import param_groups",
            "hf_plasticity.core.record -> hf_plasticity.core.param_groups",
        ),
        # two independent siblings: the plan importing the optimizer helpers
        ("core/plan.py", "from . import optim", "hf_plasticity.core.plan -> hf_plasticity.core.optim"),
    ],
)
def test_an_import_against_the_core_layers_breaks_the_core_contract(tmp_path, module, line, chain):
    done = lint_with(tmp_path, module, line)
    assert done.returncode == 1
    assert "Core layers: " in done.stdout and "BROKEN" in done.stdout and chain in done.stdout
    top = "Layers: cli -> comparison -> integrations -> pipeline -> strategies -> diagnostics -> core KEPT"
    assert top in " ".join(done.stdout.split())  # the report wraps long contract names


def test_no_module_imports_one_that_imports_it_back():
    """No import circle anywhere in the package (type-checking and function-level imports count too): e.g.
    core/config.py and core/registry.py imported each other."""
    import grimp

    graph = grimp.build_graph("hf_plasticity", cache_dir=None)
    circles = sorted(
        (module, imported)
        for module in graph.modules
        for imported in graph.find_modules_directly_imported_by(module)
        if imported.startswith("hf_plasticity") and graph.chain_exists(imported, module)
    )
    assert circles == []
