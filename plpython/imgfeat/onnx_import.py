"""Turn any ONNX image model into a feature extractor: validate, cut, prune, flatten.

:func:`prepare_feature_extractor` accepts an image classification network (a torch export, an
ONNX Model Zoo classifier, ...) or a model that already outputs features, and returns a
:class:`PreparedModel` whose single output is ``[N, D]`` float32 features.

Choosing the feature layer automatically (no ``output`` given): from the graph's output,
walk back through the ops that may follow a classifier (Softmax, LogSoftmax, Identity,
Dropout, Flatten, Reshape, Squeeze, Cast). If that reaches a classifier layer — ``Gemm``,
``MatMul``, or ``Add`` of a ``MatMul`` — the features are that layer's data input (walking back
further through Dropout/Identity), e.g. the flattened global-average-pool of a ResNet or
AlexNet's fc7 after ReLU. Otherwise the model is taken to output features already (e.g. one
built by :func:`imgfeat.zoo.build_feature_extractor`), provided that output is ``[N, D]`` or
``[N, D, 1, 1]``. Networks whose classifier is a convolution (SqueezeNet) need ``output``.

Memory: the model bytes are parsed once; nodes and initializers are removed in place and the
result serialised once. Shapes are inferred on a weightless copy of the graph.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto, helper

from .errors import ModelError

PASS_AFTER_CLASSIFIER = frozenset(
    {"Softmax", "LogSoftmax", "Identity", "Dropout", "Flatten", "Reshape", "Squeeze", "Cast"}
)
"""Ops that may follow the classifier layer and do not change which layer it is."""

PASS_BEFORE_CLASSIFIER = frozenset({"Identity", "Dropout"})
"""Ops between the feature layer and the classifier that are identities at inference."""

_SMALL_INITIALIZER = 4096
"""Initializers with at most this many elements are kept in the weightless copy used for
shape inference (shape tensors of Reshape etc. are needed by inference)."""

PROBE_SIZE = 224
"""Input height/width used to probe a model with dynamic spatial dims when static shape
inference cannot tell the feature size."""


@dataclass(frozen=True)
class PreparedModel:
    """An ONNX feature extractor ready to store.

    Attributes:
        onnx_bytes: the serialised model (single output ``[N, feature_dim]`` float32).
        input_name: the image input, float32 ``[N, C, H, W]``.
        output_name: the features output.
        input_height, input_width: fixed input size in pixels, ``None`` if dynamic.
        feature_dim: features per image.
        fixed_batch: ``True`` if the batch dimension is fixed to 1 (run one image at a time).
        opset: the model's default-domain (``ai.onnx``) opset version.
    """

    onnx_bytes: bytes
    input_name: str
    output_name: str
    input_height: int | None
    input_width: int | None
    feature_dim: int
    fixed_batch: bool
    opset: int


def prepare_feature_extractor(
    model_bytes: bytes, *, output: str | None = None, feature_dim: int | None = None
) -> PreparedModel:
    """Validate an ONNX image model and cut it at its feature layer.

    Args:
        model_bytes: a serialised ``onnx.ModelProto`` with its weights inside (no external data).
        output: the feature layer, as a tensor name or a node name (its first output); ``None``
            chooses automatically (see the module docstring).
        feature_dim: the expected feature count; checked against the graph.

    Returns:
        A :class:`PreparedModel`; the output is flattened to ``[N, D]`` if the chosen tensor
        is ``[N, D, 1, 1]`` (or any ``[N, ...]`` named explicitly), and nodes, initializers and
        inputs no longer needed are removed.

    Raises:
        ModelError: not an ONNX model; fails ``onnx.checker``; external data; not exactly one
            image input ``[N, C, H, W]`` float32, or a batch fixed to more than 1; ``output``
            names nothing; no feature layer found; the feature size is not static; the
            declared ``feature_dim`` differs from the graph's.
    """
    model = _parse(model_bytes)
    graph = model.graph
    opset = _default_opset(model)
    initializer_names = {t.name for t in graph.initializer} | {t.values.name for t in graph.sparse_initializer}
    image = _image_input(graph, initializer_names)
    batch, height, width = _dims(image)
    input_name = image.name
    batch_param = _batch_param(image)

    producers = {out: node for node in graph.node for out in node.output}
    if output is not None:
        feature = _named_tensor(graph, producers, output, input_name)
        classifier_dim = None
    else:
        feature, classifier_dim = _auto_feature_tensor(graph, producers, initializer_names)
    if feature == input_name:
        raise ModelError("the feature layer cannot be the model's input", hint="name a later tensor with output")

    before = (len(graph.node), len(graph.initializer), len(graph.input), len(graph.sparse_initializer))
    original_outputs = [o.name for o in graph.output]
    _prune(graph, feature, input_name)
    unchanged = before == (len(graph.node), len(graph.initializer), len(graph.input), len(graph.sparse_initializer))
    shape = _inferred_shape(model, feature)
    if shape is None or any(d is None for d in shape[1:]):
        shape = _probe_shape(model, feature, input_name, batch, height, width)
    if len(shape) < 2:
        raise ModelError(f"the feature tensor {feature!r} has rank {len(shape)}; [N, D] expected")
    if output is None and len(shape) > 2 and any(d != 1 for d in shape[2:]):
        raise ModelError(
            f"the model's output {feature!r} has shape {_fmt(shape)}, not [N, D] or [N, D, 1, 1]",
            hint="name the feature layer (a tensor or node) with output",
        )
    dim = math.prod(int(d or 0) for d in shape[1:])  # all static here
    if classifier_dim is not None and classifier_dim != dim:
        raise ModelError(
            f"the classifier's weight expects {classifier_dim} features but {feature!r} has shape {_fmt(shape)}"
        )
    if feature_dim is not None and int(feature_dim) != dim:
        raise ModelError(
            f"declared feature_dim {feature_dim} contradicts the graph: {feature!r} gives {dim} features",
            detail=f"declared {feature_dim}, graph {dim} (tensor shape {_fmt(shape)})",
            hint="omit feature_dim, or name the intended layer with output",
        )
    if unchanged and original_outputs == [feature] and len(shape) == 2:
        # Already a feature extractor (e.g. built by imgfeat.zoo): keep the caller's bytes,
        # saving a serialisation (a large model's size in memory).
        return PreparedModel(
            onnx_bytes=model_bytes if isinstance(model_bytes, bytes) else bytes(model_bytes), input_name=input_name,
            output_name=feature, input_height=height, input_width=width, feature_dim=dim,
            fixed_batch=batch == 1, opset=opset,
        )
    out_name = feature
    if len(shape) != 2:
        out_name = _fresh_name(graph, "features")
        graph.node.append(helper.make_node("Flatten", [feature], [out_name], name=out_name, axis=1))
    del graph.output[:]
    batch_dim: int | str = batch if batch is not None else (batch_param or "N")
    graph.output.append(helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [batch_dim, dim]))
    onnx_bytes = model.SerializeToString()
    return PreparedModel(
        onnx_bytes=onnx_bytes, input_name=input_name, output_name=out_name, input_height=height,
        input_width=width, feature_dim=dim, fixed_batch=batch == 1, opset=opset,
    )


# ---------------------------------------------------------------------------------------


def _parse(model_bytes: bytes) -> onnx.ModelProto:
    if not isinstance(model_bytes, (bytes, bytearray, memoryview)):
        raise ModelError(f"expected ONNX model bytes, got {type(model_bytes).__name__}")
    data = bytes(model_bytes) if not isinstance(model_bytes, bytes) else model_bytes
    # External data is refused before anything (onnx.checker included) looks a path up on the
    # server's file system. Then the checker runs on the bytes, after our parsed copy is freed,
    # and the model is parsed again: a large model is in memory at most twice at any moment.
    _refuse_external_data(_parse_proto(data))
    try:
        onnx.checker.check_model(data)
        checker_error: Exception | None = None
    except (onnx.checker.ValidationError, ValueError, RuntimeError) as e:
        checker_error = e
    model = _parse_proto(data)
    if model.ir_version <= 0 or not model.HasField("graph") or len(model.graph.node) == 0:
        raise ModelError(
            "not an ONNX model: no IR version or no graph",
            detail=f"{len(data)} bytes, ir_version {model.ir_version}, {len(model.graph.node)} nodes",
        )
    if checker_error is not None:
        raise ModelError("invalid ONNX model (onnx.checker)", detail=str(checker_error)[:2000]) from None
    return model


def _parse_proto(data: bytes) -> onnx.ModelProto:
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise ModelError("not an ONNX model: the bytes are not an ONNX protobuf", detail=str(e)) from None
    return model


def _tensors(model: onnx.ModelProto) -> Iterator[tuple[str, TensorProto]]:
    """Every tensor the model carries, with where it sits: graph initializers, sparse
    initializers (values and indices), tensor-valued node attributes (``Constant`` values
    included), in every subgraph (``If``/``Loop``/``Scan`` bodies) and in model-local functions."""

    def sparse(where: str, st: onnx.SparseTensorProto) -> Iterator[tuple[str, TensorProto]]:
        yield f"{where} (values)", st.values
        yield f"{where} (indices)", st.indices

    def nodes(where: str, node_list: Any) -> Iterator[tuple[str, TensorProto]]:
        for node in node_list:
            for attr in node.attribute:
                at = f"{where}node {node.name or node.op_type!r} attribute {attr.name!r}"
                if attr.HasField("t"):
                    yield at, attr.t
                for t in attr.tensors:
                    yield at, t
                if attr.HasField("sparse_tensor"):
                    yield from sparse(at, attr.sparse_tensor)
                for st in attr.sparse_tensors:
                    yield from sparse(at, st)
                if attr.HasField("g"):
                    yield from graph(f"{at} subgraph: ", attr.g)
                for g in attr.graphs:
                    yield from graph(f"{at} subgraph: ", g)

    def graph(where: str, g: onnx.GraphProto) -> Iterator[tuple[str, TensorProto]]:
        for t in g.initializer:
            yield f"{where}initializer {t.name!r}", t
        for st in g.sparse_initializer:
            yield from sparse(f"{where}sparse initializer {st.values.name!r}", st)
        yield from nodes(where, g.node)

    yield from graph("", model.graph)
    for f in model.functions:
        yield from nodes(f"function {f.name!r}: ", f.node)


def _refuse_external_data(model: onnx.ModelProto) -> None:
    """Raise ModelError if any tensor of the model keeps its data in an external file."""
    for where, t in _tensors(model):
        if t.data_location == TensorProto.EXTERNAL or len(t.external_data):
            raise ModelError(
                f"the model keeps tensor data in external files ({where}); imgfeat stores whole models only",
                hint="save it with onnx.save_model(model, path, save_as_external_data=False), "
                "or onnx.load(path) and register the loaded model's bytes",
            )


def _default_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    raise ModelError("the model imports no ai.onnx opset")


def _image_input(graph: onnx.GraphProto, initializer_names: set[str]) -> onnx.ValueInfoProto:
    inputs = [i for i in graph.input if i.name not in initializer_names]
    described = ", ".join(f"{i.name} {_fmt(_value_shape(i))}" for i in inputs) or "none"
    image = [
        i for i in inputs
        if i.type.HasField("tensor_type") and i.type.tensor_type.HasField("shape")
        and len(i.type.tensor_type.shape.dim) == 4
    ]
    if len(inputs) != 1 or len(image) != 1:
        raise ModelError(
            "the model needs exactly one image input of shape [N, C, H, W]",
            detail=f"inputs: {described}",
        )
    if image[0].type.tensor_type.elem_type != TensorProto.FLOAT:
        raise ModelError(
            f"the image input {image[0].name!r} is "
            f"{TensorProto.DataType.Name(image[0].type.tensor_type.elem_type)}, not float32"
        )
    return image[0]


def _dims(image: onnx.ValueInfoProto) -> tuple[int | None, int | None, int | None]:
    """(batch, height, width) of the image input, ``None`` where dynamic."""
    shape = _value_shape(image)
    batch, _, height, width = shape
    if batch is not None and batch != 1:
        raise ModelError(
            f"the image input {image.name!r} has its batch size fixed to {batch}",
            hint="export the model with a dynamic batch dimension (or batch 1)",
        )
    return batch, height, width


def _batch_param(image: onnx.ValueInfoProto) -> str | None:
    d = image.type.tensor_type.shape.dim[0]
    return d.dim_param if d.HasField("dim_param") and d.dim_param else None


def _value_shape(v: onnx.ValueInfoProto) -> list[int | None]:
    if not v.type.HasField("tensor_type") or not v.type.tensor_type.HasField("shape"):
        return []
    return [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]


def _fmt(shape: Iterable[int | str | None]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _named_tensor(graph: onnx.GraphProto, producers: dict[str, onnx.NodeProto], output: str, input_name: str) -> str:
    if output in producers or output == input_name:
        return output
    for node in graph.node:
        if node.name == output and node.output:
            return node.output[0]
    candidates = [o for n in graph.node[-8:] for o in n.output]
    raise ModelError(
        f"the model has no tensor or node named {output!r}",
        hint="the last tensors are: " + ", ".join(candidates),
    )


def _constant_shape(graph: onnx.GraphProto, producers: dict[str, onnx.NodeProto], name: str) -> list[int] | None:
    """Shape of a constant tensor (initializer or Constant node output), else ``None``."""
    for t in graph.initializer:
        if t.name == name:
            return list(t.dims)
    node = producers.get(name)
    if node is not None and node.op_type == "Constant":
        for a in node.attribute:
            if a.name == "value":
                return list(a.t.dims)
    return None


def _auto_feature_tensor(
    graph: onnx.GraphProto, producers: dict[str, onnx.NodeProto], initializer_names: set[str]
) -> tuple[str, int | None]:
    """(feature tensor, features the classifier weight expects or ``None``)."""
    if len(graph.output) != 1:
        raise ModelError(
            f"the model has {len(graph.output)} outputs; cannot choose the feature layer automatically",
            hint="name the feature layer with output",
        )
    tensor = graph.output[0].name
    node = producers.get(tensor)
    while node is not None and node.op_type in PASS_AFTER_CLASSIFIER and node.input:
        node = producers.get(node.input[0])
    if node is None:
        return tensor, None

    def is_const(name: str) -> bool:
        return name in initializer_names or (name in producers and producers[name].op_type == "Constant")

    data: str | None = None
    dim: int | None = None
    if node.op_type == "Gemm" and len(node.input) >= 2:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if not attrs.get("transA", 0) and is_const(node.input[1]):
            data = node.input[0]
            w = _constant_shape(graph, producers, node.input[1])
            if w is not None and len(w) == 2:
                dim = w[1] if attrs.get("transB", 0) else w[0]
    else:
        if node.op_type == "Add":
            matmuls = [m for m in (producers.get(i) for i in node.input) if m is not None and m.op_type == "MatMul"]
            node = matmuls[0] if len(matmuls) == 1 else node
        if node.op_type == "MatMul" and is_const(node.input[1]):
            data = node.input[0]
            w = _constant_shape(graph, producers, node.input[1])
            if w is not None and len(w) == 2:
                dim = w[0]
    if data is None:
        return tensor, None  # no classifier head: the model outputs features already
    node = producers.get(data)
    while node is not None and node.op_type in PASS_BEFORE_CLASSIFIER and node.input:
        data = node.input[0]
        node = producers.get(data)
    return data, dim


def _subgraph_inputs(node: onnx.NodeProto) -> Iterable[str]:
    """Outer-scope names used inside a node's subgraphs (If/Loop/Scan bodies)."""
    for a in node.attribute:
        graphs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
        for g in graphs:
            for n in g.node:
                yield from n.input
                yield from _subgraph_inputs(n)


