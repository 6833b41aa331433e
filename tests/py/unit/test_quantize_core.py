"""int8 quantization, the library core (imgfeat.core.quantize)."""

from __future__ import annotations

import numpy as np

from imgfeat.core.quantize import TensorReader, cosine_similarity


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


def test_cosine_similarity() -> None:
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    b = np.array([[2.0, 0.0], [-1.0, -1.0], [1.0, 0.0]])
    np.testing.assert_allclose(cosine_similarity(a, b), [1.0, -1.0, 0.0])
