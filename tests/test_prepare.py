"""One table of (architecture x strategy setting) cases drives the common checks of `prepare_pretrained`."""

from __future__ import annotations

import pytest
import torch

from hf_plasticity import LayerReinitConfig, SelectiveReinitConfig, get_layout, prepare_pretrained

from .models import ARCHS, batches

SELECTIVE = [
    dict(utility=u, selection=s)
    for u in ("grad_x_weight", "grad", "magnitude", "random")
    for s in ("proportional", "threshold")
]
SETTINGS = [pytest.param(("selective", kw), id=f"selective-{kw['utility']}-{kw['selection']}") for kw in SELECTIVE]
SETTINGS.append(pytest.param(("reinit_layers", {}), id="reinit_layers"))


def make_config(setting, seed: int = 0):
    name, kwargs = setting
    if name == "reinit_layers":
        return LayerReinitConfig(num_blocks=1, seed=seed)
    return SelectiveReinitConfig(fraction=0.05, threshold=0.5, calibration_batches=2, seed=seed, **kwargs)


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed_entries(before, model):
    after = model.state_dict()
    return {k: (before[k] != after[k]).reshape(-1) for k in before if not torch.equal(before[k], after[k])}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("setting", SETTINGS)
def test_exactly_the_reported_entries_change(make_model, arch, setting):
    model = make_model(arch)
    before = snapshot(model)
    params_before = {n: p for n, p in model.named_parameters()}
    config = make_config(setting)
    report = prepare_pretrained(model, config, data=batches())

    changed = changed_entries(before, model)
    reported = {t.name: t for t in report.tensors}
    assert changed, "nothing changed"
    # Every changed tensor is reported, with exactly the reported number of changed entries.
    for name, mask in changed.items():
        assert name in reported, f"{name} changed but is not in the report"
        assert int(mask.sum()) == reported[name].reinitialized, name
    # Parameter identity and requires_grad are kept.
    for name, param in model.named_parameters():
        assert param is params_before[name]
        assert param.requires_grad
    layout = get_layout(model)
    if setting[0] == "reinit_layers":
        last = layout.blocks[-1]
        expected = {n for n in before if n.startswith(last + ".") and not n.endswith("num_batches_tracked")}
        if layout.final_norm:
            expected |= {n for n in before if n.startswith(layout.final_norm + ".")}
        assert set(changed) - {n for n in changed if n.endswith("num_batches_tracked")} == expected
    else:
        # Only backbone Linear/Conv weights; never the head, biases or norms.
        assert all(n.endswith(".weight") for n in changed)
        assert not any(layout.in_head(n.rsplit(".", 1)[0]) for n in changed)
        if config.selection == "proportional":
            for record in report.tensors:
                assert abs(record.reinitialized - config.fraction * record.numel) <= 1, record


@pytest.mark.parametrize("arch", ARCHS)
def test_magnitude_selects_the_smallest_weights(make_model, arch):
    model = make_model(arch)
    before = snapshot(model)
    report = prepare_pretrained(model, SelectiveReinitConfig(utility="magnitude", fraction=0.1))
    for record in report.tensors:
        old = before[record.name].reshape(-1)
        expected = set(torch.argsort(old.abs(), stable=True)[: record.reinitialized].tolist())
        changed = set(torch.nonzero(old != model.state_dict()[record.name].reshape(-1)).reshape(-1).tolist())
        assert changed == expected, record.name


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("setting", [SETTINGS[0], SETTINGS[6], SETTINGS[-1]])
def test_same_seed_same_weights_other_seed_different(make_model, arch, setting):
    results = []
    for seed in (0, 0, 1):
        model = make_model(arch)
        prepare_pretrained(model, make_config(setting, seed=seed), data=batches())
        results.append(snapshot(model))
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])
    assert any(not torch.equal(results[0][k], results[2][k]) for k in results[0])


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_dtype_kept(make_model, arch, dtype):
    model = make_model(arch, dtype=dtype)
    prepare_pretrained(model, SelectiveReinitConfig(utility="grad_x_weight"), data=batches(1))
    prepare_pretrained(model, LayerReinitConfig(), force=True)
    assert {p.dtype for p in model.parameters()} == {dtype}
    assert all(torch.isfinite(p.float()).all() for p in model.parameters())


