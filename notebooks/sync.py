"""Writes each notebook (``NN_name.ipynb``) from its reviewable source (``NN_name.py``, jupytext percent format), with
empty outputs and stable cell ids, so the committed ``.ipynb`` files only change when their source does.

    python notebooks/sync.py          # rewrite every .ipynb from its .py
    python notebooks/sync.py --check  # exit 1 when an .ipynb differs from what its .py gives

Edit the ``.py`` files (or edit in Jupyter with jupytext's pairing, then run this).
"""

from __future__ import annotations

import sys
from pathlib import Path

import jupytext
import nbformat

HERE = Path(__file__).resolve().parent


def render(source: Path) -> str:
    nb = jupytext.read(source)
    for index, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{index:02d}"
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.validate(nb)
    return nbformat.writes(nb) + "\n"


def main(argv: list[str]) -> int:
    stale = []
    for source in sorted(HERE.glob("[0-9][0-9]_*.py")):
        target, text = source.with_suffix(".ipynb"), render(source)
        if "--check" in argv:
            if not target.is_file() or target.read_text(encoding="utf-8") != text:
                stale.append(target.name)
        else:
            target.write_text(text, encoding="utf-8")
            print(f"wrote {target}")
    if stale:
        print("out of date (run python notebooks/sync.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
