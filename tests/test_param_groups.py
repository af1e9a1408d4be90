"""Re-drawn parameters at their own learning rate: the record names what was re-drawn, `plasticity_param_groups`
builds the groups (from a live report or a loaded checkpoint), and the Trainer schedules every group, also across a
resume."""

from __future__ import annotations

import pytest
import torch
from transformers import Trainer, TrainerCallback
from transformers.optimization import get_scheduler

from hf_plasticity import (
    LayerReinitConfig,
    PartialRedrawError,
    SelectiveReinitConfig,
    ShrinkPerturbConfig,
    get_layout,
    plasticity_optimizer,
    plasticity_param_groups,
    prepare_pretrained,
)

from .models import ARCHS, batches
from .test_callback import StopAt, params, training_args
from .test_training import learnable_dataset


def names_by_group(model, groups) -> dict[str, set[str]]:
    name_of = {id(p): n for n, p in model.named_parameters()}
    return {g["name"]: {name_of[id(p)] for p in g["params"]} for g in groups}


@pytest.mark.parametrize("arch", ARCHS)
def test_every_trainable_parameter_is_in_exactly_one_group(make_model, arch):
    model = make_model(arch)
    prepare_pretrained(model, LayerReinitConfig(num_blocks=1))
    frozen = next(p for n, p in model.named_parameters() if get_layout(model).block_of(n) == 0)
    frozen.requires_grad_(False)
    groups = plasticity_param_groups(model, lr=1e-4, reinit_lr=1e-3, head_lr=5e-3, weight_decay=0.05)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))  # once at most
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}  # every trainable one, no frozen one
    layout = get_layout(model)
    last, head = layout.blocks[-1], layout.head[0]
    by_group = names_by_group(model, groups)
    redrawn = by_group.get("redrawn", set()) | by_group.get("redrawn.no_decay", set())
    expected = {
        n for n, p in model.named_parameters() if n.startswith(last + ".") or n.startswith(f"{layout.final_norm}.")
    }
    assert redrawn == expected
    for group in groups:
        lr = {"backbone": 1e-4, "redrawn": 1e-3, "head": 5e-3}[group["name"].split(".")[0]]
        assert group["lr"] == lr
        no_decay = group["name"].endswith(".no_decay")
        assert group["weight_decay"] == (0.0 if no_decay else 0.05)
        for name in by_group[group["name"]]:
            module = model.get_submodule(name.rsplit(".", 1)[0])
            is_norm = "Norm" in type(module).__name__
            assert no_decay == (name.endswith("bias") or is_norm), name
            assert (group["name"].startswith("head")) == name.startswith(head + "."), name


def test_the_record_names_what_was_redrawn_compactly(make_model):
    model = make_model("vit")
    report = prepare_pretrained(model, LayerReinitConfig(num_blocks=1))
    assert report.redrawn == {"whole": ["vit.layers.2", "vit.layernorm"], "partial": []}
    assert model.config.plasticity["redrawn"] == report.redrawn
    per_block = model.config.plasticity["reinitialized_per_block"]  # blocks by their names in the checkpoint
    assert per_block == {"vit.encoder.layer.2": report.by_block()["vit.encoder.layer.2"], "vit.layernorm": 64}
    # scope fields that do not apply to whole blocks are neither recorded nor accepted
    assert "include_bias" not in model.config.plasticity["config"]
    with pytest.raises(ValueError, match="`include_bias` does not apply to strategy 'reinit_layers'"):
        LayerReinitConfig(include_bias=True)
    selective = prepare_pretrained(make_model("vit"), SelectiveReinitConfig(utility="magnitude", fraction=0.05))
    assert selective.redrawn["whole"] == [] and "vit.layers.0.mlp.fc1.weight" in selective.redrawn["partial"]
    shrunk = prepare_pretrained(make_model("vit"), ShrinkPerturbConfig())  # edits keep the old values: no re-draw
    assert shrunk.redrawn == {"whole": [], "partial": []}


