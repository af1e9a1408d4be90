"""The README's Python examples run as written (```python blocks); those that need the Hub or the user's files
(```py blocks) at least compile."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(tag: str = "python") -> list[str]:
    return re.findall(rf"```{tag}\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_python_examples_run():
    blocks = python_blocks()
    assert blocks, "the README has no Python example"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {"__name__": "__readme__"})


def test_readme_examples_that_need_the_hub_compile():
    blocks = python_blocks("py")
    assert blocks, "the README has no example of a run on the user's own model and data"
    for block in blocks:
        compile(block, str(README), "exec")
