"""int8 quantization, the library core (imgfeat.core.quantize)."""

from __future__ import annotations

import numpy as np
import pytest

from imgfeat.core.quantize import TensorReader, centered_cosine, cosine_similarity


def test_tensor_reader_batches_and_rewinds() -> None:
    x = np.arange(5 * 3 * 2 * 2, dtype=np.float32).reshape(5, 3, 2, 2)
    reader = TensorReader("input", x, 2)
    sizes = []
    while (item := reader.get_next()) is not None:
        sizes.append(item["input"].shape[0])
    assert sizes == [2, 2, 1]
    reader.rewind()
    first = reader.get_next()
    assert first is not None and np.array_equal(first["input"], x[:2])


def test_centered_cosine() -> None:
    """A shared mean makes a plain cosine near 1 for unrelated rows; centering removes it."""
    mean = np.array([10.0, 10.0, 10.0])
    a = mean + np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    b = mean + np.array([[0.0, 1.0, 0.0], [0.0, 4.0, 0.0]])
    assert cosine_similarity(a, b)[0] > 0.99
    np.testing.assert_allclose(centered_cosine(a, b, mean), [0.0, 1.0])
    np.testing.assert_allclose(centered_cosine(a, a, np.zeros(3)), [1.0, 1.0])
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        centered_cosine(a, b, mean[:2])


def test_cosine_similarity() -> None:
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    b = np.array([[2.0, 0.0], [-1.0, -1.0], [1.0, 0.0]])
    np.testing.assert_allclose(cosine_similarity(a, b), [1.0, -1.0, 0.0])
