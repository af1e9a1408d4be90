"""Diagnostics on constructed cases with known answers, streaming and state hygiene, outputs and bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from hf_plasticity import CalibrationDataError, DiagnosticsReport, diagnose, get_layout
from hf_plasticity.diagnostics.diagnose import block_probe_accuracy, effective_rank, stable_rank
from hf_plasticity.diagnostics.probe import nearest_class_mean_accuracy, pool_block_output

from .models import ARCHS, batches


class MLP(nn.Module):
    """flatten -> fc1 -> ReLU -> fc2 -> head; fc1's units are read at fc2's input."""

    def __init__(self, inputs: int = 48, hidden: int = 10, features: int = 6) -> None:
        super().__init__()
        self.fc1 = nn.Linear(inputs, hidden)
        self.fc2 = nn.Linear(hidden, features)
        self.head = nn.Linear(features, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.fc2(torch.relu(self.fc1(x.flatten(1)))))


def data(n: int = 8, inputs: int = 48, num: int = 2):
    generator = torch.Generator().manual_seed(0)
    return [
        {"pixel_values": torch.randn(n, 3, inputs // 3, generator=generator), "labels": torch.arange(n) % 3}
        for _ in range(num)
    ]


@pytest.mark.parametrize("dead", [0, 1, 4, 10])
def test_k_dead_units_give_k_over_n_dormant(dead):
    model = MLP()
    with torch.no_grad():
        model.fc1.weight.zero_()
        model.fc1.bias.copy_(torch.linspace(1.0, 1.5, 10))  # every unit fires a constant > 0 ...
        model.fc1.bias[:dead] = -1.0  # ... except the dead ones: ReLU(-1) = 0
        model.fc2.weight.zero_()
        model.fc2.bias.copy_(torch.linspace(1.0, 2.0, 6))  # fc2's 6 units: constant, none dormant
    report = diagnose(model, data(), tau=0.1)
    row = next(r for r in report.layers if r.name == "fc1")
    assert row.units == 10 and row.dormant_ratio == dead / 10
    # fc2 feeds the head: it is scored like every hidden layer (as in ReDo's references); the head is not
    fc2 = next(r for r in report.layers if r.name == "fc2")
    assert fc2.units == 6 and fc2.dormant_ratio == 0
    assert next(r for r in report.layers if r.name == "head").dormant_ratio is None
    assert report.dormant_ratio == dead / 16
    strict = diagnose(model, data(), tau=0.0)
    assert strict.dormant_ratio == dead / 16


def test_dormancy_on_a_vit_with_dead_mlp_units(make_model):
    model = make_model("vit")
    fc1 = model.vit.layers[1].mlp.fc1
    with torch.no_grad():
        fc1.weight.zero_()
        fc1.bias.fill_(1.0)
        fc1.bias[:16] = -10.0  # GELU(-10) ~ -8e-23
    report = diagnose(model, batches(), batches=2)
    row = next(r for r in report.layers if r.name == "vit.layers.1.mlp.fc1")
    assert row.units == 64 and row.dormant_ratio == 16 / 64


def test_singular_value_ranks():
    assert effective_rank(torch.ones(5)) == pytest.approx(5.0)
    assert stable_rank(torch.ones(5)) == 5
    p = torch.tensor([0.75, 0.25], dtype=torch.float64)
    assert effective_rank(torch.tensor([3.0, 1.0, 0.0])) == pytest.approx(math.exp(-(p * p.log()).sum().item()))
    assert stable_rank(torch.tensor([3.0, 1.0, 0.0])) == 2
    assert stable_rank(torch.tensor([100.0, 2.0, 0.1])) == 2  # 100 / 102.1 < 0.99
    assert stable_rank(torch.tensor([100.0, 0.5, 0.1])) == 1  # 100 / 100.6 >= 0.99
    assert effective_rank(torch.zeros(3)) == 0.0


@pytest.mark.parametrize("singular, eff, stable", [([1.0, 1.0, 1.0], 3.0, 3), ([2.0, 1.0], None, 2), ([1.0], 1.0, 1)])
def test_penultimate_features_of_known_rank(singular, eff, stable):
    """Inputs are the identity rows, fc2 o fc1 is linear with the given singular values: features = their matrix."""
    model = MLP(inputs=48, hidden=48, features=6)
    with torch.no_grad():
        model.fc1.weight.copy_(torch.eye(48))
        model.fc1.bias.zero_()
        model.fc2.weight.zero_()
        model.fc2.bias.zero_()
        for i, s in enumerate(singular):
            model.fc2.weight[i, i] = s
    rows = torch.eye(48).reshape(48, 3, 16)  # ReLU keeps the identity rows
    report = diagnose(model, [{"pixel_values": rows, "labels": torch.arange(48) % 3}], batches=1)
    if eff is None:
        p = torch.tensor(singular, dtype=torch.float64) / sum(singular)
        eff = math.exp(-(p * p.log()).sum().item())
    assert report.effective_rank == pytest.approx(eff, abs=1e-4)
    assert report.stable_rank == stable and report.feature_dim == 6


@pytest.mark.parametrize("arch", ARCHS)
def test_diagnose_every_architecture_leaves_no_trace(make_model, arch):
    model = make_model(arch)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.25)
    torch.manual_seed(3)
    expected = torch.rand(2)
    torch.manual_seed(3)
    report = diagnose(model, batches(3), batches=2)
    assert torch.equal(torch.rand(2), expected)  # RNG state restored
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BatchNorm stats included
    assert all(m.training for m in model.modules())
    assert all(torch.equal(p.grad, torch.full_like(p, 0.25)) for p in model.parameters())
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())
    assert report.batches == 2 and report.samples == 8
    assert 0 <= report.insignificant_grad_share <= 1 and report.mean_abs_grad > 0
    assert report.effective_rank is not None and 1 <= report.effective_rank <= report.feature_dim
    blocks = [r.block for r in report.layers if r.block is not None]
    assert blocks == sorted(blocks)  # depth order


@pytest.mark.parametrize("wrapper", [nn.DataParallel, torch.compile], ids=["DataParallel", "compile"])
@pytest.mark.parametrize("arch", ["resnet", "vit"])
def test_a_wrapped_model_is_diagnosed_as_the_model_inside(make_model, arch, wrapper):
    """A wrapper once hid the architecture (ResNet's stages read as blocks), the units (no dormant ratio) and the
    names (a ``module.`` prefix): the report of a wrapped model is the plain model's."""
    model = make_model(arch)
    expected = diagnose(model, batches(2)).to_dict()
    report = diagnose(wrapper(model), batches(2)).to_dict()
    assert {**report, "seconds": 0} == {**expected, "seconds": 0}
    assert report["dormant_ratio"] is not None and report["blocks"] == list(get_layout(model).blocks)
    assert block_probe_accuracy(wrapper(model), batches(2))[0] == expected["block_probe_accuracy"]


def test_hooks_removed_and_state_restored_when_a_batch_fails(make_model):
    model = make_model("resnet")
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    bad = batches(1) + [{"pixel_values": torch.randn(2, 5, 32, 32), "labels": torch.tensor([0, 1])}]
    with pytest.raises(ValueError, match="channel dimension"):
        diagnose(model, bad, batches=2)
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())
    assert model.training and [p.requires_grad for p in model.parameters()] == flags


