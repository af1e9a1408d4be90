"""The model object itself is checked before anything changes, by every entry point (one check,
`hf_plasticity.core.unwrap.check_restorable`): not a torch module, no parameters, NaN or infinite weights, a
classification head whose tensors are shared with the backbone (the same Parameter, or the same storage). Frozen
parameters (``requires_grad=False``) are skipped, never written, unless a layer is named in ``target_modules``; a
scope with no trainable parameter left is refused.
Each case runs over every registered strategy with the data it needs."""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from transformers import ViTConfig, ViTForImageClassification, ViTModel

from hf_plasticity import (
    AutoReinitConfig,
    ContinualBackpropConfig,
    DashConfig,
    LayerReinitConfig,
    PlasticityController,
    ReDoConfig,
    RifleConfig,
    ScopeError,
    SelectiveReinitConfig,
    ShrinkPerturbConfig,
    available_strategies,
    diagnose,
    prepare_pretrained,
    recommend_recipe,
)
from hf_plasticity.pipeline.restore import restore
from hf_plasticity.strategies import get_strategy

from .models import IMAGE_SIZE, batches, perturb

WIDTH = 32  # the ViT's hidden size; its head has as many outputs, so a head tensor can be tied to a block's

#: Every registered strategy, with settings that write in a tiny model and the data they need.
STRATEGIES = {
    "auto": (lambda: AutoReinitConfig(calibration_batches=2), True),
    "cbp": (lambda: ContinualBackpropConfig(), False),
    "dash": (lambda: DashConfig(calibration_batches=2), True),
    "redo": (lambda: ReDoConfig(tau=0.9), True),
    "reinit_layers": (lambda: LayerReinitConfig(num_blocks=1), False),
    "rifle": (lambda: RifleConfig(), False),
    "selective": (lambda: SelectiveReinitConfig(fraction=0.2, calibration_batches=2), True),
    "selective_unit": (lambda: SelectiveReinitConfig(granularity="unit", fraction=0.25, calibration_batches=2), True),
    "shrink_perturb": (lambda: ShrinkPerturbConfig(shrink=0.8, perturb=0.1), False),
}


def test_every_registered_strategy_is_covered():
    assert {name.removesuffix("_unit") for name in STRATEGIES} == set(available_strategies())


def vit() -> ViTForImageClassification:
    torch.manual_seed(0)
    config = ViTConfig(image_size=IMAGE_SIZE, patch_size=8, hidden_size=WIDTH, num_hidden_layers=3,
                       num_attention_heads=2, intermediate_size=64, num_labels=WIDTH)  # fmt: skip
    return perturb(ViTForImageClassification(config))


def data() -> list[dict[str, torch.Tensor]]:
    return [{**b, "labels": b["labels"] * 7} for b in batches(2)]  # labels spread over the 32 classes


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict(keep_vars=False).items()}


def untouched(model, before) -> bool:
    after = model.state_dict()
    return all(torch.equal(after[k], before[k]) for k in before) and getattr(model.config, "plasticity", None) is None


def tie(model: nn.Module, how: str) -> str:
    """Ties the head's weight to a square weight of the last block; returns the backbone tensor's name."""
    name = "vit.layers.2.attention.o_proj"
    dense = model.get_submodule(name)
    if how == "same_parameter":
        model.classifier.weight = dense.weight
    else:  # another Parameter over the same storage (e.g. a checkpoint loaded with shared tensors)
        model.classifier.weight = nn.Parameter(dense.weight.data)
    return f"{name}.weight"


def run(model, name: str, data_needed: bool):
    config = STRATEGIES[name][0]()
    return prepare_pretrained(model, config, data=data() if data_needed else None, diagnostics=False)


@pytest.mark.parametrize("how", ["same_parameter", "shared_storage"])
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_a_head_tied_to_the_backbone_is_refused_before_anything_changes(name, how):
    """Before: 9 of 10 strategy/tying pairs wrote into the head (through the backbone name of the shared tensor)."""
    model = vit()
    backbone = tie(model, how)
    before = snapshot(model)
    with pytest.raises(ValueError, match=rf"head tensor 'classifier\.weight' shares its storage with {backbone!r}"):
        run(model, name, STRATEGIES[name][1])
    assert untouched(model, before)
    assert model.classifier.weight.data_ptr() == model.get_submodule(backbone.rsplit(".", 1)[0]).weight.data_ptr()


@pytest.mark.parametrize("name", ["cbp", "redo"])
def test_a_tied_head_is_refused_by_the_training_time_reset_and_the_controller(name):
    model = vit()
    tie(model, "same_parameter")
    before = snapshot(model)
    strategy = get_strategy(STRATEGIES[name][0]())
    with pytest.raises(ValueError, match="head tensor 'classifier.weight' shares its storage"):
        restore(model, strategy, data=data(), step=1)
    with pytest.raises(ValueError, match="head tensor 'classifier.weight' shares its storage"):
        PlasticityController(STRATEGIES[name][0](), data=data()).validate(model, has_data=True)
    assert untouched(model, before)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_non_finite_weights_are_refused_and_named(name, value):
    """Before: a NaN weight went through the restore (and the diagnostics) without a word."""
    model = vit()
    with torch.no_grad():
        model.vit.layers[0].mlp.fc1.weight[1, 2] = value
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"1 NaN or infinite values in parameter 'vit\.layers\.0\.mlp\.fc1\.weight'"):
        run(model, name, STRATEGIES[name][1])
    assert all(torch.equal(v, before[k]) or k.endswith("fc1.weight") for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="NaN or infinite values in parameter"):
        diagnose(model, data())


