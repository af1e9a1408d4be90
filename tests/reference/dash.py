"""DASH (direction-aware shrinking), ported from baekrok/DASH-Direction-Aware-SHrinking.

Source: https://github.com/baekrok/DASH-Direction-Aware-SHrinking, file ``utils/train_utils.py``, function ``dash``,
commit 3d3cea6c3e80dcc7e1a3c22f272f7354de56c8dc.

Changes, each marked ``# port:`` below: ``args.dash_alpha`` / ``args.dash_lambda`` / ``args.device`` are arguments;
``einops.rearrange(w, 'o i h w -> o i (h w)')`` is the equivalent ``w.view(o, i, h * w)`` (a view, so the in-place
``mul_`` writes into the weight as in the original); ``torch.cuda.empty_cache()`` is dropped; the bias shrink,
written out twice there, is one function here; a transformers output's ``logits`` are read. The model is used in
whatever mode it is in (the reference's training loop leaves it in training mode).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn


def _rearrange(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.view(tensor.shape[0], tensor.shape[1], -1)  # port: 'o i h w -> o i (h w)'


def _shrink_bias(bias: torch.Tensor, direction: torch.Tensor, dash_lambda: float) -> None:
    # port: the reference writes these lines out twice, for Conv2d and for Linear
    cos_sim_bias = torch.cosine_similarity(direction.reshape(1, -1), bias.reshape(1, -1))
    scale_bias = torch.clamp(cos_sim_bias, min=dash_lambda, max=1)
    bias.mul_(scale_bias)


def dash(
    model: nn.Module,
    criterion: nn.Module,
    chunk_loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    dash_alpha: float,
    dash_lambda: float,
) -> nn.Module:
    """Shrinks every Conv2d/Linear weight (per (out, in) kernel / per row) and every bias (one factor per vector) by
    clamp(cos(w, G), lambda, 1), G the EMA of the negative gradients over ``chunk_loader``; in place."""
    temp_net = copy.deepcopy(model)
    all_grad_lst = []
    all_grad_bias_lst = []
    for m in temp_net.modules():
        if isinstance(m, nn.Conv2d) or isinstance(m, nn.Linear):
            all_grad_lst.append(torch.zeros_like(m.weight))
            if m.bias is not None:
                all_grad_bias_lst.append(torch.zeros_like(m.bias))
    # Gather Gradient
    for _i, (x_batch, y_batch) in enumerate(chunk_loader):
        temp_net.zero_grad()
        y_hat = temp_net(x_batch)
        y_hat = getattr(y_hat, "logits", y_hat)  # port: transformers models return an output object
        loss = criterion(y_hat, y_batch)
        loss.backward()
        step = 0
        bias_step = 0
        for m in temp_net.modules():
            if isinstance(m, nn.Conv2d) or isinstance(m, nn.Linear):
                all_grad_lst[step] = (1 - dash_alpha) * all_grad_lst[step] + dash_alpha * (-m.weight.grad.detach())
                if m.bias is not None:
                    all_grad_bias_lst[bias_step] = (1 - dash_alpha) * all_grad_bias_lst[bias_step] + dash_alpha * (
                        -m.bias.grad.detach()
                    )
                    bias_step += 1
                step += 1
    # Shrink
    step = 0
    bias_step = 0
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                grad = _rearrange(all_grad_lst[step])
                param_r = _rearrange(m.weight)
                cos_sim = torch.cosine_similarity(grad, param_r, dim=-1)
                scale = torch.clamp(cos_sim, min=dash_lambda, max=1)
                param_r.mul_(scale[:, :, None])
                step += 1
                if m.bias is not None:
                    _shrink_bias(m.bias, all_grad_bias_lst[bias_step], dash_lambda)
                    bias_step += 1
            elif isinstance(m, nn.Linear):
                cos_sim = torch.cosine_similarity(all_grad_lst[step], m.weight, dim=-1)
                scale = torch.clamp(cos_sim, min=dash_lambda, max=1)
                m.weight.mul_(scale[:, None])
                step += 1
                if m.bias is not None:
                    _shrink_bias(m.bias, all_grad_bias_lst[bias_step], dash_lambda)
                    bias_step += 1
    return model
