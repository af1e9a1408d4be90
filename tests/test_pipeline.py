"""The restore pipeline: one path for every entry point, all-or-nothing from the weights to the record.

- the callback's one-shot restore equals `prepare_pretrained` on the same calibration batches, bitwise, buffers
  (BatchNorm statistics) included;
- a failure injected at each step of the pipeline, for each architecture family, leaves parameters, buffers, the
  record, the optimizer state, the RNG state, training modes, ``requires_grad`` and ``.grad`` exactly as they were;
- wrapped models (DataParallel, DistributedDataParallel, ``torch.compile``, Accelerate) are restored through the model
  that owns ``config``; a model on the meta device is refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import socket

import numpy as np
import pytest
import torch
from torch import nn
from transformers import TrainerCallback

from hf_plasticity import (
    AutoReinitConfig,
    LayerReinitConfig,
    MetaDeviceError,
    Plan,
    PlasticityCallback,
    PlasticityConfig,
    PlasticityTrainer,
    ReDoConfig,
    SelectiveReinitConfig,
    Strategy,
    TensorReset,
    prepare_pretrained,
    register_strategy,
    restore_record,
    unregister_strategy,
)
from hf_plasticity.core.data import downstream_loss, iter_batches
from hf_plasticity.core.init import fresh_tensors
from hf_plasticity.core.record import RECORD_ATTR, read_record
from hf_plasticity.core.transaction import Transaction
from hf_plasticity.pipeline import restore as pipeline_module
from hf_plasticity.strategies import get_strategy

from .models import ARCHS, batches, build
from .test_callback import training_args
from .test_training import learnable_dataset


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if a[k].dtype != b[k].dtype or not torch.equal(a[k], b[k])]
    assert not different, f"differ: {different[:5]}"


# --------------------------------------------------------------------------- the callback == prepare_pretrained
class AfterRestore(TrainerCallback):
    """Placed after PlasticityCallback: snapshots the model right after the one-shot restore, before any step."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    "arch, config",
    [
        ("resnet", None),  # the default: re-drawn BatchNorm layers re-estimated from the train loader
        ("convnext", None),
        ("resnet", SelectiveReinitConfig(utility="grad_x_weight", fraction=0.05, calibration_batches=2)),
        ("resnet", AutoReinitConfig(calibration_batches=2, max_blocks=2)),
    ],
    ids=["resnet-default", "convnext-default", "resnet-selective", "resnet-auto"],
)
def test_callback_restore_equals_prepare_pretrained_bitwise(make_model, tmp_path, monkeypatch, arch, config):
    # auto: the first block is the probe's peak, so the blocks after it are re-drawn (at most max_blocks)
    monkeypatch.setattr("hf_plasticity.strategies.auto.blocks_past_the_peak", lambda acc, tol: (0, len(acc) - 1))
    model, reference = make_model(arch), make_model(arch)
    callback, snapshot = PlasticityCallback(config), AfterRestore()
    trainer = PlasticityTrainer(
        model=model,
        args=training_args(tmp_path, max_steps=1),
        train_dataset=learnable_dataset(64),
        callbacks=[callback, snapshot],
    )
    trainer.train()
    read = callback.controller.data.read  # the batches the callback's restore read from the Trainer's loader
    report = prepare_pretrained(reference, config, data=read, diagnostics=False)
    expected = reference.state_dict()
    assert report.total_reinitialized > 0
    assert snapshot.state.keys() == expected.keys()
    assert all(torch.equal(snapshot.state[k], expected[k]) for k in expected), "callback and prepare_pretrained differ"
    assert model.config.plasticity == reference.config.plasticity
    if arch == "resnet" and config is None:  # the BatchNorm statistics were re-estimated, not left at 0 / 1
        last = [k for k in expected if k.endswith("running_mean") and ".stages.1.layers.1." in k]
        assert last and all(expected[k].abs().sum() > 0 for k in last)


# ------------------------------------------------------------------------------------------ injected failures
class Injected(RuntimeError):
    pass


def vandal(model: nn.Module) -> None:
    """What a failing step might leave behind: RNG consumed, modes flipped, grads replaced, requires_grad off."""
    torch.rand(7)
    for module in model.modules():
        module.train(not module.training)
    for param in model.parameters():
        param.grad = torch.full_like(param, 3.0)
        param.requires_grad_(False)


def fail_after(real, model):
    @functools.wraps(real)
    def wrapper(*args, **kwargs):
        real(*args, **kwargs)
        vandal(model)
        raise Injected("injected failure")

    return wrapper


STEPS = {
    # step of the pipeline -> (object holding the function, attribute)
    "plan": (pipeline_module, "_plan"),
    "share": (pipeline_module, "share_plan"),
    "apply": (Transaction, "apply"),
    "batchnorm": (pipeline_module, "_reestimate_batchnorm"),
    "optimizer": (Transaction, "swap_state"),
    "report": (pipeline_module, "_records"),
    "record": (pipeline_module, "write_record"),
}


