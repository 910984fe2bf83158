"""The DenseNet and its presets."""

from __future__ import annotations

import pytest
import torch

from axon.training.dense_net import PRESETS, DenseNet, parameter_count


def test_primer_digit_net_is_784_20_10() -> None:
    preset = PRESETS["primer"]
    model = DenseNet((784,), preset.hidden_layers, 10, preset.activation)
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(784, 20), (20, 10)]
    # A weight per connection and a bias per neuron.
    assert parameter_count(model) == 784 * 20 + 20 + 20 * 10 + 10


def test_default_preset_is_stronger_than_the_primer() -> None:
    assert sum(PRESETS["default"].hidden_layers) > 10 * sum(PRESETS["primer"].hidden_layers)


def test_image_input_is_flattened_and_gives_one_logit_per_class() -> None:
    model = DenseNet((3, 8, 8), (16, 8), 2, "gelu", dropout=0.1).eval()
    assert model(torch.zeros(5, 3, 8, 8)).shape == (5, 2)


@pytest.mark.parametrize(("args", "message"), [
    (((4,), (8,), 2, "swish"), "unknown activation 'swish'"),
    (((4,), (8,), 1, "relu"), "at least two classes"),
    (((4,), (0,), 2, "relu"), "widths must be positive"),
])
def test_bad_configurations_are_rejected(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DenseNet(*args)  # type: ignore[arg-type]


def test_no_hidden_layers_is_a_linear_classifier() -> None:
    model = DenseNet((784,), (), 10)
    assert parameter_count(model) == 784 * 10 + 10
