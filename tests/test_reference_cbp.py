"""Continual backprop side by side with shibhansh/loss-of-plasticity (``tests/reference/gnt.py``), and known answers.

Side by side on the same tiny models and batches: the utilities, mean activations and ages after every step, the
replaced units, the resulting weights and the Adam moments equal the reference's. Known answers: units with no
contribution are the ones replaced; the ranking is by the bias-corrected utility; the next-layer bias correction with
the bias-corrected mean keeps the function of a replaced constant unit exactly; the corrected bias keeps its moments.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hf_plasticity import ContinualBackpropConfig, PlasticityController
from hf_plasticity.core.units import unit_groups
from hf_plasticity.pipeline.restore import restore
from hf_plasticity.strategies import get_strategy

from .models import PlainCNN, PlainMLP, ViewCNN, batches, build
from .reference import gnt as reference


def data(steps: int, side: int, size: int = 16, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    return batches(steps, size=size, seed=seed, side=side)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor]) -> None:
    out = model(batch["pixel_values"])
    loss = F.cross_entropy(getattr(out, "logits", out), batch["labels"])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def controller_with_spy(config: ContinualBackpropConfig, model: nn.Module):
    """A controller driving ``config`` on ``model``; its strategy's plans are collected per step."""
    controller = PlasticityController(config, restore=False)
    controller.attach(model)
    plans: dict[int, object] = {}
    plan_step = controller.strategy.plan_step

    def spy(model, *, step, data=None):
        plans[step] = plan_step(model, step=step, data=data)
        return plans[step]

    controller.strategy.plan_step = spy
    return controller, plans


