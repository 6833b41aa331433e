"""prepare_feature_extractor on small hand-built graphs: cutting, pruning, flattening, errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from imgfeat.core import onnx_import, zoo
from imgfeat.core.errors import ModelError
from imgfeat.core.onnx_import import PreparedModel, prepare_feature_extractor

RNG = np.random.default_rng(7)
W_CONV = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
B_CONV = RNG.standard_normal(4).astype(np.float32)
W_FC = RNG.standard_normal((10, 4)).astype(np.float32)
B_FC = RNG.standard_normal(10).astype(np.float32)
W_FC7 = RNG.standard_normal((6, 4)).astype(np.float32)
B_FC7 = RNG.standard_normal(6).astype(np.float32)


def tiny(head: str = "gemm", *, batch: int | str = "N", size: int | str = 8, extra_inputs: int = 0,
         dtype: int = TensorProto.FLOAT, opset: int = 13) -> bytes:
    """Conv(3->4) -> Relu -> GlobalAveragePool -> head, as a classifier:

    * ``gemm``: Flatten -> Gemm(transB) -> Softmax (a torch export);
    * ``matmul``: Reshape -> MatMul -> Add;
    * ``caffe``: Flatten -> Gemm fc7 -> Relu -> Dropout -> Gemm fc8 -> Softmax (BVLC AlexNet's tail);
    * ``none``: Flatten only (already a feature extractor);
    * ``spatial``: the Relu output itself ``[N, 4, H, W]``.
    """
    x = helper.make_tensor_value_info("data", dtype, [batch, 3, size, size])
    init = [numpy_helper.from_array(W_CONV, "conv.w"), numpy_helper.from_array(B_CONV, "conv.b")]
    nodes = [
        helper.make_node("Conv", ["data", "conv.w", "conv.b"], ["conv"], name="conv_node", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"], name="relu_node"),
        helper.make_node("GlobalAveragePool", ["relu"], ["pool"], name="pool_node"),
    ]
    out, out_shape = "prob", [batch, 10]
    if head == "gemm":
        init += [numpy_helper.from_array(W_FC, "fc.w"), numpy_helper.from_array(B_FC, "fc.b")]
        nodes += [
            helper.make_node("Flatten", ["pool"], ["flat"], name="flatten_node", axis=1),
            helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc_node", transB=1),
            helper.make_node("Softmax", ["logits"], ["prob"], name="softmax_node", axis=1),
        ]
    elif head == "matmul":
        init += [numpy_helper.from_array(W_FC.T.copy(), "fc.w"), numpy_helper.from_array(B_FC, "fc.b"),
                 numpy_helper.from_array(np.array([-1, 4], np.int64), "shape")]
        nodes += [
            helper.make_node("Reshape", ["pool", "shape"], ["flat"], name="reshape_node"),
            helper.make_node("MatMul", ["flat", "fc.w"], ["mm"], name="mm_node"),
            helper.make_node("Add", ["mm", "fc.b"], ["prob"], name="add_node"),
        ]
    elif head == "caffe":
        init += [numpy_helper.from_array(W_FC7, "fc7.w"), numpy_helper.from_array(B_FC7, "fc7.b"),
                 numpy_helper.from_array(RNG.standard_normal((10, 6)).astype(np.float32), "fc8.w"),
                 numpy_helper.from_array(B_FC, "fc8.b")]
        nodes += [
            helper.make_node("Flatten", ["pool"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "fc7.w", "fc7.b"], ["fc7"], transB=1),
            helper.make_node("Relu", ["fc7"], ["relu7"]),
            helper.make_node("Dropout", ["relu7"], ["drop7"]),
            helper.make_node("Gemm", ["drop7", "fc8.w", "fc8.b"], ["fc8"], transB=1),
            helper.make_node("Softmax", ["fc8"], ["prob"], axis=1),
        ]
    elif head == "none":
        nodes.append(helper.make_node("Flatten", ["pool"], ["prob"], axis=1))
        out_shape = [batch, 4]
    elif head == "spatial":
        out, out_shape = "relu", [batch, 4, size, size]
    inputs = [x] + [helper.make_tensor_value_info(f"extra{i}", TensorProto.FLOAT, [batch, 5]) for i in range(extra_inputs)]
    graph = helper.make_graph(nodes, "tiny", inputs, [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def pooled(x: np.ndarray) -> np.ndarray:
    """numpy reference of the tiny net's pooled features [N, 4]."""
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))
    conv = np.einsum("nchwij,ocij->nohw", win, W_CONV) + B_CONV[None, :, None, None]
    return np.maximum(conv, 0).mean(axis=(2, 3))


