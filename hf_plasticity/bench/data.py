"""Offline benchmark datasets: every image is made here or comes from a file scikit-learn ships.

Each target is a [`datasets.DatasetDict`] with a fixed `"train"` / `"test"` split and two columns:
`pixel_values` (float32, shape `(3, H, W)`, values in `[-1, 1]`) and `labels` (a `ClassLabel`).

- `digits`: scikit-learn's 8x8 grayscale handwritten digits, upscaled: atypical for ImageNet and for the source.
- `textures`: procedural textures (gratings, checkerboards, rings, dots, noise...) under strong pixel noise:
  atypical for the synthetic source.
- `photos`: crops of scikit-learn's two sample photographs, labelled by the region they come from: natural-image
  statistics, the in-domain control for ImageNet-pretrained models (training and test crops from disjoint bands).
- `shapes`: the synthetic source the bench pretrains its small transformers models on (10 shape classes).
- `shapes_ctrl`: fresh draws of the same generator with a small training set: the in-domain control for the
  models pretrained on `shapes`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Array3D, ClassLabel, Dataset, DatasetDict, Features

SHAPE_NAMES = [
    "circle",
    "square",
    "triangle",
    "cross",
    "ring",
    "bar",
    "diamond",
    "ellipse",
    "frame",
    "x",
]
TEXTURE_NAMES = [
    "grating_0",
    "grating_90",
    "grating_45",
    "grating_135",
    "checkerboard",
    "rings",
    "dots",
    "white_noise",
    "blobs",
    "spokes",
]
PHOTO_NAMES = [f"{img}_{i}" for img in ("china", "flower") for i in range(5)]


def to_dataset(images: np.ndarray, labels: np.ndarray, names: list[str]) -> Dataset:
    """Wrap an image array in a `datasets.Dataset`.

    Args:
        images (`np.ndarray`): float array of shape `(N, 3, H, W)`.
        labels (`np.ndarray`): integer array of shape `(N,)`.
        names (`list[str]`): the class names, in label order.

    Returns:
        `datasets.Dataset` with columns `pixel_values` and `labels`.
    """
    _, c, h, w = images.shape
    features = Features({"pixel_values": Array3D(shape=(c, h, w), dtype="float32"), "labels": ClassLabel(names=names)})
    data = {"pixel_values": images.astype(np.float32), "labels": labels.astype(np.int64).tolist()}
    return Dataset.from_dict(data, features=features)


def as_tensors(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Return `(pixel_values, labels)` of a whole dataset as two tensors (the bench's datasets fit in memory)."""
    batch = dataset.with_format("torch")[:]
    return batch["pixel_values"].float(), batch["labels"].long()


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of `(N, C, h, w)` images to `(N, C, size, size)`."""
    x = torch.from_numpy(images.astype(np.float32))
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.numpy()


def _stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a stratified train/test split, fixed by `seed`."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _subsample(images: np.ndarray, labels: np.ndarray, n: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the first `n` of a fixed permutation (all when `n` is None or larger than the set)."""
    if n is None or n >= len(labels):
        return images, labels
    idx = np.sort(np.random.default_rng(seed).permutation(len(labels))[:n])
    return images[idx], labels[idx]


