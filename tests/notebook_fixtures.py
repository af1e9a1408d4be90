"""What the notebook tests hand the notebooks through their parameters cell, so they run offline, on CPU, in seconds:
a tiny "pretrained" checkpoint (a local folder, loaded exactly like a Hub id), small image datasets written as
`imagefolder` directories (loaded by `load_dataset(path)` exactly like a Hub dataset), and a local copy of the
accuracy metric (`evaluate.load(path)`, since `evaluate.load("accuracy")` downloads the metric from the Hub)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

#: Configs of the tiny stand-ins (transformers ``model_type`` -> config keyword arguments), 32 x 32 inputs.
TINY_CONFIGS: dict[str, dict] = {
    "vit": {
        "image_size": 32,
        "patch_size": 8,
        "hidden_size": 48,
        "num_hidden_layers": 3,
        "num_attention_heads": 3,
        "intermediate_size": 96,
    },
    "convnext": {
        "image_size": 32,
        "patch_size": 2,
        "hidden_sizes": [16, 32, 64],
        "depths": [1, 1, 1],
        "num_stages": 3,
    },
    "resnet": {
        "embedding_size": 16,
        "hidden_sizes": [16, 32, 64],
        "depths": [1, 1, 1],
        "layer_type": "basic",
        "downsample_in_first_stage": False,
    },
}

ACCURACY_METRIC = '''"""Accuracy, as evaluate's hub metric computes it (a local copy for offline tests)."""
import datasets
import evaluate


class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="accuracy",
            citation="",
            inputs_description="predictions and references: class indices",
            features=datasets.Features(
                {"predictions": datasets.Value("int32"), "references": datasets.Value("int32")}
            ),
        )

    def _compute(self, predictions, references):
        return {"accuracy": float(sum(int(p == r) for p, r in zip(predictions, references)) / len(references))}
'''


def tiny_checkpoint(arch: str, directory: Path, *, epochs: int = 1, n_source: int = 320, seed: int = 0) -> str:
    """A tiny image classifier (``arch``: a key of `TINY_CONFIGS`) trained briefly on the bench's synthetic shapes
    and saved with an image processor; returns the folder (reused when it exists)."""
    from transformers import AutoConfig, AutoModelForImageClassification, ViTImageProcessorPil

    from benchmarks.data import SHAPE_NAMES, generate_shapes

    if (directory / "preprocessor_config.json").is_file():
        return str(directory)
    images, labels = generate_shapes(n_source, image_size=32, seed=seed)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    torch.manual_seed(seed)
    config = AutoConfig.for_model(
        arch,
        num_labels=len(SHAPE_NAMES),
        id2label=dict(enumerate(SHAPE_NAMES)),
        label2id={name: i for i, name in enumerate(SHAPE_NAMES)},
        **TINY_CONFIGS[arch],
    )
    model = AutoModelForImageClassification.from_config(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        for first in range(0, len(order), 64):
            idx = order[first : first + 64]
            loss = F.cross_entropy(model(pixel_values=x[idx]).logits, y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval().save_pretrained(directory)
    processor = ViTImageProcessorPil(size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor.save_pretrained(directory)
    return str(directory)


def image_folder(name: str, directory: Path, *, n_train: int, n_test: int, seed: int = 0) -> str:
    """An `imagefolder` dataset (``train/`` and ``test/``, one sub-folder of PNGs per class): ``"digits"``
    (scikit-learn's handwritten digits, atypical for the tiny checkpoints) or ``"shapes"`` (held-out draws of their
    source, typical). Returns the directory."""
    from PIL import Image

    from benchmarks.data import SHAPE_NAMES, generate_shapes, make_digits

    if directory.is_dir():
        return str(directory)
    for offset, (split, n) in enumerate((("train", n_train), ("test", n_test))):
        if name == "digits":
            part = make_digits(image_size=32, seed=seed)[split].with_format("numpy")
            part = part[: min(n, len(part))]
            images, labels, names = part["pixel_values"], part["labels"], [str(i) for i in range(10)]
        else:
            images, labels = generate_shapes(n, image_size=32, seed=10_000 + 2 * seed + offset)
            names = SHAPE_NAMES
        pixels = np.clip((images + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
        for i, (image, label) in enumerate(zip(pixels, labels)):
            folder = directory / split / names[int(label)]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image, mode="RGB").save(folder / f"{i:05d}.png")
    return str(directory)


def accuracy_metric(directory: Path) -> str:
    """The local accuracy metric script for ``evaluate.load(path)``; returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "accuracy.py"
    path.write_text(ACCURACY_METRIC)
    return str(path)
