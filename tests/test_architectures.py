"""Layouts: the per-model_type table and the structural fallback."""

from __future__ import annotations

import pytest
from torch import nn

from hf_plasticity import get_layout

from .models import build


@pytest.mark.parametrize(
    "arch, blocks, head, final_norm",
    [
        ("vit", ["vit.layers.0", "vit.layers.1", "vit.layers.2"], ["classifier"], "vit.layernorm"),
        (
            "convnext",
            [
                "convnext.encoder.stages.0.layers.0",
                "convnext.encoder.stages.1.layers.0",
                "convnext.encoder.stages.1.layers.1",
            ],
            ["classifier"],
            "convnext.layernorm",
        ),
        (
            "convnextv2",
            [
                "convnextv2.encoder.stages.0.layers.0",
                "convnextv2.encoder.stages.1.layers.0",
                "convnextv2.encoder.stages.1.layers.1",
            ],
            ["classifier"],
            "convnextv2.layernorm",
        ),
        (
            "resnet",
            [
                "resnet.encoder.stages.0.layers.0",
                "resnet.encoder.stages.1.layers.0",
                "resnet.encoder.stages.1.layers.1",
            ],
            ["classifier"],
            None,
        ),
        ("cnn", ["features.0", "features.1", "features.2"], ["head"], None),
    ],
)
def test_layouts(arch, blocks, head, final_norm):
    layout = get_layout(build(arch))
    assert layout.blocks == blocks
    assert layout.head == head
    assert layout.final_norm == final_norm
    assert layout.source == ("structural" if arch == "cnn" else f"table:{arch}")


def test_structural_fallback_on_a_flat_sequential():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Flatten(), nn.Linear(4, 2))
    layout = get_layout(model)
    assert layout.head == ["4"]
    assert layout.blocks == ["0", "2"]
    assert layout.block_of("2") == 1 and layout.block_of("4") is None


def test_efficientnet_lite_structural_layout():
    efficientnet = pytest.importorskip("efficientnet_lite_pytorch")
    model = efficientnet.EfficientNet.from_name("efficientnet-lite0")
    layout = get_layout(model)
    assert layout.source == "structural"
    assert layout.head == ["_fc"]
    assert len(layout.blocks) == 16 and layout.blocks[0] == "_blocks.0"
