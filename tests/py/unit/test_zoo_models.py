"""The built-in architectures end to end: synthetic weights on real faces, and equivalence with
torchvision's topology written in torch here (torchvision itself is not installed).

For each architecture the synthetic state dict is loaded (``strict=True``) into a torch model
whose modules carry torchvision's exact names; our ONNX feature extractor must match the
torch model's pooled features (fc7 after ReLU for AlexNet), and the torch classifier exported
to ONNX must be cut by ``prepare_feature_extractor`` at the same features without being told
where.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from torch import nn

from imgfeat.core import zoo
from imgfeat.core.onnx_import import prepare_feature_extractor
from imgfeat.core.spec import Preprocessing
from torch_efficientnet import EfficientNetLite0

ARCHS = [
    "resnet18",
    pytest.param("resnet50", marks=pytest.mark.slow),
    pytest.param("efficientnet_lite0", marks=pytest.mark.slow),
    pytest.param("resnet101", marks=pytest.mark.slow),
    pytest.param("alexnet", marks=pytest.mark.slow),
]
FACES = ("an2i/an2i_straight_happy_open.pgm", "at33/at33_left_angry_sunglasses.pgm")
REL_TOL = 1e-4


# ---- torchvision topology in torch, with torchvision's module names --------------------


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's v1.5 bottleneck: the stride is on the 3x3 conv2."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: list[int], num_classes: int = 1000) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], 2)
        self.layer3 = self._make_layer(block, 256, layers[2], 2)
        self.layer4 = self._make_layer(block, 512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block: Any, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.avgpool(self.feature_map(x)), 1)

    def spatial(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.feature_map(x), 2), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class AlexNet(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
            nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Linear(4096, num_classes),
        )

    def spatial(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 2), 1)

    def fc7(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier[:6](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier[6](self.fc7(x))


def torch_model(arch: str) -> nn.Module:
    return {
        "resnet18": lambda: ResNet(BasicBlock, [2, 2, 2, 2]),
        "resnet50": lambda: ResNet(Bottleneck, [3, 4, 6, 3]),
        "resnet101": lambda: ResNet(Bottleneck, [3, 4, 23, 3]),
        "alexnet": AlexNet,
        "efficientnet_lite0": EfficientNetLite0,
    }[arch]()


def torch_features(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        y = model.fc7(x) if isinstance(model, AlexNet) else model.features(x)
    return y.numpy()


# ---- helpers -----------------------------------------------------------------------------


def preprocess(path: Path, spec: Preprocessing) -> np.ndarray:
    """torchvision-style eval transform, written out: resize the shorter side, centre crop,
    scale, normalise; [3, H, W] float32."""
    img = Image.open(path).convert("RGB")
    w, h = img.size
    scale = spec.resize_size / min(w, h)
    img = img.resize((round(w * scale), round(h * scale)), Image.Resampling.BILINEAR)
    left = (img.width - spec.width) // 2
    top = (img.height - spec.height) // 2
    img = img.crop((left, top, left + spec.width, top + spec.height))
    x = np.asarray(img, np.float32) / spec.scale
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    """Largest absolute difference relative to the largest reference magnitude."""
    return float(np.abs(got - want).max() / np.abs(want).max())


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def session(model_bytes: bytes) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])


class Built:
    """Everything derived from one architecture's synthetic weights (built once per module)."""

    def __init__(self, arch: str, faces_dir: Path) -> None:
        self.arch = arch
        self.spec = zoo.ARCHITECTURES[arch]
        self.state = zoo.synthetic_state_dict(arch, seed=0)
        self.extractor = zoo.build_feature_extractor(arch, self.state)
        self.session = session(self.extractor.SerializeToString())
        self.images = np.stack([preprocess(faces_dir / f, self.spec.preprocessing) for f in FACES])
        self.features = self.session.run(["features"], {"input": self.images})[0]
        self.torch = torch_model(arch).eval()
        self.torch.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in self.state.items()}, strict=True)
        self.torch_features = torch_features(self.torch, torch.from_numpy(self.images))


@pytest.fixture(scope="module", params=ARCHS)
def built(request: pytest.FixtureRequest, cmu_faces: Path) -> Built:
    """One architecture's models; pytest groups the tests by this parameter, so each
    architecture is built once and dropped before the next."""
    return Built(request.param, cmu_faces)


# ---- tests -------------------------------------------------------------------------------


def test_synthetic_features_on_faces(built: Built) -> None:
    b = built
    f = b.features
    assert f.shape == (2, b.spec.feature_dim)
    assert f.dtype == np.float32
    assert np.isfinite(f).all()
    assert (f != 0).mean() > 0.2  # not mostly dead
    assert f.std(axis=1).min() > 1e-3  # not constant across a feature vector
    assert cosine(f[0], f[1]) < 0.9999  # different faces, different features
    assert np.abs(f[0] - f[1]).max() > 1e-3