def test_insignificant_gradients_follow_the_threshold():
    model = MLP()
    with torch.no_grad():
        model.fc1.weight[:, :24] = 0.0  # the loss still depends on them, but fc1 has half its inputs ...
    flat = [
        {
            "pixel_values": torch.cat([torch.zeros(8, 24), torch.randn(8, 24)], 1).reshape(8, 3, 16),
            "labels": torch.arange(8) % 3,
        }
    ]
    report = diagnose(model, flat, batches=1)
    row = next(r for r in report.layers if r.name == "fc1")
    assert row.insignificant_grad_share >= 0.5  # ... zero in the data: exactly zero gradient on those columns
    assert report.insignificant == 0.01


def test_table_dict_json_and_plot(tmp_path):
    report = diagnose(MLP(), data())
    text = str(report)
    assert "fc1" in text and "dormant" in text and "effective rank" in text
    data_dict = json.loads(report.to_json())
    assert data_dict["layers"][0]["name"] == "fc1" and set(report.overall()) <= set(data_dict)
    assert DiagnosticsReport(**{**data_dict, "layers": report.layers}).to_dict() == report.to_dict()
    path = report.plot(str(tmp_path / "diag.png"))
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_bad_input():
    model = MLP()
    with pytest.raises(ValueError, match="diagnose needs downstream data"):
        diagnose(model, None)
    with pytest.raises(ValueError, match="`tau` must be a finite number >= 0"):
        diagnose(model, data(), tau=-0.1)
    with pytest.raises(ValueError, match="`batches` must be a positive integer"):
        diagnose(model, data(), batches=0)
    with pytest.raises(ValueError, match="no labels"):
        diagnose(model, [{"pixel_values": torch.randn(2, 3, 16)}])