def trained_setup(model: nn.Module):
    """A model mid-training: an AdamW state, gradients present, one module in eval mode inside a training model."""
    model.train()
    next(m for m in model.modules() if list(m.parameters(recurse=False))).eval()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    (batch,) = iter_batches(batches(1, seed=9), 1)
    downstream_loss(model, batch).backward()
    optimizer.step()
    downstream_loss(model, batch).backward()  # leave fresh gradients in .grad
    return optimizer


def everything(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    params = list(model.parameters())
    return {
        "tensors": state(model),
        "optimizer": [
            {k: (v, v.detach().clone()) if torch.is_tensor(v) else v for k, v in optimizer.state[p].items()}
            for p in params
        ],
        "rng": torch.random.get_rng_state(),
        "modes": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in params],
        "grads": [(p.grad, None if p.grad is None else p.grad.clone()) for p in params],
        "record": getattr(model, RECORD_ATTR, None),
        "config_record": getattr(getattr(model, "config", None), "plasticity", None),
    }


def assert_as_before(model: nn.Module, optimizer: torch.optim.Optimizer, before: dict) -> None:
    now = everything(model, optimizer)
    assert_same_tensors(before["tensors"], now["tensors"])
    for old, new in zip(before["optimizer"], now["optimizer"]):
        assert old.keys() == new.keys()
        for key, value in old.items():
            if isinstance(value, tuple):
                assert new[key][0] is value[0], f"optimizer state {key} was replaced"
                assert torch.equal(new[key][0], value[1]), f"optimizer state {key} changed"
            else:
                assert new[key] == value
    assert torch.equal(now["rng"], before["rng"])
    assert now["modes"] == before["modes"]
    assert now["requires_grad"] == before["requires_grad"]
    for (old, old_values), (new, _) in zip(before["grads"], now["grads"]):
        assert new is old and (old is None or torch.equal(new, old_values))
    assert now["record"] == before["record"] and now["config_record"] == before["config_record"]


@pytest.mark.parametrize("step", list(STEPS))
@pytest.mark.parametrize("arch", ARCHS)
def test_a_failure_at_any_step_leaves_everything_as_it_was(make_model, monkeypatch, arch, step):
    model = make_model(arch)
    optimizer = trained_setup(model)
    before = everything(model, optimizer)
    owner, name = STEPS[step]
    monkeypatch.setattr(owner, name, fail_after(getattr(owner, name), model))
    with pytest.raises(Injected):
        prepare_pretrained(model, LayerReinitConfig(num_blocks=1), data=batches(), optimizer=optimizer)
    assert_as_before(model, optimizer, before)
    monkeypatch.undo()
    # nothing was recorded, so the next restore needs no `force`, and it works
    report = prepare_pretrained(model, LayerReinitConfig(num_blocks=1), data=batches(), optimizer=optimizer)
    assert report.total_reinitialized > 0 and restore_record(model).strategy == "reinit_layers"


@pytest.mark.parametrize("step", [s for s in STEPS if s != "record"])
def test_a_failed_periodic_reset_leaves_the_strategy_state_as_it_was(make_model, monkeypatch, step):
    model = make_model("resnet")
    optimizer = trained_setup(model)
    strategy = get_strategy(ReDoConfig(tau=0.9, every_n_steps=2, calibration_batches=2))
    strategy.schedule.fired(step=2, epoch=0.0)
    strategy_state = strategy.state_dict()
    before = everything(model, optimizer)
    owner, name = STEPS[step]
    monkeypatch.setattr(owner, name, fail_after(getattr(owner, name), model))
    with pytest.raises(Injected):
        pipeline_module.restore(model, strategy, data=batches(), optimizer=optimizer, step=4)
    assert_as_before(model, optimizer, before)
    assert strategy.state_dict() == strategy_state


def test_the_failure_checks_can_fail(make_model):
    """The comparison above notices each kind of change (it is not vacuous)."""
    model = make_model("resnet")
    optimizer = trained_setup(model)
    changes = [
        lambda: model.resnet.embedder.embedder.convolution.weight.data.add_(1e-3),
        lambda: next(iter(optimizer.state.values()))["exp_avg"].zero_(),
        lambda: torch.rand(1),
        lambda: model.eval(),
        lambda: setattr(model.classifier[1].weight, "grad", None),
        lambda: setattr(model.config, "plasticity", {"strategy": "x"}),
    ]
    for change in changes:
        before = everything(model, optimizer)
        change()
        with pytest.raises(AssertionError):
            assert_as_before(model, optimizer, before)


def test_a_strategy_whose_plan_is_not_a_plan_gets_a_clear_error(make_model):
    model = make_model("vit")
    before = state(model)
    strategy = get_strategy(LayerReinitConfig())
    strategy.plan = lambda model, data=None: []  # the old contract: a bare list
    with pytest.raises(TypeError, match="must return a hf_plasticity.Plan"):
        pipeline_module.restore(model, strategy)
    assert_same_tensors(before, state(model))