def replaced_units(plan, group) -> list[int]:
    """The units whose incoming weights ``plan`` re-draws in ``group``."""
    for reset in plan.resets:
        if reset.fresh and reset.name == f"{group.producer}.weight":
            return sorted(torch.unique(reset.index // reset.tensor[0].numel()).tolist())
    return []


def draw_from(plans: dict, step: list[int], model: nn.Module):
    """The reference's new features drawn with the library's fresh values of the same step (the library draws from
    the model's own init rule, the reference from uniform bounds: the rule is a documented deviation, the values are
    what this test compares)."""

    def draw(layer_idx: int, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        fresh = {r.name: r for r in plans[step[0]].resets if r.fresh}
        layer = model.layers[layer_idx * 2]
        out = []
        for attr in ("weight", "bias"):
            reset = fresh[f"layers.{layer_idx * 2}.{attr}"]
            width = getattr(layer, attr)[0].numel()
            rows = reset.index.reshape(-1, width)[:, 0] // width
            by_unit = dict(zip(rows.tolist(), reset.values.reshape(-1, width)))
            out.append(torch.stack([by_unit[int(u)] for u in features]).reshape(len(features), -1).squeeze(-1))
        return out[0], out[1]

    return draw


@pytest.mark.parametrize("attach_every_step", [False, True])
def test_mlp_side_by_side_with_gnt(attach_every_step):
    """Plain MLP (two hidden layers, the second feeding the head), Adam, 8 steps, units replaced from step 4 on; also
    with `attach` called again before every step (a plain loop attaching once per epoch), which keeps the units'
    utilities and ages."""
    torch.manual_seed(0)
    ours = PlainMLP()
    theirs = copy.deepcopy(ours)
    our_opt, their_opt = torch.optim.Adam(ours.parameters(), lr=1e-2), torch.optim.Adam(theirs.parameters(), lr=1e-2)
    config = ContinualBackpropConfig(replacement_rate=0.1, maturity=3, decay=0.9)
    controller, plans = controller_with_spy(config, ours)
    groups = controller.strategy.groups
    assert [(g.producer, g.consumer) for g in groups] == [("layers.0", "layers.2"), ("layers.2", "layers.4")]
    step = [0]
    gnt = reference.GnT(
        theirs.layers,
        "relu",
        their_opt,
        decay_rate=0.9,
        replacement_rate=0.1,
        maturity_threshold=3,
        draw=draw_from(plans, step, ours),
        correct_with_mean_before_reset=True,
    )
    replaced = 0
    for step[0], batch in enumerate(data(8, side=8), start=1):
        if attach_every_step:
            controller.attach(ours)
        train_step(ours, our_opt, batch)
        controller.step(step[0], optimizer=our_opt)

        out, features = theirs.predict(batch["pixel_values"])
        loss = F.cross_entropy(out, batch["labels"])
        their_opt.zero_grad()
        loss.backward()
        their_opt.step()
        chosen = gnt.gen_and_test(features)

        for i, group in enumerate(groups):
            ours_chosen = replaced_units(plans[step[0]], group) if step[0] in plans else []
            assert ours_chosen == sorted(chosen[i].tolist()), f"step {step[0]}, {group.producer}"
            replaced += len(ours_chosen)
            state = controller.strategy.state[group.producer]
            assert torch.allclose(state["utility"], gnt.util[i], rtol=1e-5, atol=1e-8)
            assert torch.allclose(state["mean"], gnt.mean_feature_act[i], rtol=1e-5, atol=1e-8)
            assert torch.equal(state["age"].float(), gnt.ages[i])
        # Documented deviation: units replaced in both layers at one step meet in layers.2.weight[new rows, new
        # columns]; the library writes the zeroed columns last (zero), gnt.py the next layer's fresh rows (fresh).
        if len(chosen[0]) and len(chosen[1]):
            with torch.no_grad():
                theirs.layers[2].weight[chosen[1][:, None], chosen[0]] = 0
        for (name, mine), theirs_param in zip(ours.named_parameters(), theirs.parameters()):
            assert torch.allclose(mine, theirs_param, rtol=1e-5, atol=1e-6), f"step {step[0]}: {name}"
            for key in ("exp_avg", "exp_avg_sq"):
                assert torch.allclose(our_opt.state[mine][key], their_opt.state[theirs_param][key], atol=1e-9), name
    controller.detach()
    assert replaced >= 15


def test_published_gnt_order_corrects_nothing():
    """Why the port has a switch: as published, gnt.py zeroes the mean activation of the replaced units before it
    reads it for the bias correction, so the next layer's bias only changes where units are re-drawn."""
    torch.manual_seed(0)
    model = PlainMLP(hidden=(8,))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    gnt = reference.GnT(model.layers, "relu", optimizer, decay_rate=0.9, replacement_rate=0.5, maturity_threshold=1)
    head_bias = model.layers[2].bias.detach().clone()
    for batch in data(2, side=8):
        out, features = model.predict(batch["pixel_values"])
        loss = F.cross_entropy(out, batch["labels"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        head_bias = model.layers[2].bias.detach().clone()
        chosen = gnt.gen_and_test(features)
    assert len(chosen[0]) == 4
    assert torch.equal(model.layers[2].bias.detach(), head_bias)


def port_utilities(groups, model, captured, util_state, decay):
    """convGnT's utility update for every group, from the activations the consumers read in this step."""
    for group in groups:
        producer, consumer = model.get_submodule(group.producer), model.get_submodule(group.consumer)
        features = captured.pop(group.producer)
        if isinstance(consumer, nn.Linear) and isinstance(producer, nn.Linear):
            features = features.reshape(-1, features.shape[-1])  # tokens / positions are samples (cbp_linear.py)
        state = util_state[group.producer]
        state["ages"] += 1
        state["corrected"] = reference.conv_update_utility(
            state["util"], state["mean"], state["ages"], decay, features, producer, consumer, group.span
        )


def capture_consumer_inputs(model: nn.Module, groups) -> tuple[dict[str, torch.Tensor], list]:
    captured: dict[str, torch.Tensor] = {}

    def hook(name):
        def save(module, args):
            if module.training and torch.is_grad_enabled():
                captured[name] = args[0].detach().clone()

        return save

    handles = [model.get_submodule(g.consumer).register_forward_pre_hook(hook(g.producer)) for g in groups]
    return captured, handles


@pytest.mark.parametrize("arch", ["cnn", "cnn_view", "vit", "resnet", "convnext"])
def test_utilities_and_replacements_equal_convgnt(arch):
    """conv -> conv, conv -> flatten -> linear, linear -> head (plain CNN), ViT fc1 -> fc2, ResNet conv + BN -> conv,
    ConvNeXt pwconv1 -> pwconv2: utility, mean, chosen units and zeroed outgoing columns as in convGnT.py."""
    torch.manual_seed(0)
    plain = {"cnn": PlainCNN, "cnn_view": ViewCNN}  # cnn_view: flattened by x.view, as lop's ConvNet
    model = plain[arch]() if arch in plain else build(arch)
    side = 16 if arch in plain else 32
    model.train()
    decay, rate, maturity = 0.9, 0.15, 2
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    config = ContinualBackpropConfig(replacement_rate=rate, maturity=maturity, decay=decay)
    controller, plans = controller_with_spy(config, model)
    groups = controller.strategy.groups
    if arch in plain:
        assert [g.span for g in groups] == [1, 9, 1]
    captured, handles = capture_consumer_inputs(model, groups)
    util_state = {
        g.producer: {
            "util": torch.zeros(g.num_units(model)),
            "mean": torch.zeros(g.num_units(model)),
            "ages": torch.zeros(g.num_units(model)),
            "pending": 0.0,
        }
        for g in groups
    }
    replaced = 0
    try:
        for step, batch in enumerate(data(5, side=side, size=4), start=1):
            train_step(model, optimizer, batch)
            port_utilities(groups, model, captured, util_state, decay)
            controller.step(step, optimizer=optimizer)
            for group in groups:
                ours, theirs = controller.strategy.state[group.producer], util_state[group.producer]
                eligible = torch.where(theirs["ages"] > maturity)[0]
                expected: list[int] = []
                if eligible.numel():
                    theirs["pending"] += rate * eligible.numel()
                    count = int(theirs["pending"])
                    theirs["pending"] -= count
                    if count:
                        expected = eligible[torch.topk(-theirs["corrected"][eligible], count)[1]].tolist()
                chosen = replaced_units(plans[step], group) if step in plans else []
                if chosen != sorted(expected):  # only a different pick among equal utilities (e.g. silent units)
                    corrected = theirs["corrected"]
                    assert torch.equal(corrected[chosen].sort().values, corrected[expected].sort().values)
                    expected = chosen
                for key in ("util", "mean", "ages"):
                    theirs[key][expected] = 0
                assert torch.allclose(ours["utility"], theirs["util"], rtol=1e-4, atol=1e-9), group.producer
                assert torch.allclose(ours["mean"], theirs["mean"], rtol=1e-4, atol=1e-7), group.producer
                if expected:
                    replaced += len(expected)
                    consumer = model.get_submodule(group.consumer)
                    columns = reference.conv_output_indices(
                        torch.tensor(sorted(expected)), model.get_submodule(group.producer), consumer, group.span
                    )
                    assert torch.all(consumer.weight[:, columns] == 0)
        # Evaluation passes and passes without gradients leave the running state alone.
        before = copy.deepcopy(controller.strategy.state)
        model.eval()
        model(batch["pixel_values"])
        model.train()
        with torch.no_grad():
            model(batch["pixel_values"])
        controller.strategy.due(step=99, epoch=0.0)
        for name, state in controller.strategy.state.items():
            assert torch.equal(state["utility"], before[name]["utility"])
    finally:
        for handle in handles:
            handle.remove()
        controller.detach()
    assert replaced > 0


def test_utility_is_updated_in_training_forward_passes():
    """The hook must see training forward passes (grad enabled, training mode): a utility that stays 0 replaces
    units in index order ([0, 1, 2], then [3, 4, 5], ...)."""
    torch.manual_seed(0)
    model = build("vit").train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    controller, plans = controller_with_spy(ContinualBackpropConfig(replacement_rate=3 / 64, maturity=1), model)
    try:
        for step, batch in enumerate(data(4, side=32, size=4), start=1):
            train_step(model, optimizer, batch)
            controller.step(step, optimizer=optimizer)
    finally:
        controller.detach()
    # every unit but the 3 just replaced (utility reset to 0) has a positive utility
    assert all(int((state["utility"] > 0).sum()) == 64 - 3 for state in controller.strategy.state.values())
    chosen = [replaced_units(plans[step], controller.strategy.groups[0]) for step in sorted(plans)]
    # 3 due at step 2 (64 mature units * 3/64); at step 3 only 61 are mature (2.86 due), at step 4 the rest
    assert [len(units) for units in chosen] == [3, 2, 3]
    assert chosen[:2] != [[0, 1, 2], [3, 4]]  # the order a utility that never moves gives


def constant_unit_mlp(unit: int = 3) -> PlainMLP:
    """Unit ``unit`` of the first hidden layer outputs the constant 0.5 (zero weights, bias 0.5) and contributes
    least (its outgoing weights are scaled down); units 10 and 11 are silent (negative bias)."""
    torch.manual_seed(0)
    model = PlainMLP()
    with torch.no_grad():
        first = model.layers[0]
        first.weight[unit] = 0
        first.bias[unit] = 0.5
        model.layers[2].weight[:, unit] *= 0.001
        first.weight[[10, 11]] = 0
        first.bias[[10, 11]] = -1.0
    return model


def run_until_due(model, config, steps: int, optimizer=None):
    strategy = get_strategy(config)
    strategy.attach(model)
    model.train()
    reports = {}
    try:
        for step, batch in enumerate(data(steps, side=8), start=1):
            if optimizer is None:
                model(batch["pixel_values"])  # a training forward pass; weights stay as constructed
            else:
                train_step(model, optimizer, batch)
            if strategy.due(step=step, epoch=0.0):
                reports[step] = restore(model, strategy, step=step, optimizer=optimizer)
    finally:
        strategy.detach()
    return strategy, reports


def test_units_without_contribution_are_replaced():
    """Known answer: the silent units 10 and 11 have utility exactly 0; with two units due they are the two chosen."""
    model = constant_unit_mlp()
    old = model.layers[0].weight.detach().clone()
    config = ContinualBackpropConfig(replacement_rate=2 / 32, maturity=3, decay=0.9)
    _, reports = run_until_due(model, config, steps=4)
    assert list(reports) == [4]
    changed = torch.nonzero((model.layers[0].weight.detach() != old).any(1)).reshape(-1).tolist()
    assert changed == [10, 11]


def test_bias_correction_with_the_bias_corrected_mean_keeps_the_function():
    """Known answer: replacing the constant unit 3 (0.5 after ReLU) removes w_out[:, 3] * 0.5 from the next layer's
    input; the correction adds back w_out[:, 3] * mean / (1 - decay^age), which is exactly 0.5 * w_out[:, 3]."""
    model = constant_unit_mlp()
    with torch.no_grad():
        model.layers[0].bias[[10, 11]] = 0.3  # no silent units now: unit 3 contributes least
    pixels = data(1, side=8, seed=5)[0]["pixel_values"]
    with torch.no_grad():
        logits = model.eval()(pixels)
    old = model.layers[0].weight.detach().clone()
    config = ContinualBackpropConfig(replacement_rate=1 / 32, maturity=4, decay=0.9)
    strategy, reports = run_until_due(model, config, steps=5)
    assert list(reports) == [5]
    assert torch.nonzero((model.layers[0].weight.detach() != old).any(1)).reshape(-1).tolist() == [3]
    with torch.no_grad():
        assert torch.allclose(model.eval()(pixels), logits, atol=1e-6, rtol=0)


def test_ranking_uses_the_bias_corrected_utility():
    """Known answer: unit 5 is young (age 2; raw utility 0.19 = 1.0 * (1 - 0.9^2)), unit 7 old (age 50, raw 0.497 =
    0.5 * (1 - 0.9^50)). Raw, unit 5 looks least useful; bias-corrected (1.0 vs 0.5), unit 7 is, as in gnt.py."""
    model = PlainMLP()
    strategy = get_strategy(ContinualBackpropConfig(replacement_rate=0.0, maturity=1, decay=0.9))
    strategy.attach(model)
    strategy.detach()
    state = strategy.state["layers.0"]
    state["age"][:] = 50
    state["age"][5] = 2
    true = torch.full((32,), 2.0)
    true[5], true[7] = 1.0, 0.5
    state["utility"] = true * (1 - 0.9 ** state["age"].float())
    state["pending"] = 1.0
    plan = strategy.plan_step(model, step=60)
    assert replaced_units(plan, strategy.groups[0]) == [7]


def test_bias_correction_keeps_the_optimizer_state_of_the_next_bias():
    """As in gnt.py's update_optim_params: the moments of the incoming weights and bias and of the outgoing weights
    are zeroed; those of the next layer's corrected bias are kept. (Unit 0 is the one replaced: the choice does not
    depend on the utility's order here.)"""
    model = constant_unit_mlp(unit=0)
    with torch.no_grad():
        model.layers[0].bias[[10, 11]] = 0.3
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    config = ContinualBackpropConfig(replacement_rate=1 / 32, maturity=4, decay=0.9)
    states = {}
    strategy = get_strategy(config)
    strategy.attach(model)
    model.train()
    try:
        for step, batch in enumerate(data(5, side=8), start=1):
            train_step(model, optimizer, batch)
            states = {p: {k: v.clone() for k, v in optimizer.state[p].items()} for p in model.parameters()}
            if strategy.due(step=step, epoch=0.0):
                restore(model, strategy, step=step, optimizer=optimizer)
    finally:
        strategy.detach()
    first, second = model.layers[0], model.layers[2]
    touched = {p: torch.zeros_like(p, dtype=torch.bool) for p in model.parameters()}
    touched[first.weight][0] = touched[first.bias][0] = True
    touched[second.weight][:, 0] = True
    assert not torch.equal(second.bias.detach(), states[second.bias]["exp_avg"])  # the bias was corrected ...
    for param in model.parameters():
        for key in ("exp_avg", "exp_avg_sq"):
            now, before = optimizer.state[param][key], states[param][key]
            assert torch.all(now[touched[param]] == 0)
            assert torch.equal(now[~touched[param]], before[~touched[param]]), key  # ... and keeps its moments
    assert torch.any(states[second.bias]["exp_avg"] != 0)


@pytest.mark.parametrize("model_class", [PlainCNN, ViewCNN])
def test_unit_groups_cover_the_head_feeding_layer_for_cbp(model_class):
    model = model_class()
    strategy = get_strategy(ContinualBackpropConfig())
    strategy.attach(model)
    strategy.detach()
    producers = [g.producer for g in strategy.groups]
    assert producers == [g.producer for g in unit_groups(model)] == ["conv1", "conv2", "fc1"]
