"""Reading torch's weight files (``torch.save``) without torch, and without running any code.

A ``.pth`` file is a Python pickle whose tensors point at raw storages. Python's own unpickler
imports and calls whatever the file names, so it is never used here: this module walks the
pickle's opcodes itself, with the allow-list of torch's ``weights_only=True`` loader
(``torch/_weights_only_unpickler.py``), narrowed to what a state dict needs:

* containers: dicts and ``collections.OrderedDict`` (read as ``dict``, which keeps the order),
  lists, tuples, ``set``, and the scalars int, float, bool, str, bytes (``_codecs.encode``), None;
* tensors: ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_tensor_v3`` over a storage,
  ``_rebuild_parameter`` / ``_rebuild_parameter_with_state`` (``nn.Parameter``), ``torch.Size``,
  ``torch.device``, the legacy storage classes (``torch.FloatStorage`` ...) and ``torch.<dtype>``.

Any other global (``os.system``, ``builtins.eval``, a class of the writer's code ...), any
opcode outside the list (``INST``, ``OBJ``, ``NEWOBJ`` ...), and any malformed or truncated
stream raise :class:`~imgfeat.errors.ModelError` before anything is built: nothing named by the
file is imported or called. Storages are bounded by the file: a tensor's size, stride and
offset must lie inside its storage, and a storage's declared length must equal its bytes.

Two container formats, both written by ``torch.save``:

* **zip** (the default since torch 1.6): ``<archive>/data.pkl`` (the pickle; storages are
  persistent ids ``('storage', <storage class>, key, location, numel)``), ``<archive>/data/<key>``
  (raw bytes of each storage) and ``<archive>/byteorder`` (``little`` or ``big``; little when absent);
* **legacy** (``_use_new_zipfile_serialization=False``, and files from torch < 1.6): five pickles
  in a row — the magic number ``0x1950a86a20f9469cfc6c``, protocol version 1001, a system-info
  dict (``little_endian``), the object (persistent ids ``('storage', <storage class>, root_key,
  location, numel, view_metadata)``), the list of storage keys — then each storage as an int64
  element count followed by its bytes, in that list's order.

Tensors come back as numpy arrays of their dtype (contiguous, native byte order); bfloat16,
which numpy lacks, becomes float32 (exactly: bfloat16 is the top half of a float32).
"""

from __future__ import annotations

import io
import math
import os
import struct
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from ..errors import ModelError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
"""torch.serialization.MAGIC_NUMBER: the first pickle of a legacy-format file."""

LEGACY_PROTOCOL = 1001
"""torch.serialization.PROTOCOL_VERSION: the second pickle of a legacy-format file."""

MAX_STRING = 1 << 20
"""Longest string or bytes value accepted in the pickle (1 MiB; names and metadata only)."""

MAX_NDIM = 64
"""Most dimensions a tensor may have."""

MAX_PICKLE_BYTES = 64 << 20
"""Largest ``data.pkl`` accepted (64 MiB): the pickle holds names and shapes, the storages are separate."""

# Storage class names (torch.<X>Storage, legacy typed storages) -> numpy dtype (little endian).
STORAGE_DTYPES: dict[str, str] = {
    "FloatStorage": "<f4", "DoubleStorage": "<f8", "HalfStorage": "<f2", "BFloat16Storage": "bfloat16",
    "LongStorage": "<i8", "IntStorage": "<i4", "ShortStorage": "<i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "?",
}
# torch.<dtype> names (for _rebuild_tensor_v3) -> numpy dtype.
TORCH_DTYPES: dict[str, str] = {
    "float32": "<f4", "float": "<f4", "float64": "<f8", "double": "<f8", "float16": "<f2", "half": "<f2",
    "bfloat16": "bfloat16", "int64": "<i8", "long": "<i8", "int32": "<i4", "int": "<i4", "int16": "<i2",
    "short": "<i2", "int8": "i1", "uint8": "u1", "bool": "?", "uint16": "<u2", "uint32": "<u4", "uint64": "<u8",
}
_ITEMSIZE = {"bfloat16": 2}


def _itemsize(dtype: str) -> int:
    return _ITEMSIZE.get(dtype) or np.dtype(dtype).itemsize


# --- values the restricted unpickler builds ------------------------------------------------


@dataclass(frozen=True)
class _Global:
    """An allowed global, by its dotted name (never imported)."""

    name: str


