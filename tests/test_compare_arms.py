"""The new head of `hf_plasticity.compare`, on a tiny local ViT (a 3-label head) and small imagefolders of generated
PNGs: every seed gets a head of its own, named by the data's classes, also when the data has as many classes as the
checkpoint's head."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageClassification, ViTImageProcessor

import hf_plasticity.comparison.runner as runner
from hf_plasticity import compare
from hf_plasticity.cli._common import load_model
from hf_plasticity.comparison.runner import head_fingerprint

from .models import IMAGE_SIZE, NUM_LABELS, pretrained
from .test_compare import records

BUDGET = dict(seeds=2, epochs=1, batch_size=8, backbone_lrs=(1e-3,), own_lrs=(1e-2,))
THREE_CLASSES = ("a", "b", "c")  # as many as the checkpoint's head
assert len(THREE_CLASSES) == NUM_LABELS


def _imagefolder(root, classes, per_class: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3)) + [60 + 70 * c, 120, 200 - 70 * c]
            pixels += rng.normal(0, 40, (IMAGE_SIZE, IMAGE_SIZE, 3))
            Image.fromarray(np.clip(pixels, 0, 255).astype("uint8")).save(root / name / f"{i}.png")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny 'pretrained' ViT (3 labels) with its image processor, an imagefolder of 2 classes x 14 images and one
    of 3 classes x 10."""
    root = tmp_path_factory.mktemp("compare-arms")
    pretrained("vit", root / "tiny-vit")
    ViTImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(root / "tiny-vit")
    _imagefolder(root / "images", ("circle", "square"), 14, seed=0)
    _imagefolder(root / "three", THREE_CLASSES, 10, seed=1)
    return root


def _confirm(output) -> dict:
    return {(r["arm"], r["seed"]): r for r in records(output) if r["phase"] == "confirm"}


# ------------------------------------------------------------------------------------------------- the new head
def test_every_seed_gets_a_new_head_when_the_data_has_as_many_classes_as_the_checkpoint(workspace, tmp_path,
                                                                                        monkeypatch):  # fmt: skip
    checkpoint = AutoModelForImageClassification.from_pretrained(workspace / "tiny-vit")
    assert checkpoint.config.num_labels == len(THREE_CLASSES)
    seen = []

    def fingerprint(model):  # every run's freshly loaded model
        seen.append(dict(model.config.id2label))
        return head_fingerprint(model)

    monkeypatch.setattr(runner, "head_fingerprint", fingerprint)
    output = tmp_path / "out"
    compare(str(workspace / "tiny-vit"), str(workspace / "three"), output=str(output), progress=False,
            **{**BUDGET, "arms": ("standard", "restore"), "seeds": 3})  # fmt: skip
    confirm = _confirm(output)
    heads = {seed: confirm[("standard", seed)]["head_init"] for seed in range(3)}
    assert len(set(heads.values())) == 3  # a head of its own per seed ...
    assert head_fingerprint(checkpoint) not in heads.values()  # ... never the checkpoint's trained one
    assert all(confirm[("restore", seed)]["head_init"] == heads[seed] for seed in range(3))  # the same in every arm
    assert seen and all(labels == dict(enumerate(THREE_CLASSES)) for labels in seen)


def test_prepare_and_diagnose_keep_a_head_of_the_right_size(workspace):
    """Outside compare, a checkpoint whose head has as many labels as the data's classes keeps it (one fine-tuned on
    these classes is restored or diagnosed with its trained head); compare's loader draws a new one, seeded."""
    path = str(workspace / "tiny-vit")
    checkpoint = head_fingerprint(AutoModelForImageClassification.from_pretrained(path))
    kept, replaced = load_model(path, labels=list(THREE_CLASSES), seed=0)
    assert not replaced and head_fingerprint(kept) == checkpoint
    new, replaced = load_model(path, labels=list(THREE_CLASSES), seed=0, always_new_head=True)
    again, _ = load_model(path, labels=list(THREE_CLASSES), seed=0, always_new_head=True)
    other, _ = load_model(path, labels=list(THREE_CLASSES), seed=1, always_new_head=True)
    assert replaced and head_fingerprint(new) == head_fingerprint(again) != checkpoint
    assert head_fingerprint(other) != head_fingerprint(new)
    assert new.config.id2label == dict(enumerate(THREE_CLASSES)) and new.config.label2id["c"] == 2
    backbone = {k: v for k, v in new.state_dict().items() if not k.startswith("classifier.")}
    assert all(torch.equal(v, kept.state_dict()[k]) for k, v in backbone.items())  # only the head is new
