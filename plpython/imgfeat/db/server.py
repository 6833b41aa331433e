"""Entry points called by the extension's PL/Python functions: one per SQL function, each thin.

Each SQL function body is a thin prelude that imports this module (once per backend, see
``imgfeat_internal.bootstrap()`` in the extension script) and calls one function here with
``plpy``. The work is done in the modules named in each docstring. Heavy packages (numpy,
onnxruntime, Pillow, scikit-learn) are imported lazily, so ``python_info()`` works even when
one of them is missing, and a missing package becomes a clean ERROR that names it.

Errors: every :class:`~imgfeat.core.errors.ImgfeatError` is re-raised as a PostgreSQL ERROR
with its SQLSTATE, detail and hint (``plpy.error``), never as a traceback.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import platform
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from .. import __version__
from ..core.errors import ImgfeatError, MissingPackageError

F = TypeVar("F", bound=Callable[..., Any])

# One BLAS/OpenMP thread per backend (unless the server's environment says otherwise), set
# before numpy, scipy or scikit-learn are imported: many backends each starting a pool of
# threads per CPU oversubscribe the server, and a BLAS pool that cannot start its threads
# (when the machine is out of processes) waits forever where no cancel reaches it.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

PACKAGES = ("numpy", "onnxruntime", "PIL", "sklearn", "onnx", "openvino", "onnxruntime_ep_openvino")
"""The server-side packages ``python_info()`` reports."""

_ERROR_CLASS: list[type] = []


def entry_point(func: F) -> F:
    """Translate library errors into PostgreSQL errors (``plpy`` is the first argument)."""

    @functools.wraps(func)
    def wrapper(plpy: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return func(plpy, *args, **kwargs)
        except ModuleNotFoundError as exc:
            raise_error(plpy, missing_package(exc.name or str(exc)))
        except ImgfeatError as err:
            raise_error(plpy, err)

    return wrapper  # type: ignore[return-value]


def raise_error(plpy: Any, err: ImgfeatError) -> None:
    """Raise ``err`` as a PostgreSQL ERROR with its SQLSTATE, detail and hint.

    PL/Python prefixes the message with the exception's type (``plpy.Error: ...``); a
    subclass of ``plpy.Error`` named ``imgfeat`` in module ``builtins`` makes that prefix
    read ``imgfeat: <message>``.
    """
    if not _ERROR_CLASS:
        _ERROR_CLASS.append(type("imgfeat", (plpy.Error,), {"__module__": "builtins"}))
    exc = _ERROR_CLASS[0](err.message)
    exc.sqlstate = err.sqlstate
    exc.detail = err.detail
    exc.hint = err.hint
    raise exc from None


def missing_package(name: str) -> MissingPackageError:
    return MissingPackageError(
        f"the server's Python cannot import the package {name!r}",
        detail=f"Python {sys.version.split()[0]} at {sys.executable}; sys.path starts with {sys.path[:3]}",
        hint="Run SELECT imgfeat.python_info(); and see the README's Troubleshooting section "
        "(the packages are installed by `make install` for the Python that PL/Python embeds).",
    )


# --------------------------------------------------------------------------- featurizing


@entry_point
def featurize_image(
    plpy: Any, image: bytes | None, model_row: dict[str, Any] | None, model_name: str, resize: str | None,
    max_pixels: str | None, max_pixels_ceiling: str | None, intra: str | None, inter: str | None,
    cache_size: str | None,
) -> Any:
    """``imgfeat.featurize_image``: one image's feature vector (float32 [D]) or ``None`` for a NULL image.

    Parallel safe: the SQL wrapper (SECURITY DEFINER, the only caller) passes the model's
    registry row, the configured pixel ceiling as ``'<key>:<pixels>'`` (key: when the backend
    last loaded the configuration files, see :func:`imgfeat.db.state.remember_pixel_ceiling`;
    pixels ``''``: none configured) and the session's settings, so a cached model needs no SPI.
    """
    if image is None:
        return None
    from ..core import image as img
    from ..core.errors import InvalidParameterError
    from ..core.real_text import real_elements
    from . import settings, state

    if model_name is None:
        raise InvalidParameterError("model_name must not be NULL")
    ceiling = state.remember_pixel_ceiling(max_pixels_ceiling) if max_pixels_ceiling is not None else state.pixel_ceiling(plpy)
    current = settings.settings_from(max_pixels, intra, inter, cache_size, ceiling)
    info = state.passed_model_info(plpy, model_name, model_row)
    model = state.session_for(plpy, info, current)
    spec = info.preprocessing if resize is None else info.preprocessing.replace(resize=resize)
    tensor = img.image_to_tensor(image, spec, max_pixels=current.max_image_pixels)
    # PL/Python turns each element of the returned sequence into text for float4in: str
    # elements formatted at once ('%.9g', exact for float32) cost half of numpy scalars.
    return real_elements(model.run(tensor[None])[0])


def cached_pixel_ceiling() -> str | None:
    """``imgfeat_internal.cached_pixel_ceiling()`` (no SPI, no errors): see :mod:`imgfeat.db.state`."""
    from . import state

    return state.cached_pixel_ceiling()


@entry_point
def featurize_image_file(plpy: Any, path: str | None, model_name: str, resize: str | None = None) -> Any:
    """``imgfeat.featurize_image_file``: features of a file under ``imgfeat.image_root``
    (opened by :func:`imgfeat.core.files.read_image_file`)."""
    if path is None:
        return None
    from ..core import files, image
    from . import state

    data = files.read_image_file(state.image_root(plpy), path)
    current = state.current_settings(plpy)
    info = state.model_info(plpy, model_name)
    model = state.session_for(plpy, info, current)
    spec = info.preprocessing if resize is None else info.preprocessing.replace(resize=resize)
    tensor = image.image_to_tensor(data, spec, max_pixels=current.max_image_pixels)
    return model.run(tensor[None])[0]


@entry_point
def featurize_table(
    plpy: Any, source: str, target: str, model_name: str, id_column: str, image_column: str,
    batch_size: int, on_error: str,
) -> None:
    """``CALL imgfeat.featurize``: see :func:`imgfeat.db.jobs.featurize` (run under a pinned
    ``search_path``: :func:`imgfeat.db.state.procedure_context`)."""
    from . import jobs, state

    with state.procedure_context(plpy, source) as caller:
        jobs.featurize(plpy, caller, target, model_name, id_column, image_column, batch_size, on_error)


# --------------------------------------------------------------------------- the model registry


@entry_point
def register_model(
    plpy: Any, name: str, onnx_bytes: bytes | int, architecture: str | None, weights_origin: str,
    preprocessing: str | None, output_name: str | None, feature_dim: int | None, replace: bool,
    feature_layer: str = "pooled",
) -> dict[str, Any]:
    """``imgfeat.register_model`` and ``imgfeat.register_large_model``: see
    :func:`imgfeat.db.registry.register`; returns the new ``imgfeat.models`` row."""
    from . import registry, state

    registry.register(plpy, name, onnx_bytes, architecture, weights_origin, preprocessing, output_name,
                      feature_dim, replace, feature_layer)
    return state.registry_of(plpy).catalog_row(name)


@entry_point
def register_synthetic_model(
    plpy: Any, architecture: str, name: str | None, seed: int, replace: bool, feature_layer: str = "pooled",
) -> dict[str, Any]:
    """``imgfeat.register_synthetic_model``: see :func:`imgfeat.db.registry.register_synthetic`;
    returns the new ``imgfeat.models`` row."""
    from . import registry, state

    return state.registry_of(plpy).catalog_row(
        registry.register_synthetic(plpy, architecture, name, seed, replace, feature_layer))


@entry_point
def quantize_model(
    plpy: Any, model_name: str, calibration_source: str, image_column: str | None, new_name: str | None,
    calibration_rows: int, replace: bool,
) -> dict[str, Any]:
    """``imgfeat.quantize_model``: see :func:`imgfeat.db.quantize.quantize_registered`; returns
    the new ``imgfeat.models`` row."""
    from . import quantize, state

    name = quantize.quantize_registered(plpy, model_name, calibration_source, image_column or "image", new_name,
                                        calibration_rows, bool(replace))
    return state.registry_of(plpy).catalog_row(name)


@entry_point
def register_bf16_model(plpy: Any, model_name: str, new_name: str | None, replace: bool) -> dict[str, Any]:
    """``imgfeat.register_bf16_model``: see :func:`imgfeat.db.quantize.register_bf16`; returns the
    new ``imgfeat.models`` row."""
    from . import quantize, state

    return state.registry_of(plpy).catalog_row(quantize.register_bf16(plpy, model_name, new_name, bool(replace)))


@entry_point
def python_info(plpy: Any) -> str:
    """``imgfeat.python_info()`` as JSON text: interpreter, sys.path, package versions, threads, cache."""
    info: dict[str, Any] = {
        "imgfeat": __version__,
        "library_path": __file__.rsplit("/", 3)[0],  # the installed tree, resolved at bootstrap
        "python_version": platform.python_version(),
        "python_executable": sys.executable,
        "sys_path": list(sys.path),
        "packages": {},
    }
    for name in PACKAGES:
        try:
            module = importlib.import_module(name)
            info["packages"][name] = getattr(module, "__version__", "unknown")
        except ImportError as exc:
            info["packages"][name] = f"MISSING: {exc}"
    try:
        from ..core import runtime
        from . import state

        info["onnxruntime"] = runtime.versions()
        current = state.current_settings(plpy)
        info["settings"] = {
            "max_pixels": current.max_image_pixels,
            "intra_op_num_threads": current.intra_op_num_threads,
            "inter_op_num_threads": current.inter_op_num_threads,
            "session_cache_size": current.session_cache_size,
        }
        info["session_cache"] = state.sessions().info()
    except ImportError as exc:
        info["onnxruntime"] = f"unavailable: {exc}"
    try:
        from ..core import engines

        # The CPU's matrix units, whether onnxruntime's OpenVINO plugin loaded and which devices
        # it offers, and OpenVINO's own API (loading them here, if this backend had not yet).
        info["openvino"] = engines.report()
    except ImportError as exc:
        info["openvino"] = f"unavailable: {exc}"
    return json.dumps(info)


# --------------------------------------------------------------------------- classifiers


@entry_point
def train_logistic_regression(
    plpy: Any, classifier_name: str, source: str, features_column: str, label_column: str, l1_weight: float,
    l2_weight: float, max_iterations: int, normalize: bool, class_weight: str | None, replace: bool,
) -> None:
    """``CALL imgfeat.train_logistic_regression``: see :func:`imgfeat.db.classifiers.train` (run
    under a pinned ``search_path``: :func:`imgfeat.db.state.procedure_context`)."""
    from . import classifiers, state

    with state.procedure_context(plpy, source) as caller:
        classifiers.train(
            plpy, classifier_name, caller.source_oid, features_column,
            label_column, l1_weight, l2_weight, max_iterations, normalize, class_weight, replace,
        )


def classifier_cached(classifier_name: str | None, version: str | None) -> bool:
    """``imgfeat_internal.classifier_cached`` (no SPI, no errors): see :func:`imgfeat.db.classifiers.cached`."""
    from . import classifiers

    return classifiers.cached(classifier_name, version)


@entry_point
def classify(
    plpy: Any, features: list[float] | None, classifier_name: str | None, row: dict[str, Any] | None,
    version: str | None, output: str,
) -> str | None:
    """``imgfeat.predict`` / ``imgfeat.predict_proba`` (no SPI): see :func:`imgfeat.db.classifiers.classify`."""
    from . import classifiers

    return classifiers.classify(plpy, features, classifier_name, row, version, output)


@entry_point
def predict_table(plpy: Any, classifier_name: str, source: str, features_column: str, id_column: str) -> Any:
    """``imgfeat.predict_table``: see :func:`imgfeat.db.classifiers.predict_table`."""
    from . import classifiers

    return classifiers.predict_table(plpy, classifier_name, source, features_column, id_column)


@entry_point
def evaluate(plpy: Any, classifier_name: str, source: str, features_column: str, label_column: str) -> str:
    """``imgfeat.evaluate`` (JSON text): see :func:`imgfeat.db.classifiers.evaluate_table`."""
    from . import classifiers

    return classifiers.evaluate_table(plpy, classifier_name, source, features_column, label_column)