def test_resnet_batchnorm_of_the_last_block_is_reset(make_model):
    model = make_model("resnet")
    prepare_pretrained(model, LayerReinitConfig(num_blocks=1))
    last = model.get_submodule(get_layout(model).blocks[-1])
    norms = [m for m in last.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms
    for norm in norms:
        assert torch.equal(norm.running_mean, torch.zeros_like(norm.running_mean))
        assert torch.equal(norm.running_var, torch.ones_like(norm.running_var))
        assert torch.equal(norm.weight, torch.ones_like(norm.weight))
        assert int(norm.num_batches_tracked) == 0


def test_convnext_layer_scale_and_convnextv2_grn_follow_the_init_rule(make_model):
    model = make_model("convnext")
    prepare_pretrained(model, LayerReinitConfig(num_blocks=1))
    layer = model.get_submodule(get_layout(model).blocks[-1])
    assert torch.allclose(layer.layer_scale_parameter, torch.full_like(layer.layer_scale_parameter, 1e-6))
    model = make_model("convnextv2")
    prepare_pretrained(model, LayerReinitConfig(num_blocks=1))
    layer = model.get_submodule(get_layout(model).blocks[-1])
    assert torch.equal(layer.grn.weight, torch.zeros_like(layer.grn.weight))


def test_redrawn_values_follow_the_init_rule():
    """On large tensors the std of re-drawn entries is within 10% of the init rule's std."""
    from transformers import ResNetConfig, ResNetForImageClassification, ViTConfig, ViTForImageClassification

    vit = ViTForImageClassification(
        ViTConfig(
            image_size=32,
            patch_size=8,
            hidden_size=256,
            num_hidden_layers=1,
            num_attention_heads=4,
            intermediate_size=1024,
            num_labels=3,
        )
    )
    with torch.no_grad():
        for p in vit.parameters():
            p.mul_(5.0)  # far from the rule, so a no-op re-draw would fail the check
    fc1 = vit.vit.layers[0].mlp.fc1.weight
    old = fc1.detach().clone()
    prepare_pretrained(vit, SelectiveReinitConfig(utility="random", fraction=0.5))
    redrawn = fc1.detach()[fc1.detach() != old]
    assert redrawn.numel() == old.numel() // 2
    assert abs(redrawn.std().item() - 0.02) / 0.02 < 0.1  # the ViT rule: normal(0, initializer_range=0.02)

    resnet = ResNetForImageClassification(
        ResNetConfig(embedding_size=8, hidden_sizes=[64, 256], depths=[1, 1], layer_type="basic", num_labels=3)
    )
    prepare_pretrained(resnet, LayerReinitConfig(num_blocks=1))
    conv = resnet.get_submodule(get_layout(resnet).blocks[-1]).layer[1].convolution
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    expected = (2.0 / fan_out) ** 0.5
    assert abs(conv.weight.std().item() - expected) / expected < 0.1


def test_frozen_parameters_untouched_unless_targeted(make_model):
    model = make_model("vit")
    frozen = model.vit.layers[2].mlp.fc1.weight
    frozen.requires_grad_(False)
    before = frozen.detach().clone()
    prepare_pretrained(model, SelectiveReinitConfig(utility="grad_x_weight"), data=batches())
    assert torch.equal(frozen, before)
    assert not frozen.requires_grad
    prepare_pretrained(
        model, SelectiveReinitConfig(utility="grad", target_modules=["layers.2.mlp.fc1"]), data=batches(), force=True
    )
    assert not torch.equal(frozen, before)
    assert not frozen.requires_grad


def test_gradients_mode_and_rng_restored(make_model):
    model = make_model("convnext")
    model.train()
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    torch.manual_seed(42)
    expected_next = torch.rand(3)
    torch.manual_seed(42)
    prepare_pretrained(model, SelectiveReinitConfig(utility="grad_x_weight"), data=batches())
    assert torch.equal(torch.rand(3), expected_next)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in model.parameters())


def test_scope_restrictions(make_model):
    model = make_model("vit")
    before = snapshot(model)
    report = prepare_pretrained(
        model,
        SelectiveReinitConfig(
            utility="magnitude", fraction=0.2, last_k_blocks=1, exclude_modules=[r".*attention\..*"], include_bias=True
        ),
    )
    names = {t.name for t in report.tensors}
    assert names == {f"vit.layers.2.mlp.{fc}.{kind}" for fc in ("fc1", "fc2") for kind in ("weight", "bias")}
    assert set(changed_entries(before, model)) <= names


