"""Parameter names, shapes and counts; synthetic weights; weight files; the catalog."""

from __future__ import annotations

import dataclasses
import hashlib
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from imgfeat.core import zoo
from imgfeat.core.errors import ModelError
from imgfeat.core.spec import caffe_bgr, torchvision_imagenet
from imgfeat.core.zoo import catalog

# torchvision's published parameter counts (weights tables, "num_params"); EfficientNet-Lite0:
# the count of the published checkpoint (TF's efficientnet-lite0, 4.65M in its README).
FULL_COUNTS = {
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "alexnet": 61_100_840,
    "efficientnet_lite0": 4_652_008,
}
HEADS = {  # the classifier layer the feature extractor drops: weight + bias
    "resnet18": 512 * 1000 + 1000,
    "resnet50": 2048 * 1000 + 1000,
    "resnet101": 2048 * 1000 + 1000,
    "alexnet": 4096 * 1000 + 1000,
    "efficientnet_lite0": 1280 * 1000 + 1000,
}


@pytest.fixture(scope="module")
def resnet18_state() -> dict[str, np.ndarray]:
    return zoo.synthetic_state_dict("resnet18", seed=0)


def shape_dict(arch: str) -> dict[str, np.ndarray]:
    """Zero arrays of the expected shapes, plus torch's num_batches_tracked buffers."""
    sd = {k: np.zeros(s, np.float32) for k, s in zoo.expected_shapes(arch).items()}
    sd.update({k: np.array(0, np.int64) for k in zoo.state_dict.batchnorm_buffers(arch)})
    return sd


@pytest.mark.parametrize("arch", sorted(FULL_COUNTS))
def test_param_counts_match_torchvision(arch: str) -> None:
    sd = shape_dict(arch)
    assert zoo.param_count(sd) == FULL_COUNTS[arch]
    assert zoo.param_count(zoo.feature_state_dict(arch, sd)) == FULL_COUNTS[arch] - HEADS[arch]


def test_param_count_excludes_batchnorm_buffers() -> None:
    sd = shape_dict("resnet18")
    running = sum(v.size for k, v in sd.items() if k.endswith(("running_mean", "running_var")))
    buffers = sum(1 for k in sd if k.endswith("num_batches_tracked"))
    assert running == 2 * 4800  # 20 BatchNorms, 4800 channels in all
    assert buffers == 20
    assert zoo.param_count(sd, trainable_only=False) == FULL_COUNTS["resnet18"] + running + buffers


def test_torchvision_names_and_shapes() -> None:
    r50 = zoo.expected_shapes("resnet50")
    assert list(r50)[:6] == [
        "conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var", "layer1.0.conv1.weight",
    ]
    assert r50["conv1.weight"] == (64, 3, 7, 7)
    assert r50["layer1.0.downsample.0.weight"] == (256, 64, 1, 1)
    assert r50["layer2.0.conv2.weight"] == (128, 128, 3, 3)
    assert r50["layer4.2.bn3.running_var"] == (2048,)
    assert r50["fc.weight"] == (1000, 2048)
    assert "layer1.0.downsample.0.weight" not in zoo.expected_shapes("resnet18")
    assert "layer2.0.downsample.1.running_mean" in zoo.expected_shapes("resnet18")
    assert max(int(k.split(".")[1]) for k in zoo.expected_shapes("resnet101") if k.startswith("layer3.")) == 22
    alex = zoo.expected_shapes("alexnet")
    assert list(alex) == [
        f"{m}.{p}" for m in ("features.0", "features.3", "features.6", "features.8", "features.10",
                             "classifier.1", "classifier.4", "classifier.6") for p in ("weight", "bias")
    ]
    assert alex["features.0.weight"] == (64, 3, 11, 11)
    assert alex["classifier.1.weight"] == (4096, 9216)
    assert "fc.weight" not in zoo.expected_shapes("resnet18", head=False)


