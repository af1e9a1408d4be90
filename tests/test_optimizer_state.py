"""The optimizer-state reset of a restore, with optimizers whose state is not Adam's: factored second moments
(Adafactor), a running product (NAdam), a step count that is not a tensor (transformers' Adafactor)."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_plasticity import LayerReinitConfig, SelectiveReinitConfig, prepare_pretrained, restore_record
from hf_plasticity.core.optim import fresh_state

from .models import batches


def transformers_adafactor(params):
    optimization = pytest.importorskip("transformers.optimization")
    return optimization.Adafactor(params, lr=1e-3, relative_step=False, scale_parameter=True, warmup_init=False)


OPTIMIZERS = {
    "adamw": lambda params: torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05),
    "nadam": lambda params: torch.optim.NAdam(params, lr=1e-3),
    "sgd": lambda params: torch.optim.SGD(params, lr=1e-2, momentum=0.9),
    "torch_adafactor": lambda params: torch.optim.Adafactor(params, lr=1e-2),
    "transformers_adafactor": transformers_adafactor,
}
ADAFACTORS = ["torch_adafactor", "transformers_adafactor"]


def train(model, optimizer, steps: int = 3, seed: int = 9) -> None:
    for batch in batches(steps, seed=seed):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(batch["pixel_values"]).logits, batch["labels"]).backward()
        optimizer.step()


def state_copy(optimizer) -> dict:
    return {p: copy.deepcopy(s) for p, s in optimizer.state.items()}


def same_state(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    return all(torch.equal(v, b[k]) if torch.is_tensor(v) else v == b[k] for k, v in a.items())


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_a_parameter_redrawn_whole_is_trained_as_by_a_new_optimizer(make_model, name):
    """Every state of a parameter re-drawn whole is reset, whatever its shape (Adafactor's factored moments) or type
    (the step count): its next step is the first step of a new optimizer. The other parameters keep their state."""
    model = make_model("vit")
    optimizer = OPTIMIZERS[name](model.parameters())
    train(model, optimizer)
    before = state_copy(optimizer)
    report = prepare_pretrained(model, LayerReinitConfig(num_blocks=1), optimizer=optimizer)
    redrawn = [p for n, p in model.named_parameters() if n.startswith(tuple(report.redrawn["whole"]))]
    assert redrawn and all(before[p] for p in redrawn), "the test would be vacuous"
    kept = [p for p in model.parameters() if all(p is not q for q in redrawn)]
    assert all(same_state(optimizer.state[p], before[p]) for p in kept)

    twins = [torch.nn.Parameter(p.detach().clone()) for p in redrawn]
    new_optimizer = OPTIMIZERS[name](twins)
    train(model, optimizer, steps=1, seed=4)
    for twin, param in zip(twins, redrawn):
        twin.grad = param.grad.clone()
    new_optimizer.step()
    for twin, param in zip(twins, redrawn):
        assert torch.equal(twin.detach(), param.detach())
        assert same_state(optimizer.state[param], new_optimizer.state[twin])


@pytest.mark.parametrize("name", ADAFACTORS)
def test_a_partial_redraw_with_factored_state_is_refused_before_anything_changes(make_model, name):
    """Adafactor's row and column moments mix the entries of whole rows and columns: a selective re-draw of some
    entries cannot reset theirs, so it is refused, naming the parameter and the state, and nothing changes."""
    model = make_model("vit")
    optimizer = OPTIMIZERS[name](model.parameters())
    train(model, optimizer)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    before = state_copy(optimizer)
    with pytest.raises(ValueError, match=r"re-drawn entries of parameter vit\..*'(row_var|col_var|exp_avg_sq_row)'"):
        prepare_pretrained(model, SelectiveReinitConfig(utility="magnitude", fraction=0.1), optimizer=optimizer)
    assert all(torch.equal(p, params[n]) for n, p in model.named_parameters())
    assert all(same_state(optimizer.state[p], s) for p, s in before.items())
    assert restore_record(model) is None


@settings(max_examples=30, deadline=None)
@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    data=st.data(),
    optimizer_class=st.sampled_from([torch.optim.Adam, torch.optim.NAdam, torch.optim.RMSprop]),
)
def test_a_partial_reset_zeroes_exactly_its_entries_and_keeps_the_scalars(shape, data, optimizer_class):
    """For any entries of a parameter: the new state is zero there and the old state elsewhere, scalars (the step
    count, NAdam's product) are kept, and the optimizer itself is left as it was."""
    param = torch.nn.Parameter(torch.randn(shape))
    optimizer = optimizer_class([param], lr=1e-2)
    for _ in range(2):
        param.grad = torch.randn(shape)
        optimizer.step()
    before = copy.deepcopy(optimizer.state[param])
    chosen = data.draw(st.sets(st.integers(0, param.numel() - 1), min_size=1))
    index = torch.tensor(sorted(chosen))
    swaps = {key: new for _, key, new in fresh_state(optimizer, [(param, index)])}
    assert same_state(optimizer.state[param], before)
    mask = torch.zeros(param.numel(), dtype=torch.bool)
    mask[index] = True
    for key, old in before.items():
        if old.shape != param.shape:
            assert key not in swaps
            continue
        assert torch.all(swaps[key].reshape(-1)[mask] == 0)
        assert torch.equal(swaps[key].reshape(-1)[~mask], old.reshape(-1)[~mask])
