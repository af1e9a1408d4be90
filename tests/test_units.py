"""The unit map: per-architecture tables, the structural fallback, unit resets that keep the function, and errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hf_plasticity import ReDoConfig, SelectiveReinitConfig, UnitMapError, prepare_pretrained, unit_groups
from hf_plasticity.core.plan import apply_resets, fresh_first
from hf_plasticity.core.units import plan_unit_reset, resolve_unit_groups

from .models import ARCHS, batches, build

EXPECTED = {
    "vit": ("vit.layers.0.mlp.fc1", "vit.layers.0.mlp.fc2", None, 3),
    "convnext": ("convnext.encoder.stages.0.layers.0.pwconv1", "convnext.encoder.stages.0.layers.0.pwconv2", None, 3),
    "convnextv2": (
        "convnextv2.encoder.stages.0.layers.0.pwconv1",
        "convnextv2.encoder.stages.0.layers.0.pwconv2",
        None,
        3,
    ),
    "resnet": (
        "resnet.encoder.stages.0.layers.0.layer.0.convolution",
        "resnet.encoder.stages.0.layers.0.layer.1.convolution",
        "resnet.encoder.stages.0.layers.0.layer.0.normalization",
        3,
    ),
    # structural: conv -> BN -> ReLU -> pool -> conv, and the last conv -> BN -> ReLU -> pool -> flatten -> head
    "cnn": ("features.0.0", "features.1.0", "features.0.1", 3),
}


@pytest.mark.parametrize("arch", ARCHS)
def test_unit_map_per_architecture(arch):
    groups = unit_groups(build(arch))
    producer, consumer, norm, count = EXPECTED[arch]
    assert len(groups) == count
    assert (groups[0].producer, groups[0].consumer, groups[0].norm) == (producer, consumer, norm)
    assert [g.block for g in groups] == sorted(g.block for g in groups)


class TwoLayerMLP(nn.Module):
    """A custom forward (not a Sequential): found through the torch.fx trace."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(12, 16)
        self.fc2 = nn.Linear(16, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x.flatten(1))))))


class Residual(nn.Module):
    """conv2 reads conv1 through a ReLU, but conv1's output also reaches the sum: not a unit pair."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x)
        h = h + self.conv2(torch.relu(h))
        return self.head(h.mean((2, 3)))


class Untraceable(nn.Module):
    """Data-dependent control flow defeats torch.fx: the nn.Sequential chains are used instead."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.GELU(), nn.Conv2d(6, 5, 1))
        self.head = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            x = x * 1.0
        return self.head(self.body(x).mean((2, 3)))


def test_structural_fallback_fx_and_sequential():
    groups = unit_groups(TwoLayerMLP())
    # fc2 feeds the head: its units are reset like any other (the head's input columns zeroed); the head has none
    assert [(g.producer, g.consumer) for g in groups] == [("fc1", "fc2"), ("fc2", "head")]
    assert unit_groups(Residual()) == []
    groups = unit_groups(Untraceable())
    assert [(g.producer, g.consumer, g.norm) for g in groups] == [("body.0", "body.3", "body.1")]


class UntraceableFlatten(nn.Module):
    """conv -> BN -> ReLU -> Flatten -> Linear inside an nn.Sequential, behind an untraceable forward."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 4, 3, stride=2), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 3 * 3, 5)
        )
        self.head = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            x = x * 1.0
        return self.head(torch.relu(self.body(x)))


def written(reset) -> torch.Tensor:
    """The entries of ``reset.tensor`` that ``reset`` writes, as a mask."""
    mask = torch.zeros(reset.tensor.shape, dtype=torch.bool)
    mask.view(-1)[reset.index] = True
    return mask


def columns(rows: int, width: int, spans: list[tuple[int, int]]) -> torch.Tensor:
    """A (rows, width) mask of the column ranges ``spans``."""
    mask = torch.zeros(rows, width, dtype=torch.bool)
    for start, end in spans:
        mask[:, start:end] = True
    return mask


def test_conv_flatten_linear_units_are_blocks_of_columns():
    """Through a flatten, channel c of the conv is the consumer's columns c*H*W ... (c+1)*H*W - 1 (channel-major)."""
    model = UntraceableFlatten()
    (group,) = unit_groups(model)
    assert (group.producer, group.consumer, group.norm, group.span) == ("body.0", "body.4", "body.1", 9)
    plan = {r.name: r for r in plan_unit_reset(model, group, torch.tensor([1, 3]), seed=0)}
    assert torch.equal(written(plan["body.4.weight"]), columns(5, 36, [(9, 18), (27, 36)]))
    assert plan["body.1.running_var"].index.tolist() == [1, 3]
    # The reset keeps the function: the zeroed blocks are exactly what the re-drawn channels feed.
    x = torch.randn(2, 3, 8, 8)
    model.eval()
    with torch.no_grad():
        model.body[4].weight[:, 9:18] = 0
        model.body[4].weight[:, 27:36] = 0
        before = model(x)
        apply_resets(fresh_first(list(plan.values())))
        assert torch.allclose(model(x), before, atol=1e-6, rtol=0)
    # A flatten that is not flatten(x, 1), or a Linear read without one, is no unit pair.
    for model in (
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(0), nn.Linear(4, 2), nn.Linear(2, 2)),
        nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Linear(4, 4), nn.Linear(4, 2)),
    ):
        assert [g.producer for g in unit_groups(model)] == ["2"]  # Linear -> head only


