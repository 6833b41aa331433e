"""The engines that run a registered model, chosen by what the catalog records about it
(``imgfeat.models.precision`` and ``imgfeat.models.engines``), never by a session setting.

* ``onnxruntime``: onnxruntime's CPU execution provider — fp32 models exactly as imgfeat always
  ran them, and int8 (QDQ) models where OpenVINO cannot run them.
* ``openvino``: OpenVINO's CPU runtime, which runs bf16 convolutions and matrix products on the
  CPU's bf16 units (AMX tiles, else AVX-512 BF16 ``vdpbf16ps``) and int8 QDQ graphs on VNNI or
  AMX-INT8. onnxruntime's CPU provider has no bf16 kernels for x86. Two routes lead to the same
  OpenVINO release (2026.4.1, pinned in ``plpython/requirements.lock``):

  1. onnxruntime's OpenVINO execution provider plugin (``onnxruntime-ep-openvino``), registered
     with ``onnxruntime.register_execution_provider_library`` and added to a session with
     ``SessionOptions.add_provider_for_devices``. Its ``load_config`` sets the precision
     (``INFERENCE_PRECISION_HINT``: the plugin otherwise picks bf16 by itself on bf16 CPUs),
     the threads (``INFERENCE_NUM_THREADS``), the ``LATENCY`` hint (one stream) and no thread
     pinning (several backends share the cores); ``session.disable_cpu_ep_fallback = 1``, so a
     graph the plugin cannot take whole fails instead of running partly on the CPU provider.
  2. OpenVINO's own Python API (``openvino``), with the same configuration, when the plugin
     offers no device for this CPU: the plugin's factory offers devices of Intel hardware only
     (it skips an OrtHardwareDevice whose vendor id is not Intel's), so on AMD CPUs — which
     OpenVINO's CPU runtime itself supports, AVX-512 BF16 included — this is the way to the
     same kernels.

  A model that needs ``openvino`` on a server that has neither route, or bf16 on a CPU without
  bf16 instructions, fails with :class:`~imgfeat.core.errors.EngineUnavailableError` naming
  what is missing; it never runs on another engine or at another precision instead.

Plugin libraries are loaded only from the ``onnxruntime_ep_openvino`` package installed beside
the ``onnxruntime`` package in use (the installed library tree, on a server); nothing a caller
passes names a library or a path.
"""

from __future__ import annotations

import collections
import json
import os
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import EngineUnavailableError, ModelError
from .model_info import ENGINES, PRECISIONS

__all__ = ["ENGINES", "PRECISIONS", "DEFAULT_ENGINES", "openvino_session", "report", "cpu", "plugin", "runtime"]

DEFAULT_ENGINES: dict[str, tuple[str, ...]] = {
    "fp32": ("onnxruntime",),
    "bf16": ("openvino",),
    "int8": ("openvino", "onnxruntime"),
}
"""The engines a model of each precision is registered with, in order of preference: the first
this server has runs it. int8 runs on OpenVINO where it can (same QDQ file; its features agree
with onnxruntime's within the tolerance the tests state) and on onnxruntime otherwise; bf16 has
no second engine."""

OPENVINO_PRECISION_HINT = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
"""OpenVINO's ``INFERENCE_PRECISION_HINT`` per model precision. An int8 graph's operators outside
its QDQ pairs run in f32, as on onnxruntime (OpenVINO would pick bf16 on a bf16 CPU)."""

PLUGIN_EP_NAME = "OpenVINOExecutionProvider"
"""The execution provider's name in ``onnxruntime.get_ep_devices()``."""

PLUGIN_REGISTRATION = "imgfeat_openvino"
"""The name imgfeat registers the plugin library under (once per process)."""

INTEL_VENDOR = "GenuineIntel"


# --------------------------------------------------------------------------- the CPU