def test_arch_specs() -> None:
    a = zoo.ARCHITECTURES
    assert {k: (v.input_width, v.input_height, v.feature_dim) for k, v in a.items()} == {
        "resnet18": (224, 224, 512), "resnet50": (224, 224, 2048),
        "resnet101": (224, 224, 2048), "alexnet": (227, 227, 4096), "efficientnet_lite0": (224, 224, 1280),
    }
    assert {k: v.spatial_dim for k, v in a.items()} == {
        "resnet18": 2048, "resnet50": 8192, "resnet101": 8192, "alexnet": 1024, "efficientnet_lite0": 5120,
    }
    assert [a["resnet18"].dim(layer) for layer in zoo.FEATURE_LAYERS] == [512, 2048]
    with pytest.raises(ModelError, match="unknown feature layer 'grid'"):
        a["resnet18"].dim("grid")
    lite = a["efficientnet_lite0"].preprocessing
    assert (lite.scale, lite.mean, lite.std, lite.interpolation, lite.resize_size) == (
        1.0, (127.0, 127.0, 127.0), (128.0, 128.0, 128.0), "bilinear", 256)
    assert a["resnet50"].preprocessing == torchvision_imagenet()
    assert a["alexnet"].preprocessing == torchvision_imagenet(size=227, resize_size=256)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a["resnet18"].feature_dim = 3  # type: ignore[misc]


@pytest.mark.slow
def test_synthetic_is_seeded(resnet18_state: dict[str, np.ndarray]) -> None:
    again = zoo.synthetic_state_dict("resnet18", seed=0)
    other = zoo.synthetic_state_dict("resnet18", seed=1)
    assert list(again) == list(resnet18_state)
    for k in resnet18_state:
        np.testing.assert_array_equal(again[k], resnet18_state[k], err_msg=k)
    assert not np.array_equal(other["layer3.1.conv2.weight"], resnet18_state["layer3.1.conv2.weight"])
    assert not np.array_equal(other["layer3.1.bn2.running_var"], resnet18_state["layer3.1.bn2.running_var"])


def test_synthetic_batchnorm_stats_are_measured(resnet18_state: dict[str, np.ndarray]) -> None:
    sd = resnet18_state
    assert sd["bn1.num_batches_tracked"].dtype == np.int64 and sd["bn1.num_batches_tracked"].shape == ()
    for k in (k for k in sd if k.endswith("running_var")):
        assert np.isfinite(sd[k]).all() and (sd[k] > 0).all(), k
    # not the (0, 1) defaults: measured on the calibration images
    assert np.abs(sd["layer4.1.bn2.running_mean"]).max() > 1e-3
    assert not np.allclose(sd["layer4.1.bn2.running_var"], 1.0)
    # conv1 weights He-normal with torchvision's fan_out: std sqrt(2 / (64 * 7 * 7))
    assert sd["conv1.weight"].std() == pytest.approx(np.sqrt(2 / (64 * 49)), rel=0.05)


def test_check_state_dict_names_the_bad_keys(resnet18_state: dict[str, np.ndarray]) -> None:
    sd = dict(resnet18_state)
    del sd["layer2.0.bn1.running_var"]
    sd["layer3.0.conv1.weight"] = np.zeros((256, 128, 1, 1), np.float32)
    sd["extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ModelError) as e:
        zoo.build_feature_extractor("resnet18", sd)
    msg = e.value.message
    assert "layer2.0.bn1.running_var" in msg
    assert "layer3.0.conv1.weight (256, 128, 1, 1) != (256, 128, 3, 3)" in msg
    assert "extra.weight" in msg
    assert e.value.sqlstate == "22023"


def test_resnet50_weights_are_not_resnet18() -> None:
    with pytest.raises(ModelError) as e:
        zoo.check_state_dict("resnet18", shape_dict("resnet50"), head=False)
    msg = e.value.message
    assert "wrong shapes: layer1.0.conv1.weight (64, 64, 1, 1) != (64, 64, 3, 3)" in msg
    assert "unexpected keys: layer1.0.conv3.weight" in msg
    assert "(and 155 more)" in msg
    assert e.value.hint == "these weights fit resnet50"


def test_head_optional_for_features_required_for_classifier(resnet18_state: dict[str, np.ndarray]) -> None:
    headless = zoo.feature_state_dict("resnet18", resnet18_state)
    assert "fc.weight" not in headless
    model = zoo.build_feature_extractor("resnet18", headless)
    assert [o.name for o in model.graph.output] == ["features"]
    with pytest.raises(ModelError, match="missing keys: fc.weight, fc.bias"):
        zoo.build_classifier("resnet18", headless)
    ten = dict(resnet18_state, **{"fc.weight": np.zeros((10, 512), np.float32), "fc.bias": np.zeros(10, np.float32)})
    out = zoo.build_classifier("resnet18", ten).graph.output[0]
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["N", 10]


def test_unknown_architecture() -> None:
    with pytest.raises(ModelError, match="unknown architecture 'vgg16'"):
        zoo.build_feature_extractor("vgg16", {})
    with pytest.raises(ModelError, match="unknown architecture"):
        zoo.synthetic_state_dict("resnet34")


def test_safetensors_round_trip(tmp_path: Path, resnet18_state: dict[str, np.ndarray]) -> None:
    path = tmp_path / "r18.safetensors"
    zoo.save_state_dict({f"module.{k}": v for k, v in resnet18_state.items()}, path)
    loaded = zoo.load_state_dict(path, arch="resnet18")
    assert sorted(loaded) == sorted(resnet18_state)  # module. prefix stripped
    for k, v in resnet18_state.items():
        assert loaded[k].dtype == v.dtype and loaded[k].shape == v.shape
        np.testing.assert_array_equal(loaded[k], v, err_msg=k)
    a = zoo.build_feature_extractor("resnet18", loaded).SerializeToString()
    b = zoo.build_feature_extractor("resnet18", resnet18_state).SerializeToString()
    assert a == b


def test_torch_file_round_trip(tmp_path: Path, resnet18_state: dict[str, np.ndarray]) -> None:
    import torch

    path = tmp_path / "r18.pth"
    torch.save({"state_dict": {k: torch.from_numpy(np.array(v)) for k, v in resnet18_state.items()}}, path)
    loaded = zoo.load_state_dict(path)
    np.testing.assert_array_equal(loaded["layer4.1.bn2.running_var"], resnet18_state["layer4.1.bn2.running_var"])
    assert zoo.param_count(loaded) == FULL_COUNTS["resnet18"]


def test_torch_file_without_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, resnet18_state: dict[str, np.ndarray]) -> None:
    import torch

    path = tmp_path / "w.pth"
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in resnet18_state.items()}, path)
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    loaded = zoo.load_state_dict(path, arch="resnet18")
    np.testing.assert_array_equal(loaded["fc.weight"], resnet18_state["fc.weight"])