@dataclass(frozen=True)
class _StorageRef:
    """A storage named by a persistent id: materialised from the container after parsing."""

    key: str
    dtype: str
    numel: int
    view: tuple[str, int, int] | None = None  # legacy view metadata: (view key, offset, size)


@dataclass(frozen=True)
class _TensorRef:
    """A tensor over a storage (``_rebuild_tensor_v2/v3``), materialised after parsing."""

    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


_STORAGE_CLASSES = {f"torch.{name}" for name in STORAGE_DTYPES} | {"torch.storage.UntypedStorage", "torch.UntypedStorage"}
_DTYPES = {f"torch.{name}" for name in TORCH_DTYPES}
_CALLABLES = {
    "collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor_v3",
    "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state", "torch.Size",
    "torch.device", "_codecs.encode", "builtins.set", "collections.Counter",
}
ALLOWED_GLOBALS = frozenset(_STORAGE_CLASSES | _DTYPES | _CALLABLES)
"""Every global a file may name (``module.name``); anything else is refused unread."""


def _refuse(message: str, detail: str | None = None) -> ModelError:
    return ModelError(
        message, detail=detail,
        hint="imgfeat reads only tensors, storages and (ordered) dicts of them, as torch.load(weights_only=True) "
        "does, and never runs code from a file; save weights with torch.save(model.state_dict(), path) "
        "or as .safetensors",
    )


