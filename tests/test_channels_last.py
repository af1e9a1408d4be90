"""Models kept channels-last (NHWC, `model.to(memory_format=torch.channels_last)`, a common speed-up of CNNs): every
restore works on them, writes the same entries as on the contiguous model and leaves the memory format as it was."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_plasticity import (
    ContinualBackpropConfig,
    DashConfig,
    LayerReinitConfig,
    ReDoConfig,
    SelectiveReinitConfig,
    ShrinkPerturbConfig,
    prepare_pretrained,
)
from hf_plasticity.core.plan import apply_resets, write_entries
from hf_plasticity.strategies import get_strategy

from .models import batches

CONFIGS = {
    "reinit_layers": lambda: LayerReinitConfig(num_blocks=1),
    "selective": lambda: SelectiveReinitConfig(utility="magnitude", fraction=0.1),
    "selective_unit": lambda: SelectiveReinitConfig(granularity="unit", fraction=0.25, calibration_batches=2),
    "shrink_perturb": lambda: ShrinkPerturbConfig(shrink=0.8, perturb=0.1),
    "redo": lambda: ReDoConfig(tau=0.9),
    "dash": lambda: DashConfig(calibration_batches=2),
}


def channels_last_weights(model: torch.nn.Module) -> dict[str, bool]:
    return {
        name: param.is_contiguous(memory_format=torch.channels_last)
        for name, param in model.named_parameters()
        if param.dim() == 4
    }


@pytest.mark.parametrize("arch", ["convnext", "resnet"])
@pytest.mark.parametrize("strategy", sorted(CONFIGS))
def test_every_restore_works_on_a_channels_last_model_and_keeps_its_memory_format(make_model, arch, strategy):
    model = make_model(arch).to(memory_format=torch.channels_last)
    assert channels_last_weights(model) and all(channels_last_weights(model).values())
    before = {name: param.detach().clone() for name, param in model.named_parameters()}
    report = prepare_pretrained(model, CONFIGS[strategy](), data=batches(), force=True)
    assert report.total_reinitialized > 0
    assert all(channels_last_weights(model).values())
    assert any(not torch.equal(param, before[name]) for name, param in model.named_parameters())


@pytest.mark.parametrize("arch", ["convnext", "resnet"])
def test_an_entry_selection_rewrites_the_same_entries_as_on_the_contiguous_model(make_model, arch):
    contiguous = make_model(arch)
    nhwc = copy.deepcopy(contiguous).to(memory_format=torch.channels_last)
    old = {name: param.detach().clone() for name, param in contiguous.named_parameters()}
    config = SelectiveReinitConfig(utility="magnitude", fraction=0.1)
    prepare_pretrained(contiguous, config)
    prepare_pretrained(nhwc, config)
    changed = 0
    for (name, a), (_, b) in zip(contiguous.named_parameters(), nhwc.named_parameters(), strict=True):
        assert torch.equal(a.detach() != old[name], b.detach() != old[name]), name
        changed += int((a.detach() != old[name]).sum())
    assert changed > 0


def test_the_optimizer_state_of_rewritten_entries_is_zeroed_and_stays_channels_last(make_model):
    model = make_model("convnext").to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for batch in batches(2):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(batch["pixel_values"]).logits, batch["labels"]).backward()
        optimizer.step()
    conv = model.convnext.embeddings.patch_embeddings.weight
    state_before = {key: optimizer.state[conv][key].clone() for key in ("exp_avg", "exp_avg_sq")}
    assert state_before["exp_avg"].is_contiguous(memory_format=torch.channels_last)
    old = conv.detach().clone()
    prepare_pretrained(model, SelectiveReinitConfig(utility="magnitude", fraction=0.2), optimizer=optimizer)
    rewritten = conv.detach() != old
    assert 0 < int(rewritten.sum()) < rewritten.numel()
    for key, before in state_before.items():
        state = optimizer.state[conv][key]
        assert state.is_contiguous(memory_format=torch.channels_last)
        assert torch.all(state[rewritten] == 0) and torch.equal(state[~rewritten], before[~rewritten])


def test_continual_backprop_replaces_units_of_a_channels_last_model_during_training(make_model):
    model = make_model("resnet").to(memory_format=torch.channels_last)
    cbp = get_strategy(ContinualBackpropConfig(replacement_rate=0.05, maturity=1))
    cbp.attach(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    replaced = 0
    try:
        for step, batch in enumerate(batches(3, seed=3), start=1):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(batch["pixel_values"]).logits, batch["labels"]).backward()
            optimizer.step()
            if cbp.due(step=step, epoch=0.0):
                plan = cbp.plan_step(model, step=step).resets
                replaced += len(plan)
                apply_resets(plan)
    finally:
        cbp.detach()
    assert replaced > 0
    assert all(channels_last_weights(model).values())


@settings(max_examples=50, deadline=None)
@given(
    shape=st.tuples(*[st.integers(1, 4)] * 4),
    data=st.data(),
)
def test_writing_entries_by_flat_index_is_the_same_in_both_memory_formats(shape, data):
    numel = shape[0] * shape[1] * shape[2] * shape[3]
    index = torch.tensor(sorted(data.draw(st.sets(st.integers(0, numel - 1), max_size=numel))), dtype=torch.long)
    values = torch.arange(1, len(index) + 1, dtype=torch.float32)
    contiguous = torch.zeros(shape)
    nhwc = torch.zeros(shape).to(memory_format=torch.channels_last)
    write_entries(contiguous, index, values)
    write_entries(nhwc, index, values)
    assert torch.equal(nhwc, contiguous)
    assert nhwc.is_contiguous(memory_format=torch.channels_last)
