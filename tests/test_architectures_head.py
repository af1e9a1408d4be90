"""The head of a model that the table's head pattern does not name, or that the structural fallback could take for a
layer of a block: found by structure outside the blocks, or refused with an error that says how to name it."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn
from transformers import ViTConfig, ViTForMaskedImageModeling, ViTModel, ViTPreTrainedModel

from hf_plasticity import (
    LayoutError,
    ShrinkPerturbConfig,
    get_layout,
    plasticity_param_groups,
    prepare_pretrained,
    register_architecture,
    registered_architectures,
    restore_record,
)


def vit_config() -> ViTConfig:
    """A tiny ViT's config, one per model (a restore records itself on the config)."""
    return ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        num_labels=3,
    )  # fmt: skip


class CustomHeadViT(ViTPreTrainedModel):
    """A transformers ViT with a head of its own, not named ``classifier`` (the table's ``vit`` rule matches its
    blocks, not its head); ``head_first`` defines the head before the backbone, whose pooler then comes last."""

    def __init__(self, config: ViTConfig, head_first: bool = False, pooler: bool = False) -> None:
        super().__init__(config)
        if head_first:
            self.head = nn.Linear(config.hidden_size, config.num_labels)
        self.vit = ViTModel(config, add_pooling_layer=pooler)
        if not head_first:
            self.head = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.vit(pixel_values).last_hidden_state[:, 0])


class HeadFirstClassifier(nn.Module):
    """A plain module (the structural fallback) that defines its head before its ViT backbone."""

    def __init__(self, pooler: bool = False) -> None:
        super().__init__()
        self.head = nn.Linear(32, 3)
        self.backbone = ViTModel(vit_config(), add_pooling_layer=pooler)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(pixel_values).last_hidden_state[:, 0])


def group_names(model: nn.Module, groups: list[dict]) -> dict[str, set[str]]:
    name_of = {id(p): n for n, p in model.named_parameters()}
    return {g["name"]: {name_of[id(p)] for p in g["params"]} for g in groups}


def head_groups(model: nn.Module, **rates: float) -> tuple[set[str], set[float]]:
    """The parameters of the ``head`` groups and their learning rates."""
    groups = plasticity_param_groups(model, **rates)
    names = group_names(model, groups)
    head = {g["name"] for g in groups if g["name"].startswith("head")}
    return set().union(*(names[g] for g in head)), {g["lr"] for g in groups if g["name"] in head}


# ------------------------------------------------------------------------------------------ a table model's own head
@pytest.mark.parametrize("head_first, pooler", [(False, False), (True, True), (False, True)])
def test_a_custom_head_of_a_table_model_is_the_head(head_first, pooler):
    torch.manual_seed(0)
    layout = get_layout(CustomHeadViT(vit_config(), head_first=head_first, pooler=pooler))
    assert layout.source == "table:vit"
    assert layout.blocks == ["vit.layers.0", "vit.layers.1"] and layout.final_norm == "vit.layernorm"
    assert layout.head == ["head"]  # not the pooler, wherever it is defined


def test_a_custom_head_gets_the_head_lr():
    torch.manual_seed(0)
    model = CustomHeadViT(vit_config())
    prepare_pretrained(model)
    params, rates = head_groups(model, lr=1e-5, reinit_lr=1e-3, head_lr=1e-2)
    assert params == {"head.weight", "head.bias"} and rates == {1e-2}


def test_a_custom_head_is_never_targeted():
    torch.manual_seed(0)
    model = CustomHeadViT(vit_config())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    report = prepare_pretrained(model, ShrinkPerturbConfig(shrink=0.4, perturb=0.1))
    assert torch.equal(model.head.weight, before["head.weight"]) and torch.equal(model.head.bias, before["head.bias"])
    assert not any(t.name.startswith("head.") for t in report.tensors)
    assert not torch.equal(model.vit.layers[0].mlp.fc1.weight, before["vit.layers.0.mlp.fc1.weight"])


@pytest.fixture
def rules(monkeypatch):
    """The table, restored after the test."""
    from hf_plasticity.core import architectures

    monkeypatch.setattr(architectures, "ARCHITECTURES", dict(architectures.ARCHITECTURES))


def test_a_table_model_without_a_findable_head_is_refused_before_anything_changes(rules):
    torch.manual_seed(0)
    model = ViTForMaskedImageModeling(
        vit_config()
    )  # its output layer is a convolution, `decoder.0`: no Linear outside
    before = {n: t.detach().clone() for n, t in model.state_dict().items()}
    message = r"no module matches its head pattern 'classifier'.*register_architecture\('vit'"
    with pytest.raises(LayoutError, match=message):
        get_layout(model)
    with pytest.raises(LayoutError, match=message):
        prepare_pretrained(model, ShrinkPerturbConfig())
    with pytest.raises(LayoutError, match=message):
        plasticity_param_groups(model, lr=1e-4)
    assert all(torch.equal(t, before[n]) for n, t in model.state_dict().items())
    assert restore_record(model) is None
    # the way the message gives to name it
    rule = dataclasses.replace(registered_architectures()["vit"], head=r"classifier|decoder")
    register_architecture("vit", rule, replace=True)
    assert get_layout(model).head == ["decoder"]
    report = prepare_pretrained(model, ShrinkPerturbConfig())
    assert not any(t.name.startswith("decoder.") for t in report.tensors)
    assert all(torch.equal(t, before[n]) for n, t in model.state_dict().items() if n.startswith("decoder."))


# ----------------------------------------------------------------------------------------- the structural fallback
@pytest.mark.parametrize("pooler", [False, True])
def test_the_structural_head_is_outside_the_blocks(pooler):
    torch.manual_seed(0)
    model = HeadFirstClassifier(pooler=pooler)
    layout = get_layout(model)
    assert layout.source == "structural"
    assert layout.head == ["head"]
    assert layout.blocks == ["backbone.layers.0", "backbone.layers.1"]
    params, rates = head_groups(model, lr=1e-5, head_lr=1e-2)
    assert params == {"head.weight", "head.bias"} and rates == {1e-2}


def test_a_backbone_without_a_head_has_no_head():
    """No layer of a block is taken for the head (it would get the head's rate and never be targeted)."""
    layout = get_layout(ViTModel(vit_config(), add_pooling_layer=False))
    assert layout.head == [] and layout.blocks == ["layers.0", "layers.1"]


@pytest.mark.parametrize(
    "model, blocks, head",
    [
        (nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)), ["0", "2"], ["4"]),
        (
            nn.Sequential(
                *(nn.Sequential(nn.Linear(4, 4), nn.ReLU()) for _ in range(2)), nn.Sequential(nn.Linear(4, 2))
            ),
            ["0", "1"],
            ["2.0"],
        ),
        (
            nn.ModuleDict(
                {
                    "features": nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 3)),
                    "classifier": nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)),
                }
            ),
            ["features.0", "features.2", "features.3"],
            ["classifier.2"],
        ),
    ],
    ids=["mlp", "nested-mlp", "vgg"],
)
def test_the_output_layer_of_a_flat_model_stays_the_head(model, blocks, head):
    layout = get_layout(model)
    assert layout.blocks == blocks and layout.head == head
