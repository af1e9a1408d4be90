"""ReDo (recycling dormant neurons), ported from timoklein/redo and google/dopamine labs/redo.

Sources:

- https://github.com/timoklein/redo, file ``src/redo.py`` (PyTorch), commit 3c0e2a9661ad85ca80523fd205da5eed8eb7b859:
  ``_get_activation``, ``_get_redo_masks``, ``_reset_dormant_neurons``, ``_reset_adam_moments``, ``run_redo``;
- https://github.com/google/dopamine, file ``dopamine/labs/redo/weight_recyclers.py`` (JAX, the authors' code),
  commit 5873f5494ee0c2d7c016d0ab2ad530354fec59d0: ``BaseRecycler.estimate_neuron_score`` and
  ``NeuronRecycler._score2mask``, translated to torch (channels in dimension 1 instead of last).

Changes, each marked ``# port:`` below:

- ``run_redo`` and ``_reset_dormant_neurons`` take the model's Conv/Linear layers in order (the reference takes every
  module after the root, which for its ``QNetwork`` are exactly those), so nets with activation modules work too;
- the re-initialization of incoming weights is a callable (the reference picks one of two with ``use_lecun_init``;
  both are kept here), so that a test can give the reference the library's fresh values.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import optim

Reinit = Callable[[nn.Module, torch.Tensor], None]


@torch.no_grad()
def kaiming_uniform_reinit(layer: nn.Linear | nn.Conv2d, mask: torch.Tensor) -> None:
    """Partially re-initializes the bias of a layer according to the Kaiming uniform scheme."""
    fan_in = nn.init._calculate_correct_fan(tensor=layer.weight, mode="fan_in")
    gain = nn.init.calculate_gain(nonlinearity="relu", param=math.sqrt(5))
    std = gain / math.sqrt(fan_in)
    bound = math.sqrt(3.0) * std
    layer.weight.data[mask, ...] = torch.empty_like(layer.weight.data[mask, ...]).uniform_(-bound, bound)
    if layer.bias is not None:
        if isinstance(layer, nn.Conv2d):
            if fan_in != 0:
                bound = 1 / math.sqrt(fan_in)
                layer.bias.data[mask, ...] = torch.empty_like(layer.bias.data[mask, ...]).uniform_(-bound, bound)
        else:
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            layer.bias.data[mask, ...] = torch.empty_like(layer.bias.data[mask, ...]).uniform_(-bound, bound)


@torch.no_grad()
def lecun_normal_reinit(layer: nn.Linear | nn.Conv2d, mask: torch.Tensor) -> None:
    """Partially re-initializes the bias of a layer according to the Lecun normal scheme."""
    fan_in, _ = nn.init._calculate_fan_in_and_fan_out(layer.weight)
    variance = 1.0 / fan_in
    stddev = math.sqrt(variance) / 0.87962566103423978
    layer.weight[mask] = nn.init._no_grad_trunc_normal_(layer.weight[mask], mean=0.0, std=1.0, a=-2.0, b=2.0)
    layer.weight[mask] *= stddev
    if layer.bias is not None:
        layer.bias.data[mask] = 0.0


@torch.inference_mode()
def _get_activation(name: str, activations: dict[str, torch.Tensor]):
    """Fetches and stores the activations of a network layer."""

    def hook(layer: nn.Linear | nn.Conv2d, input: tuple[torch.Tensor], output: torch.Tensor) -> None:
        """ReLU has to be called explicitly here because the hook is attached to the conv/linear layer."""
        activations[name] = F.relu(output)

    return hook


@torch.inference_mode()
def get_redo_masks(activations: dict[str, torch.Tensor], tau: float) -> list[torch.Tensor]:
    """The ReDo masks: True where neurons are dormant. The last activation (the output layer) is never reset."""
    masks = []
    for _name, activation in list(activations.items())[:-1]:
        if activation.ndim == 4:
            score = activation.abs().mean(dim=(0, 2, 3))  # Conv layer
        else:
            score = activation.abs().mean(dim=0)  # Linear layer
        # Divide by activation mean to make the threshold independent of the layer size
        normalized_score = score / (score.mean() + 1e-9)
        layer_mask = torch.zeros_like(normalized_score, dtype=torch.bool)
        if tau > 0.0:
            layer_mask[normalized_score <= tau] = 1
        else:
            layer_mask[torch.isclose(normalized_score, torch.zeros_like(normalized_score))] = 1
        masks.append(layer_mask)
    return masks


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    # port: the reference uses `list(model.named_modules())[1:]` (its QNetwork holds nothing but these layers)
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


@torch.no_grad()
def reset_dormant_neurons(model: nn.Module, redo_masks: list[torch.Tensor], reinit: Reinit) -> nn.Module:
    """Re-initializes the dormant neurons of a model."""
    layers = weight_layers(model)
    assert len(redo_masks) == len(layers) - 1, "Number of masks must match the number of layers"
    for i in range(len(layers[:-1])):
        mask = redo_masks[i]
        layer = layers[i][1]
        next_layer = layers[i + 1][1]
        if torch.all(~mask):
            continue
        # 1. Reset the ingoing weights using the initialization distribution
        reinit(layer, mask)  # port: `_lecun_normal_reinit` or `_kaiming_uniform_reinit` in the reference
        # 2. Reset the outgoing weights to 0
        if isinstance(layer, nn.Conv2d) and isinstance(next_layer, nn.Linear):
            # Special case: Transition from conv to linear layer
            num_repeatition = next_layer.weight.data.shape[1] // mask.shape[0]
            linear_mask = torch.repeat_interleave(mask, num_repeatition)
            next_layer.weight.data[:, linear_mask] = 0.0
        else:
            next_layer.weight.data[:, mask, ...] = 0.0
    return model


@torch.no_grad()
def reset_adam_moments(optimizer: optim.Adam, reset_masks: list[torch.Tensor]) -> optim.Adam:
    """Resets the moments of the Adam optimizer for the dormant neurons."""
    assert isinstance(optimizer, optim.Adam), "Moment resetting currently only supported for Adam optimizer"
    for i, mask in enumerate(reset_masks):
        # Reset the moments for the weights
        optimizer.state_dict()["state"][i * 2]["exp_avg"][mask, ...] = 0.0
        optimizer.state_dict()["state"][i * 2]["exp_avg_sq"][mask, ...] = 0.0
        # NOTE: Step count resets are key to the algorithm's performance
        optimizer.state_dict()["state"][i * 2]["step"].zero_()
        # Reset the moments for the bias
        optimizer.state_dict()["state"][i * 2 + 1]["exp_avg"][mask] = 0.0
        optimizer.state_dict()["state"][i * 2 + 1]["exp_avg_sq"][mask] = 0.0
        optimizer.state_dict()["state"][i * 2 + 1]["step"].zero_()
        # Reset the moments for the output weights
        if (
            len(optimizer.state_dict()["state"][i * 2]["exp_avg"].shape) == 4
            and len(optimizer.state_dict()["state"][i * 2 + 2]["exp_avg"].shape) == 2
        ):
            # Catch transition from conv to linear layer through moment shapes
            num_repeatition = optimizer.state_dict()["state"][i * 2 + 2]["exp_avg"].shape[1] // mask.shape[0]
            linear_mask = torch.repeat_interleave(mask, num_repeatition)
            optimizer.state_dict()["state"][i * 2 + 2]["exp_avg"][:, linear_mask] = 0.0
            optimizer.state_dict()["state"][i * 2 + 2]["exp_avg_sq"][:, linear_mask] = 0.0
            optimizer.state_dict()["state"][i * 2 + 2]["step"].zero_()
        else:
            optimizer.state_dict()["state"][i * 2 + 2]["exp_avg"][:, mask, ...] = 0.0
            optimizer.state_dict()["state"][i * 2 + 2]["exp_avg_sq"][:, mask, ...] = 0.0
            optimizer.state_dict()["state"][i * 2 + 2]["step"].zero_()
    return optimizer


@torch.inference_mode()
def layer_activations(model: nn.Module, obs: torch.Tensor) -> dict[str, torch.Tensor]:
    """ReLU of every Conv/Linear layer's output on ``obs``, in layer order (``run_redo``'s hooks)."""
    activations: dict[str, torch.Tensor] = {}
    activation_getter = partial(_get_activation, activations=activations)
    handles = [module.register_forward_hook(activation_getter(name)) for name, module in weight_layers(model)]
    try:
        _ = model(obs)
    finally:
        for handle in handles:
            handle.remove()
    return activations


def run_redo(
    obs: torch.Tensor, model: nn.Module, optimizer: optim.Adam | None, tau: float, reinit: Reinit
) -> list[torch.Tensor]:
    """Scores every hidden layer on ``obs``, resets the dormant neurons (and the Adam moments when an optimizer is
    given); returns the masks."""
    masks = get_redo_masks(layer_activations(model, obs), tau)
    reset_dormant_neurons(model, masks, reinit)
    if optimizer is not None:
        reset_adam_moments(optimizer, masks)
    return masks


def dopamine_neuron_score(activation: torch.Tensor, channel_dim: int = -1) -> torch.Tensor:
    """``BaseRecycler.estimate_neuron_score`` (``sub_mean_score=False``, ``is_cbp=False``): mean |activation| over
    every axis but the channel axis, normalized by the layer's mean score. Flax keeps channels last; pass
    ``channel_dim=1`` for a torch NCHW activation."""
    activation = activation.movedim(channel_dim, -1)
    reduce_axes = list(range(activation.ndim - 1))
    score = torch.mean(torch.abs(activation), dim=reduce_axes)
    score = score / (torch.mean(score) + 1e-9)  # Normalize so that all scores sum to one.
    return score


def dopamine_dead_mask(activation: torch.Tensor, threshold: float, channel_dim: int = -1) -> torch.Tensor:
    """``NeuronRecycler._score2mask``: dead where the score is at most the threshold (also for a threshold of 0)."""
    return dopamine_neuron_score(activation, channel_dim) <= threshold
