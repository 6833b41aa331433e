"""The torch-free reader of torch's weight files (imgfeat.zoo.torchfile): files torch itself
writes, in both formats and many dtypes, read to the same values as ``torch.load``; hostile
and damaged files refused with a clear error, and nothing in them run."""

from __future__ import annotations

import collections
import io
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from imgfeat.core import zoo
from imgfeat.core.errors import ModelError
from imgfeat.core.zoo.torchfile import ALLOWED_GLOBALS, read_torch_bytes, read_torch_file

FORMATS = [pytest.param(True, id="zip"), pytest.param(False, id="legacy")]


def tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 5, generator=g)
    shared = torch.arange(20, dtype=torch.float32)
    return collections.OrderedDict(
        f32=torch.randn(3, 4, generator=g),
        f64=torch.randn(2, 3, generator=g, dtype=torch.float64),
        f16=torch.randn(7, generator=g).half(),
        bf16=torch.randn(5, generator=g).to(torch.bfloat16),
        i64=torch.arange(-5, 5, dtype=torch.int64),
        i32=torch.tensor([-(2**31), 2**31 - 1], dtype=torch.int32),
        i16=torch.tensor([-300, 300], dtype=torch.int16),
        i8=torch.tensor([-128, 127], dtype=torch.int8),
        u8=torch.tensor([0, 255], dtype=torch.uint8),
        b=torch.tensor([True, False, True]),
        scalar=torch.tensor(3.5),
        tracked=torch.tensor(7),  # a BatchNorm's num_batches_tracked: 0-d int64
        empty=torch.zeros(0, 3),
        transposed=base.t(),  # non-contiguous: strides (1, 5)
        sliced=base[1:5:2, ::2],  # offset and steps
        shared_a=shared[2:7],  # two views of one storage
        shared_b=shared[10:].view(2, 5),
        param=torch.nn.Parameter(torch.randn(4, generator=g)),
    )


def as_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


@pytest.mark.parametrize("zip_format", FORMATS)
def test_files_torch_writes(tmp_path: Path, zip_format: bool) -> None:
    want = tensors()
    path = tmp_path / "t.pth"
    torch.save(want, path, _use_new_zipfile_serialization=zip_format)
    assert (path.read_bytes()[:2] == b"PK") is zip_format
    got = read_torch_file(path)
    assert list(got) == list(want)  # order kept
    reference = torch.load(path, weights_only=True)
    for name, tensor in want.items():
        a, ref = got[name], as_numpy(reference[name])
        assert isinstance(a, np.ndarray), name
        assert a.dtype == ref.dtype and a.shape == ref.shape, (name, a.dtype, a.shape)
        np.testing.assert_array_equal(a, ref, err_msg=name)
        np.testing.assert_array_equal(a, as_numpy(tensor), err_msg=name)
        assert a.flags.c_contiguous and a.dtype.isnative
    assert got["bf16"].dtype == np.float32 and got["tracked"].shape == () and got["tracked"] == 7
    got["shared_a"][0] = -1  # copies: the views do not alias each other or the file
    assert got["shared_b"].min() >= 10


def test_pickle_protocol_4(tmp_path: Path) -> None:
    path = tmp_path / "p4.pth"
    want = {"w": torch.randn(2, 2), "nested": {"b": torch.ones(3, dtype=torch.int64)}, "meta": [1, 2.5, "x", None, True]}
    torch.save(want, path, pickle_protocol=4)
    got = read_torch_file(path)
    np.testing.assert_array_equal(got["w"], want["w"].numpy())
    np.testing.assert_array_equal(got["nested"]["b"], np.ones(3, np.int64))
    assert got["meta"] == [1, 2.5, "x", None, True]


