"""Precision variants of a registered fp32 featurizer, each registered as a model of its own
(precision is part of a model's identity: features in a table never change because a server's
CPU did). ``imgfeat.quantize_model``: int8, calibrated on images of a table the caller names
(see :mod:`imgfeat.core.quantize`). ``imgfeat.register_bf16_model``: bf16, the same graph run
by OpenVINO with bf16 arithmetic (see :mod:`imgfeat.core.engines`)."""

from __future__ import annotations

from typing import Any

from ..core import files
from ..core.errors import ImgfeatError, InvalidParameterError, ModelError
from ..core.quantize import QuantizeOptions, quantize_onnx
from . import catalog, registry, state

DEFAULT_CALIBRATION_ROWS = 64
"""Calibration images read by default: enough for stable MinMax ranges on ResNets, about
half a minute of calibration for resnet50 on 2 cores."""

MAX_CALIBRATION_ROWS = 4096


def check_fp32_base(info: Any) -> None:
    """Variants are made of fp32 models only.

    Raises:
        InvalidParameterError: ``info`` is itself a bf16 or int8 variant.
    """
    if info.precision != "fp32":
        raise InvalidParameterError(
            f"model {info.name!r} is a {info.precision} variant: variants are made of fp32 models",
            hint="Name the fp32 model it was made of.",
        )


def register_bf16(plpy: Any, model_name: str | None, new_name: str | None, replace: bool) -> str:
    """``imgfeat.register_bf16_model``: register the fp32 model ``model_name``'s graph again as
    ``new_name`` (default ``<model_name>-bf16``) with precision bf16 and engine openvino; it
    keeps the base model's architecture, preprocessing, feature layer and dimension, and weights
    origin. A NOTICE says when this server cannot run it (no bf16 instructions, or no OpenVINO).

    Returns:
        The new model's name.

    Raises:
        ModelNotFoundError: unknown base model.
        InvalidParameterError: NULL arguments, a base that is not fp32, new_name equal to it.
        ModelError: the new name is taken (without ``replace``).
    """
    from ..core import engines

    if model_name is None:
        raise InvalidParameterError("model_name must not be NULL")
    reg = state.registry_of(plpy)
    info = reg.info(model_name)
    check_fp32_base(info)
    name = new_name or f"{model_name}-bf16"
    if name == model_name:
        raise InvalidParameterError("new_name must differ from the fp32 model's name")
    registry.store(
        plpy,
        name=name,
        onnx_bytes=reg.read_bytes(info),
        architecture=info.architecture,
        input_width=info.input_width,
        input_height=info.input_height,
        feature_dim=info.feature_dim,
        preprocessing=info.preprocessing,
        weights_origin=info.weights_origin,
        input_name=info.input_name,
        output_name=info.output_name,
        fixed_batch=info.fixed_batch,
        replace=bool(replace),
        feature_layer=reg.catalog_row(model_name)["feature_layer"],
        precision="bf16",
    )
    cpu = engines.cpu()
    missing = []
    if cpu.bf16_isa is None:
        missing.append(f"this CPU ({cpu.model}) has no bf16 instructions (neither amx_bf16 nor avx512_bf16)")
    if engines.plugin().cpu_device is None and engines.runtime().core is None:
        missing.append("neither onnxruntime's OpenVINO plugin nor OpenVINO's own API can run models here")
    if missing:
        plpy.notice(f"imgfeat: model {name!r} is registered, but this server cannot run it",
                    detail="; ".join(missing) + ".", hint="SELECT imgfeat.python_info()::jsonb -> 'openvino'")
    return name


