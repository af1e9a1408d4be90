"""The names the weights have in the checkpoint, for what users read (console line, report, card).

transformers 5.x renames some modules in memory (ViT's ``vit.encoder.layer.3`` is ``vit.layers.3``), but
``save_pretrained`` writes the checkpoint in the original format: it passes the state dict through
``transformers.core_model_loading.revert_weight_conversion``. [`checkpoint_names`] runs that same function on
placeholder tensors, so the names shown are exactly the keys of the saved file (pinned by a test that saves a model and
reads the file's keys). Module names used to *target* modules stay the in-memory ones.
"""

from __future__ import annotations

import logging
import os

import torch
from torch import nn

logger = logging.getLogger(__name__)


def checkpoint_names(model: nn.Module) -> dict[str, str]:
    """Per state-dict key of ``model`` (in-memory name), the key ``save_pretrained`` writes for it.

    The identity for a plain torch module, for a model without renamings, and for a key a many-to-one conversion
    merges (its name cannot be followed through the merge).

    Example:

    ```python
    >>> from transformers import ViTConfig, ViTForImageClassification
    >>> from hf_plasticity.core.checkpoint_names import checkpoint_names
    >>> model = ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=32,
    ...     num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=3))
    >>> checkpoint_names(model)["vit.layers.1.mlp.fc1.weight"]
    'vit.encoder.layer.1.intermediate.dense.weight'
    ```
    """
    keys = list(model.state_dict().keys())
    identity = {key: key for key in keys}
    if not hasattr(model, "config") or not hasattr(model, "save_pretrained"):
        return identity
    try:
        from transformers.core_model_loading import revert_weight_conversion
    except ImportError:  # a transformers without weight conversions: the file uses the in-memory names
        return identity
    markers = {key: torch.empty(0) for key in keys}
    try:
        reverted = revert_weight_conversion(model, dict(markers))
    except Exception as error:  # a converter that computes on tensors: keep the in-memory names
        logger.debug("Cannot follow the checkpoint names of %s: %s", type(model).__name__, error)
        return identity
    key_of = {id(tensor): key for key, tensor in markers.items()}
    mapped = {key_of[id(tensor)]: name for name, tensor in reverted.items() if id(tensor) in key_of}
    return {key: mapped.get(key, key) for key in keys}


def module_checkpoint_name(names: dict[str, str], module: str) -> str:
    """The checkpoint name of ``module`` (an in-memory module or parameter name), from [`checkpoint_names`]: the
    prefix its tensors keep in the file where they keep their own part of the name (``vit.layers.3`` ->
    ``vit.encoder.layer.3``, its norms keep theirs), else the common module path of their checkpoint names; ``module``
    itself when it holds no tensor."""
    if module in names:
        return names[module]
    under = {key[len(module) + 1 :]: name for key, name in names.items() if key.startswith(module + ".")}
    if not under:
        return module
    kept = {name[: -len(rest) - 1] for rest, name in under.items() if name.endswith("." + rest)}
    if len(kept) == 1:
        return kept.pop()
    common = os.path.commonprefix([name.split(".")[:-1] for name in under.values()])
    return ".".join(common) or module
