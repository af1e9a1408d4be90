"""Multi-process helpers: every process must end a restore or a periodic reset with bitwise-identical parameters.

The rule is simple: the main process (rank 0) plans, every process applies the same plan. Only rank 0 reads
calibration data, so a rank with fewer (or no) batches cannot deadlock; the one collective is the broadcast of the
plan. Sharded parameters (FSDP / DTensor / DeepSpeed ZeRO-3) are refused: restore before wrapping.

Only ``torch.distributed`` is used here (no Accelerate), so the same code serves the Trainer callback, a plain
Accelerate loop and ``torchrun`` scripts.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .plan import TensorReset


class ShardedModelError(RuntimeError):
    """The model's parameters are sharded (FSDP, DTensor, DeepSpeed ZeRO-3): restore before wrapping instead."""


def is_distributed() -> bool:
    """True inside an initialized process group with more than one process."""
    return (
        torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and torch.distributed.get_world_size() > 1
    )


def process_index() -> int:
    """Global rank of this process (0 outside a process group)."""
    return torch.distributed.get_rank() if is_distributed() else 0


def process_group_warning(trains_together: bool) -> str | None:
    """A warning when several processes were launched (``WORLD_SIZE`` > 1, as ``torchrun`` sets it, or a process group
    of several processes exists) but the training loop does not train them together (``trains_together`` False, e.g.
    the `Trainer` on CPU without ``use_cpu=True``, whose ``parallel_mode`` is then not distributed even when its
    ``world_size`` reads 2): every process trains its own copy on its own share of the data and writes into the same
    output folder. None when all is well."""
    launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        launched = max(launched, torch.distributed.get_world_size())
    if launched <= 1 or trains_together:
        return None
    return (
        f"{launched} processes were launched (WORLD_SIZE={launched}) but the Trainer does not train them together "
        f"(no DistributedDataParallel): each of the {launched} processes trains its own copy of the model and writes "
        "into the same output folder. On CPU pass --use_cpu (`use_cpu=True`, with `ddp_backend='gloo'`) so they "
        "train together."
    )


def is_main_process() -> bool:
    """True on rank 0, and always outside a process group."""
    return process_index() == 0


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every process (returned unchanged outside a process group)."""
    if not is_distributed():
        return obj
    holder = [obj]
    torch.distributed.broadcast_object_list(holder, src=src)
    return holder[0]


def _all_tensors(model: nn.Module) -> list[torch.Tensor]:
    params = [p for _, p in model.named_parameters(remove_duplicate=False)]
    buffers = [b for _, b in model.named_buffers(remove_duplicate=False)]
    return params + buffers


def pack_plan(model: nn.Module, plan: list[TensorReset]) -> list[dict[str, Any]]:
    """A picklable, device-free form of ``plan``: each write names its tensor by position in the model."""
    position = {}
    for i, tensor in enumerate(_all_tensors(model)):
        position.setdefault(id(tensor), i)
    packed = []
    for reset in plan:
        if id(reset.tensor) not in position:
            raise ValueError(
                f"Planned write into {reset.name}, which is neither a parameter nor a buffer of the model."
            )
        packed.append(
            {
                "position": position[id(reset.tensor)],
                "name": reset.name,
                "values": reset.values.detach().cpu(),
                "index": None if reset.index is None else reset.index.detach().cpu(),
                "block": reset.block,
                "fresh": reset.fresh,
                "reset_state": reset.reset_state,
            }
        )
    return packed


def unpack_plan(model: nn.Module, packed: list[dict[str, Any]]) -> list[TensorReset]:
    """The inverse of [`pack_plan`] on this process's copy of the model."""
    tensors = _all_tensors(model)
    return [
        TensorReset(
            name=item["name"],
            tensor=tensors[item["position"]],
            values=item["values"],
            index=item["index"],
            block=item["block"],
            fresh=item["fresh"],
            reset_state=item["reset_state"],
        )
        for item in packed
    ]


class RankFailedError(RuntimeError):
    """Another process (rank 0) failed during a step that every process takes together."""


def run_on_main(fn: Callable[[], Any]) -> Any:
    """Runs ``fn`` on rank 0 and returns its result on every process (one broadcast).

    If ``fn`` raises on rank 0, rank 0 re-raises it and every other process raises [`RankFailedError`] naming it, so
    no process is left waiting in the collective. Outside a process group this is just ``fn()``.
    """
    if not is_distributed():
        return fn()
    if is_main_process():
        try:
            payload = ("ok", fn())
        except BaseException as error:
            broadcast_object(("error", f"{type(error).__name__}: {error}"))
            raise
        broadcast_object(payload)
        return payload[1]
    status, value = broadcast_object(None)
    if status == "error":
        raise RankFailedError(f"Rank 0 failed, so this process stops too: {value}")
    return value