def _prune(graph: onnx.GraphProto, feature: str, input_name: str) -> None:
    """Keep only what computes ``feature`` (in place; weights are not copied)."""
    producers = {out: i for i, node in enumerate(graph.node) for out in node.output}
    keep_nodes: set[int] = set()
    needed: set[str] = set()
    stack = [feature]
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        i = producers.get(name)
        if i is not None and i not in keep_nodes:
            keep_nodes.add(i)
            node = graph.node[i]
            stack.extend(n for n in node.input if n)
            stack.extend(_subgraph_inputs(node))
    if input_name not in needed:
        raise ModelError(f"the feature tensor {feature!r} does not depend on the image input {input_name!r}")
    for i in range(len(graph.node) - 1, -1, -1):
        if i not in keep_nodes:
            del graph.node[i]
    for field in (graph.initializer, graph.input):
        for i in range(len(field) - 1, -1, -1):
            if field[i].name not in needed:
                del field[i]
    for i in range(len(graph.sparse_initializer) - 1, -1, -1):
        if graph.sparse_initializer[i].values.name not in needed:
            del graph.sparse_initializer[i]
    for i in range(len(graph.value_info) - 1, -1, -1):
        if graph.value_info[i].name not in needed:
            del graph.value_info[i]


def _weightless(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose large initializers are graph inputs of the same type and
    shape instead (enough for shape inference, without copying the weights)."""
    light = onnx.ModelProto()
    light.ir_version = model.ir_version
    light.opset_import.extend(model.opset_import)
    g = light.graph
    g.name = model.graph.name
    g.node.extend(model.graph.node)
    g.output.extend(model.graph.output)
    g.value_info.extend(model.graph.value_info)
    init_names = set()
    for t in model.graph.initializer:
        init_names.add(t.name)
        if int(np.prod(t.dims)) <= _SMALL_INITIALIZER:
            g.initializer.append(t)
        else:
            g.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    g.input.extend(i for i in model.graph.input if i.name not in init_names)
    light.functions.extend(model.functions)
    return light


def _inferred_shape(model: onnx.ModelProto, tensor: str) -> list[int | None] | None:
    """Static shape of ``tensor`` by ONNX shape inference, ``None`` if unknown."""
    light = _weightless(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(light, strict_mode=False, data_prop=True)
    except Exception:  # inference errors just mean "unknown": the probe decides
        return None
    g = inferred.graph
    for v in list(g.value_info) + list(g.output) + list(g.input):
        if v.name == tensor:
            shape = _value_shape(v)
            return shape if shape else None
    return None


def _probe_shape(
    model: onnx.ModelProto, feature: str, input_name: str, batch: int | None, height: int | None, width: int | None
) -> list[int | None]:
    """Shape of ``feature`` found by running the (pruned) model on zeros: once at the fixed
    input size, or at two sizes (``PROBE_SIZE`` and ``PROBE_SIZE + 32``) when the input size is
    dynamic, which must then give the same feature size."""
    import onnxruntime as ort

    channels = _value_shape(next(i for i in model.graph.input if i.name == input_name))[1] or 3
    saved = list(model.graph.output)
    del model.graph.output[:]
    model.graph.output.append(helper.make_empty_tensor_value_info(feature))
    try:
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        sizes = [PROBE_SIZE] if height and width else [PROBE_SIZE, PROBE_SIZE + 32]
        shapes = []
        for size in sizes:
            x = np.zeros((1, channels, height or size, width or size), np.float32)
            shapes.append(list(sess.run([feature], {input_name: x})[0].shape))
    except Exception as e:  # onnxruntime raises its own exception types
        raise ModelError(f"cannot determine the shape of {feature!r}: onnxruntime failed", detail=str(e)[:2000]) from None
    finally:
        del model.graph.output[:]
        model.graph.output.extend(saved)
    if any(s[1:] != shapes[0][1:] for s in shapes):
        raise ModelError(
            f"the size of {feature!r} depends on the input size ({' vs '.join(_fmt(s[1:]) for s in shapes)} "
            f"at {' and '.join(f'{n}x{n}' for n in sizes)})",
            hint="pick a layer after global pooling, or export the model with a fixed input size",
        )
    shape: list[int | None] = list(shapes[0])
    shape[0] = batch
    return shape


def _fresh_name(graph: onnx.GraphProto, base: str) -> str:
    used = {o for n in graph.node for o in n.output} | {i.name for i in graph.input} | {t.name for t in graph.initializer}
    name, i = base, 0
    while name in used:
        i += 1
        name = f"{base}_{i}"
    return name
