"""Bad input: a clear error naming the problem, and the model bitwise as it was."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from hf_plasticity import (
    AlreadyRestoredError,
    LayerReinitConfig,
    Plan,
    PlasticityConfig,
    ScopeError,
    SelectiveReinitConfig,
    Strategy,
    TensorReset,
    prepare_pretrained,
    register_strategy,
    unregister_strategy,
)

from .models import batches


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_untouched(model, before):
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("fraction", [0, -0.1, 1.5])
def test_fraction_outside_range(fraction):
    with pytest.raises(ValueError, match=r"`fraction` must be a finite number in \(0, 1\]"):
        SelectiveReinitConfig(fraction=fraction)


def test_unknown_utility_and_strategy(make_model):
    with pytest.raises(ValueError, match="`utility` must be one of"):
        SelectiveReinitConfig(utility="loss")
    model = make_model("vit")
    before = state(model)
    with pytest.raises(ValueError, match="Unknown strategy 'nope'. Accepted strategies: .*reinit_layers"):
        prepare_pretrained(model, "nope")
    assert_untouched(model, before)


def test_data_dependent_utility_without_data(make_model):
    model = make_model("resnet")
    before = state(model)
    with pytest.raises(ValueError, match="pass `data=`"):
        prepare_pretrained(model, SelectiveReinitConfig(utility="grad"))
    assert_untouched(model, before)


def test_data_without_labels(make_model):
    model = make_model("convnext")
    before = state(model)
    data = [{"pixel_values": b["pixel_values"]} for b in batches()]
    with pytest.raises(ValueError, match="no labels"):
        prepare_pretrained(model, SelectiveReinitConfig(utility="grad_x_weight"), data=data)
    assert_untouched(model, before)


def test_dataset_without_labels(make_model):
    from datasets import Dataset

    model = make_model("convnext")
    dataset = Dataset.from_dict({"pixel_values": [b.numpy() for b in batches(1)[0]["pixel_values"]]})
    with pytest.raises(ValueError, match="has no labels.*needs a `labels` entry"):
        prepare_pretrained(model, SelectiveReinitConfig(), data=dataset)


def test_scope_matching_nothing(make_model):
    model = make_model("vit")
    before = state(model)
    with pytest.raises(ScopeError, match="`target_modules` entry 'does_not_exist' matches no module"):
        prepare_pretrained(model, SelectiveReinitConfig(utility="magnitude", target_modules=["does_not_exist"]))
    with pytest.raises(ScopeError, match="matches no tensor"):  # names modules, but none in scope (the head)
        prepare_pretrained(model, SelectiveReinitConfig(utility="magnitude", target_modules=["classifier"]))
    with pytest.raises(ScopeError, match="has only 3 blocks"):
        prepare_pretrained(model, LayerReinitConfig(num_blocks=5))
    assert_untouched(model, before)


def test_model_without_supported_layers():
    model = nn.Sequential(nn.Flatten(), nn.LayerNorm(12))  # parameters, but no Linear/Conv
    with pytest.raises(ScopeError, match="no supported layers"):
        prepare_pretrained(model, SelectiveReinitConfig(utility="magnitude"))
    with pytest.raises(ScopeError, match="no supported layers"):
        prepare_pretrained(model)


def test_second_restore_needs_force(make_model):
    model = make_model("resnet")
    prepare_pretrained(model)
    before = state(model)
    with pytest.raises(AlreadyRestoredError, match="force=True"):
        prepare_pretrained(model)
    assert_untouched(model, before)
    prepare_pretrained(model, force=True)


def test_wrong_config_type():
    with pytest.raises(TypeError, match="PlasticityConfig, a strategy name, a config dict or None"):
        prepare_pretrained(nn.Linear(2, 2), config=42)


@dataclass
class BrokenConfig(PlasticityConfig):
    strategy = "broken_for_tests"


class BrokenStrategy(Strategy):
    """Plans a valid write into every backbone weight, then one that cannot be applied."""

    def plan(self, model, *, data=None):
        params = [(n, p) for n, p in model.named_parameters() if n.endswith("weight")]
        plan = [TensorReset(n, p, torch.zeros_like(p)) for n, p in params[:-1]]
        name, last = params[-1]
        plan.append(TensorReset(name, last, torch.zeros(last.numel() + 1)))  # wrong shape: fails while applying
        return Plan(plan)


def test_failure_while_applying_leaves_the_model_bitwise_unchanged(make_model):
    register_strategy(BrokenConfig, BrokenStrategy)
    try:
        model = make_model("convnext")
        before = state(model)
        with pytest.raises(ValueError, match="expected"):
            prepare_pretrained(model, BrokenConfig())
        assert_untouched(model, before)
        assert getattr(model.config, "plasticity", None) is None
    finally:
        unregister_strategy("broken_for_tests")