@pytest.mark.parametrize("arch", ["vit", "convnext", "resnet", "cnn"])
def test_unit_reset_keeps_the_function_when_outgoing_columns_were_zero(arch):
    """Incoming weights of a unit whose outgoing weights are zero do not matter: re-drawing them changes nothing."""
    torch.manual_seed(0)
    model = build(arch).eval()
    pixels = batches(1)[0]["pixel_values"]
    units = torch.tensor([0, 2, 5])
    with torch.no_grad():
        for group in unit_groups(model):
            model.get_submodule(group.consumer).weight[:, units] = 0
        logits = model(pixels)
        logits = getattr(logits, "logits", logits)
        plan = []
        for group in unit_groups(model):
            plan.extend(plan_unit_reset(model, group, units, seed=1))
        apply_resets(fresh_first(plan))
        after = model(pixels)
        after = getattr(after, "logits", after)
    assert any(r.fresh for r in plan)
    assert torch.allclose(after, logits, atol=1e-5, rtol=0)


def test_plan_unit_reset_touches_rows_columns_and_norm_channels():
    torch.manual_seed(0)
    model = build("resnet")
    group = unit_groups(model)[0]
    plan = {r.name: r for r in plan_unit_reset(model, group, torch.tensor([1, 3]), seed=0)}
    conv = model.get_submodule(group.producer).weight
    per_row = conv[0].numel()
    assert plan[f"{group.producer}.weight"].index.tolist() == list(range(per_row, 2 * per_row)) + list(
        range(3 * per_row, 4 * per_row)
    )
    for attr in ("weight", "bias", "running_mean", "running_var"):
        assert plan[f"{group.norm}.{attr}"].index.tolist() == [1, 3]
    zero = plan[f"{group.consumer}.weight"]
    assert not zero.fresh and torch.all(zero.values == 0)
    consumer = model.get_submodule(group.consumer).weight
    mask = torch.zeros_like(consumer, dtype=torch.bool)
    mask.view(-1)[zero.index] = True
    expected = torch.zeros_like(mask)
    expected[:, [1, 3]] = True
    assert torch.equal(mask, expected)


def test_unmappable_layers_are_named():
    model = build("vit")
    with pytest.raises(UnitMapError, match=r"layer 'vit.layers.0.attention.q_proj' \(Linear\)"):
        resolve_unit_groups(model, ReDoConfig(target_modules=["layers.0.attention.q_proj"]))
    with pytest.raises(UnitMapError, match=r"first candidate: layer 'conv1' \(Conv2d\)"):
        resolve_unit_groups(Residual(), SelectiveReinitConfig(granularity="unit"))
    groups = resolve_unit_groups(model, ReDoConfig(last_k_blocks=1))
    assert [g.producer for g in groups] == ["vit.layers.2.mlp.fc1"]