@pytest.mark.parametrize("zip_format", FORMATS)
@pytest.mark.slow
def test_state_dict_with_module_prefix_and_checkpoint(tmp_path: Path, zip_format: bool) -> None:
    """A DataParallel checkpoint (``module.`` names) inside a training checkpoint dict reads to
    the same state dict, and builds the same ONNX model, as the arrays it was made from."""
    state = zoo.synthetic_state_dict("resnet18", seed=3)
    checkpoint = {
        "epoch": 12, "arch": "resnet18", "best_acc1": 0.69,
        "state_dict": collections.OrderedDict((f"module.{k}", torch.from_numpy(np.array(v))) for k, v in state.items()),
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0, 1, 2]}]},
    }
    path = tmp_path / "checkpoint.pth"
    torch.save(checkpoint, path, _use_new_zipfile_serialization=zip_format)
    loaded = zoo.load_state_dict(path, arch="resnet18")
    assert list(loaded) == list(state)
    for k, v in state.items():
        np.testing.assert_array_equal(loaded[k], v, err_msg=k)
        assert loaded[k].dtype == v.dtype
    assert zoo.build_feature_extractor("resnet18", loaded).SerializeToString() == \
        zoo.build_feature_extractor("resnet18", state).SerializeToString()


def test_model_state_dict_metadata(tmp_path: Path) -> None:
    """``model.state_dict()`` is an OrderedDict carrying ``_metadata`` (set with BUILD)."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    path = tmp_path / "m.pth"
    torch.save(model.state_dict(), path)
    got = zoo.load_state_dict(path)
    assert list(got) == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                         "1.num_batches_tracked"]
    np.testing.assert_array_equal(got["0.weight"], model[0].weight.detach().numpy())


def test_reads_without_torch(tmp_path: Path) -> None:
    """``models download`` needs no torch: the reader works with torch unimportable."""
    path = tmp_path / "w.pth"
    torch.save({"conv.weight": torch.arange(6, dtype=torch.float32).view(2, 3)}, path)
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from imgfeat.core import zoo\n"
        f"sd = zoo.load_state_dict({str(path)!r})\n"
        "print(sd['conv.weight'].tolist(), 'torch' in sys.modules and sys.modules['torch'] is not None)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]] False"


# --- hostile and damaged files ---------------------------------------------------------------


class RunsCode:
    """Unpickling this runs a shell command (the classic ``__reduce__`` payload)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


class Custom:
    """A class of the writer's own code."""

    def __init__(self) -> None:
        self.weights = torch.ones(2)


@pytest.mark.parametrize("zip_format", FORMATS)
def test_reduce_payload_is_refused_never_run(tmp_path: Path, zip_format: bool) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"conv.weight": torch.ones(2), "x": RunsCode(marker)}, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(ModelError) as e:
        read_torch_file(path)
    assert "refused" in e.value.message and f"'{os.system.__module__}.system'" in e.value.message
    assert "weights_only" in (e.value.hint or "")
    with pytest.raises(ModelError, match="cannot read torch file .* refused"):
        zoo.load_state_dict(path)
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError):  # torch's own weights_only loader refuses it too
        torch.load(path, weights_only=True)
    assert not marker.exists()