def test_groups_from_a_loaded_checkpoint_equal_groups_from_the_report(make_model, tmp_path):
    model = make_model("convnext")
    report = prepare_pretrained(model, LayerReinitConfig(num_blocks=2))
    live = plasticity_param_groups(model, lr=1e-4, reinit_lr=1e-3, weight_decay=0.05, report=report)
    model.save_pretrained(tmp_path / "restored")
    loaded = type(model).from_pretrained(tmp_path / "restored")
    from_record = plasticity_param_groups(loaded, lr=1e-4, reinit_lr=1e-3, weight_decay=0.05)
    assert names_by_group(model, live) == names_by_group(loaded, from_record)
    assert [(g["name"], g["lr"], g["weight_decay"]) for g in live] == [
        (g["name"], g["lr"], g["weight_decay"]) for g in from_record
    ]
    # without any record: no re-drawn group
    plain = plasticity_param_groups(make_model("convnext"), lr=1e-4, reinit_lr=1e-3)
    assert not [g for g in plain if g["name"].startswith("redrawn")]


def test_only_a_report_of_the_models_latest_restore_is_accepted(make_model, tmp_path):
    """A report names what to give the re-drawn rate: one of an earlier restore (the model was restored again since)
    or of another model would give it to the wrong parameters, and anything but a report has no such names."""
    model = make_model("vit")
    first = prepare_pretrained(model, LayerReinitConfig(num_blocks=1))
    latest = prepare_pretrained(model, LayerReinitConfig(num_blocks=2), force=True)
    rates = {"lr": 1e-4, "reinit_lr": 1e-2}
    assert names_by_group(model, plasticity_param_groups(model, report=latest, **rates)) == names_by_group(
        model, plasticity_param_groups(model, **rates)
    )
    with pytest.raises(ValueError, match=r"earlier restore \(reinit_layers\).*differ in `config`.*latest restore"):
        plasticity_param_groups(model, report=first, **rates)
    with pytest.raises(ValueError, match=r"earlier restore"):  # through the Trainer's optimizer too
        plasticity_optimizer(model, training_args(tmp_path), reinit_lr=1e-2, report=first)
    with pytest.raises(ValueError, match=r"carries no plasticity record.*`redrawn=report.redrawn`"):
        plasticity_param_groups(make_model("vit"), report=latest, **rates)  # a twin that was never restored
    twin = make_model("vit")
    prepare_pretrained(twin, ShrinkPerturbConfig())
    with pytest.raises(ValueError, match=r"earlier restore .*another model"):
        plasticity_param_groups(twin, report=latest, **rates)
    with pytest.raises(ValueError, match=r"made on another model"):
        plasticity_param_groups(make_model("convnext"), report=latest, **rates)
    for wrong, shown in [("x", "'x'"), ({"whole": ["vit.layers.2"]}, "dict"), (3, "3"), (latest.record(), "Restore")]:
        with pytest.raises(TypeError, match=rf"`report` must be the PlasticityReport .*got {shown}.*`redrawn=`"):
            plasticity_param_groups(model, report=wrong, **rates)


def test_partial_redraws_cannot_get_their_own_learning_rate(make_model):
    model = make_model("resnet")
    prepare_pretrained(model, SelectiveReinitConfig(fraction=0.05, calibration_batches=2), data=batches())
    with pytest.raises(PartialRedrawError, match="one learning rate per tensor"):
        plasticity_param_groups(model, lr=1e-4, reinit_lr=1e-3)
    groups = plasticity_param_groups(model, lr=1e-4)  # no separate rate asked: fine
    assert {g["name"].split(".")[0] for g in groups} == {"backbone", "head"}


