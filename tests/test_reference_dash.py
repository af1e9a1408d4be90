"""DASH side by side with baekrok/DASH-Direction-Aware-SHrinking (``tests/reference/dash.py``).

On the same tiny models and batches, every targeted weight and bias after the shrink equals the reference's: one
factor per Linear row / Conv (out, in) kernel, and one per bias *vector*. The head is the one documented deviation
(the reference shrinks every Conv/Linear, the library never touches the new head).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from hf_plasticity import DashConfig, get_layout, prepare_pretrained

from .models import PlainMLP, batches, reference_model, side_of
from .reference import dash as reference


@pytest.mark.parametrize("arch", ["mlp", "cnn", "vit", "resnet", "convnext"])
def test_weights_and_biases_equal_the_reference(arch):
    # Evaluation mode on both sides: the library scores in evaluation mode (no dropout, BatchNorm running statistics;
    # a documented deviation), the reference in the mode the model is in.
    ours = reference_model(arch).eval()
    theirs = copy.deepcopy(ours)
    before = copy.deepcopy(ours.state_dict())
    data = batches(3, size=8, seed=2, side=side_of(arch))
    config = DashConfig(lambda_min=0.3, alpha=0.3, include_bias=True, calibration_batches=3)
    report = prepare_pretrained(ours, config, data=data, diagnostics=False)
    reference.dash(theirs, nn.CrossEntropyLoss(), [(b["pixel_values"], b["labels"]) for b in data], 0.3, 0.3)

    layout = get_layout(ours)
    theirs_state, ours_state = theirs.state_dict(), ours.state_dict()
    biases = 0
    for name, module in ours.named_modules():
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            continue
        for attr in ("weight", "bias"):
            key = f"{name}.{attr}"
            if getattr(module, attr) is None:
                continue
            if layout.in_head(name):
                assert torch.equal(ours_state[key], before[key])  # documented deviation: the head is never shrunk
                continue
            assert torch.allclose(ours_state[key], theirs_state[key], rtol=1e-5, atol=1e-7), key
            if attr == "bias" and not torch.equal(before[key], ours_state[key]):
                biases += 1
                ratio = ours_state[key] / before[key]
                assert torch.allclose(ratio, ratio[:1].expand_as(ratio), rtol=1e-4)  # one factor per bias vector
    assert (biases > 0 or arch == "resnet") and report.total_reinitialized > 0  # ResNet convs have no bias
    for key in before:  # nothing else moves (norms, embeddings, buffers)
        owner = key.rsplit(".", 1)[0]
        if not isinstance(ours.get_submodule(owner), (nn.Linear, nn.Conv2d)):
            assert torch.equal(ours_state[key], before[key]), key


def bias_direction(model: nn.Module, data) -> torch.Tensor:
    """G of the first layer's bias with alpha = 1 and one batch: minus its gradient."""
    probe = copy.deepcopy(model)
    nn.functional.cross_entropy(probe(data[0]["pixel_values"]), data[0]["labels"]).backward()
    return -probe.layers[0].bias.grad


def test_a_bias_vector_is_shrunk_by_one_cosine():
    """Known answer on one bias: b is half along G_b and half orthogonal to it, so cos(b, G_b) is about 0.7 and
    every entry is multiplied by that one number (per-entry cosines of 1-vectors are +-1: factors 1 or lambda)."""
    torch.manual_seed(0)
    model = PlainMLP(hidden=(6,)).eval()
    data = batches(1, size=8, seed=2, side=8)
    direction = bias_direction(model, data)
    orthogonal = torch.randn(6)
    orthogonal -= (orthogonal @ direction) / (direction @ direction) * direction
    orthogonal *= direction.norm() / orthogonal.norm()
    with torch.no_grad():
        model.layers[0].bias.copy_(direction + orthogonal)
    old = model.layers[0].bias.detach().clone()
    cosine = nn.functional.cosine_similarity(old, bias_direction(model, data), dim=0)  # G at the new bias
    assert 0.5 < cosine < 0.9
    config = DashConfig(lambda_min=0.1, alpha=1.0, include_bias=True, calibration_batches=1)
    prepare_pretrained(model, config, data=data, diagnostics=False)
    assert torch.allclose(model.layers[0].bias.detach(), old * cosine, rtol=1e-5)