def test_custom_class_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "custom.pth"
    torch.save({"model": Custom()}, path)
    with pytest.raises(ModelError, match=r"refused: the file names the Python callable '.*Custom'"):
        read_torch_file(path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


class _Storage:
    """Stands for a storage in a hand-made pickle (see :func:`handmade_zip`)."""


class _Rebuild:
    def __init__(self, size: tuple[int, ...], stride: tuple[int, ...], offset: int = 0) -> None:
        self.size, self.stride, self.offset = size, stride, offset

    def __reduce__(self) -> tuple[Any, ...]:
        return (torch._utils._rebuild_tensor_v2,
                (_Storage(), self.offset, self.size, self.stride, False, collections.OrderedDict()))


def handmade_zip(obj: Any, storage: bytes, numel: int, protocol: int = 2) -> bytes:
    """A zip archive laid out as torch.save's, whose data.pkl pickles ``obj`` with every
    ``_Storage`` as storage '0' (a FloatStorage of ``numel`` elements, bytes ``storage``)."""

    class P(pickle.Pickler):
        def persistent_id(self, o: Any) -> Any:
            return ("storage", torch.FloatStorage, "0", "cpu", numel) if isinstance(o, _Storage) else None

    buf = io.BytesIO()
    P(buf, protocol=protocol).dump(obj)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
        z.writestr("archive/data/0", storage)
    return out.getvalue()


def test_handmade_file_reads_like_torch(tmp_path: Path) -> None:
    """The hand-made layout is what torch writes: torch reads it to the same tensor."""
    data = handmade_zip({"w": _Rebuild((2, 3), (3, 1), 1)}, np.arange(10, dtype=np.float32).tobytes(), 10)
    (tmp_path / "h.pth").write_bytes(data)
    want = torch.load(tmp_path / "h.pth", weights_only=True)["w"].numpy()
    np.testing.assert_array_equal(read_torch_bytes(data)["w"], want)
    np.testing.assert_array_equal(want, np.arange(1, 7, dtype=np.float32).reshape(2, 3))


@pytest.mark.parametrize("size, stride, offset", [((100,), (1,), 0), ((2, 3), (3, 1), 5), ((3,), (5,), 0)])
def test_tensor_outside_its_storage_is_refused(size: tuple[int, ...], stride: tuple[int, ...], offset: int) -> None:
    data = handmade_zip({"w": _Rebuild(size, stride, offset)}, np.zeros(10, np.float32).tobytes(), 10)
    with pytest.raises(ModelError, match="reaches element .* of a storage of 10 elements"):
        read_torch_bytes(data)


def test_overlapping_tensor_is_refused() -> None:
    """A stride-0 view claims 10^12 elements of a 1-element storage: not weights, and its copy
    would exhaust memory."""
    data = handmade_zip({"w": _Rebuild((10**6, 10**6), (0, 0))}, np.zeros(1, np.float32).tobytes(), 1)
    with pytest.raises(ModelError, match="overlapping"):
        read_torch_bytes(data)


def test_storage_of_the_wrong_length_is_refused() -> None:
    data = handmade_zip({"w": _Rebuild((10,), (1,))}, np.zeros(9, np.float32).tobytes(), 10)
    with pytest.raises(ModelError, match="holds 36 bytes, not 10 elements"):
        read_torch_bytes(data)


def test_globals_outside_the_allow_list_are_refused() -> None:
    for payload in ({"w": eval}, {"w": os.system}, {"w": subprocess.Popen}, {"w": zipfile.ZipFile}):
        data = handmade_zip(payload, b"", 0)
        with pytest.raises(ModelError, match="refused: the file names the Python callable"):
            read_torch_bytes(data)
    assert "builtins.eval" not in ALLOWED_GLOBALS and "torch._utils._rebuild_tensor_v2" in ALLOWED_GLOBALS


def test_opcodes_outside_the_list_are_refused() -> None:
    # protocol 0 INST: "(i os\nsystem\n..." instantiates a class by name
    data = handmade_zip(None, b"", 0)  # a valid archive, for contrast
    inst = b"(S'true'\nios\nsystem\n."
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("archive/data.pkl", inst)
    with pytest.raises(ModelError, match="opcode"):
        read_torch_bytes(out.getvalue())
    assert read_torch_bytes(data) is None


@pytest.mark.parametrize("damage", ["truncate_pickle", "truncate_file", "garbage", "empty_zip"])
def test_damaged_files(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "d.pth"
    if damage in ("truncate_pickle", "truncate_file"):
        torch.save({"w": torch.ones(1000)}, path, _use_new_zipfile_serialization=False)
        data = path.read_bytes()
        path.write_bytes(data[:200] if damage == "truncate_pickle" else data[:-100])
    elif damage == "garbage":
        path.write_bytes(b"\x80\x02garbage" * 10)
    else:
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("readme.txt", "hello")
    with pytest.raises(ModelError):
        read_torch_file(path)
    with pytest.raises(ModelError, match="cannot read torch file"):
        zoo.load_state_dict(path)


def test_non_tensor_entries_are_named(tmp_path: Path) -> None:
    path = tmp_path / "mixed.pth"
    torch.save({"w": torch.ones(2), "epoch": 3}, path)
    with pytest.raises(ModelError, match="non-tensor entries: epoch"):
        zoo.load_state_dict(path)
