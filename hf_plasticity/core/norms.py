"""What a normalization layer is: the one definition the targeting, the unit map, the weight-decay groups and the
BatchNorm re-estimation share.

A module is a normalization layer when it is one of torch's (LayerNorm, GroupNorm, RMSNorm, BatchNorm and
InstanceNorm of any dimension, SyncBatchNorm) or its class name says so (``ConvNextLayerNorm``, ``LlamaRMSNorm``,
timm's ``BatchNormAct2d``): model libraries define their own. A BatchNorm layer (running statistics, re-estimated
after a restore) is one of torch's ``_BatchNorm`` subclasses.
"""

from __future__ import annotations

from torch import nn

NORM_TYPES: tuple[type[nn.Module], ...] = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase) + (
    (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()
)


#: The torch classes whose forward a BatchNorm layer runs (SyncBatchNorm has its own): a subclass that overrides it
#: computes something else, which the unit map does not take for a BatchNorm.
BATCHNORM_CLASSES: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._BatchNorm, nn.SyncBatchNorm)


def is_norm(module: nn.Module) -> bool:
    """Whether ``module`` is a normalization layer (see the module docstring).

    Example:

    ```python
    >>> from torch import nn
    >>> from hf_plasticity.core.norms import is_norm
    >>> is_norm(nn.LayerNorm(4)), is_norm(nn.BatchNorm2d(4)), is_norm(nn.Linear(4, 4))
    (True, True, False)
    ```
    """
    return isinstance(module, NORM_TYPES) or "Norm" in type(module).__name__


def is_batchnorm(module: nn.Module) -> bool:
    """Whether ``module`` is a BatchNorm layer of any dimension (SyncBatchNorm included), with running statistics."""
    return isinstance(module, nn.modules.batchnorm._BatchNorm)