def share_plan(model: nn.Module, plan: Callable[[], tuple[list[TensorReset], Any]]) -> tuple[list[TensorReset], Any]:
    """Rank 0's plan (and any picklable extra, e.g. its decisions and the strategy state) on every process.

    Call it on every process; ``plan`` is called on rank 0 only and returns ``(resets, extra)``. A failure on rank 0
    stops every process (see [`run_on_main`]). Outside a process group ``plan()`` is returned as it is.
    """
    if not is_distributed():
        return plan()

    def packed() -> tuple[list[dict[str, Any]], Any]:
        resets, extra = plan()
        return pack_plan(model, resets), extra

    resets, extra = run_on_main(packed)
    return unpack_plan(model, resets), extra


def sharded_parameters(model: nn.Module) -> list[str]:
    """Names of the parameters that are sharded across processes (DTensor, FSDP flat parameters, ZeRO-3)."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - very old torch
        DTensor = ()  # noqa: N806
    names = []
    for name, param in model.named_parameters():
        if (
            isinstance(param, DTensor)
            or getattr(param, "_is_flat_param", False)
            or hasattr(param, "ds_id")  # DeepSpeed ZeRO-3
            or hasattr(param, "_local_tensor")
        ):
            names.append(name)
    return names


def check_not_sharded(model: nn.Module) -> None:
    """Raises [`ShardedModelError`] when ``model`` holds sharded parameters.

    A re-initialization writes whole tensors in place; on a shard it would draw different values on every process.
    FSDP / DeepSpeed users restore the plain model first (``prepare_pretrained`` before ``accelerator.prepare`` or
    before building the Trainer), then wrap it.
    """
    names = sharded_parameters(model)
    if names:
        raise ShardedModelError(
            f"{len(names)} parameters of {type(model).__name__} are sharded (FSDP / DTensor / DeepSpeed ZeRO-3), e.g. "
            f"{names[0]!r}. hf-plasticity cannot re-initialize sharded parameters: restore before wrapping, i.e. call "
            "`prepare_pretrained(model, config, data=...)` on the plain model before `accelerator.prepare(...)` or "
            "before creating the Trainer, and use no periodic strategy with FSDP / ZeRO-3."
        )


@torch.no_grad()
def parameter_fingerprint(model: nn.Module) -> dict[str, list[float]]:
    """Sum, sum of absolute values and sum of squares (float64) of each parameter, by name: a cheap check that a model
    holds the weights it should, e.g. that a resume really loaded the checkpoint, which also names what differs."""
    names, rows = [], []
    with torch.no_grad():
        for name, param in model.named_parameters():
            values = param.detach().double()
            names.append(name)
            rows.append(torch.stack([values.sum(), values.abs().sum(), values.square().sum()]))
    if not rows:
        return {}
    return dict(zip(names, torch.stack([row.cpu() for row in rows]).tolist(), strict=True))


def fingerprint_differences(
    current: dict[str, list[float]], saved: dict[str, list[float]] | list[float], rtol: float = 1e-6
) -> list[str]:
    """The parameters whose [`parameter_fingerprint`] entries disagree beyond float round-off (each measured on its own
    scale), those present on one side only included; empty when the fingerprints agree.

    ``saved`` may be the older form, three sums over all parameters: it is compared with the totals of ``current``,
    and a difference is reported as ``["(all parameters)"]``.
    """
    if not isinstance(saved, dict):
        totals = [sum(row[i] for row in current.values()) for i in range(3)] if current else [0.0, 0.0, 0.0]
        return [] if _sums_agree(totals, list(saved), rtol) else ["(all parameters)"]
    differ = [name for name in current if name not in saved or not _sums_agree(current[name], saved[name], rtol)]
    return differ + [name for name in saved if name not in current]


def _sums_agree(a: list[float], b: list[float], rtol: float) -> bool:
    scale = max(abs(b[1]), 1e-12)
    return (
        abs(a[0] - b[0]) <= rtol * scale
        and abs(a[1] - b[1]) <= rtol * scale
        and abs(a[2] - b[2]) <= rtol * max(abs(b[2]), 1e-12)
    )
