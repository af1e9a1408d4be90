"""Offline benchmark datasets: every image is made here or comes from a file scikit-learn ships.

Each target is a [`datasets.DatasetDict`] with a fixed `"train"` / `"test"` split and two columns:
`pixel_values` (float32, shape `(3, H, W)`, values in `[-1, 1]`) and `labels` (a `ClassLabel`).

- `digits`: scikit-learn's 8x8 grayscale handwritten digits, upscaled: atypical for ImageNet and for the source.
- `textures`: procedural textures (gratings, checkerboards, rings, dots, noise...) under strong pixel noise:
  atypical for the synthetic source.
- `photos`: crops of ten natural photographs (scikit-learn's and scikit-image's bundled images), labelled by the
  photograph: the in-domain control for ImageNet-pretrained models (training and test crops from disjoint tiles).
- `spectrograms`: log-magnitude spectrograms of procedural sounds in noise (see `signals.py`): atypical for both.
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

from .signals import SIGNAL_NAMES, generate_spectrograms

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
#: The photographs of the `photos` control, one class each: scikit-learn's two sample images and scikit-image's
#: bundled natural photographs (no download); the two grayscale ones are repeated over the three channels.
PHOTO_NAMES = [
    "china",
    "flower",
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "motorcycle",
    "hubble",
    "camera",
    "grass",
]


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


#: Each photograph is cut into `PHOTO_TILES` x `PHOTO_TILES` tiles coloured `(row + column) % 3`: training crops come
#: from the tiles of colour 0, validation crops from colour 1 and test crops from colour 2, so crops of two splits
#: never share a pixel, while every tile has tiles of the other splits as neighbours.
PHOTO_TILES = 6
PHOTO_SPLIT_COLOURS = {"train": 0, "validation": 1, "test": 2}


def photo_crop_box(height: int, width: int, colour: int, rng: np.random.Generator) -> tuple[int, int, int]:
    """`(top, left, side)` of one square crop inside one tile of colour `colour` of a photograph's tiling."""
    tile_h, tile_w = height // PHOTO_TILES, width // PHOTO_TILES
    row = int(rng.integers(PHOTO_TILES))
    column = 3 * int(rng.integers(PHOTO_TILES // 3)) + (colour - row) % 3  # (row + column) % 3 == colour
    largest = min(tile_h, tile_w)
    side = int(rng.integers(min(40, largest), largest + 1))
    top = row * tile_h + int(rng.integers(0, tile_h - side + 1))
    left = column * tile_w + int(rng.integers(0, tile_w - side + 1))
    return top, left, side


def load_photographs() -> list[torch.Tensor]:
    """The [`PHOTO_NAMES`] photographs as float `(3, H, W)` tensors in `[-1, 1]`, from files the packages ship."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    arrays = [*load_sample_images().images, data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    arrays += [data.stereo_motorcycle()[0], data.hubble_deep_field(), data.camera(), data.grass()]
    photos = []
    for array in arrays:
        array = np.repeat(array[..., None], 3, axis=-1) if array.ndim == 2 else array[..., :3]
        photos.append(torch.from_numpy(array.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1))
    return photos


def generate_photo_crops(
    n: int, image_size: int = 48, seed: int = 0, colour: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Random crops of natural photographs; the label is the photograph (see [`PHOTO_NAMES`]): in-domain for
    ImageNet models, and learnable from unseen parts of each scene.

    Every crop lies inside one tile of the given `colour` of its photograph's tiling (see [`PHOTO_TILES`]): crops of
    different colours share no pixel (the splits of [`make_photos`]).

    Returns:
        `(images, labels)`: float32 `(n, 3, image_size, image_size)` in `[-1, 1]` and int64 `(n,)`.
    """
    photos = load_photographs()
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(PHOTO_NAMES)
    rng.shuffle(labels)
    images = np.empty((n, 3, image_size, image_size), dtype=np.float32)
    for i, label in enumerate(labels):
        photo = photos[int(label)]
        top, left, side = photo_crop_box(*photo.shape[1:], colour, rng)
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


def make_photos(
    image_size: int = 48, n_train: int = 1200, n_val: int = 300, n_test: int = 600, seed: int = 4000
) -> DatasetDict:
    """In-domain control for ImageNet-pretrained models: crops of ten natural photographs, labelled by the photograph,
    with `"train"`, `"validation"` and `"test"` crops from disjoint tiles (no pixel in common, so the control can
    show harm, and validation is as far from training as test is)."""
    splits = {}
    for offset, (split, n) in enumerate((("train", n_train), ("test", n_test), ("validation", n_val))):
        images, labels = generate_photo_crops(n, image_size, seed + offset, colour=PHOTO_SPLIT_COLOURS[split])
        splits[split] = to_dataset(images, labels, PHOTO_NAMES)
    return DatasetDict(splits)


def make_spectrograms(image_size: int = 32, n_train: int = 1200, n_test: int = 600, seed: int = 5000) -> DatasetDict:
    """Atypical target: spectrograms of procedural sounds in noise."""
    return _synthetic(generate_spectrograms, SIGNAL_NAMES, n_train, n_test, image_size, seed)


TARGETS: dict[str, Callable[..., DatasetDict]] = {
    "digits": make_digits,
    "textures": make_textures,
    "spectrograms": make_spectrograms,
    "photos": make_photos,
    "shapes_ctrl": make_shapes_ctrl,
}


def load_target(name: str, image_size: int, max_train: int | None = None, max_test: int | None = None) -> DatasetDict:
    """Build a downstream target by name, optionally cut to at most `max_train` / `max_test` examples.

    Args:
        name (`str`): one of `TARGETS` (`"digits"`, `"textures"`, `"spectrograms"`, `"photos"`, `"shapes_ctrl"`).
        image_size (`int`): side of the images.
        max_train (`int`, *optional*): keep at most this many training examples (a fixed subset).
        max_test (`int`, *optional*): keep at most this many test (and validation) examples (a fixed subset).

    Returns:
        `DatasetDict` with `"train"` and `"test"`, and `"validation"` for targets that draw their own (`photos`); the
        others leave validation to the caller (a held-out share of `"train"`).
    """
    if name not in TARGETS:
        raise ValueError(f"Unknown target {name!r}; accepted values: {sorted(TARGETS)}.")
    data = TARGETS[name](image_size=image_size)
    out = {}
    for split, limit in (("train", max_train), ("validation", max_test), ("test", max_test)):
        if split not in data:
            continue
        ds = data[split]
        if limit is not None and limit < len(ds):
            idx = np.sort(np.random.default_rng(0).permutation(len(ds))[:limit])
            ds = ds.select(idx.tolist())
        out[split] = ds
    return DatasetDict(out)
