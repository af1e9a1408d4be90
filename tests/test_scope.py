"""A config's scope means the same for every strategy: excluding a module excludes everything inside it (for block
re-draws too, and for the consumers a unit reset writes into), and a name the model lacks is refused, not ignored."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_plasticity import (
    LayerReinitConfig,
    ReDoConfig,
    ShrinkPerturbConfig,
    prepare_pretrained,
    restore_record,
)
from hf_plasticity.core.targeting import ScopeError

from .models import batches, build, perturb


def tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def changed(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> set[str]:
    return {name for name, t in model.state_dict().items() if not torch.equal(t, before[name])}


def vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return perturb(build("vit"))


MODULES = [name for name, _ in vit().named_modules() if name.startswith("vit.layers.")]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(module=st.sampled_from(MODULES))
def test_nothing_inside_an_excluded_module_changes(module):
    """Shrink & perturb touches every Linear of the backbone; with any module excluded, nothing under it moves."""
    model = vit()
    before = tensors(model)
    prepare_pretrained(model, ShrinkPerturbConfig(shrink=0.5, perturb=0.1, exclude_modules=[module]))
    moved = changed(model, before)
    assert moved and not {name for name in moved if name.startswith(module + ".")}


def test_a_block_re_draw_leaves_what_is_excluded_inside_the_block():
    model = vit()
    before = tensors(model)
    prepare_pretrained(model, LayerReinitConfig(num_blocks=1, exclude_modules=["vit.layers.2.mlp.fc1"]))
    moved = changed(model, before)
    assert "vit.layers.2.mlp.fc2.weight" in moved  # the last block, re-drawn but for its excluded fc1
    assert not {name for name in moved if name.startswith("vit.layers.2.mlp.fc1.")}
    assert restore_record(model).redrawn["partial"] == []


def test_a_unit_reset_leaves_an_excluded_consumer_alone():
    """ReDo re-draws a dormant unit's incoming weights and zeroes its outgoing column in the layer it feeds: with that
    layer excluded, the unit is left alone."""
    model = vit()
    before = tensors(model)
    config = ReDoConfig(tau=5.0, calibration_batches=1, exclude_modules=["vit.layers.1.mlp.fc2"])
    prepare_pretrained(model, config, data=batches(num=1))
    moved = changed(model, before)
    assert "vit.layers.0.mlp.fc2.weight" in moved  # tau=5: every unit is dormant, so block 0's units are reset
    assert not {name for name in moved if name.startswith("vit.layers.1.mlp.")}


@pytest.mark.parametrize(
    "config, message",
    [
        (
            LayerReinitConfig(exclude_modules=["vit.encoder.layer.1"]),
            r"`exclude_modules` entry 'vit\.encoder\.layer\.1' matches no module .* checkpoint's name of module "
            r"'vit\.layers\.1'",
        ),
        (ShrinkPerturbConfig(target_modules=["fc3"]), r"`target_modules` entry 'fc3' matches no module"),
        (ShrinkPerturbConfig(last_k_blocks=100), r"`last_k_blocks`=100 but ViTForImageClassification has only 3"),
    ],
)
def test_a_scope_naming_what_the_model_lacks_is_refused_before_anything_changes(config, message):
    model = vit()
    before = tensors(model)
    with pytest.raises(ScopeError, match=message):
        prepare_pretrained(model, config)
    assert not changed(model, before) and restore_record(model) is None


def test_an_empty_target_list_is_refused_not_read_as_the_default_scope():
    with pytest.raises(ValueError, match=r"`target_modules` is an empty list, which would mean the default scope"):
        ShrinkPerturbConfig(target_modules=[])
    assert ShrinkPerturbConfig(exclude_modules=[]).exclude_modules == []  # excluding nothing is what it says
