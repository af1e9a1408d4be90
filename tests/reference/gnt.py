"""Continual backprop's generate-and-test, ported from shibhansh/loss-of-plasticity.

Sources (commit 63c35f3c758bbb713dd42c72d43dc192fde0d109 of https://github.com/shibhansh/loss-of-plasticity):

- ``lop/algos/gnt.py``, class ``GnT`` (feed-forward nets; used by ``lop/algos/cbp.py``): ported below as [`GnT`],
  for ``util_type='contribution'``;
- ``lop/algos/convGnT.py``, ``ConvGnT.update_utility`` and the output indices of ``ConvGnT.test_features``
  (``util_type='contribution'``): ported below as [`conv_update_utility`] and [`conv_output_indices`].

Changes, each marked ``# port:`` below:

- ``draw``: the new incoming weights and biases come from a callable (the reference draws uniform(-bound, bound)
  weights and zero biases, the default here), so that a test can give the reference the library's fresh values;
- ``correct_with_mean_before_reset``: as published, ``test_features`` zeroes ``mean_feature_act`` of the replaced
  units *before* ``gen_new_features`` reads it for the next layer's bias correction, so the correction the code
  writes (``next bias += w_out * mean / (1 - decay ** age)``) always adds 0. With this switch on, the mean is zeroed
  after the correction instead, which is the correction the code spells out (and the library implements); off (the
  default) is the published behaviour;
- ``update_optim_params`` takes torch's ``Adam``/``AdamW`` (the reference's ``AdamGnT`` keeps a step count per entry
  and zeroes it too; torch keeps one per tensor, which is left alone here, as the library does);
- the other utility types, the non-accumulating (random) rounding and the ``device`` handling are dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from math import sqrt

import torch
from torch.nn import Conv2d, Linear

Draw = Callable[[int, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class GnT:
    """Generate-and-Test for feed-forward nets, maturity-threshold based replacement (``accumulate=True``)."""

    def __init__(
        self,
        net,
        hidden_activation: str,
        opt: torch.optim.Optimizer,
        decay_rate: float = 0.99,
        replacement_rate: float = 1e-4,
        maturity_threshold: int = 20,
        draw: Draw | None = None,
        correct_with_mean_before_reset: bool = False,
    ) -> None:
        self.net = net
        self.num_hidden_layers = int(len(self.net) / 2)
        self.opt = opt
        self.replacement_rate = replacement_rate
        self.decay_rate = decay_rate
        self.maturity_threshold = maturity_threshold
        self.draw = draw or self.uniform_draw  # port
        self.correct_with_mean_before_reset = correct_with_mean_before_reset  # port
        n = [self.net[i * 2].out_features for i in range(self.num_hidden_layers)]
        self.util = [torch.zeros(k) for k in n]
        self.bias_corrected_util = [torch.zeros(k) for k in n]
        self.ages = [torch.zeros(k) for k in n]
        self.mean_feature_act = [torch.zeros(k) for k in n]
        self.accumulated_num_features_to_replace = [0 for _ in range(self.num_hidden_layers)]
        gain = torch.nn.init.calculate_gain(nonlinearity=hidden_activation)
        self.bounds = [gain * sqrt(3 / self.net[i * 2].in_features) for i in range(self.num_hidden_layers)]

    def uniform_draw(self, layer_idx: int, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference's new features: uniform(-bound, bound) incoming weights, zero bias."""
        layer = self.net[layer_idx * 2]
        bound = self.bounds[layer_idx]
        return torch.empty(features.numel(), layer.in_features).uniform_(-bound, bound), torch.zeros(features.numel())

    def update_utility(self, layer_idx: int = 0, features: torch.Tensor | None = None) -> None:
        with torch.no_grad():
            self.util[layer_idx] *= self.decay_rate
            # Adam-style bias correction
            bias_correction = 1 - self.decay_rate ** self.ages[layer_idx]

            self.mean_feature_act[layer_idx] *= self.decay_rate
            self.mean_feature_act[layer_idx] -= -(1 - self.decay_rate) * features.mean(dim=0)

            next_layer = self.net[layer_idx * 2 + 2]
            output_wight_mag = next_layer.weight.data.abs().mean(dim=0)
            new_util = output_wight_mag * features.abs().mean(dim=0)  # util_type == 'contribution'
            self.util[layer_idx] += (1 - self.decay_rate) * new_util
            # Adam-style bias correction
            self.bias_corrected_util[layer_idx] = self.util[layer_idx] / bias_correction

    def test_features(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[int]]:
        features_to_replace = [torch.empty(0, dtype=torch.long) for _ in range(self.num_hidden_layers)]
        num_features_to_replace = [0 for _ in range(self.num_hidden_layers)]
        if self.replacement_rate == 0:
            return features_to_replace, num_features_to_replace
        for i in range(self.num_hidden_layers):
            self.ages[i] += 1
            self.update_utility(layer_idx=i, features=features[i])
            eligible_feature_indices = torch.where(self.ages[i] > self.maturity_threshold)[0]
            if eligible_feature_indices.shape[0] == 0:
                continue
            num_new_features_to_replace = self.replacement_rate * eligible_feature_indices.shape[0]
            self.accumulated_num_features_to_replace[i] += num_new_features_to_replace
            # accumulate=True
            num_new_features_to_replace = int(self.accumulated_num_features_to_replace[i])
            self.accumulated_num_features_to_replace[i] -= num_new_features_to_replace
            if num_new_features_to_replace == 0:
                continue
            new_features_to_replace = torch.topk(
                -self.bias_corrected_util[i][eligible_feature_indices], num_new_features_to_replace
            )[1]
            new_features_to_replace = eligible_feature_indices[new_features_to_replace]
            # Initialize utility for new features
            self.util[i][new_features_to_replace] = 0
            if not self.correct_with_mean_before_reset:  # port: the published order
                self.mean_feature_act[i][new_features_to_replace] = 0.0
            features_to_replace[i] = new_features_to_replace
            num_features_to_replace[i] = num_new_features_to_replace
        return features_to_replace, num_features_to_replace

    def gen_new_features(self, features_to_replace: list[torch.Tensor], num_features_to_replace: list[int]) -> None:
        with torch.no_grad():
            for i in range(self.num_hidden_layers):
                if num_features_to_replace[i] == 0:
                    continue
                current_layer = self.net[i * 2]
                next_layer = self.net[i * 2 + 2]
                weight, bias = self.draw(i, features_to_replace[i])  # port
                current_layer.weight.data[features_to_replace[i], :] *= 0.0
                current_layer.weight.data[features_to_replace[i], :] += weight
                current_layer.bias.data[features_to_replace[i]] *= 0
                current_layer.bias.data[features_to_replace[i]] += bias  # port: the reference keeps 0
                # Update bias to correct for the removed features and set the outgoing weights and ages to zero
                next_layer.bias.data += (
                    next_layer.weight.data[:, features_to_replace[i]]
                    * self.mean_feature_act[i][features_to_replace[i]]
                    / (1 - self.decay_rate ** self.ages[i][features_to_replace[i]])
                ).sum(dim=1)
                if self.correct_with_mean_before_reset:  # port: zeroed after the correction read it
                    self.mean_feature_act[i][features_to_replace[i]] = 0.0
                next_layer.weight.data[:, features_to_replace[i]] = 0
                self.ages[i][features_to_replace[i]] = 0

    def update_optim_params(self, features_to_replace: list[torch.Tensor], num_features_to_replace: list[int]) -> None:
        """Zeroes the Adam moments of the incoming weights, the incoming bias and the outgoing weights."""
        if not isinstance(self.opt, torch.optim.Adam | torch.optim.AdamW):  # port: torch's Adam for AdamGnT
            return
        for i in range(self.num_hidden_layers):
            if num_features_to_replace[i] == 0:
                continue
            for key in ("exp_avg", "exp_avg_sq"):  # port: no per-entry 'step' in torch's Adam
                self.opt.state[self.net[i * 2].weight][key][features_to_replace[i], :] = 0.0
                self.opt.state[self.net[i * 2].bias][key][features_to_replace[i]] = 0.0
                self.opt.state[self.net[i * 2 + 2].weight][key][:, features_to_replace[i]] = 0.0

    def gen_and_test(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """One generate-and-test step after an optimizer step, with the hidden activations of its forward pass;
        returns the replaced units per hidden layer."""
        features_to_replace, num_features_to_replace = self.test_features(features=features)
        self.gen_new_features(features_to_replace, num_features_to_replace)
        self.update_optim_params(features_to_replace, num_features_to_replace)
        return features_to_replace


def conv_update_utility(
    util: torch.Tensor,
    mean_feature_act: torch.Tensor,
    ages: torch.Tensor,
    decay_rate: float,
    features: torch.Tensor,
    current_layer: Conv2d | Linear,
    next_layer: Conv2d | Linear,
    num_last_filter_outputs: int,
) -> torch.Tensor:
    """``ConvGnT.update_utility`` for ``util_type='contribution'``, on one layer's state (updated in place); returns
    the bias-corrected utility. ``features`` is the layer's activation as the next layer reads it (flattened for a
    conv -> linear step)."""
    with torch.no_grad():
        util *= decay_rate
        bias_correction = 1 - decay_rate**ages
        if isinstance(next_layer, Linear):
            output_wight_mag = next_layer.weight.data.abs().mean(dim=0)
        else:
            output_wight_mag = next_layer.weight.data.abs().mean(dim=(0, 2, 3))
        mean_feature_act *= decay_rate
        if isinstance(current_layer, Linear):
            mean_feature_act += (1 - decay_rate) * features.mean(dim=0)
        elif isinstance(next_layer, Conv2d):
            mean_feature_act += (1 - decay_rate) * features.mean(dim=(0, 2, 3))
        else:
            mean_feature_act += (1 - decay_rate) * features.mean(dim=0).view(-1, num_last_filter_outputs).mean(dim=1)
        if isinstance(next_layer, Linear):
            if isinstance(current_layer, Linear):
                new_util = output_wight_mag * features.abs().mean(dim=0)
            else:
                new_util = (
                    (output_wight_mag * features.abs().mean(dim=0)).view(-1, num_last_filter_outputs).mean(dim=1)
                )
        else:
            new_util = output_wight_mag * features.abs().mean(dim=(0, 2, 3))
        util += (1 - decay_rate) * new_util
        return util / bias_correction


def conv_output_indices(
    new_features_to_replace: torch.Tensor, current_layer: Conv2d | Linear, next_layer: Conv2d | Linear, k: int
) -> torch.Tensor:
    """The next layer's input columns of the replaced units (``ConvGnT.test_features``): for conv -> linear, the
    ``num_last_filter_outputs`` consecutive columns of each channel."""
    if isinstance(current_layer, Conv2d) and isinstance(next_layer, Linear):
        return (new_features_to_replace * k).repeat_interleave(k) + torch.tensor([i for i in range(k)]).repeat(
            new_features_to_replace.size()[0]
        )
    return new_features_to_replace