def test_layer_decay_scales_the_pretrained_blocks(make_model):
    model = make_model("vit")  # 3 blocks; the last is re-drawn
    prepare_pretrained(model, LayerReinitConfig(num_blocks=1))
    groups = plasticity_param_groups(model, lr=1.0, reinit_lr=10.0, layer_decay=0.5)
    lrs = {}
    for name, names in names_by_group(model, groups).items():
        for param_name in names:
            lrs[param_name] = next(g["lr"] for g in groups if g["name"] == name)
    assert lrs["vit.embeddings.patch_embeddings.projection.weight"] == 0.5**4  # before the first block: d^(N+1)
    assert lrs["vit.layers.0.mlp.fc1.weight"] == 0.5**3  # block i of N: d^(N-i)
    assert lrs["vit.layers.1.mlp.fc1.weight"] == 0.5**2
    assert lrs["vit.layers.2.mlp.fc1.weight"] == 10.0  # re-drawn: its own rate, no decay
    assert lrs["classifier.weight"] == 10.0  # the head: reinit_lr by default


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(lr=float("nan")), "`lr` must be a finite number >= 0"),
        (dict(lr=1e-4, reinit_lr=-1.0), "`reinit_lr` must be a finite number >= 0"),
        (dict(lr=1e-4, layer_decay=1.5), r"`layer_decay` must be a finite number in \(0, 1\]"),
    ],
)
def test_bad_rates_are_refused(make_model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        plasticity_param_groups(make_model("vit"), **kwargs)


# ------------------------------------------------------------------------------------------------- the Trainer
class GroupRates(TrainerCallback):
    """Each group's learning rate after every optimizer step (the rate the next step will use)."""

    def __init__(self) -> None:
        self.rates: dict[int, dict[str, float]] = {}

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        self.rates[state.global_step] = {g["name"]: g["lr"] for g in optimizer.param_groups}


SCHEDULE = dict(max_steps=8, learning_rate=1e-4, warmup_steps=3, lr_scheduler_type="cosine", weight_decay=0.05)


def trainer_run(model, tmp_path, resume=None, stop_at=None, **settings):
    prepare_pretrained(model)  # 1. restore before the optimizer exists
    args = training_args(tmp_path, **SCHEDULE, **settings)
    rates = GroupRates()
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=learnable_dataset(64),
        optimizers=(plasticity_optimizer(model, args, reinit_lr=1e-3, head_lr=2e-3), None),  # 2. its groups
        callbacks=[rates] + ([StopAt(stop_at)] if stop_at else []),
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer, rates


def test_the_trainer_schedules_every_group(make_model, tmp_path):
    model = make_model("convnext")
    trainer, rates = trainer_run(model, tmp_path)
    reference = get_scheduler(
        "cosine", torch.optim.SGD([torch.zeros(1)], lr=1.0), num_warmup_steps=3, num_training_steps=8
    )
    base = {"backbone": 1e-4, "redrawn": 1e-3, "head": 2e-3}
    for step in range(1, 9):
        factor = reference.lr_lambdas[0](step)
        for name, lr in rates.rates[step].items():
            assert lr == pytest.approx(base[name.split(".")[0]] * factor, rel=1e-9, abs=1e-15), (step, name)
    assert {g["name"] for g in trainer.optimizer.param_groups} >= {"backbone", "redrawn", "head"}
    redrawn = names_by_group(model, trainer.optimizer.param_groups)["redrawn"]
    assert redrawn and all(n.startswith("convnext.encoder.stages.1.layers.1.") for n in redrawn)


def test_resume_gives_the_same_groups_and_rates(make_model, tmp_path):
    settings = dict(save_strategy="steps", save_steps=4)
    straight, straight_rates = trainer_run(make_model("convnext"), tmp_path / "straight", **settings)
    trainer_run(make_model("convnext"), tmp_path / "resumed", stop_at=4, **settings)  # "crashes" after step 4
    resumed_model = make_model("convnext")  # a new process: restore again, build the same optimizer, resume
    resumed, resumed_rates = trainer_run(
        resumed_model, tmp_path / "resumed", resume=str(tmp_path / "resumed" / "out" / "checkpoint-4"), **settings
    )
    assert [g["name"] for g in resumed.optimizer.param_groups] == [g["name"] for g in straight.optimizer.param_groups]
    for step in range(5, 9):
        assert resumed_rates.rates[step] == straight_rates.rates[step]
    expected = params(straight.model)
    assert all(torch.equal(p, expected[n]) for n, p in params(resumed_model).items())


def test_blocks_can_get_the_reinit_lr_without_being_redrawn(make_model):
    """The control of the benchmark: the same learning rates as after a restore, no re-draw."""
    model = make_model("vit")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    groups = plasticity_param_groups(model, lr=1e-4, reinit_lr=1e-3, redrawn={"whole": ["vit.layers.2"]})
    boosted = names_by_group(model, groups)
    boosted = boosted.get("redrawn", set()) | boosted.get("redrawn.no_decay", set())
    assert boosted == {n for n in before if n.startswith("vit.layers.2.")}
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    with pytest.raises(ValueError, match="match no module or parameter"):
        plasticity_param_groups(model, lr=1e-4, redrawn={"whole": ["vit.layers.9"]})


def rate_of(model, groups) -> dict[str, float]:
    """Each parameter's learning rate in ``groups``."""
    return {name: group["lr"] for group in groups for name in names_by_group(model, [group])[group["name"]]}


@pytest.mark.parametrize("arch", ["vit", "convnext", "convnextv2", "resnet"])
def test_layer_decay_gives_every_backbone_parameter_the_rate_of_its_depth(make_model, arch):
    """No backbone parameter learns faster than the block after it (ConvNeXt's downsampling layers between stages got
    the full rate), and the rates rise with depth."""
    model = make_model(arch)
    layout = get_layout(model)
    rates = rate_of(model, plasticity_param_groups(model, lr=1.0, layer_decay=0.5))
    backbone = [n for n, _ in model.named_parameters() if not layout.in_head(n)]
    assert [rates[n] for n in backbone] == sorted(rates[n] for n in backbone)  # depth order = rate order
    first_of_block = {layout.block_of(n): n for n in reversed(backbone) if layout.block_of(n) is not None}
    for index, name in enumerate(backbone):
        later = [first_of_block[b] for b in sorted(first_of_block) if backbone.index(first_of_block[b]) > index]
        if layout.block_of(name) is None and later:  # outside the blocks, before a block: at most that block's rate
            assert rates[name] <= rates[later[0]], name
    if arch.startswith("convnext"):  # between stage 0 and 1: with stage 1's first block (timm's stage grouping)
        downsampling = [n for n in backbone if ".downsampling_layer." in n]
        assert downsampling and {rates[n] for n in downsampling} == {rates[first_of_block[1]]}
    n_blocks = len(layout.blocks)
    assert rates[backbone[0]] == 0.5 ** (n_blocks + 1)  # embeddings: one step below the first block
    assert rates[first_of_block[0]] == 0.5**n_blocks


@pytest.mark.parametrize(
    "redrawn, message",
    [
        ({"wholes": ["vit.layers.2"]}, r"`redrawn` has unknown keys \['wholes'\]; accepted: 'whole', 'partial'"),
        ({"whole": ["vit.layer.2", "vit.layers.1"]}, r"`redrawn` names \['vit.layer.2'\], which match no module or "),
        ({"partial": ["vit.layers.0.mlp.fc1.weigth"]}, r"`redrawn` names \['vit.layers.0.mlp.fc1.weigth'\]"),
        ({"whole": "vit.layers.2"}, r"`redrawn\['whole'\]` must be a list of module or parameter names"),
        (["vit.layers.2"], r"`redrawn` must be a dict such as \{'whole': \['vit.layers.2'\]"),
    ],
)
def test_a_typo_in_redrawn_is_refused(make_model, redrawn, message):
    model = make_model("vit")
    with pytest.raises(ValueError, match=message) as error:
        plasticity_param_groups(model, lr=1e-4, reinit_lr=1e-3, redrawn=redrawn)
    if "match no module" in message:  # what is accepted: the model's block names, as examples
        assert "e.g. 'vit.layers.0'" in str(error.value)
