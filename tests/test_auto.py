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
    save_restored,
)
from hf_plasticity.core.data import CalibrationDataError
from hf_plasticity.strategies.auto import blocks_past_the_peak

from .models import ARCHS, batches


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def separable_data(seed: int = 1) -> list[dict[str, torch.Tensor]]:
    """Two balanced, well-separated classes: +-1 on every input dimension, plus small noise."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(2):
        labels = torch.arange(32) % 2
        x = (labels[:, None] * 2 - 1).float() + 0.1 * torch.randn(32, 8, generator=generator)
        out.append({"pixel_values": x, "labels": labels})
    return out


def mlp(collapse_from: int | None = None) -> nn.Module:
    """Eight Linear blocks and a head. The blocks are identities, except from block `collapse_from` on, where they
    output a constant (zero weights): the probe is perfect up to the block before and at chance after it."""
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(8, 8) for _ in range(8)], nn.Linear(8, 2))
    with torch.no_grad():
        for index in range(8):
            collapsed = collapse_from is not None and index >= collapse_from
            model[index].weight.copy_(torch.zeros(8, 8) if collapsed else torch.eye(8))
            model[index].bias.copy_(torch.full((8,), 0.5) if collapsed else torch.zeros(8))
    return model


def test_probe_accuracy_per_block_and_the_peak():
    report = diagnose(mlp(collapse_from=6), separable_data(), batches=2)
    assert report.block_probe_accuracy == [1.0] * 6 + [0.0] * 2  # constant features tie with every class mean
    assert "nearest-class-mean accuracy per block: " + " ".join(["100.0%"] * 6) in str(report)
    assert blocks_past_the_peak(report.block_probe_accuracy, tolerance=0.02) == (5, 2)
    assert blocks_past_the_peak([0.5, 0.8, 0.9, 0.89], tolerance=0.02) == (3, 0)
    assert blocks_past_the_peak([0.5, None, 0.9, 0.85], tolerance=0.1) == (3, 0)


def test_blocks_past_the_peak_are_reinitialized_up_to_the_cap():
    model = mlp(collapse_from=6)
    report = prepare_pretrained(model, AutoReinitConfig(max_blocks=8), data=separable_data(), diagnostics=False)
    assert report.details["peak_block"] == 5 and report.details["num_blocks"] == 2
    assert set(report.by_block()) == {"6", "7"}
    model = mlp(collapse_from=3)
    report = prepare_pretrained(model, AutoReinitConfig(), data=separable_data(), diagnostics=False)
    assert report.details["max_blocks"] == 1  # the default cap: an eighth of 8 blocks
    assert report.details["num_blocks"] == 1 and set(report.by_block()) == {"7"}


def test_no_block_past_the_peak_leaves_the_model_untouched():
    model = mlp()  # identities: every block separates the classes equally well, the peak is the last block
    before = snapshot(model)
    report = prepare_pretrained(model, AutoReinitConfig(max_blocks=3), data=separable_data(), diagnostics=False)
    assert report.details["num_blocks"] == 0 and report.details["peak_block"] == 7
    assert report.total_reinitialized == 0 and report.tensors == []
    assert all(torch.equal(before[k], model.state_dict()[k]) for k in before)
    assert "Decided: num_blocks=0" in str(report)


@pytest.mark.parametrize("arch", ARCHS)
def test_auto_writes_what_reinit_layers_writes_for_the_chosen_blocks(make_model, arch, monkeypatch):
    model, reference = make_model(arch), make_model(arch)
    # Pretend the probe peaked at the first block: the choice is then the cap.
    monkeypatch.setattr("hf_plasticity.strategies.auto.blocks_past_the_peak", lambda acc, tol: (0, len(acc) - 1))
    report = prepare_pretrained(model, AutoReinitConfig(max_blocks=2, seed=3), data=batches(), diagnostics=False)
    chosen = report.details["num_blocks"]
    assert chosen == 2 and len(report.details["block_probe_accuracy"]) == len(get_layout(model).blocks)
    prepare_pretrained(reference, LayerReinitConfig(num_blocks=chosen, seed=3), data=batches(), diagnostics=False)
    for key, value in reference.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key


def test_choice_is_recorded_with_the_checkpoint(make_model, tmp_path, monkeypatch):
    monkeypatch.setattr("hf_plasticity.strategies.auto.blocks_past_the_peak", lambda acc, tol: (0, len(acc) - 1))
    model = make_model("vit")
    config = AutoReinitConfig(max_blocks=2)
    prepare_pretrained(model, config, data=batches(), diagnostics=False)
    model.save_pretrained(tmp_path)
    assert PlasticityConfig.from_pretrained(tmp_path) == config
    assert model.config.plasticity["details"]["num_blocks"] == 2
    card = (save_restored(model, tmp_path / "card") / "README.md").read_text()
    assert "| `num_blocks (decided)` | `2` |" in card and "| `peak_block (decided)` | `0` |" in card


def test_auto_needs_data_and_checks_its_settings():
    model = mlp()
    before = snapshot(model)
    with pytest.raises(ValueError, match="pass `data=`"):
        prepare_pretrained(model, "auto")
    assert all(torch.equal(before[k], model.state_dict()[k]) for k in before)
    one_class = [{"pixel_values": torch.randn(16, 8), "labels": torch.zeros(16, dtype=torch.long)}]
    with pytest.raises(CalibrationDataError, match="at least two classes"):
        prepare_pretrained(model, "auto", data=one_class, diagnostics=False)
    assert all(torch.equal(before[k], model.state_dict()[k]) for k in before)
    for bad, message in [
        (dict(max_blocks=0), "`max_blocks` must be a positive integer or None"),
        (dict(calibration_batches=1.5), "`calibration_batches` must be a positive integer"),
        (dict(tolerance=1), r"`tolerance` must be a finite number in \[0, 1\)"),
    ]:
        with pytest.raises(ValueError, match=message):
            AutoReinitConfig(**bad)


def test_callback_runs_auto_on_the_train_dataloader(make_model, tmp_path, monkeypatch):
    from hf_plasticity import PlasticityCallback, PlasticityTrainer

    from .test_callback import training_args
    from .test_training import learnable_dataset

    model = make_model("resnet")
    monkeypatch.setattr("hf_plasticity.strategies.auto.blocks_past_the_peak", lambda acc, tol: (0, len(acc) - 1))
    callback = PlasticityCallback(AutoReinitConfig(max_blocks=2, calibration_batches=2))
    trainer = PlasticityTrainer(
        model=model,
        args=training_args(tmp_path, max_steps=1),
        train_dataset=learnable_dataset(64),
        callbacks=[callback],
    )
    trainer.train()
    # auto scored 2 batches; re-estimating the re-drawn BatchNorm statistics read the epoch's 4 (of at most 8)
    assert len(callback.controller.data.read) == 4
    assert model.config.plasticity["strategy"] == "auto"
    assert model.config.plasticity["details"]["num_blocks"] == 2