@dataclass(frozen=True)
class CpuInfo:
    """What ``/proc/cpuinfo`` says about the first CPU: vendor id, model name, flags."""

    vendor: str
    model: str
    flags: frozenset[str]

    @property
    def bf16_isa(self) -> str | None:
        """The bf16 instructions OpenVINO's kernels can use: ``amx_bf16`` (AMX tiles),
        ``avx512_bf16`` (``vdpbf16ps``), or None (no bf16 arithmetic: bf16 models cannot run)."""
        for isa in ("amx_bf16", "avx512_bf16"):
            if isa in self.flags:
                return isa
        return None

    @property
    def int8_isa(self) -> str | None:
        """The int8 dot-product instructions: ``amx_int8``, ``avx512_vnni``, ``avx_vnni`` or None."""
        for isa in ("amx_int8", "avx512_vnni", "avx_vnni"):
            if isa in self.flags:
                return isa
        return None

    def report(self) -> dict[str, Any]:
        """JSON-able: vendor, model, and the matrix-unit flags present."""
        wanted = ("amx_bf16", "amx_int8", "amx_tile", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f")
        return {
            "vendor": self.vendor,
            "model": self.model,
            "flags": [f for f in wanted if f in self.flags],
            "bf16_isa": self.bf16_isa,
            "int8_isa": self.int8_isa,
        }


def parse_cpuinfo(text: str) -> CpuInfo:
    """A :class:`CpuInfo` from the text of ``/proc/cpuinfo`` (its first processor)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return CpuInfo(fields.get("vendor_id", "unknown"), fields.get("model name", "unknown"),
                   frozenset(fields.get("flags", "").split()))


_CPU: list[CpuInfo] = []


def cpu() -> CpuInfo:
    """This machine's CPU (read once per process; an unknown CPU without flags if unreadable)."""
    if not _CPU:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
                _CPU.append(parse_cpuinfo(fh.read()))
        except OSError:
            _CPU.append(CpuInfo("unknown", "unknown", frozenset()))
    return _CPU[0]


def check_precision(precision: str, info: CpuInfo) -> None:
    """Raise unless ``info``'s CPU can run ``precision``.

    Raises:
        EngineUnavailableError: bf16 on a CPU with neither ``amx_bf16`` nor ``avx512_bf16``.
        ModelError: an unknown precision.
    """
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision {precision!r}", hint=f"one of {', '.join(PRECISIONS)}")
    if precision == "bf16" and info.bf16_isa is None:
        raise EngineUnavailableError(
            f"this server's CPU ({info.model}) has no bf16 instructions, which bf16 models need",
            detail="bf16 models run on AMX (CPU flag amx_bf16: Intel Sapphire Rapids and later) or AVX-512 BF16 "
            "(avx512_bf16: Intel Cooper Lake, AMD Zen 4 and later); /proc/cpuinfo lists neither.",
            hint="Featurize with the model's fp32 or int8 variant on this server, or run this one on a server "
            "with bf16 instructions.",
        )


# --------------------------------------------------------------------------- the plugin


@dataclass
class PluginStatus:
    """onnxruntime's OpenVINO execution provider plugin in this process."""

    installed: bool = False
    version: str | None = None
    library: str | None = None
    loaded: bool = False
    devices: list[str] = field(default_factory=list)
    """The OpenVINO devices the plugin offers for this machine (``CPU``, ``GPU``...)."""
    cpu_device: Any = None
    """The plugin's ``OrtEpDevice`` for the CPU, or None."""
    reason: str | None = None
    """Why the plugin cannot run models here (None when it can)."""

    def report(self) -> dict[str, Any]:
        return {"installed": self.installed, "version": self.version, "library": self.library,
                "loaded": self.loaded, "devices": self.devices, "usable": self.cpu_device is not None,
                "reason": self.reason}


_PLUGIN: list[PluginStatus] = []
_LOCK = threading.Lock()


def _beside_onnxruntime(package_dir: str) -> bool:
    import onnxruntime

    ort_parent = os.path.dirname(os.path.dirname(os.path.realpath(onnxruntime.__file__)))
    return os.path.dirname(os.path.realpath(package_dir)) == ort_parent


def plugin() -> PluginStatus:
    """Load onnxruntime's OpenVINO execution provider plugin once per process and say what it
    offers. Never raises: what went wrong is the status's ``reason``."""
    with _LOCK:
        if _PLUGIN:
            return _PLUGIN[0]
        status = PluginStatus()
        _PLUGIN.append(status)
        try:
            import onnxruntime_ep_openvino as package
        except ImportError as exc:
            status.reason = f"the package onnxruntime-ep-openvino is not installed ({exc})"
            return status
        status.installed = True
        try:
            from importlib.metadata import version

            status.version = version("onnxruntime-ep-openvino")
        except Exception:  # noqa: BLE001 - metadata is informative only
            status.version = None
        package_dir = os.path.dirname(package.__file__)
        if not _beside_onnxruntime(package_dir):
            status.reason = (f"onnxruntime-ep-openvino at {package_dir} is not installed beside the onnxruntime "
                             "in use: its library is not loaded")
            return status
        library = os.path.join(package_dir, "libonnxruntime_providers_openvino_plugin.so")
        status.library = library
        if not os.path.isfile(library):
            status.reason = f"the plugin library {library} is missing"
            return status
        import onnxruntime as ort

        try:
            ort.register_execution_provider_library(PLUGIN_REGISTRATION, library)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
            status.reason = f"onnxruntime could not load the plugin: {exc}"
            return status
        status.loaded = True
        devices = [d for d in ort.get_ep_devices() if d.ep_name == PLUGIN_EP_NAME]
        status.devices = [str(d.ep_metadata.get("ov_device", "?")) for d in devices]
        status.cpu_device = next((d for d in devices if d.ep_metadata.get("ov_device") == "CPU"), None)
        if status.cpu_device is None:
            info = cpu()
            status.reason = (f"the plugin offers no device for this CPU ({info.vendor}, {info.model}): it offers "
                             f"devices of Intel hardware only" if info.vendor != INTEL_VENDOR
                             else "the plugin offers no CPU device")
        return status


# --------------------------------------------------------------------------- OpenVINO's own API


@dataclass
class RuntimeStatus:
    """OpenVINO's Python API (the ``openvino`` package) in this process."""

    installed: bool = False
    version: str | None = None
    device_name: str | None = None
    capabilities: list[str] = field(default_factory=list)
    """``OPTIMIZATION_CAPABILITIES`` of OpenVINO's CPU device (``BF16``, ``INT8``, ...)."""
    core: Any = None
    reason: str | None = None

    def report(self) -> dict[str, Any]:
        return {"installed": self.installed, "version": self.version, "device": self.device_name,
                "capabilities": self.capabilities, "reason": self.reason}


_RUNTIME: list[RuntimeStatus] = []


def runtime() -> RuntimeStatus:
    """OpenVINO's own runtime, created once per process. Never raises (see ``reason``)."""
    with _LOCK:
        if _RUNTIME:
            return _RUNTIME[0]
        status = RuntimeStatus()
        _RUNTIME.append(status)
        try:
            import openvino
        except ImportError as exc:
            status.reason = f"the package openvino is not installed ({exc})"
            return status
        status.installed = True
        status.version = openvino.get_version()
        try:
            core = openvino.Core()
            status.device_name = str(core.get_property("CPU", "FULL_DEVICE_NAME"))
            status.capabilities = [str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
            status.core = core
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises its own types
            status.reason = f"OpenVINO has no CPU device here: {exc}"
        return status


class OpenVinoSession:
    """A model compiled by OpenVINO's own API, run like an onnxruntime session
    (:meth:`run` takes output names and feeds; one request at a time, synchronous)."""

    def __init__(self, compiled: Any, precision_hint: str) -> None:
        self.compiled = compiled
        self.precision_hint = precision_hint
        self.request = compiled.create_infer_request()
        self._outputs = {name: port for port in compiled.outputs for name in port.get_names()}

    def run(self, output_names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        results = self.request.infer(feeds)
        return [np.array(results[self._outputs[name]], copy=True) for name in output_names]

    def threads(self) -> int:
        """The threads OpenVINO runs the model on (``INFERENCE_NUM_THREADS`` of the compiled model)."""
        return int(self.compiled.get_property("INFERENCE_NUM_THREADS"))

    def kernels(self) -> dict[str, int]:
        """How many of the compiled graph's convolutions and matrix products run on each kernel
        (OpenVINO's ``primitiveType``, e.g. ``brgconv_avx512_amx_bf16``): the ISA they use."""
        counts: collections.Counter[str] = collections.Counter()
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            rt = op.get_rt_info()
            if "layerType" not in rt or "primitiveType" not in rt:
                continue
            if str(rt["layerType"].astype(str)) in ("Convolution", "FullyConnected", "MatMul", "GroupConvolution"):
                counts[str(rt["primitiveType"].astype(str))] += 1
        return dict(counts.most_common())


def _openvino_config(precision: str, threads: int) -> dict[str, str]:
    return {
        "INFERENCE_PRECISION_HINT": OPENVINO_PRECISION_HINT[precision],
        "INFERENCE_NUM_THREADS": str(max(0, threads)),
        "PERFORMANCE_HINT": "LATENCY",
        "ENABLE_CPU_PINNING": "NO",
    }


def _plugin_session(model: str | bytes, precision: str, threads: int, options: Any) -> Any:
    import onnxruntime as ort

    status = plugin()
    options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    options.add_provider_for_devices(
        [status.cpu_device], {"load_config": json.dumps({"CPU": _openvino_config(precision, threads)})})
    try:
        session = ort.InferenceSession(model, sess_options=options)
    except Exception as exc:  # noqa: BLE001
        raise ModelError("onnxruntime's OpenVINO execution provider could not take the model", detail=str(exc)[:2000]) from None
    if session.get_providers()[:1] != [PLUGIN_EP_NAME]:
        raise ModelError(f"the session runs on {session.get_providers()}, not on {PLUGIN_EP_NAME}")
    return session


def _runtime_session(model: str | bytes, precision: str, threads: int) -> OpenVinoSession:
    status = runtime()
    config = _openvino_config(precision, threads)
    try:
        if isinstance(model, bytes):
            with tempfile.TemporaryDirectory(prefix="imgfeat-openvino-") as tmp:
                path = os.path.join(tmp, "model.onnx")
                with open(path, "wb") as fh:
                    fh.write(model)
                compiled = status.core.compile_model(status.core.read_model(path), "CPU", config)
        else:
            compiled = status.core.compile_model(status.core.read_model(model), "CPU", config)
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises its own types
        raise ModelError("OpenVINO could not compile the model", detail=str(exc)[:2000]) from None
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    got = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
    want = config["INFERENCE_PRECISION_HINT"]
    if got != want:
        raise EngineUnavailableError(f"OpenVINO compiled the model at {got}, not {want}")
    return OpenVinoSession(compiled, got)


def openvino_session(model: str | bytes, precision: str, threads: int, options: Any) -> tuple[Any, str]:
    """A session running ``model`` (a path or ONNX bytes) on OpenVINO's CPU runtime at
    ``precision`` with ``threads`` threads (0: OpenVINO's default): through the plugin when it
    offers a CPU device, else through OpenVINO's own API. ``options`` are onnxruntime session
    options (used by the plugin route). Returns the session and its route, ``plugin`` or ``runtime``.

    Raises:
        EngineUnavailableError: bf16 on a CPU without bf16 instructions; neither the plugin nor
            OpenVINO's own API can run models here (the message says what each lacks).
        ModelError: OpenVINO could not take the model.
    """
    info = cpu()
    check_precision(precision, info)
    status = plugin()
    if status.cpu_device is not None:
        return _plugin_session(model, precision, threads, options), "plugin"
    own = runtime()
    if own.core is None:
        raise EngineUnavailableError(
            "this server cannot run models on the openvino engine",
            detail=f"onnxruntime's OpenVINO plugin: {status.reason}; OpenVINO's own API: {own.reason}.",
            hint="make install installs both (onnxruntime-ep-openvino and openvino, pinned in "
            "plpython/requirements.lock); SELECT imgfeat.python_info()::jsonb -> 'openvino' says what this server has.",
        )
    if precision == "bf16" and "BF16" not in own.capabilities:
        raise EngineUnavailableError(
            f"OpenVINO reports no bf16 support on this CPU ({own.device_name})",
            detail=f"OPTIMIZATION_CAPABILITIES: {', '.join(own.capabilities)}",
        )
    return _runtime_session(model, precision, threads), "runtime"


def report() -> dict[str, Any]:
    """JSON-able: the CPU's matrix-unit flags, the plugin (loaded, devices) and OpenVINO's own API."""
    return {"cpu": cpu().report(), "plugin": plugin().report(), "runtime": runtime().report()}
