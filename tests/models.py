"""Tiny models for the tests: built from configs, perturbed so no entry equals its init value, saved with
`save_pretrained` and loaded back with `from_pretrained` (so the transformers init trap is exercised)."""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForImageClassification,
    ConvNextConfig,
    ConvNextForImageClassification,
    ConvNextV2Config,
    ConvNextV2ForImageClassification,
    ResNetConfig,
    ResNetForImageClassification,
    ViTConfig,
    ViTForImageClassification,
)

NUM_LABELS = 3
IMAGE_SIZE = 32


class TinyCNN(nn.Module):
    """A plain torch CNN (no transformers): it goes through the structural fallback."""

    def __init__(self, num_labels: int = NUM_LABELS) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *[
                nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2))
                for c_in, c_out in [(3, 8), (8, 16), (16, 16)]
            ]
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(16, num_labels)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(pixel_values)).flatten(1))


class PlainMLP(nn.Module):
    """The network layout of shibhansh/loss-of-plasticity's feed-forward nets: ``layers`` alternates Linear and
    activation, the last Linear is the output (the head). The input image is flattened first."""

    def __init__(self, in_features: int = 3 * 8 * 8, hidden: tuple[int, ...] = (32, 24), num_labels: int = NUM_LABELS):
        super().__init__()
        sizes = [in_features, *hidden]
        layers: list[nn.Module] = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(n_in, n_out), nn.ReLU()]
        self.layers = nn.Sequential(*layers, nn.Linear(sizes[-1], num_labels))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.layers(pixel_values.flatten(1))

    def predict(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Output and the hidden activations, as the reference nets' ``predict`` returns them."""
        x, features = pixel_values.flatten(1), []
        for layer in self.layers:
            x = layer(x)
            if not isinstance(layer, nn.Linear):
                features.append(x)
        return x, features


class PlainCNN(nn.Module):
    """A small Nature-DQN-shaped CNN (timoklein/redo ``QNetwork``): conv -> conv -> flatten -> linear -> output, ReLU
    after every hidden layer, no BatchNorm and no pooling. On 16x16 inputs the flatten step has 3x3 positions per
    channel."""

    def __init__(self, num_labels: int = NUM_LABELS) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2)
        self.fc1 = nn.Linear(8 * 3 * 3, 16)
        self.q = nn.Linear(16, num_labels)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(pixel_values))
        x = torch.relu(self.conv2(x))
        x = torch.flatten(x, start_dim=1)
        x = torch.relu(self.fc1(x))
        return self.q(x)


class ViewCNN(PlainCNN):
    """[`PlainCNN`] written as shibhansh/loss-of-plasticity's ConvNet (``lop/nets/conv_net.py``) flattens: with
    ``x.view(-1, n)`` instead of ``torch.flatten``. The same modules, so the same weights for the same seed."""

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(pixel_values))
        x = torch.relu(self.conv2(x))
        x = x.view(-1, self.fc1.in_features)
        x = torch.relu(self.fc1(x))
        return self.q(x)


def build(arch: str) -> nn.Module:
    if arch == "vit":
        return ViTForImageClassification(
            ViTConfig(
                image_size=IMAGE_SIZE,
                patch_size=8,
                hidden_size=32,
                num_hidden_layers=3,
                num_attention_heads=2,
                intermediate_size=64,
                num_labels=NUM_LABELS,
            )
        )
    if arch == "convnext":
        return ConvNextForImageClassification(
            ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 2], num_stages=2, num_labels=NUM_LABELS)
        )
    if arch == "convnextv2":
        return ConvNextV2ForImageClassification(
            ConvNextV2Config(hidden_sizes=[8, 16], depths=[1, 2], num_stages=2, num_labels=NUM_LABELS)
        )
    if arch == "resnet":
        return ResNetForImageClassification(
            ResNetConfig(
                embedding_size=8, hidden_sizes=[8, 16], depths=[1, 2], layer_type="basic", num_labels=NUM_LABELS
            )
        )
    if arch == "cnn":
        return TinyCNN()
    raise ValueError(arch)


ARCHS = ("vit", "convnext", "convnextv2", "resnet", "cnn")
#: Input side of the plain models of the reference tests (the transformers ones take IMAGE_SIZE).
PLAIN_SIDE = {"mlp": 8, "cnn": 16, "cnn_view": 16}


@torch.no_grad()
def perturb(model: nn.Module, seed: int = 123) -> nn.Module:
    """Moves every float entry away from its init value (as pretraining would); running variances stay > 0."""
    generator = torch.Generator().manual_seed(seed)
    for name, tensor in model.state_dict(keep_vars=True).items():
        if tensor.is_floating_point():
            noise = 0.05 * torch.randn(tensor.shape, generator=generator)
            tensor.data.add_(noise.to(tensor.dtype))
            if name.endswith("running_var"):
                tensor.data.abs_().add_(0.1)
        elif name.endswith("num_batches_tracked"):
            tensor.data.fill_(7)
    return model


def pretrained(arch: str, directory, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A 'pretrained' tiny model: built, perturbed, saved and loaded back (state dict for the plain CNN)."""
    torch.manual_seed(0)
    model = perturb(build(arch))
    if arch == "cnn":
        path = directory / "cnn.pt"
        torch.save(model.state_dict(), path)
        fresh = TinyCNN()
        fresh.load_state_dict(torch.load(path))
        return fresh.to(dtype)
    model.save_pretrained(directory)
    return type(model).from_pretrained(directory, dtype=dtype)


def batches(num: int = 2, size: int = 4, seed: int = 0, side: int = IMAGE_SIZE) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [
        {
            "pixel_values": torch.randn(size, 3, side, side, generator=generator),
            "labels": torch.randint(0, NUM_LABELS, (size,), generator=generator),
        }
        for _ in range(num)
    ]


def side_of(arch: str) -> int:
    """Input side for ``arch`` in the reference tests."""
    return PLAIN_SIDE.get(arch, IMAGE_SIZE)


def reference_model(arch: str) -> nn.Module:
    """A seeded model for the side-by-side tests: ``"mlp"`` / ``"cnn"`` the plain [`PlainMLP`] / [`PlainCNN`] as
    built, else a transformers model perturbed (its init rule draws zero biases)."""
    torch.manual_seed(0)
    if arch == "mlp":
        return PlainMLP()
    if arch == "cnn":
        return PlainCNN()
    if arch == "cnn_view":
        return ViewCNN()
    return perturb(build(arch))


def tiny_vision_transformer(model_type: str) -> nn.Module:
    """A transformers vision transformer the table does not know (patches embedded by a convolution)."""
    sizes = {"hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 32, "image_size": 32, "patch_size": 8}
    if model_type == "swin":
        sizes = {"embed_dim": 8, "depths": [1, 1], "num_heads": [2, 2], "window_size": 2, "image_size": 32,
                 "patch_size": 4}  # fmt: skip
    else:
        sizes["num_hidden_layers"] = 2
    if model_type == "deit":  # two classes share its config: name the one (transformers cannot choose without it)
        sizes["architectures"] = ["DeiTForImageClassification"]
    config = AutoConfig.for_model(model_type, num_labels=NUM_LABELS, **sizes)
    return AutoModelForImageClassification.from_config(config)
