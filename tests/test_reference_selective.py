"""Selective re-initialization's utilities and selections against a direct computation, and known answers.

The utilities are the formulas of SWR (Hernandez-Garcia et al., 2025) as METHODS.md states them: |w * g| and |g| with
g the mean downstream gradient over the calibration batches (evaluation mode), |w|. Computed here directly, batch by
batch, on a copy of the model; the library's values must match, and so must what it selects from them.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hf_plasticity import SelectiveReinitConfig, prepare_pretrained
from hf_plasticity.core.targeting import resolve_targets
from hf_plasticity.core.utilities import compute_utilities
from hf_plasticity.strategies import get_strategy

from .models import batches, reference_model, side_of


def direct_mean_gradients(model: nn.Module, names: list[str], data) -> dict[str, torch.Tensor]:
    """g = (1/B) sum_b d loss_b / d w, in evaluation mode, on a copy."""
    copy_ = copy.deepcopy(model).eval()
    params = dict(copy_.named_parameters())
    total = {name: torch.zeros_like(params[name]) for name in names}
    for batch in data:
        out = copy_(batch["pixel_values"])
        loss = F.cross_entropy(getattr(out, "logits", out), batch["labels"])
        for name, grad in zip(names, torch.autograd.grad(loss, [params[n] for n in names])):
            total[name] += grad
    return {name: value / len(data) for name, value in total.items()}


@pytest.mark.parametrize("arch", ["mlp", "cnn", "vit", "resnet"])
@pytest.mark.parametrize("utility", ["grad_x_weight", "grad", "magnitude"])
def test_utilities_equal_the_direct_computation(arch, utility):
    model = reference_model(arch)
    data = batches(3, size=6, seed=4, side=side_of(arch))
    targets = resolve_targets(model, SelectiveReinitConfig())
    grads = direct_mean_gradients(model, [t.name for t in targets], data)
    found = dict(
        (t.name, u) for t, u in compute_utilities(model, targets, utility, data=data, num_batches=3, batch_size=6)
    )
    for target in targets:
        w, g = target.tensor.detach(), grads[target.name]
        expected = {"grad_x_weight": (w * g).abs(), "grad": g.abs(), "magnitude": w.abs()}[utility]
        assert torch.allclose(found[target.name], expected, rtol=1e-4, atol=1e-9), target.name
    assert any(bool(grads[t.name].abs().sum() > 0) for t in targets)


@pytest.mark.parametrize("selection", ["proportional", "threshold"])
def test_selected_weights_are_the_lowest_utilities(selection):
    """proportional, fraction 1/16 of a 32 x 192 weight: exactly 384 entries (no random remainder), the 384 lowest
    |w * g|; threshold z = 0.5: every entry with |w * g| <= 0.5 * mean."""
    model = reference_model("mlp")
    data = batches(2, size=6, seed=4, side=8)
    config = SelectiveReinitConfig(
        selection=selection, fraction=1 / 16, threshold=0.5, calibration_batches=2, target_modules=["layers.0"]
    )
    plan = get_strategy(config).plan(model, data=data)
    (reset,) = plan.resets
    weight = model.layers[0].weight.detach()
    utility = (weight * direct_mean_gradients(model, ["layers.0.weight"], data)["layers.0.weight"]).abs().reshape(-1)
    if selection == "proportional":
        expected = torch.topk(utility, 384, largest=False).indices
    else:
        expected = torch.nonzero(utility <= 0.5 * utility.mean()).reshape(-1)
    assert sorted(reset.index.tolist()) == sorted(expected.tolist())


def test_known_zero_utility_weights_and_units_are_chosen():
    """Known answer: 40 weights set to 0 have |w * g| = 0 (and |w| = 0): a fraction of exactly 40 entries re-draws
    them; units with all-zero incoming weights have unit utility 0 and are the units re-drawn."""
    model = reference_model("mlp")
    weight = model.layers[0].weight
    zero = torch.randperm(weight.numel(), generator=torch.Generator().manual_seed(1))[:40]
    with torch.no_grad():
        weight.view(-1)[zero] = 0
    data = batches(2, size=6, seed=4, side=8)
    for utility in ("grad_x_weight", "magnitude"):
        config = SelectiveReinitConfig(
            utility=utility, fraction=40 / weight.numel(), calibration_batches=2, target_modules=["layers.0"]
        )
        (reset,) = get_strategy(config).plan(model, data=data).resets
        assert sorted(reset.index.tolist()) == sorted(zero.tolist())

    for utility in ("grad_x_weight", "magnitude"):
        model = reference_model("mlp")
        with torch.no_grad():
            model.layers[2].bias.add_(1.0)  # every unit of the layer fires: no other unit has a zero gradient
            model.layers[2].weight[[4, 9, 17]] = 0
        before = model.layers[2].weight.detach().clone()
        config = SelectiveReinitConfig(
            utility=utility, granularity="unit", fraction=3 / 24, calibration_batches=2, target_modules=["layers.2"]
        )
        prepare_pretrained(model, config, data=data, diagnostics=False)
        rows = torch.nonzero((model.layers[2].weight.detach() != before).any(1)).reshape(-1).tolist()
        assert rows == [4, 9, 17]
        assert torch.all(model.layers[4].weight[:, [4, 9, 17]] == 0)  # the head's input columns of those units
