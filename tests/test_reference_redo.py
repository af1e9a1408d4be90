"""ReDo side by side with its references (``tests/reference/redo.py``: timoklein/redo and dopamine labs/redo).

On the same tiny models and batch: the unit groups are every hidden layer (the one that feeds the head and a
conv -> flatten -> linear step included), the normalized scores and the dormant sets at tau 0.1, 0.025 and 0 are the
references', and a whole reset (weights and Adam moments) equals timoklein/redo's up to the documented deviations.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from hf_plasticity import ReDoConfig, prepare_pretrained
from hf_plasticity.core.units import normalized_scores, unit_activation_means, unit_groups
from hf_plasticity.pipeline.restore import restore
from hf_plasticity.strategies import get_strategy

from .models import batches, build, reference_model, side_of
from .reference import redo as reference

TAUS = (0.1, 0.025, 0.0)


@torch.no_grad()
def weaken(layer: nn.Module, dead: list[int], weak: dict[int, float]) -> None:
    """Units ``dead`` never fire (zero weights, negative bias, ReLU after); units ``weak`` fire scaled down."""
    layer.weight[dead] = 0
    layer.bias[dead] = -1.0
    for unit, scale in weak.items():
        layer.weight[unit] *= scale
        layer.bias[unit] = -abs(float(layer.bias[unit])) * scale


def plain_model(kind: str) -> nn.Module:
    """A plain model whose hidden layers hold dead units, units at ~1-5% of the layer's mean and healthy units."""
    torch.manual_seed(0)
    model = reference_model(kind)
    layers = reference.weight_layers(model)[:-1]
    for i, (_, layer) in enumerate(layers):
        weaken(layer, dead=[i, i + 3], weak={i + 1: 0.01, i + 5: 0.04, i + 6: 0.3})
    return model.eval()


def pixels(kind: str, seed: int = 0) -> torch.Tensor:
    return batches(1, size=16, seed=seed, side=side_of(kind))[0]["pixel_values"]


def library_dormant(model: nn.Module, x: torch.Tensor, tau: float) -> dict[str, list[int]]:
    strategy = get_strategy(ReDoConfig(tau=tau, calibration_batches=1))
    found = strategy.dormant_units(model, [{"pixel_values": x, "labels": torch.zeros(len(x), dtype=torch.long)}])
    return {group.producer: units.tolist() for group, units in found}


@pytest.mark.parametrize("kind", ["mlp", "cnn", "cnn_view"])  # cnn_view: flattened by x.view, as lop's ConvNet
def test_every_hidden_layer_is_scored_as_in_the_references(kind):
    """The references score every Conv/Linear layer but the output: the layer feeding the head and the conv whose
    channels are flattened into a Linear included."""
    model = plain_model(kind)
    expected = [name for name, _ in reference.weight_layers(model)[:-1]]
    groups = unit_groups(model)
    assert [g.producer for g in groups] == expected
    names = [name for name, _ in reference.weight_layers(model)]
    assert [g.consumer for g in groups] == names[1:]  # the head is a consumer, never a producer
    if kind != "mlp":
        assert [g.span for g in groups] == [1, 9, 1]  # conv2's 8 channels -> 8 blocks of 3x3 columns of fc1


@pytest.mark.parametrize("kind", ["mlp", "cnn", "cnn_view"])  # cnn_view: flattened by x.view, as lop's ConvNet
def test_scores_and_dormant_sets_equal_timoklein_and_dopamine(kind):
    model = plain_model(kind)
    x = pixels(kind)
    activations = reference.layer_activations(model, x)
    groups = unit_groups(model)
    means = unit_activation_means(model, groups, [(x, torch.zeros(len(x), dtype=torch.long))], num_batches=1)
    for group, (name, activation) in zip(groups, list(activations.items())[:-1]):
        assert group.producer == name
        expected = reference.dopamine_neuron_score(activation, channel_dim=1)
        assert torch.allclose(normalized_scores(means[name]), expected, rtol=1e-5, atol=1e-7)
    sizes = []
    for tau in TAUS:
        masks = reference.get_redo_masks(activations, tau)
        timoklein = {name: torch.nonzero(mask).reshape(-1).tolist() for name, mask in zip(activations, masks)}
        dopamine = {
            name: torch.nonzero(reference.dopamine_dead_mask(act, tau, channel_dim=1)).reshape(-1).tolist()
            for name, act in list(activations.items())[:-1]
        }
        ours = library_dormant(model, x, tau)
        assert ours == timoklein == dopamine
        sizes.append(sum(len(units) for units in ours.values()))
    assert sizes[0] > sizes[1] > sizes[2] > 0, "each tau must select a different, non-empty set"