@pytest.mark.parametrize(
    "model, message",
    [
        ("not a model", r"`model` must be a torch\.nn\.Module, got str"),
        (nn.ReLU(), r"`model` \(ReLU\) has no parameters"),
    ],
)
def test_a_model_that_is_not_one_is_named(model, message):
    with pytest.raises((TypeError, ValueError), match=message):
        prepare_pretrained(model)
    with pytest.raises((TypeError, ValueError), match=message):
        diagnose(model, data())


def test_a_model_without_a_classification_head_is_named_where_the_loss_is_read():
    """A backbone (``ViTModel``) returns hidden states, no logits: the loss once failed with
    "'BaseModelOutputWithPooling' object has no attribute 'shape'"."""
    torch.manual_seed(0)
    model = ViTModel(ViTConfig(image_size=IMAGE_SIZE, patch_size=8, hidden_size=WIDTH, num_hidden_layers=3,
                               num_attention_heads=2, intermediate_size=64))  # fmt: skip
    before = snapshot(model)
    message = r"returned a BaseModelOutputWithPooling .*'pooler_output'.* without `logits`.*classification head"
    for call in (lambda: diagnose(model, data()), lambda: recommend_recipe(model, data(), record=False)):
        with pytest.raises(ValueError, match=message):
            call()
    for name in ("auto", "dash", "selective"):  # the strategies that score on the loss
        with pytest.raises(ValueError, match=message):
            run(model, name, data_needed=True)
    assert untouched(model, before)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_frozen_parameters_are_never_written(name):
    """The decision: a frozen parameter is skipped (a user froze it to keep it), and so are the running statistics
    of a module whose parameters are all frozen, and a unit whose outgoing weights are frozen; only a layer named in
    ``target_modules`` is written although frozen."""
    model = vit()
    frozen = [model.vit.layers[2].mlp.fc2, model.vit.layers[2].attention.o_proj, model.vit.layers[1].mlp.fc1]
    for module in frozen:
        module.requires_grad_(False)
    before = snapshot(model)
    try:
        report = run(model, name, STRATEGIES[name][1])
    except ValueError as error:  # a scope left empty by the freezing is refused, and nothing changed
        assert untouched(model, before), error
        return
    names = {f"{n}.{a}" for n, m in model.named_modules() if any(m is f for f in frozen) for a in ("weight", "bias")}
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in names)
    assert not names & {t.name for t in report.tensors}
    assert all(not p.requires_grad for m in frozen for p in m.parameters())


FROZEN_SCOPE = r"All \d+ parameters in scope are frozen \(requires_grad=False\).*unfreeze them"


@pytest.mark.parametrize("name", sorted(set(STRATEGIES) - {"auto", "rifle"}))  # they may rightly re-draw nothing
def test_a_frozen_backbone_is_refused_with_the_reason_before_anything_changes(name):
    """Before: `reinit_layers` returned an empty report and recorded a restore; the others said the scope matched no
    tensor, without a word about the frozen parameters."""
    model = vit()
    for param_name, param in model.named_parameters():
        param.requires_grad_(param_name.startswith("classifier"))
    before = snapshot(model)
    with pytest.raises(ScopeError, match=FROZEN_SCOPE):
        run(model, name, STRATEGIES[name][1])
    if name == "shrink_perturb":  # every parameter and running statistic of the modules in scope
        with pytest.raises(ScopeError, match=FROZEN_SCOPE):
            prepare_pretrained(model, ShrinkPerturbConfig(every_parameter=True))
    assert untouched(model, before)


def test_frozen_last_blocks_are_refused_by_the_block_re_draw_which_says_what_to_do():
    model = vit()
    model.vit.layers[2].requires_grad_(False)
    model.vit.layernorm.requires_grad_(False)
    before = snapshot(model)
    with pytest.raises(ScopeError, match=FROZEN_SCOPE + r".*a larger `num_blocks`, with the frozen ones in"):
        prepare_pretrained(model)
    assert untouched(model, before)
    config = LayerReinitConfig(num_blocks=2, exclude_modules=["vit.layers.2", "vit.layernorm"])
    report = prepare_pretrained(model, config)
    assert {t.name.split(".")[2] for t in report.tensors} == {"1"}


@settings(max_examples=30, deadline=None)
@given(frozen=st.sets(st.sampled_from(["vit.layers.2.attention", "vit.layers.2.mlp", "vit.layers.2.layernorm_before",
                                       "vit.layers.2.layernorm_after", "vit.layernorm"])),
       num_blocks=st.integers(1, 2))  # fmt: skip
def test_a_block_re_draw_writes_a_trainable_tensor_or_refuses(frozen, num_blocks):
    """Partly frozen blocks: the frozen parameters are skipped, the others re-drawn; nothing trainable left in the
    blocks is a `ScopeError` (and nothing changed), never an empty restore."""
    model = vit()
    for name in frozen:
        model.get_submodule(name).requires_grad_(False)
    before = snapshot(model)
    try:
        report = prepare_pretrained(model, LayerReinitConfig(num_blocks=num_blocks))
    except ScopeError as error:
        assert num_blocks == 1 and len(frozen) == 5, error
        assert re.search(FROZEN_SCOPE, str(error)) and untouched(model, before)
        return
    written = {t.name for t in report.tensors}
    params = dict(model.named_parameters())
    assert written and all(params[n].requires_grad for n in written if n in params)
    assert not any(n.startswith(tuple(f"{m}." for m in frozen)) for n in written)


def test_a_frozen_layer_named_in_target_modules_is_written():
    model = vit()
    model.vit.layers[2].mlp.fc1.requires_grad_(False)
    before = model.vit.layers[2].mlp.fc1.weight.detach().clone()
    prepare_pretrained(model, ShrinkPerturbConfig(shrink=0.5, target_modules=["vit.layers.2.mlp.fc1"]))
    assert not torch.equal(model.vit.layers[2].mlp.fc1.weight, before)
