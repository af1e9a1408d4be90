"""One rule per architecture: where the blocks, the head, the final norm and the hidden units of a vision model are.

Every module that needs architecture knowledge (targeting, units, continual backprop's defaults, the training
callback's resume check) reads the [`ArchitectureRule`] of the model's ``config.model_type`` (or, for a model without
one, of its class), in the spirit of timm's ``group_matcher``. Any other ``torch.nn.Module`` goes through a structural
fallback. Users add a rule with [`register_architecture`]. Module names are the in-memory names of transformers 5.x
(``save_pretrained`` still writes the older key names: never target modules by names read from a checkpoint file).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from torch import nn

from .wrappers import unwrap_model

LINEAR_OR_CONV = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

Family = Literal["transformer", "cnn", "mlp"]

_VIT_RESUME_HINT = (
    "This is the transformers 5.x ViT resume bug (huggingface/transformers#48805): the checkpoint's encoder layers "
    "are not loaded. Load the checkpoint with `from_pretrained(checkpoint_dir)` instead and train from it, or use an "
    "upgraded transformers."
)


@dataclass(frozen=True)
class UnitPair:
    """Where one kind of hidden unit sits: a producer layer whose output rows/channels are the units, the consumer
    layer that reads them (its input columns), and an optional BatchNorm between them.

    Args:
        producer: regular expression (full match) on the producer's module name.
        consumer: the consumer's name, as a replacement template of ``producer``'s match (``\\1``, ``\\g<name>``).
        norm: the BatchNorm's name, as a template, or None.
    """

    producer: str
    consumer: str
    norm: str | None = None

    def resolve(self, name: str) -> tuple[str, str | None] | None:
        """``(consumer, norm)`` for producer ``name``, or None when ``name`` is not a producer of this pair."""
        found = re.fullmatch(self.producer, name)
        if found is None:
            return None
        return found.expand(self.consumer), (found.expand(self.norm) if self.norm else None)


@dataclass(frozen=True)
class ArchitectureRule:
    """Regular expressions (full match on module names) that locate the parts of one architecture.

    Args:
        blocks: matches the repeated residual blocks; ``named_modules`` order is depth order.
        head: matches the classification head (and everything under it).
        final_norm: matches the norm after the last block, if the architecture has one.
        unit_pairs: the hidden units (producer -> consumer) that ReDo, continual backprop, unit-granular selective
            re-initialization and the dormancy diagnostics act on.
        family: ``"transformer"``, ``"cnn"`` or ``"mlp"``: picks published per-family defaults (continual backprop).
        resume_hint: said when a resumed Trainer run does not hold its checkpoint's weights (a known problem of this
            architecture), or None.

    Example:

    ```python
    >>> from hf_plasticity import ArchitectureRule, UnitPair
    >>> rule = ArchitectureRule(blocks=r"encoder\\.layers\\.\\d+", head=r"classifier",
    ...                         unit_pairs=(UnitPair(r"(.*)\\.fc1", r"\\1.fc2"),), family="transformer")
    >>> rule.unit_pairs[0].resolve("encoder.layers.0.mlp.fc1")
    ('encoder.layers.0.mlp.fc2', None)
    ```
    """

    blocks: str
    head: str
    final_norm: str | None = None
    unit_pairs: tuple[UnitPair, ...] = ()
    family: Family = "cnn"
    resume_hint: str | None = None


#: What a rule is registered for: a transformers ``model_type``, or a ``torch.nn.Module`` class (a model without a
#: transformers config: the rule applies to the class and its subclasses).
ArchitectureKey = str | type[nn.Module]

ARCHITECTURES: dict[ArchitectureKey, ArchitectureRule] = {
    "vit": ArchitectureRule(
        blocks=r"vit\.(layers|encoder\.layer)\.\d+",
        head=r"classifier",
        final_norm=r"vit\.layernorm",
        unit_pairs=(UnitPair(r"(.*\.mlp)\.fc1", r"\1.fc2"),),
        family="transformer",
        resume_hint=_VIT_RESUME_HINT,
    ),
    "convnext": ArchitectureRule(
        blocks=r"convnext\.encoder\.stages\.\d+\.layers\.\d+",
        head=r"classifier",
        final_norm=r"convnext\.layernorm",
        unit_pairs=(UnitPair(r"(.*)\.pwconv1", r"\1.pwconv2"),),
    ),
    "convnextv2": ArchitectureRule(
        blocks=r"convnextv2\.encoder\.stages\.\d+\.layers\.\d+",
        head=r"classifier",
        final_norm=r"convnextv2\.layernorm",
        unit_pairs=(UnitPair(r"(.*)\.pwconv1", r"\1.pwconv2"),),
    ),
    "resnet": ArchitectureRule(
        blocks=r"resnet\.encoder\.stages\.\d+\.layers\.\d+",
        head=r"classifier(\.\d+)?",
        # conv + BatchNorm -> the next conv of the same residual block (basic: 0 -> 1; bottleneck: 0 -> 1 -> 2)
        unit_pairs=(
            UnitPair(r"(.*\.layer)\.0\.convolution", r"\1.1.convolution", r"\1.0.normalization"),
            UnitPair(r"(.*\.layer)\.1\.convolution", r"\1.2.convolution", r"\1.1.normalization"),
        ),
    ),
}


def register_architecture(model_type: ArchitectureKey, rule: ArchitectureRule, *, replace: bool = False) -> None:
    """Adds the rule of a transformers ``model_type`` (e.g. a new vision backbone), or of a ``torch.nn.Module`` class
    without a transformers config, so that every strategy, the diagnostics and the callback know its blocks, head,
    final norm and hidden units.

    A model's rule is the one of its ``config.model_type``; a model without one (or whose ``model_type`` has no rule)
    takes the rule of the nearest registered class in its class hierarchy. That is how a plain ``torch.nn.Module``
    whose structure misleads the structural fallback (e.g. a head of several layers, of which the fallback takes the
    last Linear alone) names its head.

    Args:
        model_type: the ``config.model_type`` the rule is for, or an ``nn.Module`` subclass.
        rule: the [`ArchitectureRule`].
        replace: replace an existing rule for ``model_type`` (refused otherwise).

    Example:

    ```python
    >>> from torch import nn
    >>> from hf_plasticity import ArchitectureRule, register_architecture
    >>> register_architecture("my_vit", ArchitectureRule(blocks=r"backbone\\.layers\\.\\d+", head=r"head",
    ...                                                  family="transformer"))
    >>> class MyNet(nn.Module):  # a plain module with a two-layer head: the fallback would take `head.2` alone
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.stages = nn.Sequential(*[nn.Sequential(nn.Linear(8, 8), nn.ReLU()) for _ in range(3)])
    ...         self.head = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> register_architecture(MyNet, ArchitectureRule(blocks=r"stages\\.\\d+", head=r"head", family="mlp"))
    >>> get_layout(MyNet()).head
    ['head']
    ```
    """
    is_class = isinstance(model_type, type) and issubclass(model_type, nn.Module)
    if not is_class and (not isinstance(model_type, str) or not model_type):
        raise ValueError(
            f"`model_type` must be a non-empty string (a transformers `config.model_type`) or a torch.nn.Module "
            f"subclass, got {model_type!r}."
        )
    if not isinstance(rule, ArchitectureRule):
        raise TypeError(f"`rule` must be an ArchitectureRule, got {type(rule).__name__}.")
    for name, pattern in (("blocks", rule.blocks), ("head", rule.head), ("final_norm", rule.final_norm)):
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(
                    f"`{name}` of the rule is not a valid regular expression {pattern!r}: {error}."
                ) from error
    if model_type in ARCHITECTURES and ARCHITECTURES[model_type] != rule and not replace:
        raise ValueError(
            f"An architecture rule for {model_type!r} is already registered; pass `replace=True` to replace it."
        )
    ARCHITECTURES[model_type] = rule


def registered_architectures() -> Mapping[ArchitectureKey, ArchitectureRule]:
    """A read-only view of the registered rules, by ``model_type`` or class (it follows later registrations; add a
    rule with [`register_architecture`], which checks it).

    Example:

    ```python
    >>> from hf_plasticity import registered_architectures
    >>> registered_architectures()["vit"].family
    'transformer'
    ```
    """
    return MappingProxyType(ARCHITECTURES)


@dataclass
class ModelLayout:
    """The resolved layout of one model instance.

    Attributes:
        blocks: names of the backbone blocks, in depth order.
        head: names of the head modules (never targeted by default); found by structure outside the blocks when
            the rule's head pattern names none (see [`get_layout`]).
        final_norm: name of the norm after the last block, or None.
        source: ``"table:<model_type>"`` (``"table:<ClassName>"`` for a rule registered for a class) or
            ``"structural"``.
        rule: the architecture rule it was resolved with (None for the structural fallback).
        family: ``"transformer"``, ``"cnn"`` or ``"mlp"``.
    """

    blocks: list[str]
    head: list[str]
    final_norm: str | None
    source: str
    rule: ArchitectureRule | None = None
    family: Family = "cnn"

    def block_of(self, module_name: str) -> int | None:
        """Index of the block that contains ``module_name``, or None outside every block."""
        for index, block in enumerate(self.blocks):
            if module_name == block or module_name.startswith(block + "."):
                return index
        return None

    def in_head(self, module_name: str) -> bool:
        return any(module_name == h or module_name.startswith(h + ".") for h in self.head)


def model_type_of(model: nn.Module) -> str | None:
    """``model.config.model_type``, or None for a model without a transformers config."""
    return getattr(getattr(model, "config", None), "model_type", None)


class LayoutError(ValueError):
    """The classification head of a model that an architecture rule matches cannot be found."""


def get_layout(model: nn.Module) -> ModelLayout:
    """Resolves the layout of ``model``: the rule of its ``config.model_type`` first, else the rule of the nearest
    registered class of ``model`` (see [`register_architecture`]), else the structural fallback.

    A wrapped model (`torch.nn.DataParallel`, `DistributedDataParallel`, ``torch.compile``'s `OptimizedModule`,
    Accelerate's and DeepSpeed's wrappers) gets the layout of the model it wraps, as every entry point of the library
    restores and diagnoses that model: the module names are relative to the wrapped model (``unwrap_model(model)``),
    not to the wrapper (no ``module.`` or ``_orig_mod.`` prefix).

    When the rule finds the blocks but no module matches its head pattern (a custom head, e.g. ``self.head`` on a
    ``ViTPreTrainedModel``), the head is found by structure outside the blocks, as the fallback finds it (see
    [`head_outside_blocks`]).

    Raises:
        LayoutError: when the rule finds the blocks, no module matches its head pattern and no Linear lies outside the
            blocks: the message says how to name the head (a rule of your own, [`register_architecture`]).

    Example:

    ```python
    >>> import torch
    >>> from transformers import ResNetConfig, ResNetForImageClassification
    >>> model = ResNetForImageClassification(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1]))
    >>> get_layout(model).blocks
    ['resnet.encoder.stages.0.layers.0', 'resnet.encoder.stages.1.layers.0']
    >>> get_layout(torch.nn.DataParallel(model)) == get_layout(model)
    True
    ```
    """
    model = unwrap_model(model)
    for key in _keys_of(model):
        layout = _table_layout(model, key, ARCHITECTURES[key])
        if layout is not None:
            return layout
    return structural_layout(model)


def _keys_of(model: nn.Module) -> list[ArchitectureKey]:
    """The registered keys that apply to ``model``, most specific first: its ``model_type``, then its classes."""
    model_type = model_type_of(model)
    keys: list[ArchitectureKey] = [model_type] if model_type and model_type in ARCHITECTURES else []
    return keys + [cls for cls in type(model).__mro__ if cls in ARCHITECTURES]


def _key_name(key: ArchitectureKey) -> str:
    return key if isinstance(key, str) else key.__name__


def _table_layout(model: nn.Module, key: ArchitectureKey, rule: ArchitectureRule) -> ModelLayout | None:
    """The layout by ``rule``, or None when the rule matches no block of ``model``."""
    names = [name for name, _ in model.named_modules()]
    blocks = [n for n in names if re.fullmatch(rule.blocks, n)]
    if not blocks:
        return None
    head = [n for n in names if re.fullmatch(rule.head, n)]
    head = [h for h in head if not any(h.startswith(o + ".") for o in head)]
    if not head:
        head = head_outside_blocks(model, blocks)
    if not head:
        raise LayoutError(_no_head_message(model, key, rule, blocks))
    norms = [n for n in names if rule.final_norm and re.fullmatch(rule.final_norm, n)]
    return ModelLayout(blocks, head, norms[0] if norms else None, f"table:{_key_name(key)}", rule, rule.family)


def _no_head_message(model: nn.Module, key: ArchitectureKey, rule: ArchitectureRule, blocks: list[str]) -> str:
    shown = repr(key) if isinstance(key, str) else key.__name__
    return (
        f"{type(model).__name__} matches the {_key_name(key)!r} architecture rule (blocks {blocks[0]!r} to "
        f"{blocks[-1]!r}), but no module matches its head pattern {rule.head!r} and no Linear lies outside the "
        "blocks, so its classification head cannot be found (a head left unnamed would be re-drawn and trained as "
        "backbone). Name the head (or the output layer of a model without one) with a rule of your own, e.g. "
        f"`register_architecture({shown}, dataclasses.replace(registered_architectures()[{shown}], "
        'head=r"my_head"), replace=True)`, where `head` is a regular expression matched against module names '
        "(`dict(model.named_modules())` lists them)."
    )


def head_outside_blocks(model: nn.Module, blocks: list[str]) -> list[str]:
    """The head found by structure: a Linear outside every block, the one furthest out of the backbone.

    Definition order is not execution order (a ``self.head`` may be defined before the backbone, whose pooler then
    comes last), so the head is the Linear outside the blocks whose name shares the fewest leading components with
    the blocks' container (``head`` shares none with ``backbone.layers``, ``backbone.pooler.dense`` one); among
    those, the last defined (timm's and torchvision's order: ``classifier.6`` of a VGG).

    Args:
        model: the model.
        blocks: names of its blocks.

    Returns:
        `list[str]`: the head's name, or an empty list when every Linear lies in a block.

    Example:

    ```python
    >>> from torch import nn
    >>> model = nn.ModuleDict({"head": nn.Linear(8, 3), "backbone": nn.ModuleDict(
    ...     {"layers": nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8)), "pooler": nn.Linear(8, 8)})})
    >>> head_outside_blocks(model, ["backbone.layers.0", "backbone.layers.1"])
    ['head']
    ```
    """
    container = ".".join(_common_prefix(blocks))
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and not _inside(n, blocks) and n]
    if not linears:
        return []
    shared = {n: len(_common_prefix([n, container])) for n in linears}
    fewest = min(shared.values())
    return [[n for n in linears if shared[n] == fewest][-1]]


def _inside(name: str, modules: Sequence[str]) -> bool:
    return any(name == m or name.startswith(m + ".") for m in modules)


def _common_prefix(names: list[str]) -> list[str]:
    """The leading dotted components that all of ``names`` share."""
    parts = [name.split(".") for name in names]
    prefix = []
    for components in zip(*parts):
        if len(set(components)) > 1:
            break
        prefix.append(components[0])
    return prefix


def structural_layout(model: nn.Module) -> ModelLayout:
    """Layout of an arbitrary module. The blocks are the children of the largest ``ModuleList``/``Sequential`` whose
    children are mostly of one class and hold Linear/Conv layers (without one, every Linear/Conv but the head). The
    head is a Linear outside the blocks, found by [`head_outside_blocks`]; when every Linear lies in a block, the last
    Linear if its block holds no other Linear/Conv (a flat ``nn.Sequential`` or MLP, whose last layer is its output),
    else none (a backbone without a head: no layer inside a block is taken for the head). The family is
    ``"transformer"`` when the model holds self-attention (see [`is_attention`]; a DeiT, BEiT, Swin or DINOv2 embeds
    its patches with a convolution but is no CNN), else ``"mlp"`` when the model has no convolution, else ``"cnn"``.
    """
    leaves = [(n, m) for n, m in model.named_modules() if isinstance(m, LINEAR_OR_CONV)]
    blocks = _repeated_children(model)
    head = head_outside_blocks(model, blocks) if blocks else []
    if not head:
        head = _output_layer_as_head(model, blocks)
        blocks = _repeated_children(model, exclude=head)
    blocks = blocks or [n for n, _ in leaves if n not in head]
    family: Family = "mlp" if leaves and all(isinstance(m, nn.Linear) for _, m in leaves) else "cnn"
    if any(is_attention(module) for module in model.modules()):
        family = "transformer"
    return ModelLayout(blocks, head, None, "structural", None, family)


def _output_layer_as_head(model: nn.Module, blocks: list[str]) -> list[str]:
    """The last Linear, when no block holds it or its block holds no other Linear/Conv (a flat ``nn.Sequential`` or
    MLP); else none."""
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        return []
    holder = next((b for b in blocks if _inside(linears[-1], [b])), None)
    if holder is None:
        return [linears[-1]]
    layers = [m for m in model.get_submodule(holder).modules() if isinstance(m, LINEAR_OR_CONV)]
    return [linears[-1]] if len(layers) == 1 else []


def _repeated_children(model: nn.Module, exclude: Sequence[str] = ()) -> list[str]:
    """Names of the children of the largest ``ModuleList``/``Sequential`` whose children that hold a Linear or Conv
    (and none of ``exclude``) are at least two and mostly of one class; empty when there is none."""
    best: list[str] = []
    for name, module in model.named_modules():
        if not isinstance(module, (nn.ModuleList, nn.Sequential)):
            continue
        children = [(f"{name}.{c}" if name else c, m) for c, m in module.named_children()]
        children = [(n, m) for n, m in children if any(isinstance(x, LINEAR_OR_CONV) for x in m.modules())]
        children = [(n, m) for n, m in children if not any(_inside(e, [n]) for e in exclude)]
        if len(children) < 2:
            continue
        _, count = Counter(type(m) for _, m in children).most_common(1)[0]
        if count >= 2 and len(children) > len(best):
            best = [n for n, _ in children]
    return best


#: Names of the Linear projections that make a module self-attention: separate query, key and value projections (the
#: transformers vision models, CLIP's), or one fused projection (timm's ``qkv``).
ATTENTION_PROJECTIONS = ({"query", "key", "value"}, {"q_proj", "k_proj", "v_proj"}, {"qkv"})


def is_attention(module: nn.Module) -> bool:
    """Whether ``module`` is self-attention: an ``nn.MultiheadAttention``, or a module whose Linear children include
    the projections of one of `ATTENTION_PROJECTIONS`. A CNN's channel attention (squeeze-and-excitation, CBAM) has
    none of them, so it stays a CNN.

    Example:

    ```python
    >>> from torch import nn
    >>> is_attention(nn.MultiheadAttention(8, 2)), is_attention(nn.Sequential(nn.Linear(8, 2), nn.Linear(2, 8)))
    (True, False)
    ```
    """
    if isinstance(module, nn.MultiheadAttention):
        return True
    linears = {name for name, child in module.named_children() if isinstance(child, nn.Linear)}
    return any(names <= linears for names in ATTENTION_PROJECTIONS)
