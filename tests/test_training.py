"""The restored model still trains: the loss decreases over a few Trainer steps."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments

from hf_plasticity import SelectiveReinitConfig, prepare_pretrained

from .models import IMAGE_SIZE, NUM_LABELS


def learnable_dataset(n: int = 96, seed: int = 0) -> Dataset:
    """Label = the brightest colour channel: easy to learn in a few steps."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, NUM_LABELS, (n,), generator=generator)
    pixels = 0.3 * torch.randn(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    pixels[torch.arange(n), labels] += 1.0
    return Dataset.from_dict({"pixel_values": pixels.numpy(), "labels": labels.numpy()}).with_format("torch")


@pytest.mark.parametrize("arch, config", [("convnext", None), ("vit", SelectiveReinitConfig(fraction=0.05))])
def test_restored_model_trains(make_model, tmp_path, arch, config):
    model = make_model(arch)
    train = learnable_dataset()
    prepare_pretrained(model, config, data=train)
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=16,
        num_train_epochs=4,
        learning_rate=3e-3,
        logging_steps=6,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=train)
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) >= 3
    assert losses[-1] < 0.7 * losses[0], losses
