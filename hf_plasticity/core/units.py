"""The unit map: which rows of one layer and which columns of the next form one hidden unit.

A *unit* is one output feature (Linear) or output channel (Conv) of a *producer* layer whose activation is read by
exactly one *consumer* layer. Resetting a unit re-draws its incoming weights (producer row and bias, plus the
channel of a BatchNorm in between) and zeroes its outgoing weights (consumer column), so the network's function is
unchanged at the moment of the reset (ReDo, Continual Backprop, unit-granular selective re-initialization).

Per architecture, the pairs are the ``unit_pairs`` of its [`ArchitectureRule`]:

- ViT: ``mlp.fc1`` rows / ``mlp.fc2`` columns;
- ConvNeXt, ConvNeXtV2: ``pwconv1`` rows / ``pwconv2`` columns (ConvNeXtV2's GRN normalizes over the hidden units,
  so there a reset preserves the function only approximately);
- ResNet: the output channels of every conv that feeds the next conv of its block (conv + BatchNorm -> conv).

Any other model goes through a structural fallback: a ``torch.fx`` trace (else the chains of ``nn.Sequential``
containers) finds Linear -> Linear, Conv -> (BatchNorm) -> Conv and Conv -> (BatchNorm) -> flatten -> Linear pairs
joined only by channel-wise operations (activations, dropout, pooling, padding of the spatial dimensions). A layer of a
model package's subclass (a ``Conv2d`` that pads first) is recognized in the trace by its functional call on its own
weight, made in its own forward; in ``nn.Sequential`` chains only modules with their class's own forward count. Tied
or parametrized weights have no units. A grouped (depthwise) Conv may produce units but not consume them (it reads
channel c with the filters of one group only). The flatten is ``torch.flatten(x, 1)``,
``nn.Flatten()`` or a 2-D ``x.view(x.size(0), -1)`` / ``x.reshape(-1, n)``. As in the reference implementations (ReDo,
continual backprop), every hidden layer has units, the one that feeds the head included: the head is a consumer (its
input columns of a reset unit are zeroed) but never a producer. Through a flatten, one channel of a Conv is a block
of ``span`` consecutive input columns of the Linear (channel-major, as ``flatten(1)`` lays out (C, H, W)).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from .architectures import LINEAR_OR_CONV, ModelLayout, get_layout
from .config import PlasticityConfig
from .init import derive_seed, fresh_tensors
from .norms import BATCHNORM_CLASSES, is_batchnorm
from .plan import TensorReset
from .targeting import _module_filter, check_scope, excluded, matches, raise_empty_scope
from .wrappers import unwrap_model

CHANNELWISE_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.LeakyReLU,
    nn.ELU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Mish,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
)
CHANNELWISE_FUNCTIONS = {
    F.relu,
    F.relu6,
    F.gelu,
    F.silu,
    F.dropout,
    F.max_pool2d,
    F.avg_pool2d,
    F.adaptive_avg_pool2d,
    torch.relu,
    torch.tanh,
    torch.sigmoid,
}
CHANNELWISE_METHODS = {"relu", "tanh", "sigmoid"}
#: The functional form of each layer: a module's own forward may call it on its weight (see `_layer_of`).
FUNCTIONAL_LAYERS = {F.linear: nn.Linear, F.conv1d: nn.Conv1d, F.conv2d: nn.Conv2d, F.conv3d: nn.Conv3d}


def _plain(module: nn.Module, classes: tuple[type[nn.Module], ...]) -> bool:
    """Whether ``module`` is one of ``classes`` with that class's own forward (a subclass may add attributes, not
    change what it computes). A parametrized weight is refused for every pair source at once, in `unit_groups`."""
    return any(type(module).forward is cls.forward for cls in classes if isinstance(module, cls))


class UnitMapError(ValueError):
    """The units of a layer (or of the whole model) cannot be mapped to incoming and outgoing weights."""


@dataclass
class UnitGroup:
    """The hidden units between one producer layer and its consumer.

    Attributes:
        producer: name of the Linear/Conv whose output rows/channels are the units (incoming weights and bias).
        consumer: name of the Linear/Conv that reads the units (outgoing weights: its input columns); may be the head.
        norm: name of a BatchNorm between them (its channels belong to the units), or None.
        block: index of the backbone block holding the producer, or None.
        span: input columns of the consumer per unit: 1, or the positions per channel of a Conv -> flatten ->
            Linear step (unit c owns columns ``c * span`` to ``(c + 1) * span - 1``).
    """

    producer: str
    consumer: str
    norm: str | None = None
    block: int | None = None
    span: int = 1

    def modules(self, model: nn.Module) -> tuple[nn.Module, nn.Module, nn.Module | None]:
        norm = model.get_submodule(self.norm) if self.norm else None
        return model.get_submodule(self.producer), model.get_submodule(self.consumer), norm

    def num_units(self, model: nn.Module) -> int:
        return int(model.get_submodule(self.producer).weight.shape[0])

    def channel_dim(self, model: nn.Module) -> int:
        """The dimension of the consumer's input that indexes the units (-1 for Linear, 1 for Conv)."""
        return -1 if isinstance(model.get_submodule(self.consumer), nn.Linear) else 1

    def split(self, inputs: torch.Tensor, dim: int) -> torch.Tensor:
        """The consumer's input as ``(samples, units, span)``: one row per sample (batch entry, token, spatial
        position), the ``span`` columns of each unit kept apart. ``dim`` is [`UnitGroup.channel_dim`]."""
        if self.span > 1:
            return inputs.reshape(-1, inputs.shape[-1] // self.span, self.span)
        inputs = inputs.movedim(dim, -1)
        return inputs.reshape(-1, inputs.shape[-1], 1)


def _rule_pairs(model: nn.Module, layout: ModelLayout) -> list[tuple[str, str, str | None]]:
    """The producer -> consumer pairs of the architecture rule that exist in ``model``."""
    names = {name for name, _ in model.named_modules()}
    pairs: list[tuple[str, str, str | None]] = []
    for name, _ in model.named_modules():
        for pair in layout.rule.unit_pairs:
            found = pair.resolve(name)
            if found is not None and found[0] in names:
                pairs.append((name, found[0], found[1] if found[1] in names else None))
    return pairs


def _span(producer: nn.Module, consumer: nn.Module, norm: nn.Module | None, flattened: bool) -> int | None:
    """Input columns of ``consumer`` per output unit of ``producer``, or None when they do not form a unit pair."""
    units = producer.weight.shape[0]
    if norm is not None and getattr(norm, "num_features", None) != units:
        return None
    if isinstance(producer, nn.Linear):
        ok = isinstance(consumer, nn.Linear) and consumer.in_features == units
        return 1 if ok else None
    # A grouped (depthwise) producer is fine: output channel c's incoming weights are still row c. A grouped consumer
    # is not: its input channel c is read by the filters of one group only, not by a column of every filter.
    if isinstance(consumer, nn.Linear):  # Conv -> flatten -> Linear: channel-major blocks of positions
        width = consumer.in_features
        return width // units if flattened and width % units == 0 else None
    ok = not flattened and consumer.groups == 1 and consumer.weight.shape[1] == units
    return 1 if ok else None


_STOP = ("stop", None, None)  # a step that is not channel-wise: it ends the chain
_CHANNELWISE = ("channelwise", None, None)  # a channel-wise function call
_FLATTEN = ("flatten", None, None)  # flatten(x, 1): channels become blocks of consecutive columns

Step = tuple[str, str | None, nn.Module | None]


def _walk(steps: Iterator[Step]) -> tuple[str, str | None, bool] | None:
    """Follows one chain of steps from a producer: channel-wise ops, at most one BatchNorm and at most one flatten,
    up to a Linear/Conv consumer (a ``"layer"`` step, or a module step of a plain Linear/Conv). Returns ``(consumer,
    norm, flattened)``, or None when the chain ends elsewhere."""
    norm, flattened = None, False
    for kind, name, module in steps:
        if kind == "channelwise":
            continue
        if kind == "flatten":  # a second flatten of a (batch, features) tensor changes nothing
            flattened = True
        elif kind == "layer":  # a layer the trace saw run (`_layer_of`)
            return name, norm, flattened
        elif kind != "module":
            return None
        elif isinstance(module, LINEAR_OR_CONV):
            return (name, norm, flattened) if _plain(module, LINEAR_OR_CONV) else None
        elif isinstance(module, nn.Flatten) and not flattened and (module.start_dim, module.end_dim) == (1, -1):
            flattened = True
        elif is_batchnorm(module) and norm is None and not flattened and _plain(module, BATCHNORM_CLASSES):
            norm = name
        elif not _plain(module, CHANNELWISE_MODULES):
            return None
    return None


def _fx_flatten(node: torch.fx.Node) -> bool:
    """Whether ``node`` flattens a batch into (batch, features), channel-major: ``torch.flatten(x, 1)`` /
    ``x.flatten(1)`` / ``nn.Flatten()``'s call, or a 2-D ``x.view`` / ``x.reshape`` / ``torch.reshape`` whose first
    size is the batch (``x.size(0)``, ``x.shape[0]``, any computed size, or -1), as loss-of-plasticity's ConvNet
    (``x.view(-1, n)``) and many hand-written CNNs (``x.view(x.size(0), -1)``) flatten."""
    if (node.op == "call_function" and node.target is torch.flatten) or (
        node.op == "call_method" and node.target == "flatten"
    ):
        args = list(node.args[1:]) + [None, None]
        start = node.kwargs.get("start_dim", args[0] if args[0] is not None else 0)
        end = node.kwargs.get("end_dim", args[1] if args[1] is not None else -1)
        return (start, end) == (1, -1)
    if (node.op == "call_method" and node.target in ("view", "reshape")) or (
        node.op == "call_function" and node.target is torch.reshape
    ):
        shape = list(node.args[1:]) or [node.kwargs.get("shape")]
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = list(shape[0])
        sizes = (int, torch.fx.Node)
        return (
            len(shape) == 2 and (shape[0] == -1 or isinstance(shape[0], torch.fx.Node)) and isinstance(shape[1], sizes)
        )
    return False


def _shape_query(node: torch.fx.Node) -> bool:
    """Whether ``node`` only reads the size of its input (``x.size(0)``, ``x.shape``, ``x.dim()``): not a use of the
    values."""
    if node.op == "call_method" and node.target in ("size", "dim"):
        return True
    return node.op == "call_function" and node.target is getattr and node.args[1:] in (("shape",), ("ndim",))


def _layer_of(node: torch.fx.Node, modules: dict[str, nn.Module]) -> str | None:
    """The Linear/Conv module that ``node`` runs: its call, or a functional call on that module's own weight (and
    bias), which is how the trace shows the forward of a model package's subclass (a ``Conv2d`` that pads first, say).
    A forward that computes on its weight first (weight standardization) is no such call: its layer is not recognized.
    """
    if node.op == "call_module":
        return node.target if isinstance(modules[node.target], LINEAR_OR_CONV) else None
    if node.op != "call_function" or node.target not in FUNCTIONAL_LAYERS:
        return None
    args = [*node.args, None, None, None]
    weight, bias = node.kwargs.get("weight", args[1]), node.kwargs.get("bias", args[2])
    if not (isinstance(weight, torch.fx.Node) and weight.op == "get_attr" and weight.target.endswith(".weight")):
        return None
    owner = weight.target.removesuffix(".weight")
    own_bias = bias is None or (isinstance(bias, torch.fx.Node) and bias.target == f"{owner}.bias")
    module = modules.get(owner)
    # the call is the owner's layer only inside the owner's forward: hooks on the module see its input there
    inside_owner = _enclosing_module(node) == owner
    return owner if isinstance(module, FUNCTIONAL_LAYERS[node.target]) and own_bias and inside_owner else None


def _enclosing_module(node: torch.fx.Node) -> str | None:
    """The module whose forward holds ``node`` (its parent for a module call), from the trace's module stack."""
    if node.op == "call_module":
        return node.target.rpartition(".")[0]
    stack = node.meta.get("nn_module_stack")
    return next(reversed(stack)) if stack else None


def _pads_only(node: torch.fx.Node, modules: dict[str, nn.Module], spatial: int) -> bool:
    """Whether ``node`` pads at most the ``spatial`` last dimensions (a padding module, or ``F.pad``): channel-wise."""
    if node.op == "call_module" and type(modules[node.target]).__module__ == nn.modules.padding.__name__:
        return len(modules[node.target].padding) // 2 <= spatial
    if node.op == "call_function" and node.target is F.pad:
        pad = node.kwargs.get("pad", node.args[1] if len(node.args) > 1 else None)
        return isinstance(pad, (tuple, list)) and len(pad) // 2 <= spatial
    return False


def _fx_pairs(model: nn.Module) -> list[tuple[str, str, str | None, bool]]:
    graph = torch.fx.symbolic_trace(model).graph
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        name = _layer_of(node, modules) or (node.target if node.op == "call_module" else None)
        if name is not None:
            calls[name] = calls.get(name, 0) + 1

    def steps(node: torch.fx.Node, producer: str, spatial: int) -> Iterator[Step]:
        while True:
            users = [user for user in node.users if not _shape_query(user)]
            if len(users) != 1:
                return
            node = users[0]
            layer = _layer_of(node, modules)
            enclosing = _enclosing_module(node)
            if layer is not None:
                yield "layer", layer, modules[layer]
            elif _pads_only(node, modules, spatial):
                yield _CHANNELWISE
            elif enclosing != producer and isinstance(modules.get(enclosing), LINEAR_OR_CONV):
                yield _STOP  # inside a layer's forward before its call: the consumer's input hooks would not see it
                return
            elif node.op == "call_module":
                yield "module", node.target, modules[node.target]
            elif (node.op == "call_function" and node.target in CHANNELWISE_FUNCTIONS) or (
                node.op == "call_method" and node.target in CHANNELWISE_METHODS
            ):
                yield _CHANNELWISE
            elif _fx_flatten(node):
                spatial = 0
                yield _FLATTEN
            else:
                yield _STOP
                return

    pairs = []
    for node in graph.nodes:
        producer = _layer_of(node, modules)
        if producer is not None and calls[producer] == 1:
            found = _walk(steps(node, producer, modules[producer].weight.dim() - 2))
            if found and calls[found[0]] == 1:
                pairs.append((producer, *found))
    return pairs


def _sequential_pairs(model: nn.Module) -> list[tuple[str, str, str | None, bool]]:
    def flatten(prefix: str, seq: nn.Sequential) -> list[tuple[str, nn.Module]]:
        items = []
        for child_name, child in seq.named_children():
            name = f"{prefix}.{child_name}" if prefix else child_name
            items.extend(flatten(name, child) if type(child) is nn.Sequential else [(name, child)])
        return items

    pairs = []
    for prefix, module in model.named_modules():
        if type(module) is not nn.Sequential:
            continue
        chain = flatten(prefix, module)
        for i, (name, child) in enumerate(chain):
            if _plain(child, LINEAR_OR_CONV):
                found = _walk(("module", n, m) for n, m in chain[i + 1 :])
                if found:
                    pairs.append((name, *found))
    return list(dict.fromkeys(pairs))


def _shared_tensors(model: nn.Module) -> set[int]:
    """The ids of the parameters that more than one module holds (tied weights; one module registered under two
    names holds its parameters once)."""
    seen: dict[int, int] = {}
    for module in model.modules():  # each module once
        for param in module._parameters.values():
            if param is not None:
                seen[id(param)] = seen.get(id(param), 0) + 1
    return {key for key, count in seen.items() if count > 1}


def unit_groups(model: nn.Module, layout: ModelLayout | None = None) -> list[UnitGroup]:
    """Every unit group of ``model`` whose producer is outside the head, in model order (an empty list when none can
    be mapped). The head may be a consumer: the hidden layer that feeds it has units too.

    A wrapped model (DataParallel, DistributedDataParallel, ``torch.compile``, Accelerate) gets the groups of the model
    it wraps, named relative to it, as [`get_layout`] names its modules.

    Example:

    ```python
    >>> from transformers import ViTConfig, ViTForImageClassification
    >>> model = ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=32,
    ...     num_hidden_layers=2, num_attention_heads=2, intermediate_size=64))
    >>> [(g.producer, g.consumer) for g in unit_groups(model)][0]
    ('vit.layers.0.mlp.fc1', 'vit.layers.0.mlp.fc2')
    ```
    """
    model = unwrap_model(model)
    layout = layout or get_layout(model)
    if layout.rule is not None and layout.rule.unit_pairs:
        pairs = [(producer, consumer, norm, False) for producer, consumer, norm in _rule_pairs(model, layout)]
    else:
        try:
            pairs = _fx_pairs(model)
        except Exception:  # untraceable forward: fall back to the chains of nn.Sequential containers
            pairs = _sequential_pairs(model)
    shared = _shared_tensors(model)
    groups = []
    for producer, consumer, norm, flattened in pairs:
        if layout.in_head(producer):
            continue
        modules = (model.get_submodule(producer), model.get_submodule(consumer))
        weights = [module._parameters.get("weight") for module in modules]
        if any(weight is None or id(weight) in shared for weight in weights):
            continue  # a parametrized weight (a computed property) or one tied to another module: not per unit
        span = _span(*modules, model.get_submodule(norm) if norm else None, flattened)
        if span is not None:
            groups.append(UnitGroup(producer, consumer, norm, layout.block_of(producer), span))
    return groups


def resolve_unit_groups(model: nn.Module, config: PlasticityConfig) -> list[UnitGroup]:
    """The unit groups in ``config``'s scope (producer outside the head, ``exclude_modules``, ``last_k_blocks``,
    ``target_modules`` matched against producer names; the consumer may be the head). A unit whose consumer or norm is
    excluded is left out: resetting it would write into them.

    Raises:
        UnitMapError: when a layer named in ``target_modules`` has no unit mapping, or when no unit can be mapped;
            the message names the layer(s).
        ScopeError: when every unit in scope was left out because a reset would write a frozen parameter.
    """
    layout = get_layout(model)
    check_scope(model, config, layout)
    groups = unit_groups(model, layout)
    producers = {g.producer for g in groups}
    if config.target_modules:
        named = [
            n for n, m in model.named_modules() if isinstance(m, LINEAR_OR_CONV) and matches(n, config.target_modules)
        ]
        unmapped = [n for n in named if n not in producers]
        if unmapped:
            raise UnitMapError(
                f"Cannot map the units of layer {unmapped[0]!r} ({type(model.get_submodule(unmapped[0])).__name__}): "
                "its output does not feed exactly one Linear/Conv through channel-wise operations (and an optional "
                "BatchNorm), or the one it feeds is a grouped (depthwise) Conv, which reads a channel with one filter "
                f"group, not a column. Layers with units: {sorted(producers)[:6] or 'none'}."
            )
    selected = []
    frozen: set[int] = set()  # the frozen parameters of the units left out for them
    for group in groups:
        if not _module_filter(layout, config, group.producer):
            continue
        if any(excluded(m, config.exclude_modules) for m in (group.consumer, group.norm) if m):
            continue  # resetting a unit writes its consumer's columns (and its norm's channel)
        if config.target_modules and not matches(group.producer, config.target_modules):
            continue
        frozen_params = [] if config.target_modules else _frozen(model, group)
        if frozen_params:
            frozen.update(id(param) for param in frozen_params)
            continue
        selected.append(group)
    if not selected and frozen:
        raise_empty_scope(model, config, layout, frozen=len(frozen))
    if not selected:
        layers = [n for n, m in model.named_modules() if isinstance(m, LINEAR_OR_CONV) and not layout.in_head(n)]
        detail = f"layer {layers[0]!r} ({type(model.get_submodule(layers[0])).__name__})" if layers else "no layer"
        raise UnitMapError(
            f"Cannot map any hidden unit of {type(model).__name__} in this scope (first candidate: {detail}): a unit "
            "needs a Linear/Conv whose output feeds exactly one Linear/Conv through channel-wise operations "
            f"(and an optional BatchNorm, or a flatten into a Linear), outside the head. Mapped layers in the model: "
            f"{sorted(producers)[:6]}."
        )
    return selected


def _frozen(model: nn.Module, group: UnitGroup) -> list[nn.Parameter]:
    """The frozen parameters that a reset of ``group``'s units would write (producer, BatchNorm or consumer weight)."""
    producer, consumer, norm = group.modules(model)
    tensors = [*producer.parameters(), consumer.weight, *(norm.parameters() if norm is not None else [])]
    return [tensor for tensor in tensors if not tensor.requires_grad]


def _rows(tensor: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """Flat indices of whole rows ``units`` (dimension 0) of ``tensor``."""
    row = tensor[0].numel() if tensor.dim() > 1 else 1
    return (units.reshape(-1, 1) * row + torch.arange(row, device=units.device)).reshape(-1)


def consumer_columns(group: UnitGroup, weight: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """Flat indices of the input columns (dimension 1) of the consumer weight that belong to ``units``: one column
    per unit, or ``span`` consecutive columns per unit behind a flatten."""
    span = group.span
    cols = (units.reshape(-1, 1) * span + torch.arange(span, device=units.device)).reshape(-1)
    out, width = weight.shape[0], weight.shape[1]
    inner = weight[0, 0].numel()
    base = torch.arange(out, device=units.device).reshape(-1, 1, 1) * width * inner
    index = base + cols.reshape(1, -1, 1) * inner + torch.arange(inner, device=units.device).reshape(1, 1, -1)
    return index.reshape(-1)


def plan_unit_reset(
    model: nn.Module, group: UnitGroup, units: torch.Tensor, *, seed: int, salt: str = ""
) -> list[TensorReset]:
    """The writes that reset ``units`` of ``group``: producer rows and bias fresh, BatchNorm channels fresh (affine
    and running statistics), consumer columns zero (``fresh=False``). Does not write into ``model``."""
    if units.numel() == 0:
        return []
    producer, consumer, norm = group.modules(model)
    units = units.to(torch.long).cpu()
    plan: list[TensorReset] = []
    parts = [(group.producer, producer)] + ([(group.norm, norm)] if norm is not None else [])
    for module_name, module in parts:
        fresh = fresh_tensors(model, module, seed=derive_seed(seed, *(module_name, salt) if salt else (module_name,)))
        tensors = dict(module.named_parameters(recurse=False))
        tensors.update(
            {k: v for k, v in module.named_buffers(recurse=False) if v.dim() >= 1 and v.is_floating_point()}
        )
        for attr, tensor in tensors.items():
            index = _rows(tensor, units)
            values = fresh[attr].reshape(-1)[index.to(fresh[attr].device)]
            plan.append(TensorReset(f"{module_name}.{attr}", tensor, values.clone(), index, group.block))
    weight = consumer.weight
    index = consumer_columns(group, weight, units)
    plan.append(
        TensorReset(f"{group.consumer}.weight", weight, torch.zeros(index.numel()), index, group.block, fresh=False)
    )
    return plan


class ActivationMeter:
    """Streaming per-unit mean |activation| of unit groups, read at each consumer's input (forward pre-hooks).

    Use as a context manager: hooks are registered on entry and always removed on exit. Only running sums are kept
    (one vector per group), never the activations themselves.

    Example:

    ```python
    >>> with ActivationMeter(model, groups) as meter:
    ...     model(pixel_values)
    >>> scores = normalized_scores(meter.means()[groups[0].producer])
    ```
    """

    def __init__(self, model: nn.Module, groups: list[UnitGroup]) -> None:
        self.model = model
        self.groups = groups
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def _hook(self, group: UnitGroup, dim: int):
        def hook(module: nn.Module, args: tuple) -> None:
            h = group.split(args[0].detach().abs().float(), dim)
            self.sums[group.producer] = self.sums.get(group.producer, 0) + h.sum((0, 2))
            self.counts[group.producer] = self.counts.get(group.producer, 0) + h.shape[0] * h.shape[2]

        return hook

    def __enter__(self) -> ActivationMeter:
        for group in self.groups:
            consumer = self.model.get_submodule(group.consumer)
            self._handles.append(consumer.register_forward_pre_hook(self._hook(group, group.channel_dim(self.model))))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def means(self) -> dict[str, torch.Tensor]:
        """E|h_i| per unit, keyed by producer name (groups that saw no input are left out)."""
        return {name: total / max(self.counts[name], 1) for name, total in self.sums.items()}


def normalized_scores(means: torch.Tensor) -> torch.Tensor:
    """ReDo's score s_i = E|h_i| / mean_k E|h_k|; all zeros when the whole layer is silent."""
    layer_mean = means.mean()
    if layer_mean <= 0:
        return torch.zeros_like(means)
    return means / layer_mean


@torch.no_grad()
def unit_activation_means(
    model: nn.Module, groups: list[UnitGroup], data: object, num_batches: int, batch_size: int = 32
) -> dict[str, torch.Tensor]:
    """Mean |activation| per unit over ``num_batches`` batches, in eval mode; the model's ``training`` flags and the
    RNG state are restored afterwards and every hook is removed."""
    from .data import iter_batches, model_device_dtype

    training = {m: m.training for m in model.modules()}
    device, dtype = model_device_dtype(model)
    try:
        with torch.random.fork_rng(devices=[]), ActivationMeter(model, groups) as meter:
            model.eval()
            for pixel_values, _ in iter_batches(data, num_batches, batch_size):
                model(pixel_values.to(device=device, dtype=dtype))
    finally:
        for module, flag in training.items():
            module.train(flag)
    return meter.means()
