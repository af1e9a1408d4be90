"""Shrink & perturb, ported from JordanAsh/warm_start.

Source: https://github.com/JordanAsh/warm_start, file ``run.py``, function ``shrink_perturb``,
commit 896176b2cf89f259bcde8e241a8987e6019741d0.

The one change: the reference builds its noise source inside (``new_init = resnet.ResNet18(...)`` or ``mlp(...)``,
a freshly initialized copy of the network); here it is an argument, so that a test can hand both the reference and
the library the same fresh draw. Note what the reference returns: ``new_init`` itself, so every *parameter* is
``shrink * old + perturb * fresh`` and every *buffer* (BatchNorm running statistics) is the fresh network's.
"""

from __future__ import annotations

from copy import deepcopy

from torch import nn


def shrink_perturb(net: nn.Module, new_init: nn.Module, shrink: float, perturb: float) -> nn.Module:
    # using a randomly-initialized model as a noise source respects how different kinds
    # of parameters are often initialized differently
    params1 = new_init.parameters()
    params2 = net.parameters()
    for p1, p2 in zip(*[params1, params2]):
        p1.data = deepcopy(shrink * p2.data + perturb * p1.data)
    return new_init
