"""The engines behind a model's precision (imgfeat.core.engines, imgfeat.core.runtime.load): what
runs where, and the errors that name what is missing instead of running something else."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from imgfeat.core import engines, runtime
from imgfeat.core.errors import EngineUnavailableError
from imgfeat.core.model_info import ModelInfo
from imgfeat.core.spec import Preprocessing

PLPYTHON = Path(__file__).resolve().parents[3] / "plpython"


def small_cnn() -> bytes:
    """Conv 3->32 (3x3) + ReLU + Conv 32->64 (3x3) + global average pool -> [N, 64], seeded weights."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array((rng.standard_normal((32, 3, 3, 3)) * 0.2).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((rng.standard_normal((64, 32, 3, 3)) * 0.06).astype(np.float32), "w2")
    shape = numpy_helper.from_array(np.array([0, -1], np.int64), "shape")
    nodes = [
        helper.make_node("Conv", ["input", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c2"], ["p"]),
        helper.make_node("Reshape", ["p", "shape"], ["features"]),
    ]
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])],
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 64])], [w1, w2, shape])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def info(precision: str, engines_: tuple[str, ...]) -> ModelInfo:
    return ModelInfo("small", "custom", 32, 32, 64, Preprocessing(width=32, height=32), "custom", "input", "features",
                     False, "0" * 64, 1, precision, engines_)


def batch() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((4, 3, 32, 32)).astype(np.float32)


NO_BF16 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz
flags\t\t: fpu sse2 avx2 avx512f avx512_vnni

processor\t: 1
vendor_id\t: GenuineIntel
"""


def test_parse_cpuinfo_and_isa() -> None:
    cpu = engines.parse_cpuinfo(NO_BF16)
    assert (cpu.vendor, cpu.bf16_isa, cpu.int8_isa) == ("GenuineIntel", None, "avx512_vnni")
    amx = engines.parse_cpuinfo(NO_BF16.replace("avx512_vnni", "avx512_vnni avx512_bf16 amx_bf16 amx_int8 amx_tile"))
    assert (amx.bf16_isa, amx.int8_isa) == ("amx_bf16", "amx_int8")
    here = engines.cpu()
    assert here.vendor != "unknown" and "avx2" in here.flags  # x86-64 servers; the flags are read
    assert here.report()["bf16_isa"] == here.bf16_isa


def test_bf16_needs_bf16_instructions() -> None:
    with pytest.raises(EngineUnavailableError) as exc:
        engines.check_precision("bf16", engines.parse_cpuinfo(NO_BF16))
    assert "8259CL" in exc.value.message and "amx_bf16" in (exc.value.detail or "")
    assert "avx512_bf16" in (exc.value.detail or "")
    assert exc.value.sqlstate == "0A000"
    engines.check_precision("int8", engines.parse_cpuinfo(NO_BF16))  # int8 and fp32 need nothing special
    engines.check_precision("fp32", engines.parse_cpuinfo(NO_BF16))


def test_fp32_runs_on_onnxruntime_exactly() -> None:
    import onnxruntime as ort

    model = runtime.load(info("fp32", ("onnxruntime",)), small_cnn(), 1, 1)
    assert (model.engine, model.route, model.precision, model.kernels()) == ("onnxruntime", "cpu", "fp32", None)
    ref = ort.InferenceSession(small_cnn(), providers=["CPUExecutionProvider"]).run(["features"], {"input": batch()})[0]
    np.testing.assert_array_equal(model.run(batch()), ref)


def test_onnxruntime_has_no_bf16() -> None:
    with pytest.raises(EngineUnavailableError, match="no bf16 kernels"):
        runtime.load(info("bf16", ("onnxruntime",)), small_cnn(), 1, 1)


@pytest.mark.skipif(engines.cpu().bf16_isa is None, reason="this CPU has no bf16 instructions")
def test_bf16_on_openvino() -> None:
    """bf16 on this CPU: close to fp32 (relative error below 2 %, bf16 keeps 8 significant bits),
    not equal, on the thread count asked, every convolution on a bf16 kernel."""
    f32 = runtime.load(info("fp32", ("onnxruntime",)), small_cnn(), 1, 1).run(batch())
    model = runtime.load(info("bf16", ("openvino",)), small_cnn(), 1, 1)
    assert (model.engine, model.precision, model.threads()) == ("openvino", "bf16", 1)
    got = model.run(batch())
    assert got.shape == (4, 64) and not np.array_equal(got, f32)
    assert np.abs(got - f32).max() <= 0.02 * np.abs(f32).max()
    if model.route == "runtime":
        kernels = model.kernels()
        assert kernels and sum(kernels.values()) == 2 and all("bf16" in k for k in kernels), kernels
        assert ("amx" in " ".join(kernels)) == (engines.cpu().bf16_isa == "amx_bf16")


def test_the_plugin_serves_intel_cpus_only() -> None:
    status = engines.plugin()
    assert status.installed and status.loaded, status.reason
    if engines.cpu().vendor == engines.INTEL_VENDOR:
        assert status.cpu_device is not None
    else:
        assert status.cpu_device is None and status.devices == []
        assert "Intel hardware only" in (status.reason or "")


MISSING = textwrap.dedent("""
    import sys
    sys.modules["openvino"] = None                 # neither OpenVINO package importable
    sys.modules["onnxruntime_ep_openvino"] = None
    sys.path.insert(0, {plpython!r})
    import numpy as np
    from imgfeat.core import runtime
    from imgfeat.core.errors import EngineUnavailableError
    from imgfeat.core.model_info import ModelInfo
    from imgfeat.core.spec import Preprocessing
    model = open({path!r}, "rb").read()
    def info(p, e):
        return ModelInfo("small", "custom", 32, 32, 64, Preprocessing(width=32, height=32), "custom", "input",
                         "features", False, "0" * 64, 1, p, e)
    try:
        runtime.load(info("bf16", ("openvino",)), model, 1, 1)
        print("RAN")
    except EngineUnavailableError as exc:
        print("ERROR", exc.message, "|", exc.detail, "|", exc.hint)
    print("INT8", runtime.load(info("int8", ("openvino", "onnxruntime")), model, 1, 1).engine)
""")


def test_missing_openvino_is_an_error_that_names_it(tmp_path: Path) -> None:
    """Without the OpenVINO packages a bf16 model fails, naming both; an int8 model runs on
    onnxruntime (its second engine)."""
    path = tmp_path / "small.onnx"
    path.write_bytes(small_cnn())
    out = subprocess.run([sys.executable, "-c", MISSING.format(plpython=str(PLPYTHON), path=str(path))],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert "RAN" not in out
    error = next(line for line in out.splitlines() if line.startswith("ERROR"))
    assert "cannot run models on the openvino engine" in error
    assert "onnxruntime-ep-openvino is not installed" in error and "openvino is not installed" in error
    assert "make install" in error
    assert "INT8 onnxruntime" in out
