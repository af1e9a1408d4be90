"""Layouts: the per-model_type table and the structural fallback."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from hf_plasticity import (
    ArchitectureRule,
    LayerReinitConfig,
    ReDoConfig,
    ShrinkPerturbConfig,
    UnitPair,
    get_layout,
    prepare_pretrained,
    register_architecture,
    registered_architectures,
    unit_groups,
)

from .models import build, tiny_vision_transformer


@pytest.mark.parametrize(
    "arch, blocks, head, final_norm",
    [
        ("vit", ["vit.layers.0", "vit.layers.1", "vit.layers.2"], ["classifier"], "vit.layernorm"),
        (
            "convnext",
            [
                "convnext.encoder.stages.0.layers.0",
                "convnext.encoder.stages.1.layers.0",
                "convnext.encoder.stages.1.layers.1",
            ],
            ["classifier"],
            "convnext.layernorm",
        ),
        (
            "convnextv2",
            [
                "convnextv2.encoder.stages.0.layers.0",
                "convnextv2.encoder.stages.1.layers.0",
                "convnextv2.encoder.stages.1.layers.1",
            ],
            ["classifier"],
            "convnextv2.layernorm",
        ),
        (
            "resnet",
            [
                "resnet.encoder.stages.0.layers.0",
                "resnet.encoder.stages.1.layers.0",
                "resnet.encoder.stages.1.layers.1",
            ],
            ["classifier"],
            None,
        ),
        ("cnn", ["features.0", "features.1", "features.2"], ["head"], None),
    ],
)
def test_layouts(arch, blocks, head, final_norm):
    layout = get_layout(build(arch))
    assert layout.blocks == blocks
    assert layout.head == head
    assert layout.final_norm == final_norm
    assert layout.source == ("structural" if arch == "cnn" else f"table:{arch}")


def test_structural_fallback_on_a_flat_sequential():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Flatten(), nn.Linear(4, 2))
    layout = get_layout(model)
    assert layout.head == ["4"]
    assert layout.blocks == ["0", "2"]
    assert layout.block_of("2") == 1 and layout.block_of("4") is None


def test_efficientnet_lite_structural_layout():
    efficientnet = pytest.importorskip("efficientnet_lite_pytorch")
    model = efficientnet.EfficientNet.from_name("efficientnet-lite0")
    layout = get_layout(model)
    assert layout.source == "structural"
    assert layout.head == ["_fc"]
    assert len(layout.blocks) == 16 and layout.blocks[0] == "_blocks.0"


# ---------------------------------------------------------------------------------------- one rule per architecture
CONVNEXT = "convnext.encoder.stages.0.layers.0"
CONVNEXT_V2 = "convnextv2.encoder.stages.0.layers.0"


@pytest.mark.parametrize(
    "arch, family, pairs",
    [
        ("vit", "transformer", [("vit.layers.0.mlp.fc1", "vit.layers.0.mlp.fc2", None)]),
        ("convnext", "cnn", [(f"{CONVNEXT}.pwconv1", f"{CONVNEXT}.pwconv2", None)]),
        ("convnextv2", "cnn", [(f"{CONVNEXT_V2}.pwconv1", f"{CONVNEXT_V2}.pwconv2", None)]),
        (
            "resnet",
            "cnn",
            [
                (
                    "resnet.encoder.stages.0.layers.0.layer.0.convolution",
                    "resnet.encoder.stages.0.layers.0.layer.1.convolution",
                    "resnet.encoder.stages.0.layers.0.layer.0.normalization",
                )
            ],
        ),
        ("cnn", "cnn", []),  # the structural fallback: no unit pairs between its blocks (max-pooling ends them)
    ],
)  # fmt: skip
def test_the_rule_holds_the_family_and_the_unit_pairs(arch, family, pairs):
    model = build(arch)
    layout = get_layout(model)
    assert layout.family == family
    groups = [(g.producer, g.consumer, g.norm) for g in unit_groups(model)]
    assert groups[: len(pairs)] == pairs


def test_every_table_entry_has_a_test_row():
    """Adding an architecture is one entry in ARCHITECTURES plus its row in `test_layouts`."""
    rows = {row[0] for row in test_layouts.pytestmark[0].args[1]}
    assert set(registered_architectures()) <= rows


def test_an_mlp_is_the_mlp_family():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    assert get_layout(model).family == "mlp"


class Toy(nn.Module):
    """A model of a new `model_type`: two residual MLP blocks and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.config = SimpleNamespace(model_type="toy_for_tests")
        self.backbone = nn.ModuleList(
            nn.ModuleDict({"up": nn.Linear(4, 8), "down": nn.Linear(8, 4)}) for _ in range(2)
        )
        self.norm = nn.LayerNorm(4)
        self.classifier = nn.Linear(4, 2)

    def forward(self, pixel_values):
        x = pixel_values.flatten(1)[:, :4]
        for block in self.backbone:
            x = x + block["down"](torch.relu(block["up"](x)))
        return self.classifier(self.norm(x))


