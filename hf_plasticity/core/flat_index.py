"""Entries of a tensor named by flat indices in row-major order, whatever the tensor's memory layout.

A plan names the entries it writes by flat index, and the optimizer-state reset restarts the same entries; both go
through [`write_entries`], so a channels-last or transposed tensor gets the entries of its contiguous twin.
"""

from __future__ import annotations

import torch


def write_entries(tensor: torch.Tensor, index: torch.Tensor, values: torch.Tensor) -> None:
    """``tensor.view(-1)[index] = values`` in place, also for a tensor that is not contiguous.

    ``index`` counts entries in row-major order, whatever the memory layout: a transposed view or a channels-last
    weight gets the same entries as its contiguous twin, and keeps its layout.
    """
    index = index.to(tensor.device)
    values = values.to(device=tensor.device, dtype=tensor.dtype)
    if tensor.is_contiguous():
        tensor.view(-1)[index] = values
    else:
        filled = tensor.clone(memory_format=torch.contiguous_format)
        filled.view(-1)[index] = values
        tensor.copy_(filled)