class LopConvNet(nn.Module):
    """shibhansh/loss-of-plasticity's ``ConvNet`` (``lop/nets/conv_net.py``), scaled down: conv -> ReLU -> max-pool
    twice, the modules also kept in a ``layers`` ModuleList, the last pool's output flattened by ``flatten`` (the
    original's ``x.view(-1, n)``, or the other spellings of hand-written CNNs), then fc1 -> ReLU -> fc2 (the head)."""

    def __init__(self, flatten) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 6, 3)
        self.pool = nn.MaxPool2d(2, 2)
        self.fc1, self.fc2 = nn.Linear(6 * 2 * 2, 8), nn.Linear(8, 3)
        self.layers = nn.ModuleList([self.conv1, nn.ReLU(), self.conv2, nn.ReLU(), self.fc1, nn.ReLU(), self.fc2])
        self.flatten = flatten

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.layers[1](self.layers[0](x)))
        x = self.pool(self.layers[3](self.layers[2](x)))
        return self.layers[6](self.layers[5](self.layers[4](self.flatten(x))))


FLATTENS = {
    "view(-1, n)": lambda x: x.view(-1, 24),  # the original's spelling
    "view(x.size(0), -1)": lambda x: x.view(x.size(0), -1),
    "reshape(x.shape[0], -1)": lambda x: x.reshape(x.shape[0], -1),
    "torch.reshape(x, (-1, n))": lambda x: torch.reshape(x, (-1, 24)),
    "view then flatten": lambda x: torch.flatten(x.view(x.size(0), -1), 1),
}


@pytest.mark.parametrize("spelling", list(FLATTENS))
def test_a_conv_flattened_by_view_has_units_in_redo_and_cbp(spelling):
    """Before: the last conv had no units (the trace saw only torch.flatten / nn.Flatten) and ReDo and continual
    backprop skipped it without a word. Its channel c is fc1's columns 4c ... 4c + 3 (2 x 2 positions)."""
    from hf_plasticity import ContinualBackpropConfig
    from hf_plasticity.strategies import get_strategy

    model = LopConvNet(FLATTENS[spelling]).eval()
    expected = [("conv1", "conv2", 1), ("conv2", "fc1", 4), ("fc1", "fc2", 1)]
    assert [(g.producer, g.consumer, g.span) for g in unit_groups(model)] == expected
    assert [(g.producer, g.consumer, g.span) for g in resolve_unit_groups(model, ReDoConfig())] == expected
    cbp = get_strategy(ContinualBackpropConfig())
    cbp.attach(model)
    cbp.detach()
    assert [(g.producer, g.consumer, g.span) for g in cbp.groups] == expected
    group = unit_groups(model)[1]
    plan = {r.name: r for r in plan_unit_reset(model, group, torch.tensor([0, 5]), seed=0)}
    expected_columns = columns(8, 24, [(0, 4), (20, 24)])
    assert torch.equal(written(plan["fc1.weight"]), expected_columns)
    x = torch.randn(2, 3, 14, 14)
    with torch.no_grad():
        model.fc1.weight[expected_columns] = 0
        before = model(x)
        apply_resets(fresh_first(list(plan.values())))
        assert torch.allclose(model(x), before, atol=1e-6, rtol=0)


class SamePadConv2d(nn.Conv2d):
    """A Conv2d subclass of the kind model packages define (TensorFlow's "same" padding, then the convolution)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.kernel_size[0] // 2
        return F.conv2d(F.pad(x, (pad,) * 4), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class DepthwiseSeparable(nn.Module):
    """A MobileNet / EfficientNet-Lite block: 1x1 expand -> BN -> ReLU6 -> depthwise 3x3 (a same-padding subclass)
    -> BN -> ReLU6 -> 1x1 project -> BN, then pooling and the head."""

    def __init__(self) -> None:
        super().__init__()
        self.expand, self.bn0 = nn.Conv2d(3, 8, 1, bias=False), nn.BatchNorm2d(8)
        self.depthwise, self.bn1 = SamePadConv2d(8, 8, 3, groups=8, bias=False), nn.BatchNorm2d(8)
        self.project, self.bn2 = SamePadConv2d(8, 6, 1, bias=False), nn.BatchNorm2d(6)
        self.act = nn.ReLU6()
        self.pool, self.head = nn.AdaptiveAvgPool2d(1), nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.depthwise(self.act(self.bn0(self.expand(x))))))
        return self.head(self.pool(self.bn2(self.project(x))).flatten(1))


def test_a_conv_subclass_is_a_layer_and_a_depthwise_conv_has_units():
    """The subclass's layer is its functional call on its own weight (before, the trace saw no layer there), and a
    grouped producer has units (before, refused): a depthwise channel's incoming weights are its one filter, its
    outgoing weights the project conv's column."""
    model = DepthwiseSeparable().eval()
    groups = [(g.producer, g.consumer, g.norm, g.span) for g in unit_groups(model)]
    # expand -> depthwise is no pair: a depthwise consumer reads channel c with filter c only, not a column
    assert groups == [("depthwise", "project", "bn1", 1), ("project", "head", "bn2", 1)]
    (group,) = [g for g in unit_groups(model) if g.producer == "depthwise"]
    old_filter = model.depthwise.weight[2].detach().clone()
    plan = {r.name: r for r in plan_unit_reset(model, group, torch.tensor([2, 5]), seed=0)}
    assert torch.equal(
        written(plan["depthwise.weight"]).any(dim=(1, 2, 3)), torch.isin(torch.arange(8), torch.tensor([2, 5]))
    )
    assert torch.equal(
        written(plan["project.weight"]).any(dim=(0, 2, 3)), torch.isin(torch.arange(8), torch.tensor([2, 5]))
    )
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():  # the re-drawn channels' outgoing weights were zero: the function is unchanged
        model.project.weight[:, [2, 5]] = 0
        before = model(x)
        apply_resets(fresh_first(list(plan.values())))
        assert torch.allclose(model(x), before, atol=1e-6, rtol=0)
    assert not torch.equal(model.depthwise.weight[2], old_filter)


