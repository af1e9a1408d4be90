"""The `Trainer` construction of transformers' official `examples/pytorch/image-classification/
run_image_classification.py`, offline: an `image`/`label` dataset with `set_transform` (an image processor applied on
the fly), its `collate_fn`, its accuracy `compute_metrics`, `processing_class` and `remove_unused_columns=False`.
Only the class (`PlasticityTrainer` for `Trainer`) and the `callbacks` argument differ, as a user would change them."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from datasets import Dataset
from PIL import Image
from transformers import TrainingArguments

from hf_plasticity import PlasticityTrainer

from .models import IMAGE_SIZE, NUM_LABELS


def image_dataset(n: int, seed: int = 0) -> Dataset:
    """Raw images and labels, as `load_dataset("imagefolder")` gives them (label = the brightest channel)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_LABELS, n)
    images = []
    for label in labels:
        pixels = rng.integers(0, 120, (IMAGE_SIZE + 8, IMAGE_SIZE + 8, 3))
        pixels[..., label] += 120
        images.append(Image.fromarray(pixels.astype(np.uint8)))
    return Dataset.from_dict({"image": images, "label": labels.tolist()})


def image_processor():
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    return ViTImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})


def collate_fn(examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    pixel_values = torch.stack([example["pixel_values"] for example in examples])
    labels = torch.tensor([example["label"] for example in examples])
    return {"pixel_values": pixel_values, "labels": labels}


def compute_metrics(p) -> dict[str, float]:
    return {"accuracy": float((np.argmax(p.predictions, axis=1) == p.label_ids).mean())}


def official_args(output_dir, **overrides) -> TrainingArguments:
    settings = dict(
        output_dir=str(output_dir), remove_unused_columns=False, per_device_train_batch_size=8, max_steps=4,
        learning_rate=1e-4, warmup_steps=1, lr_scheduler_type="cosine", weight_decay=0.05, logging_steps=2,
        save_strategy="no", report_to=[], use_cpu=True, seed=0,
    )  # fmt: skip
    settings.update(overrides)
    return TrainingArguments(**settings)


def official_trainer(model, args: TrainingArguments, callbacks: list, train_size: int = 32) -> PlasticityTrainer:
    processor = image_processor()

    def transforms(batch):
        batch["pixel_values"] = [
            torch.tensor(processor(image.convert("RGB"))["pixel_values"][0]) for image in batch["image"]
        ]
        return batch

    train, validation = image_dataset(train_size), image_dataset(8, seed=1)
    train.set_transform(transforms)
    validation.set_transform(transforms)
    return PlasticityTrainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=validation,
        compute_metrics=compute_metrics,
        processing_class=processor,
        data_collator=collate_fn,
        callbacks=callbacks,
    )