def make_digits(image_size: int = 48, seed: int = 0, test_fraction: float = 0.3) -> DatasetDict:
    """scikit-learn's digits (1,797 images, 10 classes), upscaled to `image_size` and repeated over 3 channels.

    Args:
        image_size (`int`, *optional*, defaults to 48): side of the output images.
        seed (`int`, *optional*, defaults to 0): seed of the stratified split.
        test_fraction (`float`, *optional*, defaults to 0.3): share of each class held out for the test split.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images.astype(np.float32) / 16.0)[:, None].repeat(3, axis=1)
    images = _resize(images, image_size) * 2.0 - 1.0
    labels = digits.target.astype(np.int64)
    train, test = _stratified_split(labels, test_fraction, seed)
    names = [str(i) for i in range(10)]
    return DatasetDict(
        {
            "train": to_dataset(images[train], labels[train], names),
            "test": to_dataset(images[test], labels[test], names),
        }
    )


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size * 2.0 - 1.0
    return np.meshgrid(coords, coords, indexing="xy")


def _shape_mask(label: int, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    """Boolean mask of shape `label` in the rotated, centred coordinates `(u, v)` at radius `r`."""
    d = np.sqrt(u**2 + v**2)
    box = np.maximum(np.abs(u), np.abs(v))
    if label == 0:
        return d < r
    if label == 1:
        return box < 0.8 * r
    if label == 2:
        angles = np.deg2rad([90.0, 210.0, 330.0])
        return np.all([u * np.cos(a) + v * np.sin(a) < 0.45 * r for a in angles], axis=0)
    if label == 3:
        return ((np.abs(u) < 0.28 * r) & (np.abs(v) < r)) | ((np.abs(v) < 0.28 * r) & (np.abs(u) < r))
    if label == 4:
        return (d < r) & (d > 0.6 * r)
    if label == 5:
        return (np.abs(u) < r) & (np.abs(v) < 0.3 * r)
    if label == 6:
        return np.abs(u) + np.abs(v) < r
    if label == 7:
        return (u / r) ** 2 + (v / (0.5 * r)) ** 2 < 1.0
    if label == 8:
        return (box < 0.85 * r) & (box > 0.55 * r)
    a, b = (u + v) / np.sqrt(2.0), (u - v) / np.sqrt(2.0)
    return ((np.abs(a) < 0.25 * r) & (np.abs(b) < r)) | ((np.abs(b) < 0.25 * r) & (np.abs(a) < r))


def generate_shapes(n: int, image_size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Draw `n` images of one coloured shape (10 classes) on a coloured, noisy background.

    Position, size, rotation (within +-20 degrees), colours and noise are random; all of it follows from `seed`.

    Returns:
        `(images, labels)`: float32 `(n, 3, image_size, image_size)` in `[-1, 1]` and int64 `(n,)`.
    """
    rng = np.random.default_rng(seed)
    x, y = _grid(image_size)
    labels = np.arange(n) % len(SHAPE_NAMES)
    rng.shuffle(labels)
    images = np.empty((n, 3, image_size, image_size), dtype=np.float32)
    for i, label in enumerate(labels):
        r = rng.uniform(0.35, 0.75)
        cx, cy = rng.uniform(-(1 - r), 1 - r, size=2)
        theta = np.deg2rad(rng.uniform(-20.0, 20.0))
        u = (x - cx) * np.cos(theta) + (y - cy) * np.sin(theta)
        v = -(x - cx) * np.sin(theta) + (y - cy) * np.cos(theta)
        mask = _shape_mask(int(label), u, v, r)
        bg = rng.uniform(-1.0, 1.0, size=3)
        fg = rng.uniform(-1.0, 1.0, size=3)
        while np.abs(fg - bg).max() < 0.6:
            fg = rng.uniform(-1.0, 1.0, size=3)
        img = np.where(mask[None], fg[:, None, None], bg[:, None, None])
        img = img + rng.normal(0.0, 0.1, size=img.shape)
        images[i] = np.clip(img, -1.0, 1.0)
    return images, labels.astype(np.int64)


