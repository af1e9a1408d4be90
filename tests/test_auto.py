"""The `"auto"` strategy: the blocks it chooses follow from the diagnostics, and its writes are exactly those of
`reinit_layers` with the chosen number of blocks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hf_plasticity import (
    AutoReinitConfig,
    LayerReinitConfig,
    PlasticityConfig,
    diagnose,
    get_layout,
    prepare_pretrained,
)
from hf_plasticity.strategies.auto import block_insignificant_shares

from .models import ARCHS, batches


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def mlp(dead_block: int | None = None) -> nn.Module:
    """Five Linear+ReLU blocks and a head; `dead_block`'s ReLU never fires, so it and every block before it get
    zero weight gradients (and the block after it gets a constant input)."""
    torch.manual_seed(0)
    blocks = [nn.Sequential(nn.Linear(8 if i == 0 else 16, 16), nn.ReLU()) for i in range(5)]
    model = nn.Sequential(*blocks, nn.Linear(16, 3))
    if dead_block is not None:
        with torch.no_grad():
            model[dead_block][0].bias.fill_(-100.0)
    return model


def mlp_data() -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [
        {
            "pixel_values": torch.randn(16, 8, generator=generator),
            "labels": torch.randint(0, 3, (16,), generator=generator),
        }
        for _ in range(2)
    ]


def test_saturated_late_blocks_are_counted_and_the_last_ones_reinitialized():
    model = mlp(dead_block=3)
    shares = block_insignificant_shares(diagnose(mlp(dead_block=3), mlp_data()), num_blocks=5)
    assert shares[:4] == [1.0, 1.0, 1.0, 1.0]  # no gradient reaches the dead block or anything before it
    report = prepare_pretrained(model, AutoReinitConfig(max_blocks=2), data=mlp_data(), diagnostics=False)
    assert report.details["saturated_blocks"][:2] == [2, 3]  # the later half of the 5 blocks: 2, 3, 4
    assert report.details["num_blocks"] == 2
    assert set(report.by_block()) == {"3", "4"}
    model = mlp(dead_block=3)
    report = prepare_pretrained(model, AutoReinitConfig(max_blocks=3), data=mlp_data(), diagnostics=False)
    assert set(report.by_block()) == {"2", "3", "4"}


def test_healthy_model_is_left_untouched():
    model = mlp()
    before = snapshot(model)
    report = prepare_pretrained(model, AutoReinitConfig(saturation=1.0), data=mlp_data(), diagnostics=False)
    assert report.details["num_blocks"] == 0 and report.details["saturated_blocks"] == []
    assert report.total_reinitialized == 0 and report.tensors == []
    assert all(torch.equal(before[k], model.state_dict()[k]) for k in before)
    assert "Decided: num_blocks=0" in str(report)


@pytest.mark.parametrize("arch", ARCHS)
def test_auto_writes_what_reinit_layers_writes_for_the_chosen_blocks(make_model, arch):
    model, reference = make_model(arch), make_model(arch)
    # A threshold every block reaches: the choice is max_blocks, capped by the later half of the backbone.
    report = prepare_pretrained(
        model, AutoReinitConfig(saturation=1e-9, max_blocks=2, seed=3), data=batches(), diagnostics=False
    )
    late = len(get_layout(model).blocks) - len(get_layout(model).blocks) // 2
    chosen = report.details["num_blocks"]
    assert chosen == min(2, late) and len(report.details["block_insignificant_share"]) == len(get_layout(model).blocks)
    prepare_pretrained(reference, LayerReinitConfig(num_blocks=chosen, seed=3), data=batches(), diagnostics=False)
    for key, value in reference.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key


def test_choice_is_recorded_with_the_checkpoint(make_model, tmp_path):
    model = make_model("vit")
    config = AutoReinitConfig(saturation=1e-9)
    prepare_pretrained(model, config, data=batches(), diagnostics=False)
    model.save_pretrained(tmp_path)
    assert PlasticityConfig.from_pretrained(tmp_path) == config
    assert model.config.plasticity["details"]["num_blocks"] == 2


def test_auto_needs_data_and_checks_its_settings():
    model = mlp()
    before = snapshot(model)
    with pytest.raises(ValueError, match="pass `data=`"):
        prepare_pretrained(model, "auto")
    assert all(torch.equal(before[k], model.state_dict()[k]) for k in before)
    for bad, message in [
        (dict(max_blocks=0), "`max_blocks` must be a positive integer"),
        (dict(calibration_batches=1.5), "`calibration_batches` must be a positive integer"),
        (dict(saturation=0), r"`saturation` must be a number in \(0, 1\]"),
        (dict(insignificant=2), r"`insignificant` must be a number in \(0, 1\]"),
    ]:
        with pytest.raises(ValueError, match=message):
            AutoReinitConfig(**bad)


def test_callback_runs_auto_on_the_train_dataloader(make_model, tmp_path):
    from transformers import Trainer

    from hf_plasticity import PlasticityCallback

    from .test_callback import training_args
    from .test_training import learnable_dataset

    model = make_model("resnet")
    callback = PlasticityCallback(AutoReinitConfig(saturation=1e-9, calibration_batches=2))
    trainer = Trainer(
        model=model,
        args=training_args(tmp_path, max_steps=1),
        train_dataset=learnable_dataset(64),
        callbacks=[callback],
    )
    trainer.train()
    assert len(callback.controller.prefetch()) == 2
    assert model.config.plasticity["strategy"] == "auto"
    assert model.config.plasticity["details"]["num_blocks"] == 2
