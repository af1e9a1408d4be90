"""Where the blocks, the head and the final norm of a vision model are, per architecture.

A table keyed by ``config.model_type`` covers the transformers classes; any other ``torch.nn.Module`` goes through
a structural fallback. Module names are the in-memory names of transformers 5.x (``save_pretrained`` still writes
the older key names: never target modules by names read from a checkpoint file).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from torch import nn

LINEAR_OR_CONV = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass(frozen=True)
class ArchitectureRule:
    """Regular expressions (full match on module names) that locate the parts of one architecture.

    Args:
        blocks: matches the repeated residual blocks; ``named_modules`` order is depth order.
        head: matches the classification head (and everything under it).
        final_norm: matches the norm after the last block, if the architecture has one.
    """

    blocks: str
    head: str
    final_norm: str | None = None


ARCHITECTURES: dict[str, ArchitectureRule] = {
    "vit": ArchitectureRule(
        blocks=r"vit\.(layers|encoder\.layer)\.\d+", head=r"classifier", final_norm=r"vit\.layernorm"
    ),
    "convnext": ArchitectureRule(
        blocks=r"convnext\.encoder\.stages\.\d+\.layers\.\d+", head=r"classifier", final_norm=r"convnext\.layernorm"
    ),
    "convnextv2": ArchitectureRule(
        blocks=r"convnextv2\.encoder\.stages\.\d+\.layers\.\d+",
        head=r"classifier",
        final_norm=r"convnextv2\.layernorm",
    ),
    "resnet": ArchitectureRule(blocks=r"resnet\.encoder\.stages\.\d+\.layers\.\d+", head=r"classifier(\.\d+)?"),
}


@dataclass
class ModelLayout:
    """The resolved layout of one model instance.

    Attributes:
        blocks: names of the backbone blocks, in depth order.
        head: names of the head modules (never targeted by default).
        final_norm: name of the norm after the last block, or None.
        source: ``"table:<model_type>"`` or ``"structural"``.
    """

    blocks: list[str]
    head: list[str]
    final_norm: str | None
    source: str

    def block_of(self, module_name: str) -> int | None:
        """Index of the block that contains ``module_name``, or None outside every block."""
        for index, block in enumerate(self.blocks):
            if module_name == block or module_name.startswith(block + "."):
                return index
        return None

    def in_head(self, module_name: str) -> bool:
        return any(module_name == h or module_name.startswith(h + ".") for h in self.head)


def _model_type(model: nn.Module) -> str | None:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None)


def get_layout(model: nn.Module) -> ModelLayout:
    """Resolves the layout of ``model``: the per-``model_type`` table first, else the structural fallback.

    Example:

    ```python
    >>> from transformers import ResNetConfig, ResNetForImageClassification
    >>> model = ResNetForImageClassification(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1]))
    >>> get_layout(model).blocks
    ['resnet.encoder.stages.0.layers.0', 'resnet.encoder.stages.1.layers.0']
    ```
    """
    model_type = _model_type(model)
    rule = ARCHITECTURES.get(model_type) if model_type else None
    if rule is not None:
        names = [name for name, _ in model.named_modules()]
        blocks = [n for n in names if re.fullmatch(rule.blocks, n)]
        head = [n for n in names if re.fullmatch(rule.head, n)]
        head = [h for h in head if not any(h.startswith(o + ".") for o in head)]
        norms = [n for n in names if rule.final_norm and re.fullmatch(rule.final_norm, n)]
        if blocks:
            return ModelLayout(blocks, head, norms[0] if norms else None, f"table:{model_type}")
    return structural_layout(model)


def structural_layout(model: nn.Module) -> ModelLayout:
    """Layout of an arbitrary module: the head is the last Linear; the blocks are the children of the largest
    ``ModuleList``/``Sequential`` whose children are mostly of one class and hold Linear/Conv layers.
    """
    leaves = [(n, m) for n, m in model.named_modules() if isinstance(m, LINEAR_OR_CONV)]
    linears = [n for n, m in leaves if isinstance(m, nn.Linear)]
    head = [linears[-1]] if linears else []
    best: list[str] = []
    for name, module in model.named_modules():
        if not isinstance(module, (nn.ModuleList, nn.Sequential)):
            continue
        children = [(f"{name}.{c}" if name else c, m) for c, m in module.named_children()]
        children = [(n, m) for n, m in children if any(isinstance(x, LINEAR_OR_CONV) for x in m.modules())]
        children = [(n, m) for n, m in children if not any(n == h or h.startswith(n + ".") for h in head)]
        if len(children) < 2:
            continue
        _, count = Counter(type(m) for _, m in children).most_common(1)[0]
        if count >= 2 and len(children) > len(best):
            best = [n for n, _ in children]
    if not best:
        best = [n for n, _ in leaves if n not in head]
    return ModelLayout(best, head, None, "structural")
