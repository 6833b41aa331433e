"""State dicts: loading weight files, checking them against an architecture, counting.

A state dict here is ``{torchvision parameter name: numpy array}``, e.g. ``conv1.weight``
``[64, 3, 7, 7]``, ``layer1.0.bn1.running_var`` ``[64]``, ``classifier.1.weight``
``[4096, 9216]``. timm's ResNets use the same names as torchvision's.
"""

from __future__ import annotations

import os
from typing import Any
from collections.abc import Mapping

import numpy as np

from ..errors import MissingPackageError, ModelError
from .archspec import ARCHITECTURES, ArchSpec
from .layers import ShapeBackend

NON_TRAINABLE_SUFFIXES = (".running_mean", ".running_var", ".num_batches_tracked")
"""BatchNorm buffers: in a state dict but not parameters (torch's ``named_buffers``)."""

_IGNORED_SUFFIX = ".num_batches_tracked"
_MAX_LISTED = 10


def arch_spec(arch: str) -> ArchSpec:
    """The :class:`ArchSpec` of ``arch``; unknown names raise :class:`ModelError`."""
    try:
        return ARCHITECTURES[arch]
    except KeyError:
        raise ModelError(
            f"unknown architecture {arch!r}", hint=f"use one of {', '.join(ARCHITECTURES)}"
        ) from None


def expected_shapes(arch: str, *, head: bool = True, num_classes: int = 1000) -> dict[str, tuple[int, ...]]:
    """``{name: shape}`` of every parameter and BatchNorm running statistic of ``arch`` (with
    the classifier head if ``head``), in torchvision's order; excludes ``num_batches_tracked``."""
    rec = ShapeBackend()
    arch_spec(arch).forward(rec, None, head=head, num_classes=num_classes)
    return rec.shapes


def batchnorm_buffers(arch: str) -> list[str]:
    """Names of ``arch``'s ``*.num_batches_tracked`` buffers (int64 scalars in torch files)."""
    rec = ShapeBackend()
    arch_spec(arch).forward(rec, None, head=False)
    return rec.buffers


def _listed(keys: list[str]) -> str:
    more = f" (and {len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else ""
    return ", ".join(keys[:_MAX_LISTED]) + more


def check_state_dict(arch: str, state_dict: Mapping[str, Any], *, head: bool) -> dict[str, np.ndarray]:
    """Check ``state_dict`` against ``arch`` and return it as float32 numpy arrays.

    Names may carry a ``module.`` prefix (``DataParallel``), which is stripped. With
    ``head=False`` the classifier head (``ArchSpec.head_prefix``) is optional and ignored;
    with ``head=True`` it is required and may have any number of classes.
    ``num_batches_tracked`` entries are ignored.

    Raises:
        ModelError: unknown ``arch``; keys missing, unexpected or of the wrong shape (each
            named in the message or detail).
    """
    spec = arch_spec(arch)
    sd = normalize_names(state_dict)
    num_classes = spec.num_classes
    head_w = sd.get(f"{spec.head_prefix}weight")
    if head and head_w is not None and np.ndim(head_w) == 2:
        num_classes = int(np.shape(head_w)[0])
    want = expected_shapes(arch, head=head, num_classes=num_classes)
    missing = [k for k in want if k not in sd]
    unexpected = [
        k for k in sd
        if k not in want and not k.endswith(_IGNORED_SUFFIX)
        and not (not head and k.startswith(spec.head_prefix))
    ]
    wrong = [
        f"{k} {tuple(np.shape(sd[k]))} != {want[k]}"
        for k in want if k in sd and tuple(np.shape(sd[k])) != want[k]
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listed(missing)}")
    if wrong:
        problems.append(f"wrong shapes: {_listed(wrong)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listed(unexpected)}")
    if problems:
        raise ModelError(
            f"the weights do not fit {arch}: " + "; ".join(problems),
            detail=f"{len(missing)} missing, {len(wrong)} mis-shaped, {len(unexpected)} unexpected",
            hint=_guess_hint(sd) or f"check that the file holds a torchvision/timm {arch} state dict",
        )
    out: dict[str, np.ndarray] = {}
    for k in want:
        arr = np.asarray(sd[k])
        if not np.issubdtype(arr.dtype, np.floating):
            raise ModelError(f"weight {k} has dtype {arr.dtype}; floating point expected")
        out[k] = arr.astype(np.float32, copy=False)
    return out


def _guess_hint(sd: Mapping[str, Any]) -> str | None:
    """``these weights fit <arch>`` if the names and shapes fit another architecture."""
    have = {k: tuple(np.shape(v)) for k, v in sd.items() if not k.endswith(_IGNORED_SUFFIX)}
    for name, spec in ARCHITECTURES.items():
        want = expected_shapes(name, head=False)
        rest = {k: s for k, s in have.items() if not k.startswith(spec.head_prefix)}
        if rest == want:
            return f"these weights fit {name}"
    return None