@pytest.mark.parametrize("arch", ARCHS)
def test_probe_accuracy_has_one_value_per_block(make_model, arch):
    model = make_model(arch)
    report = diagnose(model, batches(2))
    assert len(report.block_probe_accuracy) == len(get_layout(model).blocks)
    assert all(0.0 <= a <= 1.0 for a in report.block_probe_accuracy)


def test_nearest_class_mean_accuracy_known_answers():
    labels = torch.tensor([0, 0, 1, 1, 2])  # class 2 has one sample: it cannot be scored and is left out
    features = torch.tensor([[0.0, 0.0], [0.1, 0.0], [1.0, 1.0], [1.1, 1.0], [0.05, 0.0]])
    assert nearest_class_mean_accuracy(features, labels) == 1.0
    swapped = torch.tensor([[1.0, 1.0], [0.1, 0.0], [0.0, 0.0], [1.1, 1.0], [0.0, 0.0]])
    assert nearest_class_mean_accuracy(swapped, labels) == 0.0  # each sample sits on the other class's mean
    assert nearest_class_mean_accuracy(features[:3], labels[:3]) is None  # one scorable class only
    assert pool_block_output((torch.ones(2, 5, 3), None)).shape == (2, 3)  # ViT-style tuple of (N, tokens, D)
    assert pool_block_output(torch.ones(2, 4, 3, 3)).shape == (2, 4)  # NCHW


@settings(max_examples=40, deadline=None)
@given(
    value=st.floats(-1e6, 1e6, allow_nan=False),
    labels=st.lists(st.integers(0, 3), min_size=4, max_size=24),
    dims=st.integers(1, 5),
)
def test_features_that_tell_nothing_apart_score_zero_not_the_first_class_share(value, labels, dims):
    """Every sample at one point ties with every class mean: a tie counts as wrong, whichever class comes first."""
    labels = torch.tensor(labels)
    accuracy = nearest_class_mean_accuracy(torch.full((len(labels), dims), value), labels)
    assert accuracy is None or accuracy == 0.0


def test_a_block_whose_output_overflows_is_named_before_anything_is_read_from_it(make_model):
    """Pixels far outside a processor's range overflow a ViT's attention: the probe refuses its NaN features
    instead of scoring them (an argmin over NaN distances credits every sample with class 0)."""
    model = make_model("vit")
    loud = [{"pixel_values": b["pixel_values"] * 1e30, "labels": b["labels"]} for b in batches()]
    with pytest.raises(CalibrationDataError, match=r"block 'vit\.[\w.]+' holds \d+ NaN or infinite"):
        diagnose(model, loud)
