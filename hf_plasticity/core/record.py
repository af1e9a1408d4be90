"""The restore record: what a restore did, kept on the model and in ``model.config.plasticity`` (so ``config.json``
carries it, and a checkpoint loaded from the Hub still says what was re-initialized)."""

from __future__ import annotations

from typing import Any

from torch import nn

from .config import MODEL_CONFIG_KEY
from .transaction import Transaction
from .unwrap import unwrap_model

RECORD_ATTR = "_hf_plasticity_record"


def restore_record(model: nn.Module) -> dict[str, Any] | None:
    """What [`prepare_pretrained`] recorded on ``model`` (also read back from a saved ``config.json``), or None.

    Example:

    ```python
    >>> from torch import nn
    >>> from hf_plasticity import prepare_pretrained, restore_record
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> restore_record(model) is None
    True
    >>> _ = prepare_pretrained(model, "reinit_layers")
    >>> restore_record(model)["strategy"]
    'reinit_layers'
    ```
    """
    model = unwrap_model(model)
    record = getattr(model, RECORD_ATTR, None)
    if record is None:
        record = getattr(getattr(model, "config", None), MODEL_CONFIG_KEY, None)
    return record or None


def blocks_restore(record: dict[str, Any] | None) -> bool:
    """Whether a record stands for a restore that changed the model, so that a second one needs ``force=True``.

    A restore that looked and re-initialized nothing (``"auto"`` finding no block past the probe's peak, ReDo finding
    no dormant unit) is recorded, but does not block a later restore.
    """
    return bool(record) and record.get("total_reinitialized", 1) > 0


def write_record(model: nn.Module, summary: dict[str, Any], transaction: Transaction | None = None) -> None:
    """Records ``summary`` on ``model`` (and in ``model.config.plasticity`` when the model has a transformers config),
    as part of ``transaction`` when given."""
    model = unwrap_model(model)
    targets = [(model, RECORD_ATTR)]
    model_config = getattr(model, "config", None)
    if model_config is not None and hasattr(model_config, "to_dict"):
        targets.append((model_config, MODEL_CONFIG_KEY))
    for obj, name in targets:
        if transaction is None:
            setattr(obj, name, summary)
        else:
            transaction.set_attribute(obj, name, summary)