def run(p: PreparedModel, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(p.onnx_bytes, providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == [p.input_name]
    assert [o.name for o in sess.get_outputs()] == [p.output_name]
    return sess.run([p.output_name], {p.input_name: x})[0]


X = RNG.standard_normal((3, 3, 8, 8)).astype(np.float32)


# ---- cutting -----------------------------------------------------------------------------


@pytest.mark.parametrize("head", ["gemm", "matmul"])
def test_auto_cut_at_classifier_input(head: str) -> None:
    p = prepare_feature_extractor(tiny(head))
    assert (p.input_name, p.output_name, p.feature_dim) == ("data", "flat", 4)
    assert (p.input_height, p.input_width, p.fixed_batch, p.opset) == (8, 8, False, 13)
    np.testing.assert_allclose(run(p, X), pooled(X), rtol=1e-5, atol=1e-6)
    m = onnx.load_from_string(p.onnx_bytes)
    assert {t.name for t in m.graph.initializer} == {"conv.w", "conv.b"} | ({"shape"} if head == "matmul" else set())
    assert not {"Gemm", "MatMul", "Softmax", "Add"} & {n.op_type for n in m.graph.node}
    out_dims = m.graph.output[0].type.tensor_type.shape.dim
    assert (out_dims[0].dim_param, out_dims[1].dim_value) == ("N", 4)
    onnx.checker.check_model(m)


def test_auto_cut_caffe_tail_skips_dropout() -> None:
    p = prepare_feature_extractor(tiny("caffe", batch=1), feature_dim=6)
    assert (p.output_name, p.feature_dim, p.fixed_batch) == ("relu7", 6, True)
    want = np.maximum(pooled(X[:1]) @ W_FC7.T + B_FC7, 0)
    np.testing.assert_allclose(run(p, X[:1]), want, rtol=1e-5, atol=1e-6)
    assert "Dropout" not in {n.op_type for n in onnx.load_from_string(p.onnx_bytes).graph.node}


def test_named_tensor_and_named_node() -> None:
    by_tensor = prepare_feature_extractor(tiny(), output="pool")
    by_node = prepare_feature_extractor(tiny(), output="pool_node")
    for p in (by_tensor, by_node):
        assert p.feature_dim == 4
        assert p.output_name == "features"  # [N, 4, 1, 1] flattened by an added node
        np.testing.assert_allclose(run(p, X), pooled(X), rtol=1e-5, atol=1e-6)
    assert by_tensor.onnx_bytes == by_node.onnx_bytes


def test_named_spatial_layer_is_flattened() -> None:
    p = prepare_feature_extractor(tiny(), output="relu")
    assert p.feature_dim == 4 * 8 * 8
    assert run(p, X).shape == (3, 256)


def test_dynamic_spatial_size() -> None:
    model = tiny(size="H")
    p = prepare_feature_extractor(model)
    assert (p.input_height, p.input_width, p.feature_dim) == (None, None, 4)
    x = RNG.standard_normal((2, 3, 13, 13)).astype(np.float32)
    np.testing.assert_allclose(run(p, x), pooled(x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ModelError, match="depends on the input size"):
        prepare_feature_extractor(model, output="relu")


def test_probe_when_shape_inference_cannot_tell(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnx_import, "_inferred_shape", lambda model, tensor: None)
    p = prepare_feature_extractor(tiny(size="H"), output="pool")
    assert p.feature_dim == 4
    x = RNG.standard_normal((2, 3, 9, 9)).astype(np.float32)
    np.testing.assert_allclose(run(p, x), pooled(x), rtol=1e-5, atol=1e-6)


def test_feature_extractor_passes_through() -> None:
    p = prepare_feature_extractor(tiny("none"), feature_dim=4)
    assert (p.output_name, p.feature_dim) == ("prob", 4)
    np.testing.assert_allclose(run(p, X), pooled(X), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def resnet18_bytes() -> bytes:
    return zoo.build_feature_extractor("resnet18", zoo.synthetic_state_dict("resnet18")).SerializeToString()


@pytest.mark.parametrize("output", [None, "features"])
def test_own_zoo_extractor_passes_through(resnet18_bytes: bytes, output: str | None) -> None:
    model = resnet18_bytes
    p = prepare_feature_extractor(model, output=output, feature_dim=512)
    assert (p.input_name, p.output_name, p.feature_dim, p.input_height, p.fixed_batch) == ("input", "features", 512, 224, False)
    assert len(p.onnx_bytes) == len(model)


def test_batch_fixed_to_one() -> None:
    p = prepare_feature_extractor(tiny(batch=1))
    assert p.fixed_batch is True
    assert run(p, X[:1]).shape == (1, 4)


# ---- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"hello, this is not a model", bytes(range(256)) * 4,
                                  b"\x89PNG\r\n\x1a\n" + b"\x00" * 64])
def test_not_onnx(data: bytes) -> None:
    with pytest.raises(ModelError, match="not an ONNX model") as e:
        prepare_feature_extractor(data)
    assert e.value.sqlstate == "22023"


def test_no_image_input() -> None:
    w = numpy_helper.from_array(np.ones((10, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    with pytest.raises(ModelError, match=r"exactly one image input of shape \[N, C, H, W\]") as e:
        prepare_feature_extractor(model.SerializeToString())
    assert "x [?, 10]" in (e.value.detail or "")


def test_feature_dim_contradicted() -> None:
    with pytest.raises(ModelError, match="declared feature_dim 512 contradicts the graph: 'flat' gives 4 features"):
        prepare_feature_extractor(tiny(), feature_dim=512)


def test_named_output_missing() -> None:
    with pytest.raises(ModelError, match="no tensor or node named 'fc7'") as e:
        prepare_feature_extractor(tiny(), output="fc7")
    assert "flat" in (e.value.hint or "")


def test_other_bad_models() -> None:
    with pytest.raises(ModelError, match="exactly one image input"):
        prepare_feature_extractor(tiny(extra_inputs=1))
    with pytest.raises(ModelError, match="is DOUBLE, not float32"):
        prepare_feature_extractor(tiny(dtype=TensorProto.DOUBLE))
    with pytest.raises(ModelError, match="batch size fixed to 4"):
        prepare_feature_extractor(tiny(batch=4))
    with pytest.raises(ModelError, match=r"not \[N, D\] or \[N, D, 1, 1\]"):
        prepare_feature_extractor(tiny("spatial"))
    with pytest.raises(ModelError, match="cannot be the model's input"):
        prepare_feature_extractor(tiny(), output="data")


def test_invalid_graph_fails_checker() -> None:
    model = onnx.load_from_string(tiny())
    model.graph.node[1].input[0] = "undefined_tensor"
    with pytest.raises(ModelError, match=r"invalid ONNX model \(onnx.checker\)"):
        prepare_feature_extractor(model.SerializeToString())


def test_external_data_rejected() -> None:
    model = onnx.load_from_string(tiny())
    t = model.graph.initializer[0]
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    t.external_data.add(key="location", value="weights.bin")
    with pytest.raises(ModelError, match="external files"):
        prepare_feature_extractor(model.SerializeToString())


def test_prepared_model_is_frozen() -> None:
    p: Any = prepare_feature_extractor(tiny())
    with pytest.raises(AttributeError):
        p.feature_dim = 5