class StandardizedConv2d(nn.Conv2d):
    """Weight standardization (as in BiT's ResNets): the forward convolves with a function of the weight, so a zeroed
    column is no longer zero: not a layer whose units the map may reset."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self.weight.mean(dim=(1, 2, 3), keepdim=True), self.weight.std(dim=(1, 2, 3), keepdim=True)
        return F.conv2d(x, (self.weight - mean) / (std + 1e-5), self.bias, self.stride, self.padding)


class ConvWithNorm(nn.Conv2d):
    """A Conv2d subclass that holds its own BatchNorm and applies it in its forward."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.bn = nn.BatchNorm2d(self.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups))


@pytest.mark.parametrize("groups", [1, 2])
def test_a_subclass_is_its_layer_only_where_its_forward_is_that_layer(groups):
    grouped = nn.Sequential(ConvWithNorm(4, 6, 3, groups=groups), nn.ReLU(), nn.Conv2d(6, 5, 1))
    standardized = nn.Sequential(StandardizedConv2d(4, 6, 3), nn.ReLU(), nn.Conv2d(6, 5, 1))

    class Net(nn.Module):
        def __init__(self, body: nn.Module) -> None:
            super().__init__()
            self.body, self.head = body, nn.Linear(5, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # not an nn.Sequential: the trace decides
            return self.head(self.body(x).mean(dim=(2, 3)))

    model = Net(grouped).eval()
    assert [(g.producer, g.consumer, g.norm) for g in unit_groups(model)] == [("body.0", "body.2", "body.0.bn")]
    (group,) = unit_groups(model)
    old = model.body[0].weight.detach().clone()
    plan = plan_unit_reset(model, group, torch.tensor([1, 4]), seed=0)
    x = torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        model.body[2].weight[:, [1, 4]] = 0
        before = model(x)
        apply_resets(fresh_first(plan))
        assert torch.allclose(model(x), before, atol=1e-6, rtol=0)
    changed = (model.body[0].weight.detach() != old).flatten(1).any(1)
    assert changed.tolist() == [c in (1, 4) for c in range(6)]  # each row has 4 // groups input channels
    assert {r.name for r in plan} >= {"body.0.bn.weight", "body.0.bn.running_var"}
    assert unit_groups(Net(standardized)) == []


def test_redo_recycles_a_dead_depthwise_channel():
    torch.manual_seed(0)
    model = DepthwiseSeparable()
    with torch.no_grad():
        model.bn1.weight[4], model.bn1.bias[4] = 0.0, -1.0  # always below 0 before the ReLU6: dead
    old = model.depthwise.weight.detach().clone()
    data = [{"pixel_values": torch.randn(4, 3, 8, 8), "labels": torch.tensor([0, 1, 2, 0])}]
    report = prepare_pretrained(model, ReDoConfig(tau=0.0, target_modules=["depthwise"]), data=data)
    changed = (model.depthwise.weight.detach() != old).any(dim=(1, 2, 3))
    assert changed.tolist() == [c == 4 for c in range(8)]
    assert torch.all(model.project.weight[:, 4] == 0) and model.bn1.weight[4] == 1 and model.bn1.bias[4] == 0
    assert {t.name: t.reinitialized for t in report.tensors}["depthwise.weight"] == 9


class Chain(nn.Module):
    """``layers`` run in order by a forward the trace follows (not an ``nn.Sequential``), then the head."""

    def __init__(self, *layers: nn.Module, spatial: bool = True) -> None:
        super().__init__()
        self.layers, self.head, self.spatial = nn.ModuleList(layers), nn.Linear(5, 3), spatial

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.head(x.flatten(2).mean(-1) if self.spatial else x)


class ParentCalls(nn.Module):
    """A parent that calls its children's weights itself: the children's hooks never see an input."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.head = nn.Conv2d(4, 6, 3), nn.Conv2d(6, 5, 1), nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(torch.relu(F.conv2d(x, self.c1.weight, self.c1.bias)), self.c2.weight, self.c2.bias)
        return self.head(x.mean(dim=(2, 3)))


class ReluInside(nn.Conv2d):
    """A consumer whose forward applies an activation before its convolution (its input hook reads before it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.relu(x), self.weight, self.bias)


class Untraceable2(nn.Module):
    """An ``nn.Sequential`` behind a forward that does not trace: the chain fallback decides."""

    def __init__(self, body: nn.Sequential) -> None:
        super().__init__()
        self.body, self.head = body, nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            x = x * 1.0
        return self.head(self.body(x).mean(dim=(2, 3)))


def tied() -> nn.Module:
    model = Chain(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 5), spatial=False)
    model.layers[2].weight = model.layers[0].weight  # tied: a unit's row is another layer's row too
    return model


