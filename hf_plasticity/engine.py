"""`prepare_pretrained`: resolve targets, score, select, then apply, all-or-nothing."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from .batchnorm import recalibrate_batchnorm as _recalibrate_batchnorm
from .batchnorm import reset_batchnorm_modules
from .config import MODEL_CONFIG_KEY, PlasticityConfig, get_config_class
from .data import CalibrationDataError
from .optim import reset_optimizer_state, unwrap_optimizer
from .report import PlasticityReport, TensorRecord
from .strategies.base import Strategy, TensorReset, get_strategy
from .strategies.reinit_layers import LayerReinitConfig

logger = logging.getLogger(__name__)

_RECORD_ATTR = "_hf_plasticity_record"


class AlreadyRestoredError(RuntimeError):
    """The model was restored before; pass ``force=True`` to restore it again."""


def default_config() -> PlasticityConfig:
    """The strategy used when none is given: re-initialize the last eighth of the backbone's blocks (at least one)."""
    return LayerReinitConfig()


def resolve_config(config: PlasticityConfig | str | None) -> PlasticityConfig:
    """A config instance from a config, a strategy name, or None (the default)."""
    if config is None:
        return default_config()
    if isinstance(config, str):
        return get_config_class(config)()
    if isinstance(config, PlasticityConfig):
        return config
    raise TypeError(f"`config` must be a PlasticityConfig, a strategy name or None, got {type(config).__name__}.")


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
    record = getattr(model, _RECORD_ATTR, None)
    if record is None:
        record = getattr(getattr(model, "config", None), MODEL_CONFIG_KEY, None)
    return record or None


@torch.no_grad()
def apply_plan(plan: list[TensorReset], after: Callable[[], Any] | None = None) -> None:
    """Writes every planned value in place, then runs ``after`` (a follow-up that may write the same tensors);
    on any failure, the tensors already written are put back.
    """
    backups: list[tuple[TensorReset, torch.Tensor]] = []
    try:
        for reset in plan:
            tensor = reset.tensor.data
            values = reset.values.to(device=tensor.device, dtype=tensor.dtype)
            if reset.index is None:
                if values.shape != tensor.shape:
                    raise ValueError(
                        f"Planned values for {reset.name} have shape {tuple(values.shape)}, "
                        f"expected {tuple(tensor.shape)}."
                    )
                backups.append((reset, tensor.clone()))
                tensor.copy_(values)
            else:
                index = reset.index.to(tensor.device)
                backups.append((reset, tensor.reshape(-1)[index].clone()))
                _write_entries(tensor, index, values)
        if after is not None:
            after()
    except BaseException:
        for reset, old in reversed(backups):
            if reset.index is None:
                reset.tensor.data.copy_(old)
            else:
                _write_entries(reset.tensor.data, reset.index.to(old.device), old)
        raise


def _write_entries(tensor: torch.Tensor, index: torch.Tensor, values: torch.Tensor) -> None:
    if tensor.is_contiguous():
        tensor.view(-1)[index] = values
    else:
        filled = tensor.clone()
        filled.view(-1)[index] = values
        tensor.copy_(filled)


def _records(model: nn.Module, plan: list[TensorReset]) -> list[TensorRecord]:
    param_ids = {id(p) for p in model.parameters()}
    merged: dict[str, TensorRecord] = {}
    for reset in plan:
        if not reset.fresh:
            continue
        kind = "parameter" if id(reset.tensor) in param_ids else "buffer"
        record = merged.setdefault(reset.name, TensorRecord(reset.name, reset.block, reset.tensor.numel(), 0, kind))
        record.reinitialized += reset.count
    return list(merged.values())


def apply_strategy_plan(
    model: nn.Module,
    strategy: Strategy,
    plan: list[TensorReset],
    *,
    optimizer: Any = None,
    start: float | None = None,
    after: Callable[[], Any] | None = None,
) -> PlasticityReport:
    """Applies a strategy's plan all-or-nothing, resets the optimizer state of the touched entries, and reports.

    This is the shared path of the one-shot restore and of every periodic reset during training (which does not
    record anything on the model and ignores the "already restored" guard).
    """
    start = time.perf_counter() if start is None else start
    if optimizer is not None:
        unwrap_optimizer(optimizer)
    apply_plan(plan, after=after)
    if optimizer is not None:
        reset_optimizer_state(optimizer, [(r.tensor, r.index) for r in plan])
    return PlasticityReport(
        strategy=strategy.config.strategy,
        config=strategy.config.to_dict(),
        tensors=_records(model, plan),
        total_parameters=sum(p.numel() for p in model.parameters()),
        seconds=time.perf_counter() - start,
        details=strategy.details(),
    )