TOY_RULE = ArchitectureRule(
    blocks=r"backbone\.\d+",
    head=r"classifier",
    final_norm=r"norm",
    unit_pairs=(UnitPair(r"(backbone\.\d+)\.up", r"\1.down"),),
    family="mlp",
)


@pytest.fixture
def toy_registered(monkeypatch):
    from hf_plasticity.core import architectures

    monkeypatch.setattr(architectures, "ARCHITECTURES", dict(architectures.ARCHITECTURES))
    register_architecture("toy_for_tests", TOY_RULE)


def test_register_architecture_drives_layout_units_and_strategies(toy_registered):
    model = Toy()
    layout = get_layout(model)
    assert layout.source == "table:toy_for_tests" and layout.family == "mlp"
    assert layout.blocks == ["backbone.0", "backbone.1"] and layout.final_norm == "norm"
    assert [(g.producer, g.consumer) for g in unit_groups(model)] == [
        ("backbone.0.up", "backbone.0.down"),
        ("backbone.1.up", "backbone.1.down"),
    ]
    report = prepare_pretrained(model, LayerReinitConfig(num_blocks=1))
    assert {t.name.rsplit(".", 2)[0] for t in report.tensors} == {"backbone.1", "norm"}
    data = [{"pixel_values": torch.randn(8, 4, 1, 1), "labels": torch.randint(0, 2, (8,))}]
    redo = prepare_pretrained(Toy(), ReDoConfig(tau=0.9), data=data)
    redrawn, edited = {t.name for t in redo.tensors if t.reinitialized}, {t.name for t in redo.tensors if t.edited}
    assert redrawn <= {"backbone.0.up.weight", "backbone.0.up.bias", "backbone.1.up.weight", "backbone.1.up.bias"}
    assert edited <= {"backbone.0.down.weight", "backbone.1.down.weight"}  # the reset units' outgoing columns


def test_register_architecture_refuses_a_second_rule_and_bad_patterns(toy_registered):
    other = ArchitectureRule(blocks=r"layers\.\d+", head=r"head")
    with pytest.raises(ValueError, match="already registered"):
        register_architecture("toy_for_tests", other)
    register_architecture("toy_for_tests", other, replace=True)
    assert get_layout(Toy()).source == "structural"  # the new rule matches no block of Toy
    with pytest.raises(ValueError, match="not a valid regular expression"):
        register_architecture("broken_for_tests", ArchitectureRule(blocks=r"layers\.(", head=r"head"))


class TwoLayerHead(nn.Module):
    """A plain module (no transformers config) whose head has two Linear layers: the fallback takes the last alone."""

    def __init__(self) -> None:
        super().__init__()
        self.stages = nn.Sequential(*[nn.Sequential(nn.Linear(8, 8), nn.ReLU()) for _ in range(3)])
        self.head = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))

    def forward(self, pixel_values):
        return self.head(self.stages(pixel_values.flatten(1)[:, :8]))


class TwoLayerHeadVariant(TwoLayerHead):
    pass


HEAD_RULE = ArchitectureRule(blocks=r"stages\.\d+", head=r"head", family="mlp")


def test_a_plain_module_names_its_head_with_a_rule_for_its_class(monkeypatch):
    from hf_plasticity.core import architectures

    monkeypatch.setattr(architectures, "ARCHITECTURES", dict(architectures.ARCHITECTURES))
    assert get_layout(TwoLayerHead()).head == ["head.2"]  # the fallback: head.0 would count as backbone
    register_architecture(TwoLayerHead, HEAD_RULE)
    layout = get_layout(TwoLayerHeadVariant())  # a subclass takes its nearest registered class's rule
    assert layout.head == ["head"] and layout.source == "table:TwoLayerHead" and layout.family == "mlp"
    assert layout.blocks == ["stages.0", "stages.1", "stages.2"]
    model = TwoLayerHead()
    head = {name: p.detach().clone() for name, p in model.head.named_parameters()}
    report = prepare_pretrained(model, ShrinkPerturbConfig(shrink=0.5, perturb=0.0))
    assert report.total_reinitialized > 0
    assert all(torch.equal(p, head[name]) for name, p in model.head.named_parameters())  # both head layers kept
    with pytest.raises(ValueError, match="already registered"):
        register_architecture(TwoLayerHead, ArchitectureRule(blocks=r"stages\.\d+", head=r"head\.2"))
    with_type = TwoLayerHead()
    with_type.config = SimpleNamespace(model_type="vit")  # the vit rule matches no block: the class's rule applies
    assert get_layout(with_type).source == "table:TwoLayerHead"
    register_architecture("two_layer_head", ArchitectureRule(blocks=r"stages\.\d+", head=r"head\.2"))
    with_type.config = SimpleNamespace(model_type="two_layer_head")  # a matching model_type rule comes first
    assert get_layout(with_type).head == ["head.2"]


