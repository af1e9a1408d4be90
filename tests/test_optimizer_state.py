"""The optimizer-state reset of a restore, with optimizers whose state is not Adam's: factored second moments
(Adafactor), a running product (NAdam), a step count that is not a tensor (transformers' Adafactor), state that a new
optimizer does not start at zero (Rprop's step sizes, Adagrad's sums)."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_plasticity import (
    LayerReinitConfig,
    PlasticityController,
    ReDoConfig,
    SelectiveReinitConfig,
    prepare_pretrained,
    restore_record,
    unit_groups,
)
from hf_plasticity.core.optim import fresh_state

from .models import batches, build, perturb


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

#: Optimizers whose scalars shared by a parameter's entries (the step count) do not enter the update (Adagrad without
#: ``lr_decay``), so an entry whose state is reset takes a new optimizer's step. Rprop starts an entry's step size at
#: ``lr`` and Adagrad its sum at ``initial_accumulator_value``; the others start at zero.
PER_ENTRY = {
    "rprop": lambda params: torch.optim.Rprop(params, lr=1e-3),
    "adagrad": lambda params: torch.optim.Adagrad(params, lr=1e-2, initial_accumulator_value=0.1),
    "sgd": OPTIMIZERS["sgd"],
    "rmsprop": lambda params: torch.optim.RMSprop(params, lr=1e-3, momentum=0.9, centered=True),
    "adadelta": lambda params: torch.optim.Adadelta(params, lr=0.5, weight_decay=0.01),
}


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


@pytest.mark.parametrize("name", list(PER_ENTRY))
def test_entries_redrawn_in_part_are_trained_as_by_a_new_optimizer(make_model, name):
    """The entries a selective re-draw writes get the state a new optimizer starts them at, not zero where that is
    not zero (an Rprop step size of zero would never grow again): their next step and state are a new optimizer's.
    The other entries, and the parameters not written, keep their state."""
    model = make_model("vit")
    optimizer = PER_ENTRY[name](model.parameters())
    train(model, optimizer)
    before = state_copy(optimizer)
    old = {n: p.detach().clone() for n, p in model.named_parameters()}
    report = prepare_pretrained(model, SelectiveReinitConfig(utility="magnitude", fraction=0.1), optimizer=optimizer)
    params = dict(model.named_parameters())
    written = {params[r.name]: params[r.name].detach() != old[r.name] for r in report.tensors}
    assert written and all(mask.any() and not mask.all() for mask in written.values()), "not a partial re-draw"
    for param, mask in written.items():
        for key, value in optimizer.state[param].items():
            old_value = before[param][key]
            if value.shape == param.shape:  # per entry: only the written entries start anew
                value, old_value = value[~mask], old_value[~mask]
            assert torch.equal(value, old_value), key
    assert all(same_state(optimizer.state[p], before[p]) for p in model.parameters() if p not in written)

    twins = {param: torch.nn.Parameter(param.detach().clone()) for param in written}
    new_optimizer = PER_ENTRY[name](list(twins.values()))
    train(model, optimizer, steps=1, seed=4)
    for param, twin in twins.items():
        twin.grad = param.grad.clone()
    new_optimizer.step()
    for param, mask in written.items():
        assert torch.equal(param.detach()[mask], twins[param].detach()[mask])
        for key, value in new_optimizer.state[twins[param]].items():
            if value.shape == param.shape:
                assert torch.equal(optimizer.state[param][key][mask], value[mask]), key


#: What a new optimizer starts an entry of a state at, where that is not zero (torch/optim's source).
NONZERO_START = {
    (torch.optim.Rprop, "step_size"): lambda hyper: hyper["lr"],
    (torch.optim.Adagrad, "sum"): lambda hyper: hyper["initial_accumulator_value"],
}


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    data=st.data(),
    optimizer_class=st.sampled_from(
        [
            torch.optim.Adam,
            torch.optim.NAdam,
            torch.optim.RMSprop,
            torch.optim.Rprop,
            torch.optim.Adagrad,
            torch.optim.Adadelta,
            torch.optim.ASGD,
        ]
    ),
    lr=st.sampled_from([1e-3, 1e-2, 0.3]),
    initial=st.sampled_from([0.0, 0.1, 0.5]),
)
def test_a_partial_reset_starts_exactly_its_entries_anew_and_keeps_the_scalars(
    shape, data, optimizer_class, lr, initial
):
    """For any entries of a parameter: the new state is a new optimizer's start there (zero, Rprop's ``lr``, Adagrad's
    ``initial_accumulator_value``) and the old state elsewhere, scalars (the step count, NAdam's product) are kept,
    and the optimizer itself is left as it was."""
    param = torch.nn.Parameter(torch.randn(shape))
    hyper = {"lr": lr, "initial_accumulator_value": initial} if optimizer_class is torch.optim.Adagrad else {"lr": lr}
    optimizer = optimizer_class([param], **hyper)
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
        start = NONZERO_START.get((optimizer_class, key), lambda hyper: 0.0)(hyper)
        assert torch.equal(swaps[key].reshape(-1)[mask], torch.full((len(chosen),), start)), key
        assert torch.equal(swaps[key].reshape(-1)[~mask], old.reshape(-1)[~mask])


class Unrebuildable(torch.optim.SGD):
    """A third-party optimizer whose constructor needs an argument that its ``defaults`` do not hold."""

    def __init__(self, params, token):
        super().__init__(params, lr=1e-2, momentum=0.9)


def test_an_optimizer_that_cannot_be_rebuilt_gets_its_written_entries_zeroed_with_a_warning():
    """The new optimizer that tells the start values cannot be built: the written entries are zeroed, as before, and
    a warning names the optimizer (zeros are not every optimizer's start)."""
    param = torch.nn.Parameter(torch.randn(4))
    optimizer = Unrebuildable([param], token=object())
    param.grad = torch.ones(4)
    optimizer.step()
    with pytest.warns(UserWarning, match=r"new Unrebuildable's state \(TypeError: .*set to zeros"):
        [(_, key, new)] = fresh_state(optimizer, [(param, torch.tensor([2]))])
    assert key == "momentum_buffer" and new.tolist() == [1.0, 1.0, 0.0, 1.0]


def test_the_stand_in_step_runs_without_the_users_global_step_hooks():
    """Telling a new optimizer's start values steps a stand-in optimizer: the user's global step hooks neither count
    that step nor can fail it (a hook that refuses optimizers it does not know would leave Rprop's step sizes at 0,
    never to move again); the hooks are in place again after, and called by the next real step."""
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

    layer = torch.nn.Linear(4, 3)
    optimizer = torch.optim.Rprop(layer.parameters(), lr=0.01)
    steps = []

    def known_only(opt, args, kwargs):
        if opt is not optimizer:
            raise RuntimeError("an optimizer this hook does not know")

    handles = [
        register_optimizer_step_pre_hook(lambda opt, args, kwargs: steps.append(type(opt).__name__)),
        register_optimizer_step_post_hook(known_only),
    ]
    try:
        layer(torch.randn(5, 4)).sum().backward()
        optimizer.step()
        swaps = fresh_state(optimizer, [(layer.weight, torch.tensor([1]))])
        assert steps == ["Rprop"]
        [step_size] = [new for _, key, new in swaps if key == "step_size"]
        assert step_size.flatten()[1].item() == pytest.approx(0.01)  # a new Rprop's start, not 0
        optimizer.step()
        assert steps == ["Rprop", "Rprop"]
    finally:
        for handle in handles:
            handle.remove()


class Wrapping(torch.optim.Optimizer):
    """As Accelerate's ``AcceleratedOptimizer``: a `torch.optim.Optimizer` subclass around the real optimizer."""

    def __init__(self, optimizer):
        self.optimizer = optimizer

    state = property(lambda self: self.optimizer.state)
    param_groups = property(lambda self: self.optimizer.param_groups)
    defaults = property(lambda self: self.optimizer.defaults)

    def step(self, closure=None):
        return self.optimizer.step(closure)


def test_a_wrapper_that_is_itself_an_optimizer_is_seen_through(recwarn):
    """Under Trainer the optimizer is Accelerate's wrapper, itself an Optimizer: the new start values are those of
    the optimizer inside (a new Rprop's step size, not the zeros a failed rebuild of the wrapper would give)."""
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = Wrapping(torch.optim.Rprop([weight], lr=0.01))
    weight.grad = torch.ones(3)
    optimizer.step()
    swaps = fresh_state(optimizer, [(weight, torch.tensor([1]))])
    [step_size] = [new for _, key, new in swaps if key == "step_size"]
    assert step_size.tolist() == pytest.approx([0.01, 0.01, 0.01])
    assert not [w for w in recwarn if "Cannot tell the start values" in str(w.message)]


# ------------------------------------------------------------------------------- state held for some parameters only
def redo_every_step(model, data, optimizer) -> PlasticityController:
    """A ReDo controller that resets the units scoring under the mean at every step (about half of each layer's)."""
    controller = PlasticityController(
        ReDoConfig(tau=1.0, every_n_steps=1, calibration_batches=1), data=data, restore=False
    )
    controller.restore(model, optimizer=optimizer)
    controller.attach(model)
    return controller


def step_without(model, optimizer, data, lost=()) -> None:
    """One training step in which the parameters ``lost`` get no gradient (they take no step: no state)."""
    optimizer.zero_grad(set_to_none=True)
    model(**data[0]).loss.backward()
    for param in lost:
        param.grad = None
    optimizer.step()


def test_a_periodic_redo_reset_over_a_layer_whose_bias_has_no_adamw_state(make_model):
    """A carried-over report: a ReDo reset after a partly lost AdamW state raised KeyError. The reset of the weight's
    state touches exactly its re-drawn rows; the bias, which never took a step, gets no state (a new optimizer starts
    it fresh at its first step, as it does)."""
    model, data = make_model("convnext"), batches(1, 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    controller = redo_every_step(model, data, optimizer)
    layer = model.get_submodule(unit_groups(model)[0].producer)
    step_without(model, optimizer, data, lost=[layer.bias])
    assert layer.weight in optimizer.state and layer.bias not in optimizer.state
    weight, moments = layer.weight.detach().clone(), optimizer.state[layer.weight]["exp_avg"].clone()
    controller.step(1, optimizer=optimizer)
    redrawn = (layer.weight.detach() != weight).any(dim=1)
    assert 0 < int(redrawn.sum()) < len(redrawn)  # some of the layer's units, not all
    assert layer.bias not in optimizer.state  # nothing to reset, nothing created
    after = optimizer.state[layer.weight]["exp_avg"]
    assert not after[redrawn].any() and torch.equal(after[~redrawn], moments[~redrawn])
    step_without(model, optimizer, data)
    assert set(optimizer.state[layer.bias]) == {"step", "exp_avg", "exp_avg_sq"}


@settings(max_examples=12, deadline=None)
@given(
    lost=st.lists(st.booleans(), min_size=1).filter(lambda flags: not all(flags)),  # some parameter keeps its state
    how=st.sampled_from(["no_grad", "cleared", "later_group"]),
)
def test_a_periodic_redo_reset_resets_the_state_it_finds_and_creates_none(lost, how):
    """Whatever part of the AdamW state is missing (parameters that took no step, state cleared, a group added after
    the step), a ReDo reset zeroes the moments of the re-drawn entries that have state, keeps every other entry's, and
    gives no state to a parameter without one."""
    torch.manual_seed(0)
    model, data = perturb(build("convnext")), batches(1, 4)
    params = list(model.parameters())
    missing = [p for p, drop in zip(params, lost * len(params)) if drop]
    held = [p for p in params if not any(p is m for m in missing)]
    optimizer = torch.optim.AdamW(held if how == "later_group" else params, lr=1e-3)
    controller = redo_every_step(model, data, optimizer)
    step_without(model, optimizer, data, lost=missing if how == "no_grad" else ())
    if how == "cleared":
        for param in missing:
            del optimizer.state[param]
    elif how == "later_group" and missing:
        optimizer.add_param_group({"params": missing})
    values = {p: p.detach().clone() for p in params}
    moments = {p: {k: v.clone() for k, v in optimizer.state[p].items()} for p in held}
    controller.step(1, optimizer=optimizer)
    assert controller.total_reinitialized > 0
    assert all(p not in optimizer.state for p in missing)
    for param in held:
        redrawn = param.detach() != values[param]
        for key in ("exp_avg", "exp_avg_sq"):
            state = optimizer.state[param][key]
            assert not state[redrawn].any() and torch.equal(state[~redrawn], moments[param][key][~redrawn])
    step_without(model, optimizer, data)  # and training goes on
