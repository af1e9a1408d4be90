"""The library on a CUDA device: every strategy restores (and the periodic ones step) a model that lives on the GPU,
with calibration data on the GPU. Runs where a GPU is; skipped on CPU-only machines (CI has none)."""

from __future__ import annotations

import pytest
import torch

from hf_plasticity import AutoReinitConfig, ContinualBackpropConfig, LayerReinitConfig, prepare_pretrained
from hf_plasticity.plan import apply_resets
from hf_plasticity.strategies import get_strategy

from .models import ARCHS, batches
from .test_strategies import CONFIGS

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