class _Reader:
    """A pickle opcode interpreter over a byte buffer, with the allow-list above."""

    def __init__(self, data: bytes | memoryview, pos: int = 0) -> None:
        self.data = memoryview(data)
        self.pos = pos

    def _read(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise _refuse("the pickle is truncated or damaged", detail=f"wanted {n} bytes at offset {self.pos}")
        out = self.data[self.pos : self.pos + n].tobytes()
        self.pos += n
        return out

    def _line(self) -> str:
        end = bytes(self.data[self.pos : self.pos + 512]).find(b"\n")
        if end < 0:
            raise _refuse("the pickle is truncated or damaged", detail=f"unterminated line at offset {self.pos}")
        text = self._read(end + 1)[:-1]
        try:
            return text.decode("ascii")
        except UnicodeDecodeError:
            raise _refuse("the pickle names a global that is not ASCII") from None

    def _text(self, n: int) -> str:
        if n > MAX_STRING:
            raise _refuse(f"a string of {n} bytes in the pickle exceeds the {MAX_STRING}-byte limit")
        try:
            return self._read(n).decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise _refuse("the pickle holds a string that is not UTF-8") from None

    def load(self, persistent_load: Callable[[Any], Any]) -> Any:
        """Interpret one pickle (up to its STOP) and return its value."""
        stack: list[Any] = []
        marks: list[int] = []
        memo: dict[int, Any] = {}

        def pop_mark() -> list[Any]:
            if not marks:
                raise _refuse("the pickle is damaged (no MARK)")
            m = marks.pop()
            items = stack[m:]
            del stack[m:]
            return items

        def pop() -> Any:
            if not stack:
                raise _refuse("the pickle is damaged (stack underflow)")
            return stack.pop()

        while True:
            op = self._read(1)[0]
            if op == 0x80:  # PROTO
                proto = self._read(1)[0]
                if proto > 5:
                    raise _refuse(f"unsupported pickle protocol {proto}")
            elif op == 0x95:  # FRAME (protocol 4+): a length prefix, nothing to do
                self._read(8)
            elif op == 0x2E:  # STOP
                if len(stack) != 1 or marks:
                    raise _refuse("the pickle is damaged (unbalanced stack at STOP)")
                return stack[0]
            elif op == 0x63:  # GLOBAL "module\nname\n"
                module, name = self._line(), self._line()
                stack.append(_allowed(f"{module}.{name}"))
            elif op == 0x93:  # STACK_GLOBAL
                name, module = pop(), pop()
                if not isinstance(module, str) or not isinstance(name, str):
                    raise _refuse("the pickle is damaged (STACK_GLOBAL without names)")
                stack.append(_allowed(f"{module}.{name}"))
            elif op == 0x52:  # REDUCE
                args = pop()
                func = pop()
                if not isinstance(args, tuple):
                    raise _refuse("the pickle is damaged (REDUCE arguments are not a tuple)")
                stack.append(_call(func, args))
            elif op == 0x62:  # BUILD: state set on an object; only dicts and tensors, and ignored
                state = pop()
                inst = stack[-1] if stack else None
                if not isinstance(inst, (dict, _TensorRef)) or not isinstance(state, (dict, tuple, type(None))):
                    raise _refuse(f"the pickle sets the state of a {type(inst).__name__}, which weights never need")
            elif op == 0x51:  # BINPERSID
                stack.append(persistent_load(pop()))
            elif op == 0x28:  # MARK
                marks.append(len(stack))
            elif op == 0x74:  # TUPLE
                stack.append(tuple(pop_mark()))
            elif op == 0x85:  # TUPLE1
                stack.append((pop(),))
            elif op == 0x86:  # TUPLE2
                b, a = pop(), pop()
                stack.append((a, b))
            elif op == 0x87:  # TUPLE3
                c, b, a = pop(), pop(), pop()
                stack.append((a, b, c))
            elif op == 0x29:  # EMPTY_TUPLE
                stack.append(())
            elif op == 0x5D:  # EMPTY_LIST
                stack.append([])
            elif op == 0x7D:  # EMPTY_DICT
                stack.append({})
            elif op == 0x8F:  # EMPTY_SET
                stack.append(set())
            elif op == 0x61:  # APPEND
                item = pop()
                target = stack[-1] if stack else None
                if not isinstance(target, list):
                    raise _refuse("the pickle appends to something that is not a list")
                target.append(item)
            elif op == 0x65:  # APPENDS
                items = pop_mark()
                target = stack[-1] if stack else None
                if not isinstance(target, list):
                    raise _refuse("the pickle appends to something that is not a list")
                target.extend(items)
            elif op == 0x90:  # ADDITEMS
                items = pop_mark()
                target = stack[-1] if stack else None
                if not isinstance(target, set):
                    raise _refuse("the pickle adds items to something that is not a set")
                target.update(_hashable(i) for i in items)
            elif op == 0x73:  # SETITEM
                value, key = pop(), pop()
                _setitems(stack, [key, value])
            elif op == 0x75:  # SETITEMS
                _setitems(stack, pop_mark())
            elif op == 0x4E:  # NONE
                stack.append(None)
            elif op == 0x88:  # NEWTRUE
                stack.append(True)
            elif op == 0x89:  # NEWFALSE
                stack.append(False)
            elif op == 0x4A:  # BININT
                stack.append(struct.unpack("<i", self._read(4))[0])
            elif op == 0x4B:  # BININT1
                stack.append(self._read(1)[0])
            elif op == 0x4D:  # BININT2
                stack.append(struct.unpack("<H", self._read(2))[0])
            elif op == 0x8A:  # LONG1
                n = self._read(1)[0]
                stack.append(int.from_bytes(self._read(n), "little", signed=True))
            elif op == 0x47:  # BINFLOAT
                stack.append(struct.unpack(">d", self._read(8))[0])
            elif op == 0x58:  # BINUNICODE
                stack.append(self._text(struct.unpack("<I", self._read(4))[0]))
            elif op == 0x8C:  # SHORT_BINUNICODE
                stack.append(self._text(self._read(1)[0]))
            elif op == 0x55:  # SHORT_BINSTRING (protocol 2 ASCII strings)
                stack.append(self._read(self._read(1)[0]).decode("latin-1"))
            elif op == 0x43:  # SHORT_BINBYTES
                stack.append(self._read(self._read(1)[0]))
            elif op == 0x42:  # BINBYTES
                n = struct.unpack("<I", self._read(4))[0]
                if n > MAX_STRING:
                    raise _refuse(f"a bytes value of {n} bytes in the pickle exceeds the {MAX_STRING}-byte limit")
                stack.append(self._read(n))
            elif op == 0x71:  # BINPUT
                memo[self._read(1)[0]] = stack[-1] if stack else pop()
            elif op == 0x72:  # LONG_BINPUT
                memo[struct.unpack("<I", self._read(4))[0]] = stack[-1] if stack else pop()
            elif op == 0x94:  # MEMOIZE
                memo[len(memo)] = stack[-1] if stack else pop()
            elif op in (0x68, 0x6A):  # BINGET, LONG_BINGET
                idx = self._read(1)[0] if op == 0x68 else struct.unpack("<I", self._read(4))[0]
                if idx not in memo:
                    raise _refuse("the pickle is damaged (unknown memo index)")
                stack.append(memo[idx])
            else:
                raise _refuse(
                    f"the pickle uses opcode {bytes([op])!r} at offset {self.pos - 1}, which weights never need",
                    detail="allowed: the opcodes of containers, numbers, strings, persistent ids and allowed globals",
                )


def _allowed(name: str) -> _Global:
    if name not in ALLOWED_GLOBALS:
        raise _refuse(
            f"refused: the file names the Python callable {name!r}, which a weights file never needs "
            "(it could run code when unpickled); nothing was run",
        )
    return _Global(name)


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        raise _refuse("the pickle uses an unhashable value as a key") from None
    return value


def _setitems(stack: list[Any], items: list[Any]) -> None:
    target = stack[-1] if stack else None
    if not isinstance(target, dict) or len(items) % 2:
        raise _refuse("the pickle sets items on something that is not a dict")
    for i in range(0, len(items), 2):
        target[_hashable(items[i])] = items[i + 1]


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or len(value) > MAX_NDIM or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise _refuse(f"a tensor's {what} is not a tuple of non-negative integers: {value!r}"[:300])
    return value


def _tensor(storage: Any, offset: Any, size: Any, stride: Any) -> _TensorRef:
    if not isinstance(storage, _StorageRef):
        raise _refuse("a tensor is rebuilt from something that is not a storage")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise _refuse(f"a tensor's storage offset is not a non-negative integer: {offset!r}")
    size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(size) != len(stride):
        raise _refuse(f"a tensor's size {size} and stride {stride} differ in length")
    return _TensorRef(storage, offset, size, stride)


def _call(func: Any, args: tuple[Any, ...]) -> Any:
    """REDUCE: what each allowed callable means, computed here (nothing is imported)."""
    name = func.name if isinstance(func, _Global) else None
    if name == "collections.OrderedDict" or name == "collections.Counter":
        if args not in ((), ([],)):
            raise _refuse(f"{name} is called with arguments the reader does not accept")
        return {}
    if name in ("torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor_v3"):
        want = 6 if name.endswith("v2") else 7
        if len(args) not in (want, want + 1):
            raise _refuse(f"{name} is called with {len(args)} arguments")
        t = _tensor(*args[:4])
        if name.endswith("v3"):
            dtype = args[6]
            if not isinstance(dtype, _Global) or dtype.name not in _DTYPES:
                raise _refuse(f"{name} is called with a dtype that is not a torch dtype: {dtype!r}")
            storage = t.storage
            np_dtype = TORCH_DTYPES[dtype.name.removeprefix("torch.")]
            if storage.dtype != "u1" or storage.numel % _itemsize(np_dtype):
                raise _refuse(f"{name}: an untyped storage of {storage.numel} bytes cannot hold {dtype.name}")
            t = _TensorRef(_StorageRef(storage.key, np_dtype, storage.numel // _itemsize(np_dtype), storage.view),
                           t.offset, t.size, t.stride)
        return t
    if name in ("torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state"):
        if len(args) not in (3, 4) or not isinstance(args[0], _TensorRef):
            raise _refuse(f"{name} is called with arguments the reader does not accept")
        return args[0]
    if name == "torch.Size":
        if len(args) != 1:
            raise _refuse("torch.Size is called with arguments the reader does not accept")
        return _int_tuple(tuple(args[0]) if isinstance(args[0], (list, tuple)) else args[0], "size")
    if name == "torch.device":
        if not all(isinstance(a, (str, int)) for a in args):
            raise _refuse("torch.device is called with arguments the reader does not accept")
        return ":".join(str(a) for a in args)
    if name == "_codecs.encode":
        if len(args) != 2 or not isinstance(args[0], str) or args[1] not in ("latin1", "latin-1"):
            raise _refuse("_codecs.encode is called with arguments the reader does not accept")
        return args[0].encode("latin-1")
    if name == "builtins.set":
        if len(args) > 1 or (args and not isinstance(args[0], (list, tuple))):
            raise _refuse("set is called with arguments the reader does not accept")
        return {_hashable(v) for v in (args[0] if args else ())}
    shown = name or type(func).__name__
    raise _refuse(f"the pickle calls {shown!r}, which is not a function the reader knows how to rebuild")


def _storage_ref(pid: Any, *, legacy: bool) -> _StorageRef:
    """A persistent id ``('storage', <storage class>, key, location, numel[, view])``."""
    if not isinstance(pid, tuple) or not pid or pid[0] not in ("storage", b"storage"):
        raise _refuse(f"the pickle refers to a persistent object that is not a storage: {str(pid)[:100]}")
    if len(pid) != (6 if legacy else 5):
        raise _refuse(f"a storage reference has {len(pid)} fields")
    storage_type, key, _location, numel = pid[1:5]
    if not isinstance(storage_type, _Global) or storage_type.name not in _STORAGE_CLASSES:
        raise _refuse(f"a storage reference names {storage_type!r}, not a torch storage class")
    cls = storage_type.name.rsplit(".", 1)[1]
    dtype = "u1" if cls == "UntypedStorage" else STORAGE_DTYPES[cls]
    if not isinstance(key, str) or not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
        raise _refuse(f"a storage reference is malformed: key {key!r}, numel {numel!r}")
    view = None
    if legacy and pid[5] is not None:
        v = pid[5]
        if not (isinstance(v, tuple) and len(v) == 3 and isinstance(v[0], str)
                and all(isinstance(i, int) and i >= 0 for i in v[1:])):
            raise _refuse(f"a storage view is malformed: {v!r}"[:200])
        view = (v[0], v[1], v[2])
    return _StorageRef(key, dtype, numel, view)


# --- containers -------------------------------------------------------------------------------


def _array(raw: bytes | memoryview, dtype: str, count: int, big_endian: bool) -> np.ndarray:
    if dtype == "bfloat16":
        half = np.frombuffer(raw, dtype=">u2" if big_endian else "<u2", count=count).astype(np.uint32)
        return (half << 16).view(np.float32)
    dt = np.dtype(dtype)
    if big_endian and dt.itemsize > 1:
        dt = dt.newbyteorder(">")
    return np.frombuffer(raw, dtype=dt, count=count)


def _materialise(obj: Any, storages: Mapping[str, np.ndarray], path: str = "") -> Any:
    """Replace tensor references by numpy arrays (contiguous, native byte order)."""
    if isinstance(obj, _TensorRef):
        base = storages[obj.storage.key]
        if obj.storage.view is not None:
            _vkey, voff, vsize = obj.storage.view
            if voff + vsize > base.size:
                raise _refuse(f"tensor {path!r}: a storage view lies outside its storage")
            base = base[voff : voff + vsize]
        n = math.prod(obj.size)
        if n:
            last = obj.offset + sum((s - 1) * st for s, st in zip(obj.size, obj.stride))
            if last >= base.size:
                raise _refuse(
                    f"tensor {path!r} reaches element {last} of a storage of {base.size} elements",
                    detail=f"size {obj.size}, stride {obj.stride}, offset {obj.offset}",
                )
            if n > base.size:  # only overlapping views (stride 0, expand) have more elements than memory
                raise _refuse(
                    f"tensor {path!r} has {n} elements over a storage of {base.size}: overlapping (expanded) "
                    "tensors are not weights",
                    detail=f"size {obj.size}, stride {obj.stride}",
                )
            view = np.lib.stride_tricks.as_strided(
                base[obj.offset :], shape=obj.size, strides=[s * base.itemsize for s in obj.stride], writeable=False
            )
        else:
            view = np.empty(obj.size, dtype=base.dtype)
        return np.array(view, dtype=base.dtype.newbyteorder("="), order="C")  # a copy; 0-d stays 0-d
    if isinstance(obj, dict):
        return {k: _materialise(v, storages, f"{path}.{k}" if path else str(k)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_materialise(v, storages, f"{path}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, tuple):
        return tuple(_materialise(v, storages, f"{path}[{i}]") for i, v in enumerate(obj))
    return obj


def _read_zip(fh: BinaryIO, name: str) -> Any:
    try:
        zf = zipfile.ZipFile(fh)
    except zipfile.BadZipFile as e:
        raise ModelError(f"{name}: not a readable torch zip file ({e})") from None
    with zf:
        pkl = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise ModelError(f"{name}: a zip file, but not one torch.save wrote (no single <archive>/data.pkl)")
        prefix = pkl[0][: -len("data.pkl")]
        members = set(zf.namelist())
        if zf.getinfo(pkl[0]).file_size > MAX_PICKLE_BYTES:
            raise ModelError(f"{name}: its pickle is {zf.getinfo(pkl[0]).file_size} bytes, over {MAX_PICKLE_BYTES}")
        order = (zf.read(prefix + "byteorder").decode("ascii", "replace").strip()
                 if prefix + "byteorder" in members else "little")
        if order not in ("little", "big"):
            raise ModelError(f"{name}: unknown byte order {order!r}")
        refs: dict[str, _StorageRef] = {}

        def persistent_load(pid: Any) -> _StorageRef:
            ref = _storage_ref(pid, legacy=False)
            seen = refs.setdefault(ref.key, ref)
            if seen.dtype != ref.dtype:
                raise _refuse(f"storage {ref.key!r} is referenced with two dtypes")
            return ref

        obj = _Reader(zf.read(pkl[0])).load(persistent_load)
        storages = {}
        for key, ref in refs.items():
            member = f"{prefix}data/{key}"
            if member not in members:
                raise ModelError(f"{name}: storage {key!r} is missing from the archive")
            size = zf.getinfo(member).file_size  # checked before reading: a zip member may inflate
            if size != ref.numel * _itemsize(ref.dtype):
                raise ModelError(
                    f"{name}: storage {key!r} holds {size} bytes, not {ref.numel} elements of {ref.dtype}"
                )
            raw = zf.read(member)
            if len(raw) != size:
                raise ModelError(f"{name}: storage {key!r} is damaged ({len(raw)} of {size} bytes)")
            storages[key] = _array(raw, ref.dtype, ref.numel, order == "big")
        return _materialise(obj, storages)


def _read_legacy(data: bytes, name: str) -> Any:
    reader = _Reader(data)

    def no_persistent(_pid: Any) -> Any:
        raise _refuse("a legacy header pickle refers to a persistent object")

    magic = reader.load(no_persistent)
    if magic != LEGACY_MAGIC:
        raise ModelError(f"{name}: not a torch weights file (no zip archive, no legacy magic number)")
    protocol = reader.load(no_persistent)
    if protocol != LEGACY_PROTOCOL:
        raise ModelError(f"{name}: unsupported legacy torch protocol version {protocol!r}")
    info = reader.load(no_persistent)
    if not isinstance(info, dict) or not isinstance(info.get("little_endian"), bool):
        raise ModelError(f"{name}: damaged legacy torch header")
    big_endian = not info["little_endian"]
    refs: dict[str, _StorageRef] = {}

    def persistent_load(pid: Any) -> _StorageRef:
        ref = _storage_ref(pid, legacy=True)
        seen = refs.setdefault(ref.key, ref)
        if seen.dtype != ref.dtype:
            raise _refuse(f"storage {ref.key!r} is referenced with two dtypes")
        return ref

    obj = reader.load(persistent_load)
    keys = reader.load(no_persistent)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) or set(keys) != set(refs):
        raise ModelError(f"{name}: the legacy storage list does not match the storages the object uses")
    storages = {}
    pos = reader.pos
    for key in keys:
        ref = refs[key]
        if pos + 8 > len(data):
            raise ModelError(f"{name}: truncated before storage {key!r}")
        count = int.from_bytes(data[pos : pos + 8], "big" if big_endian else "little", signed=True)
        pos += 8
        nbytes = count * _itemsize(ref.dtype)
        if count != ref.numel or pos + nbytes > len(data):
            raise ModelError(f"{name}: storage {key!r} declares {count} elements, expected {ref.numel} within the file")
        storages[key] = _array(memoryview(data)[pos : pos + nbytes], ref.dtype, count, big_endian)
        pos += nbytes
    return _materialise(obj, storages)


def read_torch_file(path: str | os.PathLike[str]) -> Any:
    """The object a ``torch.save`` file holds, with tensors as numpy arrays; no torch needed.

    Returns dicts (``OrderedDict`` too), lists, tuples, sets, scalars and numpy arrays, as the
    file holds them. Both the zip and the legacy format are read (see the module docstring).

    Raises:
        ModelError: not a torch file, damaged, or holding anything outside the allow-list
            (:data:`ALLOWED_GLOBALS`): the message names the refused global or opcode.
    """
    path = os.fspath(path)
    name = repr(os.path.basename(path))
    with open(path, "rb") as fh:
        head = fh.read(4)
        fh.seek(0)
        if head.startswith(b"PK\x03\x04"):
            return _read_zip(fh, name)
        data = fh.read()
    if data[:1] == b"\x80":
        return _read_legacy(data, name)
    if len(data) > 262 and data[257:262] == b"ustar":
        raise ModelError(f"{name}: a tar-format torch file (torch < 0.4), which imgfeat does not read",
                         hint="load it with torch and save it again: torch.save(torch.load(path), path)")
    raise ModelError(f"{name}: not a torch weights file (neither a zip archive nor a pickle)")


def read_torch_bytes(data: bytes) -> Any:
    """:func:`read_torch_file` for bytes in memory."""
    if data[:4] == b"PK\x03\x04":
        return _read_zip(io.BytesIO(data), "<bytes>")
    if data[:1] == b"\x80":
        return _read_legacy(data, "<bytes>")
    raise ModelError("<bytes>: not a torch weights file (neither a zip archive nor a pickle)")