def calibration_images(plpy: Any, source: str, image_column: str, rows: int) -> tuple[list[bytes], list[ImgfeatError]]:
    """Up to ``rows`` non-NULL images of ``source`` (a table or view), evenly spread over it
    (every k-th in scan order), and the errors of those that could not be read. A text
    column holds paths under ``imgfeat.image_root``.

    Raises:
        InvalidParameterError: unknown column, a column neither bytea nor text, no images.
        ConfigurationError, FileAccessError: paths without a usable image root or file reader role.
    """
    src = catalog.relation(catalog.PlpyDatabase(plpy), source)
    col, from_paths = catalog.image_column(src, image_column)
    total = plpy.execute(f"SELECT count(*) AS n FROM {src.quoted} WHERE {col.quoted} IS NOT NULL")[0]["n"]
    if total == 0:
        raise InvalidParameterError(
            f"calibration source {src.quoted} has no images in column {image_column!r}",
            hint="Name a table or view with the images the model will see (e.g. a sample of the training set).",
        )
    step = max(1, -(-total // rows))
    picked = plpy.execute(
        plpy.prepare(
            f"SELECT s.image FROM (SELECT {col.quoted} AS image, pg_catalog.row_number() OVER () AS n "
            f"FROM {src.quoted} WHERE {col.quoted} IS NOT NULL) s WHERE (s.n - 1) % $1 = 0 LIMIT $2",
            ["int8", "int4"],
        ),
        [step, rows],
    )
    images = [r["image"] for r in picked]
    if not from_paths:
        return images, []
    root = state.image_root(plpy)
    read: list[bytes] = []
    failed: list[ImgfeatError] = []
    for path in images:
        try:
            read.append(files.read_image_file(root, path))
        except ImgfeatError as err:
            failed.append(err)
    return read, failed


def quantize_registered(
    plpy: Any,
    model_name: str,
    calibration_source: str,
    image_column: str,
    new_name: str | None,
    calibration_rows: int,
    replace: bool,
    *,
    options: QuantizeOptions = QuantizeOptions(),
) -> str:
    """The body of ``imgfeat.quantize_model``: quantize a registered model, register the result.

    The new entry (default name ``<model_name>-int8``) inherits the base model's
    architecture, preprocessing, feature dimension, input/output names and weights origin.
    Calibration images that cannot be decoded are skipped.

    Returns:
        The new model's name.

    Raises:
        ModelNotFoundError: unknown base model.
        InvalidParameterError: bad ``calibration_rows``, no (decodable) calibration images.
        ModelError: the new name is taken (without ``replace``), or quantization failed.
    """
    from ..core import image

    if model_name is None or calibration_source is None:
        raise InvalidParameterError("model_name and calibration_source must not be NULL")
    if calibration_rows is None or not 1 <= calibration_rows <= MAX_CALIBRATION_ROWS:
        raise InvalidParameterError(
            f"calibration_rows must be between 1 and {MAX_CALIBRATION_ROWS}, not {calibration_rows}"
        )
    reg = state.registry_of(plpy)
    info = reg.info(model_name)
    check_fp32_base(info)
    name = new_name or f"{model_name}-int8"
    if name == model_name:
        raise InvalidParameterError("new_name must differ from the model being quantized")
    if not replace and plpy.execute(plpy.prepare("SELECT 1 FROM imgfeat.models WHERE name = $1", ["text"]), [name]):
        raise ModelError(
            f"model {name!r} is already registered",
            hint="Pass replace => true to overwrite it, or choose another new_name.",
        )
    images, unreadable = calibration_images(plpy, calibration_source, image_column or "image", calibration_rows)
    max_pixels = state.current_settings(plpy).max_image_pixels
    tensors, good, bad = image.images_to_batch(images, info.preprocessing, max_pixels=max_pixels)
    errors = unreadable + [err for _, err in bad]
    tried = len(images) + len(unreadable)
    if not good:
        raise InvalidParameterError(
            f"none of the {tried} calibration images could be read and decoded",
            detail=f"first error: {errors[0].message}",
        )
    opts = options
    if info.fixed_batch and opts.batch_size != 1:
        opts = QuantizeOptions(opts.quant_format, opts.per_channel, opts.calibration_method, 1)
    quantized = quantize_onnx(reg.read_bytes(info), tensors, info.input_name, opts)
    registry.store(
        plpy,
        name=name,
        onnx_bytes=quantized,
        architecture=info.architecture,
        input_width=info.input_width,
        input_height=info.input_height,
        feature_dim=info.feature_dim,
        preprocessing=info.preprocessing,
        weights_origin=info.weights_origin,
        input_name=info.input_name,
        output_name=info.output_name,
        fixed_batch=info.fixed_batch,
        replace=replace,
        feature_layer=reg.catalog_row(model_name)["feature_layer"],
        precision="int8",
    )
    if errors:
        plpy.notice(
            f"imgfeat: {len(errors)} of {tried} calibration images could not be read or decoded and were skipped",
            detail=f"first error: {errors[0].message}",
        )
    return name
