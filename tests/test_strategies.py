"""The strategies of issue 4 (shrink & perturb, ReDo, Continual Backprop, DASH, RIFLE, unit-granular selective)
on every architecture, through the public API, with their promises and their periodic hooks."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import torch

from hf_plasticity import (
    ContinualBackpropConfig,
    DashConfig,
    PlasticityConfig,
    ReDoConfig,
    RifleConfig,
    SelectiveReinitConfig,
    ShrinkPerturbConfig,
    UnitMapError,
    get_layout,
    prepare_pretrained,
    unregister_strategy,
)
from hf_plasticity.core.plan import apply_resets
from hf_plasticity.core.units import unit_groups
from hf_plasticity.pipeline.restore import restore
from hf_plasticity.strategies import get_strategy

from .models import ARCHS, batches

CONFIGS = {
    "shrink_perturb": lambda: ShrinkPerturbConfig(shrink=0.8, perturb=0.1),
    "redo": lambda: ReDoConfig(tau=0.9),  # high tau, so every tiny model has units to recycle
    "dash": lambda: DashConfig(calibration_batches=2),
    "selective_unit": lambda: SelectiveReinitConfig(granularity="unit", fraction=0.25, calibration_batches=2),
    "cbp": lambda: ContinualBackpropConfig(),
    "rifle": lambda: RifleConfig(),
}
FUNCTION_PRESERVING = ("redo", "selective_unit")


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@torch.no_grad()
def eval_logits(model, pixel_values):
    training = model.training
    model.eval()
    out = model(pixel_values)
    model.train(training)
    return getattr(out, "logits", out)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_strategy_on_every_architecture(make_model, arch, name):
    model = make_model(arch)
    reference = copy.deepcopy(model)
    pixels = batches(1, seed=5)[0]["pixel_values"]
    before = snapshot(model)
    params = dict(model.named_parameters())
    report = prepare_pretrained(model, CONFIGS[name](), data=batches(), diagnostics=False)

    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert all(p is params[n] and p.requires_grad for n, p in model.named_parameters())
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    reported = {t.name for t in report.tensors if t.reinitialized}  # re-initialized (edits: zeroed columns)
    edited = {t.name for t in report.tensors if t.edited}
    layout = get_layout(model)
    if name in ("cbp", "rifle"):  # training-time strategies: the one-shot restore writes nothing
        assert not changed and report.total_reinitialized == 0
        return
    assert report.total_reinitialized > 0 and changed
    head_changes = {k for k in changed if layout.in_head(k.rsplit(".", 1)[0])}
    assert not head_changes & reported, "the head was re-drawn"
    assert changed <= reported | edited, "a change the report does not name"
    if name in ("shrink_perturb", "dash"):
        assert not head_changes
        assert changed <= reported
        assert all(k.endswith(".weight") for k in changed)
        return
    # Unit resets: changed tensors are producers (+ BatchNorm channels) and the zeroed consumer columns (the head's
    # too, where a hidden layer feeds it: the head's input columns of a reset unit are zeroed, nothing else).
    consumers = {f"{g.consumer}.weight" for g in unit_groups(model)}
    assert head_changes <= consumers
    assert changed - {k for k in changed if k.endswith("num_batches_tracked")} <= reported | consumers
    zeroed = {k: (after[k] == 0) & (before[k] != 0) for k in changed & consumers}  # fresh draws are never 0
    assert any(mask.any() for mask in zeroed.values())
    # The fresh incoming weights have no effect on the function: the restored model computes exactly what the
    # original computes with the same outgoing columns zeroed (for truly dormant units that is the original).
    with torch.no_grad():
        for key, mask in zeroed.items():
            reference.state_dict()[key][mask] = 0
    if arch != "convnextv2":  # ConvNeXtV2's GRN normalizes across the hidden units: only approximately preserved
        assert torch.allclose(eval_logits(model, pixels), eval_logits(reference, pixels), atol=1e-5, rtol=0)


def test_function_preservation_can_fail():
    """The preservation check above is not vacuous: without zeroing the outgoing weights the logits move."""
    from .models import build

    torch.manual_seed(0)
    model = build("vit").eval()
    pixels = batches(1, seed=5)[0]["pixel_values"]
    logits = eval_logits(model, pixels)
    plan = get_strategy(ReDoConfig(tau=0.9)).plan(model, data=batches())
    apply_resets([r for r in plan.resets if r.fresh])  # drop the zeroed outgoing columns
    assert not torch.allclose(eval_logits(model, pixels), logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["vit", "resnet", "cnn"])
def test_identity_settings_change_nothing(make_model, arch):
    model = make_model(arch)
    before = snapshot(model)
    prepare_pretrained(model, ShrinkPerturbConfig(shrink=1.0, perturb=0.0))
    prepare_pretrained(model, DashConfig(lambda_min=1.0, calibration_batches=2), data=batches(), force=True)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_shrink_perturb_formula(make_model):
    model = make_model("vit")
    fc1 = model.vit.layers[0].mlp.fc1.weight
    old = fc1.detach().clone()
    prepare_pretrained(model, ShrinkPerturbConfig(shrink=0.5, perturb=0.0))
    assert torch.equal(fc1.detach(), 0.5 * old)
    model = make_model("vit")
    fc1 = model.vit.layers[0].mlp.fc1.weight
    prepare_pretrained(model, ShrinkPerturbConfig(shrink=0.0, perturb=1.0))
    assert abs(fc1.detach().std().item() - 0.02) < 0.004  # a fresh draw of the ViT rule normal(0, 0.02)


def test_dash_only_shrinks_each_neuron_within_bounds(make_model):
    model = make_model("resnet")
    before = snapshot(model)
    report = prepare_pretrained(model, DashConfig(lambda_min=0.3, calibration_batches=2), data=batches())
    for record in report.tensors:
        old, new = before[record.name], model.state_dict()[record.name]
        ratio = (new / old).reshape(old.shape[0] * old.shape[1], -1)  # per (out, in) kernel
        assert torch.all(ratio >= 0.3 - 1e-6) and torch.all(ratio <= 1 + 1e-6)
        assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-5)  # one factor per neuron


def dead_units_vit(make_model, dead):
    model = make_model("vit")
    fc1 = model.vit.layers[1].mlp.fc1
    with torch.no_grad():
        fc1.weight[dead] = 0
        fc1.bias[dead] = -10.0  # GELU(-10) ~ 0: these units never fire
    return model


def test_redo_resets_exactly_the_dormant_units(make_model):
    dead = [3, 17, 40]
    model = dead_units_vit(make_model, dead)
    fc1, fc2 = model.vit.layers[1].mlp.fc1, model.vit.layers[1].mlp.fc2
    old_w1, old_w2 = fc1.weight.detach().clone(), fc2.weight.detach().clone()
    pixels = batches(1, seed=5)[0]["pixel_values"]
    logits = eval_logits(model, pixels)
    prepare_pretrained(model, ReDoConfig(tau=0.1, target_modules=["layers.1.mlp.fc1"]), data=batches())
    assert torch.allclose(eval_logits(model, pixels), logits, atol=1e-5, rtol=0)  # dead units: function unchanged
    rows = torch.nonzero((fc1.weight.detach() != old_w1).any(1)).reshape(-1).tolist()
    assert rows == dead
    assert torch.all(fc1.bias[dead] > -1)  # fresh bias (the ViT rule: zero)
    assert torch.all(fc2.weight[:, dead] == 0)
    keep = [i for i in range(fc2.weight.shape[1]) if i not in dead]
    assert torch.equal(fc2.weight.detach()[:, keep], old_w2[:, keep])


def test_redo_resets_resnet_batchnorm_channels(make_model):
    model = make_model("resnet")
    group = unit_groups(model)[0]
    conv = model.get_submodule(group.producer)
    norm = model.get_submodule(group.norm)
    with torch.no_grad():
        conv.weight[1] = 0
        norm.weight[1], norm.bias[1] = 0.0, -1.0  # the channel is always negative before the ReLU: dead
    report = prepare_pretrained(model, ReDoConfig(tau=0.0, target_modules=[group.producer]), data=batches())
    assert {t.name: t.reinitialized for t in report.tensors}[f"{group.norm}.running_var"] == 1
    assert norm.running_mean[1] == 0 and norm.running_var[1] == 1 and norm.weight[1] == 1 and norm.bias[1] == 0


def train_a_few_steps(model, optimizer, steps=3):
    for batch in batches(steps, seed=9):
        loss = torch.nn.functional.cross_entropy(model(batch["pixel_values"]).logits, batch["labels"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize(
    "optimizer_cls, keys", [(torch.optim.AdamW, ("exp_avg", "exp_avg_sq")), (torch.optim.SGD, ("momentum_buffer",))]
)
def test_optimizer_state_zeroed_only_on_touched_entries(make_model, optimizer_cls, keys):
    model = make_model("vit")
    kwargs = {"momentum": 0.9} if optimizer_cls is torch.optim.SGD else {}
    optimizer = optimizer_cls(model.parameters(), lr=1e-4, **kwargs)
    train_a_few_steps(model, optimizer)
    state = {p: {k: optimizer.state[p][k].clone() for k in keys} for p in model.parameters()}
    fc1, fc2 = model.vit.layers[1].mlp.fc1, model.vit.layers[1].mlp.fc2
    old = fc1.weight.detach().clone()
    config = ReDoConfig(tau=0.9, target_modules=["layers.1.mlp.fc1"])
    prepare_pretrained(model, config, data=batches(), optimizer=optimizer, diagnostics=False)
    units = torch.nonzero((fc1.weight.detach() != old).any(1)).reshape(-1)
    assert 0 < units.numel() < fc1.weight.shape[0]
    masks = {p: torch.zeros_like(p, dtype=torch.bool) for p in (fc1.weight, fc1.bias, fc2.weight)}
    masks[fc1.weight][units] = True
    masks[fc1.bias][units] = True
    masks[fc2.weight][:, units] = True
    for param in model.parameters():
        touched = masks.get(param, torch.zeros_like(param, dtype=torch.bool))
        for key in keys:
            now = optimizer.state[param][key]
            assert torch.all(now[touched] == 0)
            assert torch.equal(now[~touched], state[param][key][~touched])
            if param in masks:
                assert torch.any(state[param][key][touched] != 0), "the test would be vacuous"


def test_periodic_hooks_of_redo_and_selective(make_model):
    model = make_model("convnext")
    redo = get_strategy(ReDoConfig(every_n_steps=3, tau=0.9))
    assert redo.schedule.periodic and redo.schedule.before_training
    assert [s for s in range(1, 10) if redo.due(step=s, epoch=0.0)] == [3, 6, 9]
    first = redo.plan_step(model, step=3, data=batches())
    second = redo.plan_step(model, step=6, data=batches())
    fresh = [(a.values, b.values) for a, b in zip(first.resets, second.resets) if a.fresh]
    assert fresh and any(not torch.equal(a, b) for a, b in fresh)  # each periodic reset draws new values
    assert not get_strategy(SelectiveReinitConfig()).schedule.periodic
    selective = get_strategy(SelectiveReinitConfig(every_n_steps=128, selection="threshold", utility="magnitude"))
    assert selective.due(step=256, epoch=1.0) and not selective.due(step=100, epoch=1.0)


def test_rifle_reinitializes_the_head_once_per_epoch_also_across_resume(make_model):
    model = make_model("resnet")
    rifle = get_strategy(RifleConfig(epochs=[1, 2]))
    assert rifle.schedule.periodic and not rifle.schedule.before_training
    assert not rifle.due(step=5, epoch=0.5)
    assert rifle.due(step=10, epoch=1.0)
    head = model.classifier[1].weight
    old = head.detach().clone()
    restore(model, rifle, step=10)
    rifle.schedule.fired(step=10, epoch=1.0)
    assert not torch.equal(head.detach(), old)
    assert not rifle.due(step=11, epoch=1.1)
    state = json.loads(json.dumps(rifle.state_dict()))
    resumed = get_strategy(RifleConfig(epochs=[1, 2]))
    resumed.load_state_dict(state)
    assert not resumed.due(step=12, epoch=1.2) and resumed.due(step=20, epoch=2.0)


def test_continual_backprop_replaces_mature_low_utility_units(make_model):
    model = make_model("vit")
    config = ContinualBackpropConfig(replacement_rate=0.05, maturity=2)
    cbp = get_strategy(config)
    cbp.attach(model)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    plans = []
    try:
        for step, batch in enumerate(batches(4, seed=3), start=1):
            loss = torch.nn.functional.cross_entropy(model(batch["pixel_values"]).logits, batch["labels"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            assert cbp.due(step=step, epoch=0.0) == cbp.due(step=step, epoch=0.0)  # idempotent per step
            if cbp.due(step=step, epoch=0.0):
                plan = cbp.plan_step(model, step=step).resets
                plans.append(plan)
                apply_resets(plan)
    finally:
        cbp.detach()
    assert all(not m._forward_pre_hooks for m in model.modules())
    # 64 units per layer, rate 0.05: one unit per layer per step once mature (step 3 on).
    assert len(plans) == 2
    names = {r.name for r in plans[0]}
    assert "vit.layers.0.mlp.fc1.weight" in names and "vit.layers.0.mlp.fc2.bias" in names  # bias corrected
    state = json.loads(json.dumps(cbp.state_dict()))
    assert min(state["units"]["vit.layers.0.mlp.fc1"]["age"]) == 0
    other = get_strategy(config)
    other.load_state_dict(state)
    other.attach(model)
    other.detach()
    assert torch.equal(other.state["vit.layers.0.mlp.fc1"]["utility"], cbp.state["vit.layers.0.mlp.fc1"]["utility"])


def test_prepare_attaches_diagnostics_before_and_after(make_model):
    model = make_model("resnet")
    report = prepare_pretrained(model, ReDoConfig(tau=0.9), data=batches())
    before, after = report.diagnostics["before"], report.diagnostics["after"]
    assert before.batches == 2 and after.samples == 8
    assert after.dormant_ratio < before.dormant_ratio  # dormant units were recycled
    text = str(report)
    assert "Diagnostics (before -> after)" in text and "dormant_ratio" in text
    assert json.loads(report.to_json())["diagnostics"]["after"]["layers"]
    no_data = prepare_pretrained(make_model("resnet"), ShrinkPerturbConfig())
    assert no_data.diagnostics == {}
    off = prepare_pretrained(make_model("resnet"), ReDoConfig(), data=batches(), diagnostics=False)
    assert off.diagnostics == {}
    # A one-pass iterator is read once and replayed: the diagnostics and the plan see the same batches.
    listed, one_pass = make_model("resnet"), make_model("resnet")
    from_list = prepare_pretrained(listed, ReDoConfig(tau=0.9), data=batches(), diagnostics=True)
    from_iterator = prepare_pretrained(one_pass, ReDoConfig(tau=0.9), data=iter(batches()), diagnostics=True)
    assert from_iterator.diagnostics["after"].samples == from_list.diagnostics["after"].samples == 8
    assert all(torch.equal(a, b) for a, b in zip(listed.state_dict().values(), one_pass.state_dict().values()))


def test_configs_round_trip_through_json(tmp_path):
    for make in CONFIGS.values():
        config = make()
        config.save_pretrained(tmp_path / config.strategy)
        assert PlasticityConfig.from_pretrained(tmp_path / config.strategy) == config


def test_user_strategy_from_the_docs_works_end_to_end(make_model, tmp_path, request):
    doc = (Path(__file__).resolve().parents[1] / "docs" / "STRATEGIES.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    assert 20 <= len(code.strip().splitlines()) <= 40  # "a strategy in about 30 lines"
    namespace: dict = {"__name__": "user_strategy"}
    exec(compile(code, "STRATEGIES.md", "exec", dont_inherit=True), namespace)
    request.addfinalizer(lambda: unregister_strategy("largest_weights"))
    config = namespace["LargestWeightsConfig"](num_tensors=3, seed=4)
    model = make_model("convnext")
    before = snapshot(model)
    report = prepare_pretrained(model, config)
    assert report.strategy == "largest_weights" and len(report.tensors) == 3
    assert {k for k in before if not torch.equal(before[k], model.state_dict()[k])} == {t.name for t in report.tensors}
    model.save_pretrained(tmp_path / "restored")
    assert PlasticityConfig.from_pretrained(tmp_path / "restored") == config
    config.save_pretrained(tmp_path / "standalone")
    assert PlasticityConfig.from_pretrained(tmp_path / "standalone") == config
    assert prepare_pretrained(make_model("vit"), "largest_weights").strategy == "largest_weights"
    with pytest.raises(ValueError, match="`num_tensors` must be a positive integer"):
        namespace["LargestWeightsConfig"](num_tensors=0)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: ReDoConfig(tau=-0.1), "`tau` must be a finite number >= 0"),
        (lambda: ShrinkPerturbConfig(shrink=1.5), r"`shrink` must be a finite number in \[0, 1\]"),
        (lambda: ShrinkPerturbConfig(shrink=-0.1), r"`shrink` must be a finite number in \[0, 1\]"),
        (lambda: ShrinkPerturbConfig(perturb=-1), "`perturb` must be a finite number >= 0"),
        (lambda: DashConfig(lambda_min=1.2), r"`lambda_min` must be a finite number in \[0, 1\]"),
        (lambda: DashConfig(alpha=0), r"`alpha` must be a finite number in \(0, 1\]"),
        (lambda: ContinualBackpropConfig(replacement_rate=2), r"`replacement_rate` must be a finite number in \[0, 1"),
        (lambda: ContinualBackpropConfig(decay=1.0), r"`decay` must be a finite number in \[0, 1\)"),
        (lambda: RifleConfig(epochs=[]), "`epochs` must be a non-empty list"),
        (lambda: ReDoConfig(every_n_steps=0), "`every_n_steps` must be a positive integer or None"),
        (lambda: SelectiveReinitConfig(granularity="neuron"), r"`granularity` must be one of \['weight', 'unit'\]"),
    ],
)
def test_bad_config_values(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_unit_strategy_on_an_unmappable_model_names_the_layer():
    model = torch.nn.Sequential(  # GroupNorm mixes the channels: the conv's output is no set of units
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.GroupNorm(2, 4),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 3),
    )
    before = snapshot(model)
    for config in (ReDoConfig(), SelectiveReinitConfig(granularity="unit", utility="magnitude")):
        with pytest.raises(UnitMapError, match=r"first candidate: layer '0' \(Conv2d\)"):
            prepare_pretrained(model, config, data=batches(), diagnostics=False)
    assert all(torch.equal(before[k], model.state_dict()[k]) for k in before)


def test_default_diagnostics_skip_unlabeled_data_explicit_ones_fail(make_model):
    unlabeled = [{"pixel_values": b["pixel_values"]} for b in batches()]
    report = prepare_pretrained(make_model("cnn"), ShrinkPerturbConfig(), data=unlabeled)
    assert report.total_reinitialized > 0 and report.diagnostics == {}
    model = make_model("cnn")
    before = snapshot(model)
    with pytest.raises(ValueError, match="no labels"):
        prepare_pretrained(model, ShrinkPerturbConfig(), data=unlabeled, diagnostics=True)
    assert all(torch.equal(before[k], model.state_dict()[k]) for k in before)
