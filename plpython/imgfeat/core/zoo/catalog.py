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

Unverified checksums are ``None`` (see each entry's ``notes``); none is invented.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from ..errors import ModelError
from ..spec import Preprocessing, caffe_bgr, torchvision_imagenet


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

    @property
    def file_name(self) -> str:
        """The last path component of ``url``."""
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
]}
"""All entries by name."""


def get(name: str) -> CatalogEntry:
    """The entry ``name``; unknown names raise :class:`ModelError` listing the known ones."""
    try:
        return ENTRIES[name]
    except KeyError:
        raise ModelError(f"no catalog entry {name!r}", hint=f"known: {', '.join(ENTRIES)}") from None


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
