"""One definition per concept: "is a normalization layer" (core/norms.py) and "the first line of an error message"
(core/messages.py); no module of the package writes its own again."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from transformers.models.convnext.modeling_convnext import ConvNextLayerNorm

from hf_plasticity.core.messages import first_line
from hf_plasticity.core.norms import is_batchnorm, is_norm

PACKAGE = Path(__file__).resolve().parents[1] / "hf_plasticity"


def code_lines(exclude: str):
    """(path, line) of every code line of the package outside ``exclude``, docstring examples left out."""
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).as_posix() == exclude:
            continue
        for line in path.read_text().splitlines():
            if not line.strip().startswith((">>>", "...", "#")):
                yield path.relative_to(PACKAGE).as_posix(), line


NORM_DEFINITIONS = re.compile(
    r"nn\.(LayerNorm|GroupNorm|RMSNorm|BatchNorm\dd|InstanceNorm\dd|SyncBatchNorm)\b|_BatchNorm|_NormBase|NORM_TYPES"
    r"|[\"'](Layer)?[Nn]orm[\"'] in type\("
)
FIRST_LINE_DEFINITIONS = re.compile(r"splitlines\(\)\s*(\[0\]|or\b)|split\([\"']\\n[\"']\)\[0\]")


def test_one_definition_of_a_normalization_layer():
    found = [f"{path}: {line.strip()}" for path, line in code_lines("core/norms.py") if NORM_DEFINITIONS.search(line)]
    assert found == []


def test_one_definition_of_the_first_line_of_an_error():
    found = [
        f"{path}: {line.strip()}"
        for path, line in code_lines("core/messages.py")
        if FIRST_LINE_DEFINITIONS.search(line)
    ]
    assert found == []


@pytest.mark.parametrize(
    "module, norm, batchnorm",
    [
        (nn.LayerNorm(4), True, False),
        (nn.GroupNorm(2, 4), True, False),
        (nn.BatchNorm1d(4), True, True),
        (nn.BatchNorm2d(4), True, True),
        (nn.SyncBatchNorm(4), True, True),
        (nn.InstanceNorm2d(4), True, False),
        (ConvNextLayerNorm(4), True, False),  # a model library's own class
        (nn.Linear(4, 4), False, False),
        (nn.Conv2d(4, 4, 1), False, False),
        (nn.GELU(), False, False),
        (nn.Dropout(), False, False),
    ],
)
def test_what_a_normalization_layer_is(module, norm, batchnorm):
    assert (is_norm(module), is_batchnorm(module)) == (norm, batchnorm)


@given(st.text(), st.sampled_from([ValueError, RuntimeError, KeyError, OSError]))
def test_the_first_line_of_an_error_is_one_non_empty_line(message, kind):
    line = first_line(kind(message))
    assert line and line == line.strip() and "\n" not in line and "\r" not in line
    shown = str(kind(message))
    assert line in shown or (not shown.strip() and line == kind.__name__)
