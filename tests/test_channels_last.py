"""Models kept channels-last (NHWC, `model.to(memory_format=torch.channels_last)`, a common speed-up of CNNs): every
restore that writes convolution weights works on them, writes what it writes on the contiguous model (the same
values where it reads no data) and leaves the memory format as it was."""

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
from hf_plasticity.core.flat_index import write_entries
from hf_plasticity.core.plan import apply_resets
from hf_plasticity.strategies import get_strategy

from .models import batches, side_of

#: Every restore that writes convolution weights (auto writes through reinit_layers' block re-draw); (config factory,
#: whether it reads data).
CONFIGS = {
    "reinit_layers": (lambda: LayerReinitConfig(num_blocks=1), False),
    "selective": (lambda: SelectiveReinitConfig(utility="magnitude", fraction=0.1), False),
    "selective_grad": (
        lambda: SelectiveReinitConfig(utility="grad_x_weight", fraction=0.1, calibration_batches=2),
        True,
    ),
    "selective_unit": (lambda: SelectiveReinitConfig(granularity="unit", fraction=0.25, calibration_batches=2), True),
    "shrink_perturb": (lambda: ShrinkPerturbConfig(shrink=0.8, perturb=0.1), False),
    "redo": (lambda: ReDoConfig(tau=0.9), True),
    "dash": (lambda: DashConfig(calibration_batches=2), True),
}


def channels_last_weights(model: torch.nn.Module) -> dict[str, bool]:
    return {
        name: param.is_contiguous(memory_format=torch.channels_last)
        for name, param in model.named_parameters()
        if param.dim() == 4
    }


@pytest.mark.parametrize("arch", ["resnet", "cnn"])
@pytest.mark.parametrize("strategy", sorted(CONFIGS))
def test_a_restore_of_a_channels_last_model_writes_what_it_writes_on_the_contiguous_one(make_model, arch, strategy):
    contiguous = make_model(arch)
    nhwc = copy.deepcopy(contiguous).to(memory_format=torch.channels_last)
    assert channels_last_weights(nhwc) and all(channels_last_weights(nhwc).values())
    before = {name: param.detach().clone() for name, param in contiguous.named_parameters()}
    config, reads_data = CONFIGS[strategy]
    data = batches(4, 8, side=side_of(arch))
    prepare_pretrained(contiguous, config(), data=data, force=True)
    prepare_pretrained(nhwc, config(), data=data, force=True)
    assert all(channels_last_weights(nhwc).values())
    written_nhwc = 0  # rewritten weights whose channels-last layout differs from the contiguous one
    for (name, a), (_, b) in zip(contiguous.named_parameters(), nhwc.named_parameters(), strict=True):
        if reads_data:  # the calibration pass's convolutions round differently in the two layouts
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
        else:  # the draws do not depend on the layout
            assert torch.equal(b, a), name
        written_nhwc += int(not torch.equal(b, before[name]) and b.dim() == 4 and not b.is_contiguous())
    assert written_nhwc > 0


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
