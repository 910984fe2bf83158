"""The dense network of the primer: input -> hidden dense layers -> one output per class.

Every neuron of a dense layer is connected to every value of the layer before, with a learnable
weight per connection and a bias per neuron. Named presets give the primer's digit net and a
stronger default.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}


@dataclass(frozen=True)
class Recipe:
    """An architecture with the optimiser settings to train it: what a preset names and what a
    run resolves (``axon.training.train.Hyperparameters``), declared once for both."""

    hidden_layers: tuple[int, ...]
    activation: str
    dropout: float
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float

    def __post_init__(self) -> None:
        # All problems in one message: a command line with two bad flags is fixed in one go.
        problems = []
        if self.activation not in ACTIVATIONS:
            problems.append(f"unknown activation {self.activation!r} "
                            f"(choose one of {', '.join(ACTIVATIONS)})")
        if any(width < 1 for width in self.hidden_layers):
            problems.append(f"hidden layer widths must be positive, got {self.hidden_layers}")
        if not 0.0 <= self.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if self.epochs < 1 or self.batch_size < 1:
            problems.append("epochs and batch size must be at least 1")
        if self.learning_rate <= 0 or self.weight_decay < 0:
            problems.append("learning rate must be positive and weight decay not negative")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True)
class Preset(Recipe):
    """A named architecture with the training settings that suit it."""

    description: str


PRESETS: dict[str, Preset] = {
    "primer": Preset(
        hidden_layers=(20,), activation="relu", dropout=0.0, epochs=10, batch_size=64,
        learning_rate=3e-3, weight_decay=0.0,
        description="the primer's digit net: 784 pixels -> 20 neurons -> 10 classes"),
    "compact": Preset(
        hidden_layers=(256, 128), activation="relu", dropout=0.0, epochs=8, batch_size=64,
        learning_rate=3e-3, weight_decay=0.0,
        description="784 -> 256 -> 128 -> 10: the serving benchmark's digit net, ~98.4 %"),
    "default": Preset(
        hidden_layers=(1024, 1024), activation="relu", dropout=0.2, epochs=16, batch_size=128,
        learning_rate=1e-3, weight_decay=1e-4,
        description="two wide hidden layers with dropout: the stronger default"),
}
DEFAULT_PRESET = "default"


class DenseNet(nn.Module):
    """Flatten the input, apply dense layers with an activation between them, emit logits."""

    def __init__(self, input_shape: tuple[int, ...], hidden_layers: tuple[int, ...],
                 num_classes: int, activation: str = "relu", dropout: float = 0.0) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; "
                             f"choose one of {', '.join(ACTIVATIONS)}")
        if num_classes < 2:
            raise ValueError(f"a classifier needs at least two classes, got {num_classes}")
        if any(width < 1 for width in hidden_layers):
            raise ValueError(f"hidden layer widths must be positive, got {hidden_layers}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        layers: list[nn.Module] = [nn.Flatten()]
        width_in = math.prod(input_shape)
        for width in hidden_layers:
            layers += [nn.Linear(width_in, width), ACTIVATIONS[activation]()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width_in = width
        layers.append(nn.Linear(width_in, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits [N, num_classes] for inputs [N, *input_shape]."""
        logits: torch.Tensor = self.layers(inputs)
        return logits


def parameter_count(model: nn.Module) -> int:
    """Number of learnable weights and biases."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class indices [N] -> float one-hot rows [N, num_classes]: 1 for cat = (1, 0)."""
    if labels.ndim != 1:
        raise ValueError("labels must be a vector of class indices, "
                         f"got shape {tuple(labels.shape)}")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), "
                         f"got range [{int(labels.min())}, {int(labels.max())}]")
    return nn.functional.one_hot(labels.long(), num_classes).to(torch.float32)


def one_hot_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy between softmax(logits) and one-hot (or soft) target rows."""
    return -(targets * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