def _texture(label: int, x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One grayscale texture of class `label` in `[-1, 1]` on the grid `(x, y)`."""
    size = x.shape[0]
    freq = rng.uniform(2.0, 5.0) * np.pi
    phase = rng.uniform(0.0, 2 * np.pi)
    if label <= 3:
        angle = np.deg2rad([0.0, 90.0, 45.0, 135.0][label] + rng.uniform(-12.0, 12.0))
        return np.sin(freq * (x * np.cos(angle) + y * np.sin(angle)) + phase)
    if label == 4:
        return np.sign(np.sin(freq * x + phase) * np.sin(freq * y + rng.uniform(0.0, 2 * np.pi)))
    cx, cy = rng.uniform(-0.5, 0.5, size=2)
    if label == 5:
        return np.sin(freq * np.sqrt((x - cx) ** 2 + (y - cy) ** 2) + phase)
    if label == 6:
        s = np.sin(freq * x + phase) * np.sin(freq * y + rng.uniform(0.0, 2 * np.pi))
        return np.where(s > 0.5, 1.0, -1.0)
    if label == 7:
        return rng.uniform(-1.0, 1.0, size=x.shape)
    if label == 8:
        coarse = torch.from_numpy(rng.normal(size=(1, 1, 4, 4)).astype(np.float32))
        smooth = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[0, 0].numpy()
        return np.tanh(smooth)
    spokes = rng.integers(3, 8)
    return np.sin(spokes * np.arctan2(y - cy, x - cx) + phase)


def generate_textures(
    n: int, image_size: int = 32, seed: int = 0, noise: float = 0.6
) -> tuple[np.ndarray, np.ndarray]:
    """Draw `n` procedural textures (10 classes), tinted with a random colour and buried in Gaussian noise.

    Returns:
        `(images, labels)`: float32 `(n, 3, image_size, image_size)` in `[-1, 1]` and int64 `(n,)`.
    """
    rng = np.random.default_rng(seed)
    x, y = _grid(image_size)
    labels = np.arange(n) % len(TEXTURE_NAMES)
    rng.shuffle(labels)
    images = np.empty((n, 3, image_size, image_size), dtype=np.float32)
    for i, label in enumerate(labels):
        gray = _texture(int(label), x, y, rng) * rng.uniform(0.3, 1.0)
        tint = rng.uniform(0.4, 1.0, size=3)
        img = gray[None] * tint[:, None, None] + rng.uniform(-0.3, 0.3, size=(3, 1, 1))
        img = img + rng.normal(0.0, noise, size=img.shape)
        images[i] = np.clip(img, -1.0, 1.0)
    return images, labels.astype(np.int64)


#: Horizontal bands of each photograph: training crops come from the even bands, test crops from the odd ones, so
#: no training crop shares a pixel with a test crop.
PHOTO_BANDS = 5
PHOTO_TRAIN_BANDS = (0, 2, 4)
PHOTO_TEST_BANDS = (1, 3)


def photo_crop_box(
    label: int, height: int, width: int, bands: tuple[int, ...], rng: np.random.Generator
) -> tuple[int, int, int]:
    """`(top, left, side)` of one square crop inside strip `label % 5` and inside one of `bands` of a photograph."""
    strip_w, band_h = width // 5, height // PHOTO_BANDS
    side = int(rng.integers(min(64, band_h), min(strip_w, band_h) + 1))
    left = (label % 5) * strip_w + int(rng.integers(0, strip_w - side + 1))
    top = int(rng.choice(bands)) * band_h + int(rng.integers(0, band_h - side + 1))
    return top, left, side


def generate_photo_crops(
    n: int, image_size: int = 48, seed: int = 0, bands: tuple[int, ...] = PHOTO_TRAIN_BANDS
) -> tuple[np.ndarray, np.ndarray]:
    """Random crops of scikit-learn's two sample photographs; the label is the vertical strip (5 per photo) the
    crop comes from, so classes are natural-image regions (in-domain for ImageNet models).

    Each photograph is also cut into [`PHOTO_BANDS`] horizontal bands, and every crop lies inside one of `bands`:
    crops drawn from disjoint bands share no pixel (the training and test splits of [`make_photos`]).

    Returns:
        `(images, labels)`: float32 `(n, 3, image_size, image_size)` in `[-1, 1]` and int64 `(n,)`.
    """
    from sklearn.datasets import load_sample_images

    photos = [
        torch.from_numpy(img.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1) for img in load_sample_images().images
    ]
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(PHOTO_NAMES)
    rng.shuffle(labels)
    images = np.empty((n, 3, image_size, image_size), dtype=np.float32)
    for i, label in enumerate(labels):
        photo = photos[int(label) // 5]
        top, left, side = photo_crop_box(int(label), *photo.shape[1:], bands, rng)
        crop = photo[:, top : top + side, left : left + side][None]
        crop = F.interpolate(crop, size=(image_size, image_size), mode="bilinear", align_corners=False)[0]
        if rng.random() < 0.5:
            crop = crop.flip(-1)
        images[i] = crop.numpy()
    return images, labels.astype(np.int64)


def _synthetic(
    generator: Callable[..., tuple[np.ndarray, np.ndarray]],
    names: list[str],
    n_train: int,
    n_test: int,
    image_size: int,
    seed: int,
) -> DatasetDict:
    """Train and test splits drawn independently (seeds `seed` and `seed + 1`) from one generator."""
    x_train, y_train = generator(n_train, image_size=image_size, seed=seed)
    x_test, y_test = generator(n_test, image_size=image_size, seed=seed + 1)
    return DatasetDict({"train": to_dataset(x_train, y_train, names), "test": to_dataset(x_test, y_test, names)})


def make_shapes(image_size: int = 32, n_train: int = 8000, n_test: int = 1000, seed: int = 1000) -> DatasetDict:
    """The source dataset for pretraining the bench's small transformers models."""
    return _synthetic(generate_shapes, SHAPE_NAMES, n_train, n_test, image_size, seed)


def make_source(
    image_size: int = 32, n_train: int = 8000, n_val: int = 1000, n_test: int = 2000, seed: int = 1000
) -> DatasetDict:
    """The pretraining source with its own validation split: `"train"`, `"validation"` and `"test"`, three
    independent draws of the `shapes` generator (seeds `seed`, `seed + 2` and `seed + 1`; train and test are the
    draws of [`make_shapes`]). Choices (the learning-rate sweep) are made on `"validation"`; `"test"` is reported.
    """
    splits = _synthetic(generate_shapes, SHAPE_NAMES, n_train, n_test, image_size, seed)
    x_val, y_val = generate_shapes(n_val, image_size=image_size, seed=seed + 2)
    return DatasetDict(
        {"train": splits["train"], "validation": to_dataset(x_val, y_val, SHAPE_NAMES), "test": splits["test"]}
    )


def make_shapes_ctrl(image_size: int = 32, n_train: int = 600, n_test: int = 1000, seed: int = 2000) -> DatasetDict:
    """In-domain control: fresh draws of the source generator (other seeds) with a small training set."""
    return _synthetic(generate_shapes, SHAPE_NAMES, n_train, n_test, image_size, seed)


def make_textures(image_size: int = 32, n_train: int = 1200, n_test: int = 600, seed: int = 3000) -> DatasetDict:
    """Atypical target: procedural textures under strong noise."""
    return _synthetic(generate_textures, TEXTURE_NAMES, n_train, n_test, image_size, seed)


def make_photos(image_size: int = 48, n_train: int = 1200, n_test: int = 600, seed: int = 4000) -> DatasetDict:
    """In-domain control for ImageNet-pretrained models: crops of natural photographs, training crops from the even
    horizontal bands and test crops from the odd ones (no pixel in common, so the control can show harm)."""
    x_train, y_train = generate_photo_crops(n_train, image_size, seed, bands=PHOTO_TRAIN_BANDS)
    x_test, y_test = generate_photo_crops(n_test, image_size, seed + 1, bands=PHOTO_TEST_BANDS)
    return DatasetDict(
        {"train": to_dataset(x_train, y_train, PHOTO_NAMES), "test": to_dataset(x_test, y_test, PHOTO_NAMES)}
    )


TARGETS: dict[str, Callable[..., DatasetDict]] = {
    "digits": make_digits,
    "textures": make_textures,
    "photos": make_photos,
    "shapes_ctrl": make_shapes_ctrl,
}


def load_target(name: str, image_size: int, max_train: int | None = None, max_test: int | None = None) -> DatasetDict:
    """Build a downstream target by name, optionally cut to at most `max_train` / `max_test` examples.

    Args:
        name (`str`): one of `TARGETS` (`"digits"`, `"textures"`, `"photos"`, `"shapes_ctrl"`).
        image_size (`int`): side of the images.
        max_train (`int`, *optional*): keep at most this many training examples (a fixed subset).
        max_test (`int`, *optional*): keep at most this many test examples (a fixed subset).
    """
    if name not in TARGETS:
        raise ValueError(f"Unknown target {name!r}; accepted values: {sorted(TARGETS)}.")
    data = TARGETS[name](image_size=image_size)
    out = {}
    for split, limit in (("train", max_train), ("test", max_test)):
        ds = data[split]
        if limit is not None and limit < len(ds):
            idx = np.sort(np.random.default_rng(0).permutation(len(ds))[:limit])
            ds = ds.select(idx.tolist())
        out[split] = ds
    return DatasetDict(out)