def test_extractor_graph(built: Built) -> None:
    b = built
    arch = b.arch
    m = b.extractor
    onnx.checker.check_model(m)
    assert [i.name for i in m.graph.input] == ["input"]
    assert [o.name for o in m.graph.output] == ["features"]
    dims = m.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N"
    assert [d.dim_value for d in dims[1:]] == [3, b.spec.input_height, b.spec.input_width]
    assert m.opset_import[0].version == 17
    assert "BatchNormalization" not in {n.op_type for n in m.graph.node}
    # BN folding turns each BatchNorm's (gamma, beta) pair into one conv bias.
    n_bn = sum(1 for k in b.state if k.endswith(".running_var"))
    bn_channels = sum(b.state[k].size for k in b.state if k.endswith(".running_var"))
    # (ReLU6 is Clip with two scalar bounds: not parameters)
    onnx_values = sum(int(np.prod(t.dims)) for t in m.graph.initializer if len(t.dims))
    feature_params = zoo.param_count(zoo.feature_state_dict(arch, b.state))
    assert onnx_values == feature_params - bn_channels, n_bn


def test_batch_of_one_equals_batch_of_two(built: Built) -> None:
    b = built
    one = b.session.run(["features"], {"input": b.images[1:]})[0]
    assert rel_err(one[0], b.features[1]) < REL_TOL


def test_matches_torch_topology(built: Built) -> None:
    b = built
    assert b.torch_features.shape == b.features.shape
    assert rel_err(b.features, b.torch_features) < REL_TOL


def test_spatial_features_match_torch(built: Built) -> None:
    """The spatial feature layer: the last feature map averaged to 2x2 (torch's adaptive bins:
    7 -> [0, 4) and [3, 7); AlexNet 6 -> 3 + 3), flattened channel-major."""
    b = built
    spatial = zoo.build_feature_extractor(b.arch, b.state, "spatial")
    got = session(spatial.SerializeToString()).run(["features"], {"input": b.images})[0]
    assert got.shape == (2, b.spec.spatial_dim) == (2, 4 * (b.spec.spatial_dim // 4))
    with torch.no_grad():
        want = b.torch.spatial(torch.from_numpy(b.images)).numpy()
    assert rel_err(got, want) < REL_TOL
    if b.arch != "alexnet":  # the mean of the four cells of 7x7 bins is not the global mean, but close
        four = got.reshape(2, -1, 4).mean(axis=2)
        assert np.corrcoef(four.ravel(), b.features.ravel())[0, 1] > 0.95


def test_classifier_matches_torch_logits(built: Built) -> None:
    b = built
    arch = b.arch
    clf = zoo.build_classifier(arch, b.state)
    assert [o.name for o in clf.graph.output] == ["logits"]
    logits = session(clf.SerializeToString()).run(["logits"], {"input": b.images})[0]
    assert logits.shape == (2, 1000)
    with torch.no_grad():
        want = b.torch(torch.from_numpy(b.images)).numpy()
    assert rel_err(logits, want) < REL_TOL


@pytest.mark.filterwarnings(
    # torch 2.13 deprecates the TorchScript exporter (dynamo=False) that the brief asks for.
    "ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning",
    "ignore:The feature will be removed:DeprecationWarning",
    # EfficientNet's F.pad exports as Slice with negative steps, which torch does not fold
    "ignore:Constant folding - Only steps=1 can be constant folded:UserWarning",
)
def test_torch_export_cut_automatically(built: Built) -> None:
    b = built
    buf = io.BytesIO()
    torch.onnx.export(
        b.torch, (torch.from_numpy(b.images[:1]),), buf, input_names=["data"], output_names=["prob"],
        dynamic_axes={"data": {0: "batch"}, "prob": {0: "batch"}}, opset_version=17, dynamo=False,
    )
    exported = buf.getvalue()
    del buf
    assert "Gemm" in {n.op_type for n in onnx.load_from_string(exported).graph.node}
    prepared = prepare_feature_extractor(exported)
    del exported
    assert prepared.feature_dim == b.spec.feature_dim
    assert prepared.input_name == "data"
    assert (prepared.input_height, prepared.input_width) == (b.spec.input_height, b.spec.input_width)
    assert prepared.fixed_batch is False
    assert prepared.opset == 17
    sess = session(prepared.onnx_bytes)
    assert [o.name for o in sess.get_outputs()] == [prepared.output_name]
    got = sess.run([prepared.output_name], {"data": b.images})[0]
    assert got.shape == (2, b.spec.feature_dim)
    assert rel_err(got, b.torch_features) < REL_TOL
    # the 1000-way head is gone
    kept = onnx.load_from_string(prepared.onnx_bytes)
    head = f"{b.spec.head_prefix}weight"
    assert head not in {t.name for t in kept.graph.initializer}
    assert sum(int(np.prod(t.dims)) for t in kept.graph.initializer) < zoo.param_count(b.state, trainable_only=False)