@dataclasses.dataclass
class DetailsConfig(PlasticityConfig):
    strategy = "details_test"


class DetailsStrategy(Strategy):
    """Re-draws block 1's first MLP layer and reports ``details``, set on the class by the test."""

    details: dict = {}

    def plan(self, model, *, data=None):
        layer = model.vit.layers[1].mlp.fc1
        fresh = fresh_tensors(model, layer, seed=0)["weight"]
        return Plan([TensorReset("vit.layers.1.mlp.fc1.weight", layer.weight, fresh, block=1)], details=self.details)


@pytest.fixture
def details_strategy():
    register_strategy(DetailsConfig, DetailsStrategy)
    yield DetailsStrategy
    unregister_strategy("details_test")


def test_numpy_and_tensor_scalars_in_a_strategys_details_are_saved_as_numbers(make_model, details_strategy, tmp_path):
    details_strategy.details = {"n": np.int64(3), "score": np.float32(0.5), "per_block": (torch.tensor(1), 2.0)}
    model = make_model("vit")
    report = prepare_pretrained(model, "details_test")
    assert report.details == {"n": 3, "score": 0.5, "per_block": [1, 2.0]}
    assert all(type(v) in (int, float, list) for v in report.details.values())
    model.save_pretrained(tmp_path / "ckpt")
    assert read_record(tmp_path / "ckpt").details == report.details


@pytest.mark.parametrize("value", [torch.ones(3), {1, 2}, object()])
def test_details_that_config_json_cannot_hold_are_refused_before_anything_changes(make_model, details_strategy, value):
    details_strategy.details = {"fine": 1, "bad": value}
    model = make_model("vit")
    before = state(model)
    with pytest.raises(TypeError, match="Strategy 'details_test' decided 'bad' = .* must be JSON data"):
        prepare_pretrained(model, "details_test")
    assert_same_tensors(before, state(model))
    assert restore_record(model) is None


def test_writes_planned_with_reset_state_false_keep_their_optimizer_state():
    """Only the entries of writes with ``reset_state=True`` get their optimizer state zeroed (continual backprop's
    bias correction keeps its moments); the flag survives the plan's trip to other ranks."""
    from hf_plasticity import Plan, TensorReset
    from hf_plasticity.core.collectives import pack_plan, unpack_plan

    model = nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    moments = {p: optimizer.state[p]["exp_avg"].clone() for p in model.parameters()}
    strategy = get_strategy(LayerReinitConfig())
    resets = [
        TensorReset("weight", model.weight, torch.zeros(1), torch.tensor([4])),
        TensorReset("bias", model.bias, model.bias.detach() + 1.0, fresh=False, reset_state=False),
    ]
    strategy.plan_step = lambda model, *, step, data=None: Plan(resets)
    pipeline_module.restore(model, strategy, optimizer=optimizer, step=1)
    assert torch.equal(optimizer.state[model.bias]["exp_avg"], moments[model.bias])
    expected = moments[model.weight].clone()
    expected.view(-1)[4] = 0
    assert torch.equal(optimizer.state[model.weight]["exp_avg"], expected) and torch.any(expected != 0)
    assert [r.reset_state for r in unpack_plan(model, pack_plan(model, resets))] == [True, False]


# ---------------------------------------------------------------------------------------------- wrapped models
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def single_process_group():
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        yield
    finally:
        torch.distributed.destroy_process_group()


def _accelerate(model):
    from accelerate import Accelerator

    return Accelerator(cpu=True).prepare(model)


WRAPPERS = {
    "DataParallel": nn.DataParallel,
    "compile": torch.compile,
    "accelerate": _accelerate,
    "DistributedDataParallel": nn.parallel.DistributedDataParallel,
}


@pytest.mark.parametrize("wrapper", list(WRAPPERS))
def test_wrapped_models_are_restored_through_the_inner_model(make_model, wrapper):
    model, reference = make_model("vit"), make_model("vit")
    group = single_process_group() if wrapper == "DistributedDataParallel" else contextlib.nullcontext()
    with group:
        wrapped = WRAPPERS[wrapper](model)
        if wrapper != "accelerate":
            assert wrapped is not model
        report = prepare_pretrained(wrapped, LayerReinitConfig(num_blocks=1), data=batches())
    expected = prepare_pretrained(reference, LayerReinitConfig(num_blocks=1), data=batches())
    assert report.total_reinitialized == expected.total_reinitialized
    assert_same_tensors(state(reference), state(model))  # the ViT init rule (std 0.02) and the final norm
    assert torch.equal(model.vit.layernorm.weight, torch.ones_like(model.vit.layernorm.weight))
    assert model.config.plasticity["strategy"] == "reinit_layers"  # recorded on the model that owns config
    assert restore_record(wrapped).to_dict() == model.config.plasticity


def test_a_model_on_the_meta_device_is_refused():
    with torch.device("meta"):
        model = build("vit")
    with pytest.raises(MetaDeviceError, match="meta device"):
        prepare_pretrained(model)
    assert getattr(model.config, "plasticity", None) is None
