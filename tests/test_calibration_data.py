"""Calibration data in every container the docs accept (a list of dicts, a one-pass iterator of dicts, a torch
`DataLoader`, a `datasets.Dataset` with and without ``with_format("torch")``, a Dataset read through its own
transform) is read the same way and checked the same way: labels are integer class indices (an integer dtype; a
float column is refused even when its values are whole numbers), one per image, >= 0 and within the head's outputs;
images are a finite float batch, batch size first ((N, C, H, W) for images). A refusal names the column and what is
accepted, and leaves the model untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from hf_plasticity import SelectiveReinitConfig, diagnose, prepare_pretrained
from hf_plasticity.core.data import CalibrationDataError, iter_batches

from .models import IMAGE_SIZE, NUM_LABELS, batches

CONFIG = SelectiveReinitConfig(fraction=0.05, calibration_batches=2, calibration_batch_size=4)


def rows(labels, pixels=None, label_key: str = "labels") -> list[dict]:
    """One dict per image (what a Dataset or a DataLoader is built from)."""
    pixels = batches(1, size=len(labels))[0]["pixel_values"] if pixels is None else pixels
    return [{"pixel_values": pixels[i], label_key: labels[i]} for i in range(len(labels))]


def plain(row: dict) -> dict:
    """A row as a Dataset stores it: arrays, and Python scalars for 0-d values."""
    return {k: v.numpy() if v.dim() else v.item() for k, v in row.items()}


def containers(items: list[dict], label_key: str = "labels") -> dict:
    """The same rows in every accepted container (batches of 4)."""
    dataset = Dataset.from_list([plain(row) for row in items])
    chunks = [items[i : i + 4] for i in range(0, len(items), 4)]
    listed = [{k: torch.stack([torch.as_tensor(r[k]) for r in chunk]) for k in chunk[0]} for chunk in chunks]
    return {
        "list": listed,
        "iterator": iter(listed),
        "dataloader": DataLoader(items, batch_size=4),
        "dataset": dataset,
        "dataset_torch": dataset.with_format("torch"),
    }


def snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_untouched(model, before) -> None:
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert getattr(getattr(model, "config", None), "plasticity", None) is None


KINDS = ["list", "iterator", "dataloader", "dataset", "dataset_torch"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "labels", [[0.0, 1.7, 2.2, 0.4, 1.0, 2.9, 0.0, 1.5], [0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 0.0, 1.0]]
)
def test_float_labels_are_refused_in_every_container(make_model, kind, labels):
    """Before: a Dataset's float labels were truncated to integers and the restore went on (1.7 read as class 1)."""
    model = make_model("cnn")
    before = snapshot(model)
    data = containers(rows(torch.tensor(labels)))[kind]
    with pytest.raises(CalibrationDataError, match=r"`labels` must hold integer class indices.*float"):
        prepare_pretrained(model, CONFIG, data=data, diagnostics=False)
    assert_untouched(model, before)
    if kind != "iterator":
        with pytest.raises(CalibrationDataError, match=r"`labels` must hold integer class indices"):
            diagnose(model, data, batches=2, batch_size=4)


def test_the_label_column_is_named_as_the_user_wrote_it(make_model):
    model = make_model("cnn")
    dataset = Dataset.from_list([plain(r) for r in rows(torch.tensor([0.5] * 4), label_key="label")])
    with pytest.raises(CalibrationDataError, match=r"`label` must hold integer class indices \(an integer dtype"):
        prepare_pretrained(model, CONFIG, data=dataset, diagnostics=False)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "labels, message",
    [
        (torch.tensor([True, False] * 4), "got dtype torch.bool"),
        (torch.tensor([0, 1, -1, 2, 0, 1, 2, 0]), "must be >= 0"),
        (torch.tensor([0, 1, 2, 7, 0, 1, 2, 0]), "labels go up to 7, but the model's head has 3 outputs"),
    ],
)
def test_hostile_labels_are_refused_in_every_container(make_model, kind, labels, message):
    model = make_model("cnn")
    before = snapshot(model)
    with pytest.raises(CalibrationDataError, match=message):
        prepare_pretrained(model, CONFIG, data=containers(rows(labels))[kind], diagnostics=False)
    assert_untouched(model, before)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "pixels, message",
    [
        (torch.randint(0, 255, (8, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8), "must be float images"),
        (torch.randn(8), r"must be a batch, batch size first \(images: \(N, C, H, W\)\), got shape \(4,\)"),
        (torch.full((8, 3, IMAGE_SIZE, IMAGE_SIZE), float("inf")), "NaN or infinite pixel values"),
    ],
)
def test_hostile_images_are_refused_in_every_container(make_model, kind, pixels, message):
    model = make_model("cnn")
    before = snapshot(model)
    data = containers(rows(torch.arange(8) % NUM_LABELS, pixels))[kind]
    with pytest.raises(CalibrationDataError, match=message):
        prepare_pretrained(model, CONFIG, data=data, diagnostics=False)
    assert_untouched(model, before)


