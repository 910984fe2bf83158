"""One-hot labels and the cross-entropy against them, as in the primer."""

from __future__ import annotations

import pytest
import torch

from axon.training.dense_net import one_hot, one_hot_cross_entropy


def test_cat_dog_encoding() -> None:
    cat, dog = 0, 1
    encoded = one_hot(torch.tensor([cat, dog, dog]), 2)
    assert encoded.tolist() == [[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]
    assert encoded.dtype == torch.float32


def test_digit_encoding_has_one_one_per_row() -> None:
    encoded = one_hot(torch.arange(10), 10)
    assert torch.equal(encoded, torch.eye(10))


@pytest.mark.parametrize("labels", [[0, 10], [-1, 2]])
def test_out_of_range_labels_are_rejected(labels: list[int]) -> None:
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        one_hot(torch.tensor(labels), 10)


def test_only_vectors_of_indices() -> None:
    with pytest.raises(ValueError, match="vector of class indices"):
        one_hot(torch.zeros(2, 2, dtype=torch.long), 3)


def test_cross_entropy_against_one_hot_equals_index_cross_entropy() -> None:
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(32, 10, generator=generator)
    labels = torch.randint(0, 10, (32,), generator=generator)
    ours = one_hot_cross_entropy(logits, one_hot(labels, 10))
    torch.testing.assert_close(ours, torch.nn.functional.cross_entropy(logits, labels))


def test_cross_entropy_of_a_confident_right_answer_is_near_zero() -> None:
    logits = torch.tensor([[20.0, -20.0]])
    assert float(one_hot_cross_entropy(logits, one_hot(torch.tensor([0]), 2))) < 1e-6
    assert float(one_hot_cross_entropy(logits, one_hot(torch.tensor([1]), 2))) > 39