def normalize_names(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Strip a leading ``module.`` (``torch.nn.DataParallel``) from every name."""
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state_dict.items()}


def feature_state_dict(arch: str, state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``state_dict`` without the classifier head (``fc.*`` / ``classifier.6.*``): what the
    feature extractor uses."""
    prefix = arch_spec(arch).head_prefix
    return {k: v for k, v in state_dict.items() if not k.startswith(prefix)}


def param_count(state_dict: Mapping[str, Any], *, trainable_only: bool = True) -> int:
    """Number of scalar values in ``state_dict``.

    With ``trainable_only`` (default) BatchNorm buffers (``running_mean``, ``running_var``,
    ``num_batches_tracked``) are excluded, which gives torch's
    ``sum(p.numel() for p in model.parameters())``, e.g. 11,689,512 for resnet18 as
    published in torchvision's weight tables.
    """
    return int(sum(
        int(np.prod(np.shape(v))) for k, v in state_dict.items()
        if not (trainable_only and k.endswith(NON_TRAINABLE_SUFFIXES))
    ))


def load_state_dict(path: str | os.PathLike[str], arch: str | None = None) -> dict[str, np.ndarray]:
    """Read a weight file into ``{name: numpy array}``.

    * ``.safetensors``: with the ``safetensors`` package's numpy API (no torch needed);
    * ``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt``: torch's zip or legacy format, read by
      :func:`imgfeat.zoo.torchfile.read_torch_file` without torch, with the allow-list of
      ``torch.load(weights_only=True)`` (nothing in the file is run). A checkpoint dict holding
      the weights under ``state_dict`` or ``model`` is unwrapped. bfloat16 becomes float32.

    A ``module.`` prefix is stripped; ``num_batches_tracked`` buffers are 0-d int arrays, as in
    torch. If ``arch`` is given the result is checked with
    :func:`check_state_dict` (head optional).

    Raises:
        ModelError: missing file, unreadable or unsupported file, non-tensor entries, or (with
            ``arch``) keys missing / mis-shaped; a torch file naming anything outside the
            allow-list (the message names it).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelError(f"weight file {path!r} does not exist")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".safetensors":
        sd = _load_safetensors(path)
    elif ext in (".pth", ".pt", ".bin", ".ckpt"):
        sd = _load_torch(path)
    else:
        raise ModelError(
            f"unsupported weight file type {ext or '(none)'!r} for {path!r}",
            hint="use a .safetensors file, or a torch .pth/.pt file",
        )
    sd = normalize_names(sd)
    for k, v in sd.items():  # safetensors' numpy API writes 0-d arrays as shape (1,)
        if k.endswith(_IGNORED_SUFFIX) and np.shape(v) == (1,):
            sd[k] = np.asarray(v).reshape(())
    if arch is not None:
        check_state_dict(arch, sd, head=False)
    return sd


def save_state_dict(state_dict: Mapping[str, np.ndarray], path: str | os.PathLike[str]) -> None:
    """Write ``state_dict`` as ``.safetensors`` (numpy API; arrays are made contiguous)."""
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in state_dict.items()}, os.fspath(path))


def _load_safetensors(path: str) -> dict[str, np.ndarray]:
    try:
        from safetensors.numpy import load_file
    except ImportError as e:  # pragma: no cover - safetensors is a declared dependency
        raise MissingPackageError("the safetensors package is not installed", hint="pip install safetensors") from e
    try:
        return load_file(path)
    except Exception as e:  # safetensors raises SafetensorError, TypeError (bf16), OSError
        raise ModelError(f"cannot read safetensors file {path!r}: {e}") from e


def _load_torch(path: str) -> dict[str, np.ndarray]:
    """A ``torch.save`` state dict, read by :mod:`.torchfile` (no torch; nothing in the file is run)."""
    from .torchfile import read_torch_file

    try:
        obj = read_torch_file(path)
    except ModelError as e:
        raise ModelError(
            f"cannot read torch file {path!r} as tensors: {e.message}", detail=e.detail, hint=e.hint,
        ) from None
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                obj = inner
                break
    if not isinstance(obj, Mapping):
        raise ModelError(f"{path!r} does not hold a state dict (found {type(obj).__name__})")
    out: dict[str, np.ndarray] = {}
    bad = []
    for k, v in obj.items():
        if isinstance(v, np.ndarray) and isinstance(k, str):
            out[k] = v
        else:
            bad.append(str(k))
    if bad:
        raise ModelError(f"{path!r} holds non-tensor entries: {_listed(bad)}")
    return out
