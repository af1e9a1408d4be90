"""The strategy arms and the new head of `hf_plasticity.compare`, on a tiny local ViT (a 3-label head) and small
imagefolders of generated PNGs: a strategy that acts during training (RIFLE, continual backprop) applies its resets in
the arm's runs through `PlasticityCallback`, paired with standard's runs until its first reset and counted in its
records; one that cannot act in the runs is refused before anything is written; and every seed gets a head of its own,
named by the data's classes, also when the data has as many classes as the checkpoint's head."""

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
from hf_plasticity.strategies import cbp

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


# ------------------------------------------------------------------------------------------ periodic strategies
def test_rifle_arm_re_draws_the_head_at_its_epochs_paired_with_standard_until_then(workspace, tmp_path):
    """RIFLE acts during training only (its head re-drawn at epochs 1 and 2): its runs must do it, not train as
    standard fine-tuning under its name."""
    output = tmp_path / "out"
    summary = compare(str(workspace / "tiny-vit"), str(workspace / "images"), output=str(output), progress=False,
                      **{**BUDGET, "arms": ("standard", "rifle"), "epochs": 3})  # fmt: skip
    confirm = _confirm(output)
    for seed in (0, 1):
        standard, rifle = confirm[("standard", seed)], confirm[("rifle", seed)]
        assert rifle["head_init"] == standard["head_init"]  # paired: the same head and data order ...
        assert rifle["train_loss"][0] == standard["train_loss"][0]  # ... so the same first epoch, to the bit
        assert rifle["train_loss"][1:] != standard["train_loss"][1:]  # then a new head at the end of epoch 1
    runs = records(output)
    assert all(r["periodic"] is None for r in runs if r["arm"] == "standard")
    for run in (r for r in runs if r["arm"] == "rifle"):
        assert run["periodic"]["strategy"] == "rifle" and run["periodic"]["resets"] == 2  # at epochs 1 and 2
        assert run["periodic"]["reinitialized"] > 0
    assert "training with rifle's periodic resets is" in summary["verdict"]
    assert "rifle restore" not in (output / "report.md").read_text()


def test_cbp_arm_replaces_units_during_training(workspace, tmp_path, monkeypatch):
    """Continual backprop replaces units during training only; with rates that act within a tiny run (its published
    defaults need 10000 steps on a transformer), the arm's runs replace units and train otherwise than standard."""
    monkeypatch.setitem(cbp.DEFAULTS, "transformer", (0.05, 1))
    output = tmp_path / "out"
    compare(str(workspace / "tiny-vit"), str(workspace / "images"), output=str(output), progress=False,
            **{**BUDGET, "arms": ("standard", "cbp"), "epochs": 2})  # fmt: skip
    confirm = _confirm(output)
    for seed in (0, 1):
        standard, arm = confirm[("standard", seed)], confirm[("cbp", seed)]
        assert arm["head_init"] == standard["head_init"]
        assert arm["train_loss"] != standard["train_loss"]
        assert arm["periodic"]["strategy"] == "cbp" and arm["periodic"]["resets"] > 0
        assert arm["periodic"]["reinitialized"] > 0


def test_a_periodic_arms_runs_keep_what_training_prints(workspace, tmp_path, monkeypatch, capsys):
    """A periodic arm's runs train with a `PlasticityCallback` whose console line is silenced (its record says what it
    did), not with the whole of stdout swallowed: what the user's code prints during training still shows."""
    monkeypatch.setitem(cbp.DEFAULTS, "transformer", (0.05, 1))  # replacements within a tiny run (as above)

    accuracy = runner.accuracy

    def printing_accuracy(eval_prediction):  # the Trainer's compute_metrics, called inside every run's training
        print("user's line: evaluating")
        return accuracy(eval_prediction)

    monkeypatch.setattr(runner, "accuracy", printing_accuracy)
    compare(str(workspace / "tiny-vit"), str(workspace / "images"), output=str(tmp_path / "out"), progress=False,
            **{**BUDGET, "arms": ("standard", "cbp"), "epochs": 2, "seeds": 1})  # fmt: skip
    out = capsys.readouterr().out
    runs = records(tmp_path / "out")
    assert all(r["periodic"]["resets"] > 0 for r in runs if r["arm"] == "cbp")
    evaluations = sum(len(r["val_curve"]) for r in runs) + sum(r["phase"] == "confirm" for r in runs)  # + test
    assert out.count("user's line: evaluating") == evaluations  # every epoch of every run, the cbp runs' included
    assert "hf-plasticity:" not in out  # the callback's own line stays out of the printed report


@pytest.mark.parametrize(
    ("arm", "epochs", "says"),
    [
        ("rifle", 2, "resets at epochs 1, 2"),  # its reset at epoch 2 would be the last step
        ("rifle", 1, "needs --epochs 3 or more"),
        ("cbp", 1, "maturity 10000 steps"),  # its defaults on a transformer: no replacement in a short run
    ],
)
def test_an_arm_that_cannot_act_in_the_runs_is_refused_before_anything_is_written(workspace, tmp_path, arm, epochs,
                                                                                   says):  # fmt: skip
    output = tmp_path / "out"
    with pytest.raises(ValueError, match=f"Arm '{arm}' cannot run as its schedule says") as raised:
        compare(str(workspace / "tiny-vit"), str(workspace / "images"), output=str(output), progress=False,
                **{**BUDGET, "arms": ("standard", arm), "epochs": epochs})  # fmt: skip
    assert says in str(raised.value) and f"Drop {arm} from --arms" in str(raised.value)
    assert f"({epochs} epoch{'s' if epochs != 1 else ''} of " in str(raised.value)  # "1 epoch", not "1 epochs"
    assert not output.exists()


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