def test_bad_weight_files(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        zoo.load_state_dict(tmp_path / "nope.safetensors")
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(ModelError, match="unsupported weight file type '.npz'"):
        zoo.load_state_dict(tmp_path / "w.npz")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(ModelError, match="cannot read safetensors file"):
        zoo.load_state_dict(tmp_path / "bad.safetensors")
    (tmp_path / "bad.pth").write_bytes(b"garbage")
    with pytest.raises(ModelError, match="cannot read torch file"):
        zoo.load_state_dict(tmp_path / "bad.pth")


def test_catalog_entries() -> None:
    names = {e.file_name: e for e in catalog.ENTRIES.values()}
    for file, prefix in [("resnet18-f37072fd.pth", "f37072fd"), ("resnet50-0676ba61.pth", "0676ba61"),
                         ("resnet50-11ad3fa6.pth", "11ad3fa6"), ("resnet101-63fe2227.pth", "63fe2227"),
                         ("alexnet-owt-7be5be79.pth", "7be5be79")]:
        assert names[file].hash_prefix == prefix
        assert names[file].format == "pth"
        assert names[file].url == "https://download.pytorch.org/models/" + file
    for e in catalog.ENTRIES.values():
        assert e.arch in zoo.ARCHITECTURES
        assert e.feature_dim == zoo.ARCHITECTURES[e.arch].feature_dim
        for d in (e.sha256, *e.alt_sha256):
            assert d is None or re.fullmatch(r"[0-9a-f]{64}", d), e.name
        assert e.format in ("pth", "onnx")
        assert e.sha256 is not None or e.hash_prefix is not None or "not verified" in e.notes, e.name
    assert catalog.get("onnx-zoo/bvlcalexnet-12").preprocessing == caffe_bgr(size=224)
    assert catalog.get("onnx-zoo/resnet50-v1-7").sha256 is None
    assert catalog.get("torchvision/resnet50-v2").preprocessing.resize_size == 232
    with pytest.raises(ModelError, match="no catalog entry"):
        catalog.get("vgg")


def test_catalog_verify(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"imgfeat")
    digest = hashlib.sha256(b"imgfeat").hexdigest()
    entry = catalog.get("onnx-zoo/resnet18-v1-7")
    with pytest.raises(ModelError, match="does not match") as e:
        catalog.verify(entry, path)
    assert digest in (e.value.detail or "")
    assert catalog.verify(dataclasses.replace(entry, sha256=digest), path) is True
    tv = catalog.get("torchvision/resnet18")
    assert catalog.verify(dataclasses.replace(tv, hash_prefix=digest[:8]), path) is True
    with pytest.raises(ModelError):
        catalog.verify(tv, path)
    assert catalog.verify(catalog.get("onnx-zoo/resnet50-v1-7"), path) is False