def prepare_pretrained(
    model: nn.Module,
    config: PlasticityConfig | str | None = None,
    *,
    data: Any = None,
    optimizer: Any = None,
    force: bool = False,
    diagnostics: bool | None = None,
    diagnostics_batches: int = 2,
    recalibrate_batchnorm: bool | None = None,
) -> PlasticityReport:
    """Restores the plasticity of a pretrained model in place, before (or during) fine-tuning.

    The strategy plans every write first (scoring on ``data`` when it needs to), then all writes are applied at
    once: if anything fails, the model is bitwise what it was. Parameter objects, dtype, device and
    ``requires_grad`` never change, so an existing optimizer keeps training the same tensors.

    Args:
        model: a transformers image classifier (ViT, ConvNeXt, ConvNeXtV2, ResNet) or any torch vision model.
        config: a strategy config, a strategy name (its default config), or None for the default
            (`LayerReinitConfig()`: the last eighth of the backbone's blocks, at least one).
        data: downstream calibration data for data-dependent strategies: a DataLoader, a `datasets.Dataset`
            with ``pixel_values`` and ``labels``, or an iterable of such dicts.
        optimizer: when given, the optimizer state of every re-drawn entry is reset (and only of those).
        force: restore again a model that was already restored.
        diagnostics: measure [`diagnose`] before and after the restore on ``data`` (into ``report.diagnostics``
            as ``{"before": ..., "after": ...}``). Default: on when ``data`` is given and can be read twice (not a
            one-pass iterator). Its time is not part of ``report.seconds``.
            Unreadable data (e.g. without labels) skips them with a warning unless ``diagnostics=True``.
        diagnostics_batches: batches read by each of the two diagnostics passes.
        recalibrate_batchnorm: re-estimate the running statistics of every BatchNorm layer the restore re-drew
            (which resets them to 0/1) from up to 8 batches of ``data``, so the restored model evaluates well from
            the start; part of the all-or-nothing restore. Default: on when ``data`` is given.

    Returns:
        [`PlasticityReport`]: per tensor the entries re-initialized, totals and wall time. The same summary is
        recorded in ``model.config.plasticity`` (saved by ``save_pretrained`` into ``config.json``).

    Example:

    ```python
    >>> from transformers import ViTConfig, ViTForImageClassification
    >>> from hf_plasticity import prepare_pretrained
    >>> config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
    ...                    num_attention_heads=2, intermediate_size=64, num_labels=3)
    >>> model = ViTForImageClassification(config)
    >>> report = prepare_pretrained(model, "reinit_layers")
    >>> report.by_block()
    {'1': 8544, '-': 64}
    ```
    """
    config = resolve_config(config)
    if restore_record(model) is not None and not force:
        raise AlreadyRestoredError(
            f"This model was already restored ({restore_record(model)['strategy']}); pass `force=True` to restore "
            "it again."
        )
    strategy = get_strategy(config)
    if strategy.requires_data and data is None:
        raise ValueError(
            f"Strategy {config.strategy!r} with these settings scores weights on downstream data: pass `data=` "
            "(a DataLoader or a datasets.Dataset with `pixel_values` and `labels`), or choose a data-free setting."
        )
    if optimizer is not None:
        unwrap_optimizer(optimizer)  # a wrong type fails here, before anything is written
    before = None
    if _want_diagnostics(diagnostics, data, diagnostics_batches):
        try:
            before = _diagnose(model, data, diagnostics_batches)
        except CalibrationDataError as error:  # e.g. unlabeled data: only an explicit request makes this fatal
            if diagnostics:
                raise
            logger.warning("Skipping the diagnostics: %s", error)
    start = time.perf_counter()
    plan = strategy.plan(model, data=data)
    after = None
    if recalibrate_batchnorm or (recalibrate_batchnorm is None and data is not None):
        if data is None:
            raise ValueError("`recalibrate_batchnorm=True` needs `data=` to estimate the statistics on.")
        names = reset_batchnorm_modules(model, plan)
        if names:

            def after() -> None:
                _recalibrate_batchnorm(model, data, names)

    report = apply_strategy_plan(model, strategy, plan, optimizer=optimizer, start=start, after=after)
    if before is not None:
        report.diagnostics = {"before": before}
        try:
            report.diagnostics["after"] = _diagnose(model, data, diagnostics_batches)
        except Exception as error:  # the restore itself succeeded: keep it, say why "after" is missing
            logger.warning("Diagnostics after the restore failed: %s", error)
    record_restore(model, report)
    logger.info("Restored %s entries (%s) with %s", report.total_reinitialized, f"{report.share:.2%}", config.strategy)
    return report


def _want_diagnostics(diagnostics: bool | None, data: Any, diagnostics_batches: int) -> bool:
    one_pass = isinstance(data, Iterator)
    if not isinstance(diagnostics_batches, int) or diagnostics_batches < 1:
        raise ValueError(f"`diagnostics_batches` must be a positive integer, got {diagnostics_batches!r}.")
    if diagnostics is None:
        return data is not None and not one_pass
    if diagnostics and data is None:
        raise ValueError("`diagnostics=True` needs `data=` (the diagnostics are measured on downstream batches).")
    if diagnostics and one_pass:
        raise ValueError(
            "`diagnostics=True` reads `data` more than once, but it is a one-pass iterator: pass a list, a "
            "DataLoader or a datasets.Dataset, or `diagnostics=False`."
        )
    return bool(diagnostics)


def _diagnose(model: nn.Module, data: Any, batches: int) -> Any:
    from .diagnostics import diagnose

    return diagnose(model, data, batches=batches)


def record_restore(model: nn.Module, report: PlasticityReport) -> None:
    """Records what a restore did on `model` (and in `model.config.plasticity`, saved into config.json)."""
    summary = report.summary()
    setattr(model, _RECORD_ATTR, summary)
    model_config = getattr(model, "config", None)
    if model_config is not None and hasattr(model_config, "to_dict"):
        setattr(model_config, MODEL_CONFIG_KEY, summary)
