"""Offline stand-ins for the notebooks' test mode: a tiny "pretrained" checkpoint and small Hub-like image datasets.

The notebooks in ``notebooks/`` default to real Hub models and datasets (sized for a free Colab GPU). When the
environment variable ``HF_PLASTICITY_NOTEBOOK_TEST=1`` is set (the test suite sets it), they switch to what this
module makes, so they run offline, on CPU, in seconds:

- [`tiny_pretrained_checkpoint`]: a small transformers image classifier (ViT, ConvNeXt or ResNet) built from a
  config, pretrained for a few seconds on the bench's synthetic ``shapes`` source, and saved with
  ``save_pretrained`` next to an image processor, so ``AutoModelForImageClassification.from_pretrained(path)`` and
  ``AutoImageProcessor.from_pretrained(path)`` work on it exactly as on a Hub id.
- [`tiny_image_dataset`]: a `datasets.DatasetDict` shaped like a Hub image-classification dataset (an ``image``
  column of PIL images and a ``label`` `ClassLabel`), from the bench's offline data: scikit-learn's handwritten
  ``digits``, procedural ``textures`` (both atypical) or fresh ``shapes`` (in-domain for the tiny checkpoints).

Needs scikit-learn for ``digits`` (the ``bench`` or ``dev`` extra).

Example:

```python
>>> import tempfile
>>> from transformers import AutoModelForImageClassification
>>> from hf_plasticity.notebook_utils import tiny_image_dataset, tiny_pretrained_checkpoint
>>> path = tiny_pretrained_checkpoint("vit", tempfile.mkdtemp(), pretrain_epochs=1, n_source=64)
>>> model = AutoModelForImageClassification.from_pretrained(path, num_labels=10, ignore_mismatched_sizes=True)
>>> data = tiny_image_dataset("digits", n_train=20, n_test=10)
>>> data["train"].features["label"].num_classes, data["train"][0]["image"].size
(10, (32, 32))
```
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

TEST_MODE_ENV = "HF_PLASTICITY_NOTEBOOK_TEST"

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
DATASETS = ("digits", "textures", "shapes")


def notebook_test_mode() -> bool:
    """Whether ``HF_PLASTICITY_NOTEBOOK_TEST`` asks for the tiny offline settings (any value but "", "0", "false")."""
    return os.environ.get(TEST_MODE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def tiny_pretrained_checkpoint(
    arch: str,
    directory: str | os.PathLike,
    *,
    pretrain_epochs: int = 3,
    n_source: int = 1000,
    seed: int = 0,
) -> str:
    """Builds, briefly pretrains and saves a tiny image classifier; returns the folder to pass to ``from_pretrained``.

    The model (``arch``: ``"vit"``, ``"convnext"`` or ``"resnet"``, see `TINY_CONFIGS`) is trained with AdamW for
    ``pretrain_epochs`` passes over ``n_source`` images of the synthetic 10-class ``shapes`` source, so its weights
    carry a (small) pretraining like a Hub checkpoint's. An image processor (resize to 32 x 32, normalize to
    [-1, 1]) is saved with it. An existing checkpoint in ``directory`` is reused.
    """
    from transformers import AutoConfig, AutoModelForImageClassification

    try:  # the PIL backend, which needs no torchvision
        from transformers import ViTImageProcessorPil as ImageProcessor
    except ImportError:
        from transformers import ViTImageProcessor as ImageProcessor

    from .bench.data import SHAPE_NAMES, generate_shapes

    if arch not in TINY_CONFIGS:
        raise ValueError(f"Unknown tiny architecture {arch!r}; accepted values: {sorted(TINY_CONFIGS)}.")
    path = Path(directory)
    if (path / "config.json").is_file() and (path / "preprocessor_config.json").is_file():
        return str(path)
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
    for _ in range(pretrain_epochs):
        order = torch.randperm(len(y), generator=generator)
        for first in range(0, len(order), 64):
            idx = order[first : first + 64]
            loss = F.cross_entropy(model(pixel_values=x[idx]).logits, y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()
    model.save_pretrained(path)
    processor = ImageProcessor(
        do_resize=True, size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    processor.save_pretrained(path)
    return str(path)


def _to_pil(pixel_values: np.ndarray) -> list:
    """``(N, 3, H, W)`` floats in [-1, 1] -> N RGB PIL images."""
    from PIL import Image

    array = np.clip((pixel_values + 1.0) * 127.5 + 0.5, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    return [Image.fromarray(img, mode="RGB") for img in array]


def _hub_like(pixel_values: np.ndarray, labels: np.ndarray, names: list[str]):
    from datasets import ClassLabel, Dataset, Features, Image

    features = Features({"image": Image(), "label": ClassLabel(names=names)})
    return Dataset.from_dict({"image": _to_pil(pixel_values), "label": labels.astype(np.int64).tolist()}, features)


def tiny_image_dataset(name: str, *, n_train: int = 500, n_test: int = 200, image_size: int = 32, seed: int = 0):
    """A small offline image-classification dataset with a Hub-like layout.

    Args:
        name: ``"digits"`` (scikit-learn's 8x8 handwritten digits, upscaled: atypical for natural-image and
            shape-pretrained models), ``"textures"`` (procedural textures in noise: atypical) or ``"shapes"``
            (fresh draws of the tiny checkpoints' source: the typical, in-domain case).
        n_train: training examples (at most 1,257 for ``digits``).
        n_test: test examples (at most 540 for ``digits``).
        image_size: side of the images.
        seed: seed of the draws and of the subsets.

    Returns:
        `datasets.DatasetDict` with ``"train"`` and ``"test"`` splits, columns ``image`` (PIL, RGB) and ``label``.
    """
    from datasets import DatasetDict

    from .bench.data import SHAPE_NAMES, TEXTURE_NAMES, generate_shapes, generate_textures, make_digits

    if name not in DATASETS:
        raise ValueError(f"Unknown tiny dataset {name!r}; accepted values: {list(DATASETS)}.")
    splits = {}
    if name == "digits":
        full = make_digits(image_size=image_size, seed=seed)
        rng = np.random.default_rng(seed)
        for split, n in (("train", n_train), ("test", n_test)):
            ds = full[split]
            idx = np.sort(rng.permutation(len(ds))[: min(n, len(ds))])
            part = ds.select(idx.tolist()).with_format("numpy")[:]
            splits[split] = _hub_like(part["pixel_values"], part["labels"], [str(i) for i in range(10)])
    else:
        generate, names = (generate_shapes, SHAPE_NAMES) if name == "shapes" else (generate_textures, TEXTURE_NAMES)
        # Seeds far from the ones the tiny checkpoints pretrain on, so "shapes" is held-out data.
        for offset, (split, n) in enumerate((("train", n_train), ("test", n_test))):
            images, labels = generate(n, image_size=image_size, seed=10_000 + 2 * seed + offset)
            splits[split] = _hub_like(images, labels, names)
    return DatasetDict(splits)