def test_report_and_record(make_model, tmp_path):
    from hf_plasticity import PlasticityConfig

    model = make_model("convnext")
    report = prepare_pretrained(model, SelectiveReinitConfig(utility="magnitude", fraction=0.02))
    assert "selective" in str(report) and report.seconds > 0
    data = report.to_dict()
    assert data["total_reinitialized"] == sum(t["reinitialized"] for t in data["tensors"])
    assert 0 < report.share < 0.02
    model.save_pretrained(tmp_path / "restored")
    loaded = PlasticityConfig.from_pretrained(tmp_path / "restored")
    assert loaded == SelectiveReinitConfig(utility="magnitude", fraction=0.02)
    reloaded = type(model).from_pretrained(tmp_path / "restored")
    assert reloaded.config.plasticity["total_reinitialized"] == report.total_reinitialized


def test_default_is_reinit_last_block_and_strategy_names_work(make_model):
    model = make_model("resnet")
    report = prepare_pretrained(model)
    assert report.strategy == "reinit_layers" and set(report.by_block()) == {"resnet.encoder.stages.1.layers.1"}
    assert report.details == {"num_blocks": 1} and model.config.plasticity["details"] == {"num_blocks": 1}
    deep = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(16)], torch.nn.Linear(4, 2))
    report = prepare_pretrained(deep)  # the default scales with depth: an eighth of 16 blocks
    assert set(report.by_block()) == {"14", "15"} and report.details == {"num_blocks": 2}
    assert prepare_pretrained(make_model("vit"), LayerReinitConfig(num_blocks=1)).details == {}
    model = make_model("resnet")
    assert prepare_pretrained(model, "selective", data=batches()).strategy == "selective"


def test_optimizer_state_of_redrawn_entries_is_reset(make_model):
    model = make_model("convnext")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for batch in batches(3):
        loss = torch.nn.functional.cross_entropy(model(batch["pixel_values"]).logits, batch["labels"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    before = {p: {k: v.clone() for k, v in s.items() if torch.is_tensor(v)} for p, s in optimizer.state.items()}
    params = dict(model.named_parameters())
    old = {n: p.detach().clone() for n, p in params.items()}
    report = prepare_pretrained(model, SelectiveReinitConfig(utility="magnitude", fraction=0.1), optimizer=optimizer)
    for record in report.tensors:
        param = params[record.name]
        redrawn = param.detach() != old[record.name]
        for key in ("exp_avg", "exp_avg_sq"):
            state = optimizer.state[param][key]
            assert torch.all(state[redrawn] == 0)
            assert torch.equal(state[~redrawn], before[param][key][~redrawn])
    untouched = params["classifier.weight"]
    assert torch.equal(optimizer.state[untouched]["exp_avg"], before[untouched]["exp_avg"])


@pytest.mark.parametrize("layer_scale", ["init", "keep", 0.1])
def test_the_layer_scale_of_redrawn_convnext_blocks(make_model, layer_scale):
    model = make_model("convnext")
    gamma = model.convnext.encoder.stages[1].layers[1].layer_scale_parameter
    pretrained_gamma = gamma.detach().clone()
    weight = model.convnext.encoder.stages[1].layers[1].pwconv1.weight
    old_weight = weight.detach().clone()
    report = prepare_pretrained(model, LayerReinitConfig(num_blocks=1, layer_scale=layer_scale))
    expected = {
        "init": torch.full_like(gamma, model.config.layer_scale_init_value),
        "keep": pretrained_gamma,
        0.1: torch.full_like(gamma, 0.1),
    }[layer_scale]
    assert torch.equal(gamma.detach(), expected)
    assert not torch.equal(weight.detach(), old_weight)  # the rest of the block is re-drawn either way
    recorded = {t.name for t in report.tensors}
    assert ("convnext.encoder.stages.1.layers.1.layer_scale_parameter" in recorded) == (layer_scale != "keep")
    assert model.config.plasticity["config"]["layer_scale"] == layer_scale


@pytest.mark.parametrize("value", ["zero", 0.0, -1.0, float("nan"), True])
def test_bad_layer_scale_values_are_refused(value):
    with pytest.raises(ValueError, match="`layer_scale` must be 'init', 'keep' or a finite number > 0"):
        LayerReinitConfig(layer_scale=value)
