"""The restore pipeline: every restore goes through [`restore`], from every entry point.

[`prepare_pretrained`], the one-shot restore of [`PlasticityController`] / [`PlasticityCallback`], and every reset of
a periodic strategy during training take the same steps, as one transaction ([`hf_plasticity.core.transaction`]):

1. resolve: the innermost model (wrappers removed), checked restorable; the config, validated;
2. plan: the strategy plans on rank 0, reading the calibration data;
3. share: every process receives rank 0's plan (and its decisions, and for a periodic reset its running state);
4. apply: the writes, in place;
5. re-estimate the running statistics of re-drawn BatchNorm layers from the calibration data (rank 0, then shared);
6. reset the optimizer state of every written entry, and only of those (except writes planned with
   ``reset_state=False``, such as continual backprop's next-layer bias correction); the new state is computed before
   step 4, so state that cannot be reset is refused before anything is written;
7. record what was done on the model (``model.config.plasticity``): a one-shot restore replaces the record, keeping
   the fine-tuning recipe and the periodic resets recorded before it, if any ([`recommend_recipe`] is called before
   the restore); a periodic reset is counted in the record's ``periodic`` entry of its strategy (on a record of
   strategy ``"none"`` when the model carries none: no one-shot restore), so a checkpoint of a periodic-only run says
   what was done;
8. report.

If any step fails, the parameters and buffers, ``model.config.plasticity``, the optimizer state, the strategy's running
state, the RNG state, the modules' training modes and the ``.grad`` tensors are all what they were before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from ..core.collectives import is_distributed, is_main_process, run_on_main, share_plan
from ..core.config import PlasticityConfig, resolve_config
from ..core.data import CalibrationDataError, replayable
from ..core.optim import check_optimizer_for, fresh_state
from ..core.plan import Plan, TensorReset, state_entries
from ..core.record import (
    RecordError,
    RestoreRecord,
    blocks_restore,
    record_periodic_reset,
    restore_record,
    write_record,
)
from ..core.redrawn import describe_redrawn
from ..core.transaction import Transaction
from ..core.unwrap import check_restorable, check_writes_not_tied, unwrap_model
from ..core.validators import check_flag
from ..strategies.base import Strategy, get_strategy
from .batchnorm import check_finite_statistics, reset_batchnorm_modules
from .batchnorm import recalibrate_batchnorm as _recalibrate_batchnorm
from .report import PlasticityReport, TensorRecord, json_details, shown_names

logger = logging.getLogger(__name__)

#: The strategy of `prepare_pretrained(model)` and `PlasticityCallback()`: the last eighth of the blocks, at least one.
DEFAULT_STRATEGY = "reinit_layers"
#: Batches of calibration data read to re-estimate the statistics of re-drawn BatchNorm layers.
BATCHNORM_BATCHES = 8


class AlreadyRestoredError(RuntimeError):
    """The model was restored before; pass ``force=True`` to restore it again."""


def check_not_restored(model: nn.Module, force: bool) -> None:
    """Raises [`AlreadyRestoredError`] when ``model`` carries the record of a restore that changed it and ``force`` is
    False (a recorded restore that re-initialized nothing does not block)."""
    check_flag("force", force)
    if force:  # restoring again: the old record, even a broken one, is replaced
        return
    record = restore_record(model)
    if blocks_restore(record):
        raise AlreadyRestoredError(
            f"This model was already restored ({record.strategy}); pass `force=True` to restore it again."
        )


def restore(
    model: nn.Module,
    strategy: Strategy,
    *,
    data: Any = None,
    optimizer: Any = None,
    step: int | None = None,
    force: bool = False,
    recalibrate_batchnorm: bool | None = None,
    check: Callable[[], Any] | None = None,
) -> PlasticityReport:
    """Runs one restore of ``strategy`` on ``model`` as one transaction (see the module docstring for the steps).

    Call it on every process of a process group: rank 0 reads ``data`` and plans, every process applies the same plan.

    Args:
        model: the model, or a wrapper of it (DDP, DataParallel, ``torch.compile``, Accelerate).
        strategy: the strategy instance (it keeps its running state between periodic resets).
        data: calibration batches (read on rank 0 only); made replayable, so every step reads the same batches.
        optimizer: when given, the state of every re-drawn entry is reset, and only of those.
        step: None for the one-shot restore (refused on a restored model unless ``force``; recorded on the model);
            the optimizer step after which a periodic reset is due, for a reset during training (counted in the
            record's ``periodic`` list, [`record_periodic_reset`]).
        force: restore a model that was already restored (one-shot only).
        recalibrate_batchnorm: re-estimate re-drawn BatchNorm statistics from ``data``. None: when data is at hand.
        check: called last, inside the transaction (after the record is written): an error it raises undoes the whole
            restore. The Trainer route builds the run's optimizer groups here, so groups that cannot be built (a
            ``reinit_lr`` over a partial re-draw) leave the model as it was.

    Returns:
        [`PlasticityReport`]: per tensor the entries re-initialized, totals, wall time and the strategy's decisions.
    """
    model = unwrap_model(model)
    check_restorable(model)
    if step is None:
        check_not_restored(model, force)
    if optimizer is not None:
        check_optimizer_for(optimizer, model)  # a wrong type or another model's optimizer fails here
    if is_main_process() and strategy.requires_data and data is None:
        raise CalibrationDataError(
            f"Strategy {strategy.name!r} with these settings scores weights on downstream data: pass `data=` (a "
            "DataLoader or a datasets.Dataset with `pixel_values` and `labels`), or choose a data-free setting."
        )
    check_flag("recalibrate_batchnorm", recalibrate_batchnorm, allow_none=True)
    if recalibrate_batchnorm and data is None and is_main_process():
        raise ValueError("`recalibrate_batchnorm=True` needs `data=` to estimate the statistics on.")
    earlier = _earlier_record(model) if step is None else None  # its recipe and periodic resets stay in the new one
    recipe = earlier.recipe if earlier is not None else None
    data = replayable(data)
    start = time.perf_counter()
    with Transaction(model) as transaction:
        saved_state = strategy.state_dict()
        transaction.on_failure(lambda: strategy.load_state_dict(saved_state))
        resets, (details, state) = share_plan(model, lambda: _plan(model, strategy, data, step))
        if step is not None and not is_main_process():
            strategy.load_state_dict(state)
        check_writes_not_tied(model, resets)
        if optimizer is not None:  # before any write: optimizer state that cannot be reset is refused here
            names = {id(p): n for n, p in model.named_parameters()}
            state_swaps = fresh_state(optimizer, state_entries(resets), names)
        transaction.apply(resets)
        if recalibrate_batchnorm is not False:
            _reestimate_batchnorm(model, resets, data, transaction)
        if optimizer is not None:
            transaction.swap_state(state_swaps)
        report = PlasticityReport(
            strategy=strategy.name,
            config=strategy.config.to_dict(),
            tensors=_records(model, resets),
            total_parameters=sum(p.numel() for p in model.parameters()),
            seconds=time.perf_counter() - start,
            details=dict(details or {}),
            redrawn=describe_redrawn(model, resets if strategy.redraws else []),
            recipe=recipe,
        )
        if step is None:
            report.blocks, report.checkpoint_names = shown_names(model, report)
            record = report.record()
            write_record(model, replace(record, periodic=earlier.periodic) if earlier else record, transaction)
        else:
            record_periodic_reset(model, strategy.name, report.config, report.total_reinitialized, transaction)
        if check is not None:
            check()
    return report


def _earlier_record(model: nn.Module) -> RestoreRecord | None:
    """The record on ``model`` before a one-shot restore, whose fine-tuning recipe ([`recommend_recipe`] asks to be
    called before the restore) and periodic resets (training the weights went through) the new record keeps; None
    when there is none, or when it is unreadable (only ``force=True`` gets here with one, and it replaces that record
    whole)."""
    try:
        return restore_record(model)
    except RecordError:
        return None


def _plan(model: nn.Module, strategy: Strategy, data: Any, step: int | None) -> tuple[list[TensorReset], Any]:
    plan = strategy.plan(model, data=data) if step is None else strategy.plan_step(model, step=step, data=data)
    if not isinstance(plan, Plan):
        method = "plan" if step is None else "plan_step"
        raise TypeError(
            f"{type(strategy).__name__}.{method} must return a hf_plasticity.Plan (the resets and the decisions), "
            f"got {type(plan).__name__}."
        )
    details = json_details(plan.details, strategy.name)  # refused here, before any write, if not JSON data
    return plan.resets, (details, strategy.state_dict() if step is not None else None)


def _reestimate_batchnorm(model: nn.Module, resets: list[TensorReset], data: Any, transaction: Transaction) -> None:
    """Re-estimates the statistics of the BatchNorm layers the plan re-drew whole, on rank 0 from ``data``; every
    other process receives rank 0's statistics. Statistics that came out NaN or infinite (the model overflowed on the
    data) are refused with a [`CalibrationDataError`], on every process, which undoes the restore."""
    names = reset_batchnorm_modules(model, resets)
    if not names:
        return
    modules = [model.get_submodule(name) for name in names]
    transaction.save_tensors([b for m in modules for b in m.buffers(recurse=False)])

    def estimate() -> list[list[torch.Tensor]] | None:
        if data is None:
            return None
        _recalibrate_batchnorm(model, data, names, num_batches=BATCHNORM_BATCHES)
        return [[b.detach().cpu() for b in m.buffers(recurse=False)] for m in modules] if is_distributed() else None

    statistics = run_on_main(estimate)
    if statistics is not None and not is_main_process():
        with torch.no_grad():
            for module, values in zip(modules, statistics):
                for buffer, value in zip(module.buffers(recurse=False), values):
                    buffer.copy_(value)
    check_finite_statistics(model, names)  # every process holds rank 0's statistics: all raise, or none


def _records(model: nn.Module, resets: list[TensorReset]) -> list[TensorRecord]:
    """One record per written tensor, under its first name in the model, each entry counted once: a tensor written
    by several resets (under two names when tied, see [`check_writes_not_tied`]) counts the union of their entries."""
    param_ids = {id(p) for p in model.parameters()}
    first_name = {id(t): n for n, t in [*model.named_buffers(), *model.named_parameters()]}
    by_tensor: dict[int, list[TensorReset]] = {}
    for reset in resets:
        by_tensor.setdefault(id(reset.tensor), []).append(reset)
    records = []
    for key, written in by_tensor.items():
        tensor = written[0].tensor
        name = first_name.get(key, written[0].name)
        block = next((r.block for r in written if r.name == name), written[0].block)
        kind = "parameter" if key in param_ids else "buffer"
        fresh = _entries([r for r in written if r.fresh])
        edited = _entries([r for r in written if not r.fresh])
        records.append(TensorRecord(name, block, tensor.numel(), fresh, kind, edited))
    return records


def _entries(resets: list[TensorReset]) -> int:
    """Entries of one tensor that ``resets`` write, each counted once."""
    if not resets:
        return 0
    if any(r.index is None for r in resets):
        return resets[0].tensor.numel()
    if len(resets) == 1:
        return resets[0].count
    written = torch.zeros(resets[0].tensor.numel(), dtype=torch.bool)
    for reset in resets:
        written[reset.index.cpu()] = True
    return int(written.sum())


def prepare_pretrained(
    model: nn.Module,
    config: PlasticityConfig | str | dict | None = None,
    *,
    data: Any = None,
    optimizer: Any = None,
    force: bool = False,
    diagnostics: bool | None = None,
    diagnostics_batches: int = 2,
    recalibrate_batchnorm: bool | None = None,
    check: Callable[[], Any] | None = None,
) -> PlasticityReport:
    """Restores the plasticity of a pretrained model in place, before (or during) fine-tuning.

    The strategy plans every write first (scoring on ``data`` when it needs to), then the writes, the BatchNorm
    re-estimation, the optimizer-state reset and the record are applied as one transaction: if anything fails, the
    model (and the optimizer) are bitwise what they were. Parameter objects, dtype, device and ``requires_grad`` never
    change, so an existing optimizer keeps training the same tensors.

    Args:
        model: a transformers image classifier (ViT, ConvNeXt, ConvNeXtV2, ResNet) or any torch vision model; a
            wrapped model (DDP, DataParallel, ``torch.compile``, Accelerate) is restored through its inner model.
        config: a strategy config, a strategy name (its default config), a config dict, or None for the default
            (`LayerReinitConfig()`: the last eighth of the backbone's blocks, at least one).
        data: downstream calibration data for data-dependent strategies: a DataLoader, a `datasets.Dataset`
            with ``pixel_values`` and ``labels``, or an iterable of such dicts. Every step of the restore (scoring,
            BatchNorm re-estimation, diagnostics) reads the same batches, also from a one-pass iterator.
        optimizer: when given, the optimizer state of every re-drawn entry is reset (and only of those).
        force: restore again a model that was already restored.
        diagnostics: measure [`diagnose`] before and after the restore on ``data`` (into ``report.diagnostics``
            as ``{"before": ..., "after": ...}``). Default: on when ``data`` is given. Its time is not part of
            ``report.seconds``. Unreadable data (e.g. without labels) skips them with a warning unless
            ``diagnostics=True``.
        diagnostics_batches: batches read by each of the two diagnostics passes.
        recalibrate_batchnorm: re-estimate the running statistics of every BatchNorm layer the restore re-drew
            (which resets them to 0/1) from up to 8 batches of ``data``, so the restored model evaluates well from
            the start; part of the all-or-nothing restore. Default: on when ``data`` is given.

    Returns:
        [`PlasticityReport`]: per tensor the entries re-initialized, totals and wall time. The same summary is
        recorded in ``model.config.plasticity`` (saved by ``save_pretrained`` into ``config.json``), replacing the
        record there but keeping its fine-tuning recipe ([`recommend_recipe`]) when it has one.

    Example:

    ```python
    >>> from transformers import ViTConfig, ViTForImageClassification
    >>> from hf_plasticity import prepare_pretrained
    >>> config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
    ...                    num_attention_heads=2, intermediate_size=64, num_labels=3)
    >>> model = ViTForImageClassification(config)
    >>> report = prepare_pretrained(model, "reinit_layers")
    >>> report.by_block()  # blocks by the names of their weights in the checkpoint
    {'vit.encoder.layer.1': 8544, 'vit.layernorm': 64}
    ```
    """
    strategy = get_strategy(resolve_config(config, DEFAULT_STRATEGY))
    check_flag("recalibrate_batchnorm", recalibrate_batchnorm, allow_none=True)
    want_diagnostics = _want_diagnostics(diagnostics, data, diagnostics_batches)
    check_restorable(unwrap_model(model))
    check_not_restored(unwrap_model(model), force)
    data = replayable(data)
    before = None
    if want_diagnostics:
        try:
            before = _diagnose(model, data, diagnostics_batches)
        except CalibrationDataError as error:  # e.g. unlabeled data: only an explicit request makes this fatal
            if diagnostics:
                raise
            logger.warning("Skipping the diagnostics: %s", error)
    report = restore(
        model, strategy, data=data, optimizer=optimizer, force=force, recalibrate_batchnorm=recalibrate_batchnorm
    )
    if before is not None:
        report.diagnostics = {"before": before}
        try:
            report.diagnostics["after"] = _diagnose(model, data, diagnostics_batches)
        except Exception as error:  # the restore itself succeeded: keep it, say why "after" is missing
            logger.warning("Diagnostics after the restore failed: %s", error)
        write_record(model, report.record())  # the record keeps the overall numbers before and after
    logger.info("Restored %s entries (%s) with %s", report.total_reinitialized, f"{report.share:.2%}", strategy.name)
    return report


def _want_diagnostics(diagnostics: bool | None, data: Any, diagnostics_batches: int) -> bool:
    if not isinstance(diagnostics_batches, int) or isinstance(diagnostics_batches, bool) or diagnostics_batches < 1:
        raise ValueError(f"`diagnostics_batches` must be a positive integer, got {diagnostics_batches!r}.")
    check_flag("diagnostics", diagnostics, allow_none=True)
    if diagnostics and data is None:
        raise ValueError("`diagnostics=True` needs `data=` (the diagnostics are measured on downstream batches).")
    return data is not None if diagnostics is None else diagnostics


def _diagnose(model: nn.Module, data: Any, batches: int) -> Any:
    from ..diagnostics.diagnose import diagnose

    return diagnose(unwrap_model(model), data, batches=batches)