@pytest.mark.parametrize("key", [nn.Linear(2, 2), int, "", 3, None])
def test_a_rule_is_registered_for_a_model_type_or_a_module_class_only(key):
    with pytest.raises(ValueError, match="non-empty string .* or a torch.nn.Module subclass"):
        register_architecture(key, HEAD_RULE)


@pytest.mark.parametrize("model_type", ["deit", "beit", "dinov2", "swin"])
def test_a_vision_transformer_outside_the_table_is_the_transformer_family(model_type):
    layout = get_layout(tiny_vision_transformer(model_type))
    assert layout.source == "structural" and layout.family == "transformer"


def test_channel_attention_and_a_fused_projection_are_told_apart():
    class SqueezeExcitation(nn.Module):  # a CNN's channel attention: two Linears, no query/key/value
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(8, 2), nn.Linear(2, 8)

    class FusedAttention(nn.Module):  # timm's layout: one qkv projection
        def __init__(self) -> None:
            super().__init__()
            self.qkv, self.proj = nn.Linear(8, 24), nn.Linear(8, 8)

    cnn = nn.Sequential(nn.Conv2d(3, 8, 3), SqueezeExcitation(), nn.Conv2d(8, 8, 3), nn.Linear(8, 3))
    assert get_layout(cnn).family == "cnn"
    patches = nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), FusedAttention(), FusedAttention(), nn.Linear(8, 3))
    assert get_layout(patches).family == "transformer"
    torch_attention = nn.Sequential(nn.Conv2d(3, 8, 4), nn.MultiheadAttention(8, 2), nn.Linear(8, 3))
    assert get_layout(torch_attention).family == "transformer"


class ModuleWrapper(nn.Module):
    """A wrapper that keeps the model as ``.module`` and has no ``config``, as DistributedDataParallel, DeepSpeed's
    engine and Accelerate's wrappers do (a real DistributedDataParallel needs a process group)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


#: Wrappers that hold the model: ``torch.compile`` builds its `OptimizedModule` at once and compiles on the first call.
WRAPPERS = {"DataParallel": nn.DataParallel, "module": ModuleWrapper, "compile": torch.compile}


@pytest.mark.parametrize("wrapper", list(WRAPPERS))
@pytest.mark.parametrize("arch", ["vit", "resnet"])
def test_a_wrapped_model_has_the_layout_and_units_of_the_model_inside(arch, wrapper):
    """A wrapper once got a layout of its own: the structural fallback, every name prefixed with ``module.`` or
    ``_orig_mod.``, no rule (and so no unit groups for ReDo or continual backprop)."""
    model = build(arch)
    wrapped = WRAPPERS[wrapper](model)
    layout = get_layout(wrapped)
    assert layout == get_layout(model) and layout.source == f"table:{arch}"
    modules = dict(model.named_modules())
    assert all(name in modules for name in [*layout.blocks, *layout.head])  # names of the model inside
    expected = unit_groups(model)
    assert expected and [(g.producer, g.consumer) for g in unit_groups(wrapped)] == [
        (g.producer, g.consumer) for g in expected
    ]


def _not_compiled_twice(names: list[str]) -> bool:
    return not any(a == b == "compile" for a, b in zip(names, names[1:]))  # torch.compile(compiled) is no Module


@settings(max_examples=15, deadline=None)
@given(st.lists(st.sampled_from(sorted(WRAPPERS)), max_size=3).filter(_not_compiled_twice))
def test_any_nesting_of_wrappers_keeps_the_layout_of_the_model_inside(wrappers):
    model = build("convnext")
    wrapped = model
    for name in wrappers:
        wrapped = WRAPPERS[name](wrapped)
    assert get_layout(wrapped) == get_layout(model)


def test_the_card_of_a_wrapped_model_names_the_blocks_of_the_model_inside():
    from hf_plasticity.integrations.modelcard import build_model_card

    model = build("vit")
    report = prepare_pretrained(model, LayerReinitConfig(num_blocks=1))
    assert build_model_card(report, model=ModuleWrapper(model)).text == build_model_card(report, model=model).text


class TrunkAsModule(nn.Module):
    """A user's plain torch model that names its trunk ``module``, beside a head of its own: a model, not a wrapper."""

    def __init__(self) -> None:
        super().__init__()
        self.module = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16))
        self.classifier = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.module(x))


def test_a_model_whose_trunk_is_named_module_is_not_taken_for_a_wrapper():
    """Old code: any module without ``config`` that had a ``.module`` child was unwrapped, so the layout lost the real
    classifier (a hidden layer became the head) and `prepare_pretrained` worked inside the trunk."""
    model = TrunkAsModule()
    layout = get_layout(model)
    assert layout.head == ["classifier"] and all(block.startswith("module.") for block in layout.blocks)
    assert get_layout(ModuleWrapper(model)) == layout  # wrapped in an engine's way, the same model
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    report = prepare_pretrained(model, LayerReinitConfig(num_blocks=1))
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed == {"module.4.weight", "module.4.bias"} and report.total_reinitialized > 0  # the top block