def weight_normed() -> nn.Module:
    model = Chain(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5), spatial=False)
    torch.nn.utils.parametrizations.weight_norm(model.layers[0])  # its weight is computed, not a parameter
    return model


NOT_UNITS = {
    "a parent's own call of a child's weight": (ParentCalls, 2),
    "an activation inside the consumer's forward": (lambda: Chain(nn.Conv2d(4, 6, 3), ReluInside(6, 5, 1)), 2),
    "a weight-standardized consumer": (lambda: Chain(nn.Conv2d(4, 6, 3), nn.ReLU(), StandardizedConv2d(6, 5, 1)), 2),
    "a chain's subclass with its own forward": (
        lambda: Untraceable2(nn.Sequential(nn.Conv2d(4, 6, 3), nn.ReLU(), StandardizedConv2d(6, 5, 1))),
        2,
    ),
    "a padding of the channels (ZeroPad2d on a Conv1d)": (
        lambda: Chain(nn.Conv1d(4, 6, 3), nn.ZeroPad2d(1), nn.Conv1d(8, 5, 1)),
        1,
    ),
    "tied weights": (tied, 0),
    "a parametrized weight": (weight_normed, 0),
}


@pytest.mark.parametrize("case", list(NOT_UNITS))
def test_layers_whose_units_cannot_be_reset_alone_have_none(case):
    factory, spatial = NOT_UNITS[case]
    model = factory()
    shape = (2, 4, *(8,) * spatial) if spatial else (2, 4)
    model(torch.randn(shape))  # the model runs
    # the pair at stake is refused; the hidden layer that feeds the head may keep its units
    assert [g.consumer for g in unit_groups(model) if g.consumer != "head"] == []


@pytest.mark.parametrize(
    "padding, spatial", [(nn.ZeroPad1d(1), 1), (nn.ReflectionPad2d(1), 2), (nn.ConstantPad2d((1, 0, 2, 0), 3.0), 2)]
)
def test_padding_of_the_spatial_dimensions_is_channel_wise(padding, spatial):
    conv = nn.Conv1d if spatial == 1 else nn.Conv2d
    model = Chain(conv(4, 6, 3), nn.ReLU(), padding, conv(6, 5, 1)).eval()
    (group, *_) = unit_groups(model)
    assert (group.producer, group.consumer) == ("layers.0", "layers.3")
    x = torch.randn(2, 4, *(8,) * spatial)
    plan = plan_unit_reset(model, group, torch.tensor([1, 4]), seed=0)
    with torch.no_grad():
        model.layers[3].weight[:, [1, 4]] = 0
        before = model(x)
        apply_resets(fresh_first(plan))
        assert torch.allclose(model(x), before, atol=1e-6, rtol=0)