def capture_plan(strategy):
    """Wraps ``strategy.plan`` so that the test sees the plan the pipeline applies."""
    plans = []
    plan = strategy.plan

    def spy(model, *, data=None):
        plans.append(plan(model, data=data))
        return plans[-1]

    strategy.plan = spy
    return plans


def reinit_with(plan, model: nn.Module) -> reference.Reinit:
    """The reference's incoming-weight re-initialization, drawing the library's fresh values (the library draws
    from the model's own init rule; the values, not the rule, are what is compared here)."""
    fresh = {r.name: r for r in plan.resets if r.fresh}
    names = {module: name for name, module in model.named_modules()}

    @torch.no_grad()
    def reinit(layer: nn.Module, mask: torch.Tensor) -> None:
        name = names[layer]
        for attr in ("weight", "bias"):
            reset = fresh[f"{name}.{attr}"]
            tensor = getattr(layer, attr)
            rows = torch.unique(reset.index // tensor[0].numel())
            assert rows.tolist() == torch.nonzero(mask).reshape(-1).tolist(), "different units were chosen"
            tensor.view(-1)[reset.index] = reset.values

    return reinit


def adam_after_steps(model: nn.Module, kind: str, steps: int = 3) -> torch.optim.Adam:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for i in range(steps):
        x = pixels(kind, seed=10 + i)
        loss = model(x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return optimizer


@pytest.mark.parametrize("kind", ["mlp", "cnn", "cnn_view"])  # cnn_view: flattened by x.view, as lop's ConvNet
@pytest.mark.parametrize("tau", TAUS)
def test_reset_weights_and_adam_moments_equal_timoklein(kind, tau):
    ours = plain_model(kind)
    theirs = copy.deepcopy(ours)
    our_optimizer, their_optimizer = adam_after_steps(ours, kind), adam_after_steps(theirs, kind)
    x = pixels(kind)
    strategy = get_strategy(ReDoConfig(tau=tau, calibration_batches=1))
    plans = capture_plan(strategy)
    data = [{"pixel_values": x, "labels": torch.zeros(len(x), dtype=torch.long)}]
    restore(ours, strategy, data=data, optimizer=our_optimizer)
    masks = reference.run_redo(x, theirs, their_optimizer, tau, reinit_with(plans[0], theirs))
    assert any(mask.any() for mask in masks)

    layers = reference.weight_layers(theirs)
    ours_by_name = dict(ours.named_parameters())
    for i, (name, _) in enumerate(layers):
        for attr in ("weight", "bias"):
            expected = theirs.get_parameter(f"{name}.{attr}").detach().clone()
            if attr == "weight" and 0 < i < len(layers) - 1:
                # Documented deviation: where a layer is both consumer (its columns of the previous layer's reset
                # units) and producer (its rows of its own reset units), the library writes the zeroed columns
                # last, as dopamine labs/redo does; timoklein/redo writes the fresh rows last.
                rows, cols = masks[i], masks[i - 1]
                if expected.dim() == 2 and cols.numel() != expected.shape[1]:
                    cols = torch.repeat_interleave(cols, expected.shape[1] // cols.numel())
                expected[rows.nonzero().reshape(-1)[:, None], cols.nonzero().reshape(-1)] = 0
            assert torch.equal(ours_by_name[f"{name}.{attr}"].detach(), expected), f"{name}.{attr}"
            for key in ("exp_avg", "exp_avg_sq"):  # the step count: see below
                mine = our_optimizer.state[ours_by_name[f"{name}.{attr}"]][key]
                assert torch.equal(mine, their_optimizer.state[theirs.get_parameter(f"{name}.{attr}")][key])
    # Documented deviation: timoklein/redo zeroes Adam's (per-tensor) step count of every touched tensor, which
    # restarts the bias correction of all its entries; the library, like dopamine labs/redo, keeps it.
    assert all(float(s["step"]) == 3 for s in our_optimizer.state.values())


@pytest.mark.parametrize("arch", ["vit", "resnet", "convnext"])
def test_transformers_models_dormant_sets_equal_dopamine(arch):
    """On transformers models the score is read where the consumer reads the unit (after GELU, BatchNorm + ReLU,
    ...); given that activation, score and dormant set are dopamine's at every tau."""
    torch.manual_seed(0)
    model = build(arch).eval()
    groups = unit_groups(model)
    with torch.no_grad():
        for i, group in enumerate(groups):
            producer = model.get_submodule(group.producer)
            producer.weight[[i, i + 4]] *= 0.01
    x = batches(1, size=4, seed=1)[0]["pixel_values"]
    captured: dict[str, torch.Tensor] = {}
    handles = [
        model.get_submodule(g.consumer).register_forward_pre_hook(
            lambda module, args, name=g.producer: captured.__setitem__(name, args[0].detach())
        )
        for g in groups
    ]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    for tau in TAUS:
        ours = library_dormant(model, x, tau)
        for group in groups:
            channel_dim = 1 if isinstance(model.get_submodule(group.consumer), nn.Conv2d) else -1
            mask = reference.dopamine_dead_mask(captured[group.producer], tau, channel_dim=channel_dim)
            assert ours[group.producer] == torch.nonzero(mask).reshape(-1).tolist()
    assert library_dormant(model, x, 0.1) != library_dormant(model, x, 0.0)


@pytest.mark.parametrize("kind", ["mlp", "cnn", "cnn_view"])  # cnn_view: flattened by x.view, as lop's ConvNet
def test_redo_resets_exactly_the_units_silenced_by_construction(kind):
    """Known answer: in every hidden layer (the conv flattened into fc1 and the layer feeding the head included),
    the units with zero weights and a negative bias never fire; every other unit fires (bias shifted up). ReDo must
    reset exactly those, and zero exactly their outgoing columns (blocks of 9 behind the flatten)."""
    torch.manual_seed(0)
    model = reference_model(kind)
    layers = reference.weight_layers(model)
    silenced = {}
    with torch.no_grad():
        for i, (name, layer) in enumerate(layers[:-1]):
            layer.bias.add_(1.0)
            silenced[name] = [1, 2 + i, 5]
            layer.weight[silenced[name]] = 0
            layer.bias[silenced[name]] = -1.0
    before = {name: layer.bias.detach().clone() for name, layer in layers}  # written only as a producer
    x = pixels(kind)
    data = [{"pixel_values": x, "labels": torch.zeros(len(x), dtype=torch.long)}]
    for tau in TAUS:
        assert library_dormant(model, x, tau) == silenced
    prepare_pretrained(model, ReDoConfig(tau=0.0, calibration_batches=1), data=data, diagnostics=False)
    for (name, layer), (_, consumer) in zip(layers[:-1], layers[1:]):
        rows = torch.nonzero(layer.bias.detach() != before[name]).reshape(-1)
        assert rows.tolist() == silenced[name]
        assert torch.all(layer.weight[rows].reshape(len(rows), -1).abs().sum(1) > 0)  # re-drawn incoming weights
        span = consumer.weight.shape[1] // layer.weight.shape[0] if isinstance(consumer, nn.Linear) else 1
        columns = [u * span + p for u in silenced[name] for p in range(span)]
        assert torch.all(consumer.weight[:, columns] == 0)
        others = [c for c in range(consumer.weight.shape[1]) if c not in columns]
        assert torch.all(consumer.weight[:, others].reshape(len(consumer.weight), len(others), -1).abs().sum(2) > 0)
