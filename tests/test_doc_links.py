"""The documentation's relative links point at files of the repository, and the benchmark modules its commands name
(``python -m benchmarks.<name>``) exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "model_cards").glob("*.md")])
LINK = re.compile(r"\]\(([^)\s]+)\)")
MODULE = re.compile(r"python -m (benchmarks(?:\.\w+)*)")


def relative_links(text: str) -> list[str]:
    """The link targets of ``text`` that are paths in the repository (no scheme, no bare anchor), anchors cut off."""
    targets = (match.split("#")[0] for match in LINK.findall(text))
    return [t for t in targets if t and not re.match(r"^[a-z]+:", t)]


def test_relative_links_are_found_and_absolute_ones_skipped():
    text = "[a](docs/A.md#part) [b](https://x.org/y) [c](#top) [d](mailto:x@y.z) ![e](../img.png)"
    assert relative_links(text) == ["docs/A.md", "../img.png"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path):
    missing = [t for t in relative_links(doc.read_text()) if not (doc.parent / t).exists()]
    assert not missing, f"{doc.relative_to(ROOT)} links to missing files: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_benchmark_modules_named_in_commands_exist(doc: Path):
    modules = set(MODULE.findall(doc.read_text()))
    missing = [
        m
        for m in modules
        if not (ROOT / (m.replace(".", "/") + ".py")).exists() and not (ROOT / m.replace(".", "/")).is_dir()
    ]
    assert not missing, f"{doc.relative_to(ROOT)} names modules that do not exist: {missing}"