@pytest.mark.parametrize("kind", ["rows", "plain_rows", "tensor_dataset", "one_label_rows"])
def test_per_sample_data_is_named_and_the_batching_shown(make_model, kind):
    """Per-sample data (a torch Dataset, a list of per-image rows) passed without a DataLoader was read as batches of
    3 images (the channels), and refused as "`labels` must hold one class index per image (3), got shape ()"."""
    labels = torch.arange(8) % NUM_LABELS
    items = rows(labels)
    data = {
        "rows": items,
        "plain_rows": [plain(row) for row in items],  # numpy images, Python int labels
        "tensor_dataset": TensorDataset(torch.stack([r["pixel_values"] for r in items]), labels),
        "one_label_rows": [{**row, "labels": row["labels"].reshape(1)} for row in items],
    }[kind]
    model = make_model("cnn")
    before = snapshot(model)
    message = r"batch 0 looks like a single sample.*shape \(3, 32, 32\).*`DataLoader\(dataset, batch_size=32\)`"
    with pytest.raises(CalibrationDataError, match=message):
        prepare_pretrained(model, CONFIG, data=data, diagnostics=False)
    assert_untouched(model, before)
    with pytest.raises(CalibrationDataError, match=message):
        diagnose(model, data)
    if kind != "one_label_rows":  # batched, the same data is read (one-label rows would collate to (N, 1) labels)
        batched = prepare_pretrained(model, CONFIG, data=DataLoader(data, batch_size=4), diagnostics=False)
        assert batched.total_reinitialized > 0


@given(
    size=st.integers(1, 5),
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    label=st.integers(0, 9),
)
@settings(max_examples=60, deadline=None)
def test_a_batch_is_read_and_a_single_sample_never_is(size, shape, label):
    """Whatever the image shape, N images with N labels are one batch, and an image with a scalar label is refused
    as a single sample (a batch of N 3-D inputs with N labels, as an MLP reads them, is not mistaken for one)."""
    batch = {"pixel_values": torch.randn(size, *shape), "labels": torch.full((size,), label)}
    [(pixels, labels)] = list(iter_batches([batch], 1))
    assert pixels.shape == (size, *shape) and labels.shape == (size,)
    sample = {"pixel_values": torch.randn(*shape), "labels": label}
    with pytest.raises(CalibrationDataError, match="looks like a single sample"):
        list(iter_batches([sample], 1))


@pytest.mark.parametrize("kind", KINDS)
def test_every_container_gives_the_same_restore(make_model, kind):
    items = rows(torch.arange(8) % NUM_LABELS)
    results = []
    for data in (containers(items)["list"], containers(items)[kind]):
        model = make_model("cnn")
        prepare_pretrained(model, CONFIG, data=data, diagnostics=False)
        results.append(snapshot(model))
    assert all(torch.allclose(results[0][k].float(), results[1][k].float(), atol=1e-6) for k in results[0])


def image_dataset(transform) -> Dataset:
    """A tiny image-classification Dataset as the hub serves one (PIL images, an integer `label`), with
    ``set_transform`` applied as the official transformers example does."""
    generator = np.random.default_rng(0)
    images = [
        Image.fromarray(generator.integers(0, 255, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)) for _ in range(8)
    ]
    dataset = Dataset.from_dict({"image": images, "label": [i % NUM_LABELS for i in range(8)]})
    dataset.set_transform(transform)
    return dataset


def example_transform(batch: dict) -> dict:
    """What run_image_classification.py's transform does: pixel_values added (one tensor per image), the raw
    columns kept, the label column given as ``labels``."""
    batch["pixel_values"] = [torch.as_tensor(np.array(i.convert("RGB")), dtype=torch.float32).permute(2, 0, 1) / 255
                             for i in batch["image"]]  # fmt: skip
    batch["labels"] = batch["label"]
    return batch


def test_a_dataset_with_a_transform_is_read_through_it(make_model):
    """Before: refused with "apply your image processor first", because its raw columns are `image` and `label`."""
    dataset = image_dataset(example_transform)
    assert set(dataset.column_names) == {"image", "label"}
    model = make_model("cnn")
    report = prepare_pretrained(model, CONFIG, data=dataset)
    assert report.total_reinitialized > 0 and report.diagnostics["before"].samples == 8
    reference = make_model("cnn")
    prepare_pretrained(reference, CONFIG, data=[dataset[0:4], dataset[4:8]], diagnostics=False)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))


def test_a_transform_without_pixel_values_is_named(make_model):
    dataset = image_dataset(lambda batch: {"label": batch["label"]})
    with pytest.raises(CalibrationDataError, match=r"no `pixel_values`.*its rows have \['label'\]"):
        prepare_pretrained(make_model("cnn"), CONFIG, data=dataset, diagnostics=False)


def test_the_command_line_refuses_a_float_label_column(tmp_path, capsys):
    """Before: the CLI's `with_pixel_values` read a float label column as labels, and the restore truncated them."""
    from transformers import ViTImageProcessor

    from hf_plasticity.cli.main import main

    from .models import pretrained

    pretrained("vit", tmp_path / "tiny-vit")
    ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(tmp_path / "tiny-vit")
    images = [Image.new("RGB", (40, 40), (40 * i, 90, 30)) for i in range(4)]
    Dataset.from_dict({"image": images, "label": [0.0, 1.5, 1.0, 0.2]}).save_to_disk(tmp_path / "data")
    argv = ["prepare", str(tmp_path / "tiny-vit"), "--strategy", "selective", "--data", str(tmp_path / "data")]
    assert main([*argv, "--output", str(tmp_path / "out")]) == 2
    assert (
        "The label column 'label' holds float64 values; it must hold integer class indices" in capsys.readouterr().err
    )
    assert not (tmp_path / "out").exists()


def test_images_of_different_sizes_are_named(make_model):
    """Before: torch.stack's RuntimeError came through from inside the restore."""
    dataset = Dataset.from_list(
        [{"pixel_values": torch.zeros(3, side, side).numpy(), "labels": 0} for side in (IMAGE_SIZE, IMAGE_SIZE + 2)]
    ).with_format("torch")
    with pytest.raises(CalibrationDataError, match=r"Cannot read `pixel_values` as one tensor .* same shape"):
        prepare_pretrained(make_model("cnn"), CONFIG, data=dataset, diagnostics=False)
