"""The library on a CUDA device: every strategy restores (and the periodic ones step) a model that lives on the GPU,
with calibration data on the GPU, and the Trainer path (the callback, periodic resets, the plasticity optimizer) runs
on the GPU. Runs where a GPU is; skipped on CPU-only machines (CI has none)."""

from __future__ import annotations

import pytest
import torch
from transformers import Trainer

from hf_plasticity import (
    AutoReinitConfig,
    ContinualBackpropConfig,
    LayerReinitConfig,
    PlasticityCallback,
    plasticity_optimizer,
    prepare_pretrained,
)
from hf_plasticity.core.optim import unwrap_optimizer
from hf_plasticity.core.plan import apply_resets
from hf_plasticity.strategies import get_strategy

from .models import ARCHS, batches
from .test_callback import logged, run, training_args
from .test_strategies import CONFIGS
from .test_training import learnable_dataset

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICE = "cuda"

ALL_CONFIGS = {
    **CONFIGS,
    "reinit_layers": lambda: LayerReinitConfig(),
    "auto": lambda: AutoReinitConfig(),
}


def on_gpu(data: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    return [{k: v.to(DEVICE) for k, v in batch.items()} for batch in data]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", list(ALL_CONFIGS))
def test_every_strategy_restores_a_model_on_the_gpu(make_model, arch, name):
    model = make_model(arch).to(DEVICE)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    report = prepare_pretrained(model, ALL_CONFIGS[name](), data=on_gpu(batches()), diagnostics=False)
    assert {p.device.type for p in model.parameters()} == {torch.device(DEVICE).type}
    changed = {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}
    assert bool(changed) == (report.total_reinitialized > 0)
    if name not in ("cbp", "rifle", "auto"):  # the training-time ones write nothing now; auto may choose nothing
        assert report.total_reinitialized > 0


def test_continual_backprop_steps_on_the_gpu(make_model):
    model = make_model("vit").to(DEVICE)
    cbp = get_strategy(ContinualBackpropConfig(replacement_rate=0.05, maturity=2))
    cbp.attach(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    replaced = 0
    try:
        for step, batch in enumerate(on_gpu(batches(4, seed=3)), start=1):
            loss = torch.nn.functional.cross_entropy(model(batch["pixel_values"]).logits, batch["labels"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if cbp.due(step=step, epoch=0.0):
                plan = cbp.plan_step(model, step=step).resets
                apply_resets(plan)
                replaced += len(plan)
    finally:
        cbp.detach()
    assert replaced > 0
    assert {p.device.type for p in model.parameters()} == {torch.device(DEVICE).type}


# ------------------------------------------------------------------------------------------------ the Trainer path
def test_the_callback_restores_and_resets_inside_a_gpu_trainer(make_model, tmp_path):
    """The one-shot restore reads the Trainer's (CPU) batches for a model the Trainer put on the GPU; ReDo's periodic
    resets then score and write the GPU weights, with the optimizer state on the GPU."""
    from hf_plasticity.strategies.redo import ReDoConfig

    callback = PlasticityCallback(ReDoConfig(every_n_steps=2, tau=0.5), log_every=4, diagnostics_every=4)
    trainer = run(make_model("convnext"), tmp_path, callback, max_steps=4, use_cpu=False)
    assert trainer.args.device.type == DEVICE
    assert logged(trainer, "plasticity/restore/reinitialized")[0][0] == 0
    assert logged(trainer, "plasticity/redo/resets") == [(4, 2.0)]
    assert len(logged(trainer, "plasticity/dormant_ratio")) == 2
    assert logged(trainer, "plasticity/redo/reinitialized")[0][1] > 0
    assert {p.device.type for p in trainer.model.parameters()} == {DEVICE}
    states = unwrap_optimizer(trainer.optimizer).state.values()
    assert states and {t.device.type for state in states for t in state.values() if t.dim() > 0} == {DEVICE}


def test_the_plasticity_optimizer_trains_every_group_on_the_gpu(make_model, tmp_path):
    """`plasticity_optimizer` is built on the CPU model before the Trainer moves it: its groups must still hold the
    parameters that train on the GPU: every group's parameters are on the GPU, and the re-drawn ones changed."""
    model = make_model("convnext")
    prepare_pretrained(model)
    args = training_args(tmp_path, max_steps=4, learning_rate=1e-4, use_cpu=False)
    optimizer = plasticity_optimizer(model, args, reinit_lr=1e-3, head_lr=2e-3)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = Trainer(model=model, args=args, train_dataset=learnable_dataset(64), optimizers=(optimizer, None))
    trainer.train()
    groups = {g["name"]: g for g in trainer.optimizer.param_groups}
    assert {"backbone", "redrawn", "head"} <= set(groups)
    for group in groups.values():
        for p in group["params"]:
            assert p.device.type == DEVICE
    after = dict(model.named_parameters())
    names = {id(p): name for name, p in after.items()}
    redrawn = [names[id(p)] for p in groups["redrawn"]["params"]]
    assert redrawn and all(not torch.equal(before[n].to(DEVICE), after[n]) for n in redrawn)
