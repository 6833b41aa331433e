"""Entry points called by the extension's PL/Python functions.

Each SQL function body is a thin prelude that imports this module (once per backend, see
``imgfeat._bootstrap()`` in the extension script) and calls one function here with
``plpy``. Heavy packages (numpy, onnxruntime, Pillow, scikit-learn) are imported lazily, so
``python_info()`` works even when one of them is missing, and a missing package becomes a
clean ERROR that names it.

Errors: every :class:`~imgfeat.errors.ImgfeatError` is re-raised as a PostgreSQL ERROR with
its SQLSTATE, detail and hint (``plpy.error``), never as a traceback.
"""

from __future__ import annotations

import functools
import importlib
import json
import platform
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from . import __version__
from .errors import ImgfeatError, MissingPackageError

F = TypeVar("F", bound=Callable[..., Any])

_STATE: dict[str, Any] = {}
"""Per-backend state: the session cache, prepared plans, settings read once."""

PACKAGES = ("numpy", "onnxruntime", "PIL", "sklearn", "onnx")


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
    cls = _STATE.get("error_class")
    if cls is None:
        cls = type("imgfeat", (plpy.Error,), {"__module__": "builtins"})
        _STATE["error_class"] = cls
    exc = cls(err.message)
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


def in_parallel_mode() -> bool:
    """Whether this backend is in parallel mode (a parallel worker, or a leader running a
    parallel plan), where PL/Python's SPI calls fail: each opens a subtransaction, which
    PostgreSQL refuses in parallel mode. Asks the server's own ``IsInParallelMode()``
    through ctypes; if that symbol cannot be found, answers True (the cautious side)."""
    import ctypes

    try:
        func = ctypes.CDLL(None).IsInParallelMode
    except (AttributeError, OSError):
        return True
    func.restype = ctypes.c_bool
    func.argtypes = []
    return bool(func())


def _cache() -> Any:
    """The backend's session cache and notice bookkeeping (no SPI)."""
    if "cache" not in _STATE:
        from . import runtime

        _STATE["cache"] = runtime.SessionCache(runtime.DEFAULT_CACHE_SIZE)
        _STATE["synthetic_noticed"] = set()
    return _STATE["cache"]


def _state(plpy: Any) -> dict[str, Any]:
    """Backend state that needs SPI, created on first use: registry plans, the configured ceiling."""
    if "registry" not in _STATE:
        from . import settings
        from .registry import Registry

        _cache()
        _STATE["registry"] = Registry(plpy)
        _STATE["tunables"] = plpy.prepare(
            "SELECT pg_catalog.current_setting('imgfeat.max_image_pixels', true) AS max_pixels, "
            "pg_catalog.current_setting('imgfeat.intra_op_num_threads', true) AS intra, "
            "pg_catalog.current_setting('imgfeat.inter_op_num_threads', true) AS inter, "
            "pg_catalog.current_setting('imgfeat.session_cache_size', true) AS cache_size"
        )
        _STATE.setdefault("pixel_ceiling", _pixel_ceiling(settings.config_settings(plpy).get("imgfeat.max_image_pixels")))
    return _STATE


def _pixel_ceiling(configured: str | None) -> int:
    """The configured imgfeat.max_image_pixels (``None`` or ``''``: not configured, the built-in
    default): sessions may only lower it."""
    from . import image, settings

    return settings.parse_int(configured, image.DEFAULT_MAX_PIXELS, "imgfeat.max_image_pixels", minimum=1)


def cached_pixel_ceiling() -> str | None:
    """``imgfeat_internal.cached_pixel_ceiling()``: the configured pixel ceiling this process
    already knows, as text, or ``None`` (no SPI)."""
    ceiling = _STATE.get("pixel_ceiling")
    return None if ceiling is None else str(ceiling)


def knobs_from(max_pixels: str | None, intra: str | None, inter: str | None, cache_size: str | None,
               ceiling: int) -> dict[str, int]:
    """Session tunables from their ``current_setting`` texts; ``max_pixels`` is capped at ``ceiling``."""
    from . import runtime, settings

    return {
        "max_pixels": min(settings.parse_int(max_pixels, ceiling, "imgfeat.max_image_pixels", minimum=1), ceiling),
        "intra_op_num_threads": settings.parse_int(intra, runtime.DEFAULT_INTRA_OP_THREADS, "imgfeat.intra_op_num_threads"),
        "inter_op_num_threads": settings.parse_int(inter, 1, "imgfeat.inter_op_num_threads"),
        "session_cache_size": settings.parse_int(cache_size, runtime.DEFAULT_CACHE_SIZE, "imgfeat.session_cache_size", minimum=1),
    }


def tunables(plpy: Any) -> dict[str, int]:
    """Session tunables read now through SPI: max image pixels (capped), onnxruntime threads, cache size."""
    state = _state(plpy)
    row = plpy.execute(state["tunables"])[0]
    return knobs_from(row["max_pixels"], row["intra"], row["inter"], row["cache_size"], state["pixel_ceiling"])


def model_from_row(plpy: Any, name: str, row: dict[str, Any] | None, knobs: dict[str, int]) -> Any:
    """The backend's cached :class:`~imgfeat.runtime.LoadedModel` for the registry row ``row``.

    No SPI when the session is cached. On a miss the ONNX bytes come from the server-side
    file cache (``<data directory>/imgfeat_models/<sha256>.onnx``, verified) or, outside
    parallel mode, from ``imgfeat.model_chunks`` (then written to the file cache, so
    parallel workers find them). The session is (re)loaded when the model's sha256 or the
    thread settings changed, or it was evicted.

    Raises:
        ModelNotFoundError: ``row`` is None (listing the registered models when SPI is allowed).
        ModelError: bytes missing from the file cache in parallel mode, or corrupt.
    """
    from . import registry, runtime
    from .errors import ModelError, ModelNotFoundError

    cache: runtime.SessionCache = _cache()
    cache.shrink(knobs["session_cache_size"])
    if row is None:
        if in_parallel_mode():
            raise ModelNotFoundError(f"model {name!r} is not registered", hint="SELECT name FROM imgfeat.models;")
        raise _state(plpy)["registry"].not_found(name)
    info = registry.ModelInfo.from_row(row)

    def load() -> runtime.LoadedModel:
        # onnxruntime reads the model from the verified file cache: the backend never holds
        # the model's bytes itself (a large model would otherwise be in memory twice).
        data: str | bytes | None = registry.cached_path(info)
        if data is None:
            if in_parallel_mode():
                raise ModelError(
                    f"model {name!r} is not in the server's model file cache, which parallel workers need",
                    hint="Run the query once without parallelism (SET max_parallel_workers_per_gather = 0), "
                    "or register the model again.",
                )
            data = _state(plpy)["registry"].stream_to_cache(info)
            if data is None:  # the cache directory is not writable: hold the bytes instead
                data = _state(plpy)["registry"].read_bytes(info)
        session = runtime.create_session(data, knobs["intra_op_num_threads"], knobs["inter_op_num_threads"])
        return runtime.LoadedModel(
            name=name, sha256=info.sha256, session=session, input_name=info.input_name,
            output_name=info.output_name, fixed_batch=info.fixed_batch, load_seconds=0.0,
            meta={"info": info},
        )

    key = f"{info.sha256}/{knobs['intra_op_num_threads']}/{knobs['inter_op_num_threads']}"
    model = cache.get(name, key, load)
    # The session is cached by the model's bytes (sha256); what the catalog says about the
    # model (preprocessing, feature_dim, ...) is taken from this call's row, never from the cache.
    model.meta["info"] = info
    noticed = _STATE["synthetic_noticed"]
    if info.weights_origin == "synthetic" and name not in noticed:
        noticed.add(name)
        plpy.notice(
            f"imgfeat: model {name!r} has synthetic (seeded random) weights, not pre-trained ones",
            detail="Its features are fit for tests and offline demos only.",
            hint="Register pre-trained weights: imgfeat models download NAME, or imgfeat models add NAME --weights FILE --arch ARCH.",
        )
    return model


def load_model(plpy: Any, name: str, knobs: dict[str, int]) -> Any:
    """:func:`model_from_row` with the registry row read through SPI (not for parallel mode)."""
    registry = _state(plpy)["registry"]
    return model_from_row(plpy, name, registry.row(name), knobs)


@entry_point
def featurize_image(
    plpy: Any, image: bytes | None, model_row: dict[str, Any] | None, model_name: str, resize: str | None,
    max_pixels: str | None, max_pixels_ceiling: str | None, intra: str | None, inter: str | None,
    cache_size: str | None,
) -> Any:
    """``imgfeat.featurize_image``: one image's feature vector (float32 [D]) or ``None`` for a NULL image.

    Parallel safe: the SQL wrapper (SECURITY DEFINER, the only caller) passes the model's
    registry row, the configured pixel ceiling (``''``: none configured) and the session's
    settings, so a cached model needs no SPI at all.
    """
    if image is None:
        return None
    from . import image as img
    from .errors import InvalidParameterError
    from .jobs import real_elements

    if model_name is None:
        raise InvalidParameterError("model_name must not be NULL")
    if max_pixels_ceiling is not None:
        _STATE.setdefault("pixel_ceiling", _pixel_ceiling(max_pixels_ceiling))
    if "pixel_ceiling" not in _STATE:  # only a caller other than the wrapper could get here
        _state(plpy)
    knobs = knobs_from(max_pixels, intra, inter, cache_size, _STATE["pixel_ceiling"])
    model = model_from_row(plpy, model_name, model_row, knobs)
    spec = model.meta["info"].preprocessing
    if resize is not None:
        spec = spec.replace(resize=resize)
    tensor = img.image_to_tensor(image, spec, max_pixels=knobs["max_pixels"])
    # PL/Python turns each element of the returned sequence into text for float4in: str
    # elements formatted at once ('%.9g', exact for float32) cost half of numpy scalars.
    return real_elements(model.run(tensor[None])[0])


def read_large_object(plpy: Any, oid: int, chunk_bytes: int = 8 * 1024 * 1024) -> bytes:
    """A large object's contents, read in chunks (the caller needs SELECT on it).

    Raises:
        ModelError: no such large object, or it is empty.
    """
    from .errors import ModelError

    plan = plpy.prepare("SELECT pg_catalog.lo_get($1, $2, $3) AS data", ["oid", "int8", "int4"])
    exists = plpy.execute(
        plpy.prepare("SELECT 1 FROM pg_catalog.pg_largeobject_metadata WHERE oid = $1", ["oid"]), [oid]
    )
    if not exists:
        raise ModelError(f"large object {oid} does not exist")
    buf = bytearray()
    while True:
        data = plpy.execute(plan, [oid, len(buf), chunk_bytes])[0]["data"]
        if not data:
            break
        buf += data
        del data
    if not buf:
        raise ModelError(f"large object {oid} is empty")
    out = bytes(buf)
    del buf
    return out


@entry_point
def register_model(
    plpy: Any,
    name: str,
    onnx_bytes: bytes | int,
    architecture: str | None,
    weights_origin: str,
    preprocessing: str | None,
    output_name: str | None,
    feature_dim: int | None,
    replace: bool,
) -> str:
    """``imgfeat.register_model`` (ONNX bytes) and ``imgfeat.register_large_model`` (the oid of a
    large object holding them): validate, cut at the feature layer, store; returns the sha256."""
    from . import registry, zoo
    from .errors import ModelError
    from .onnx_import import prepare_feature_extractor
    from .spec import Preprocessing

    if onnx_bytes is None or name is None:
        raise ModelError("name and onnx must not be NULL")
    if isinstance(onnx_bytes, int):  # a large object's oid (imgfeat.register_large_model)
        onnx_bytes = read_large_object(plpy, onnx_bytes)
    arch = zoo.ARCHITECTURES.get(architecture or "")
    if arch is not None and feature_dim is None:
        feature_dim = arch.feature_dim
    prepared = prepare_feature_extractor(onnx_bytes, output=output_name, feature_dim=feature_dim)
    del onnx_bytes
    if preprocessing is not None:
        spec = Preprocessing.from_json(json.loads(preprocessing))
    elif arch is not None:
        spec = arch.preprocessing
    elif prepared.input_width and prepared.input_height:
        from .spec import torchvision_imagenet

        spec = torchvision_imagenet(size=prepared.input_width).replace(
            width=prepared.input_width, height=prepared.input_height
        )
    else:
        raise ModelError(
            "the model's input size is dynamic, so a preprocessing spec is needed",
            hint='Pass preprocessing => \'{"width": 224, "height": 224}\' (see the README for all keys).',
        )
    if prepared.input_width and (spec.width, spec.height) != (prepared.input_width, prepared.input_height):
        raise ModelError(
            f"preprocessing size {spec.width}x{spec.height} contradicts the graph's input "
            f"{prepared.input_width}x{prepared.input_height}"
        )
    return registry.store(
        plpy,
        name=name,
        onnx_bytes=prepared.onnx_bytes,
        architecture=architecture or "custom",
        input_width=spec.width,
        input_height=spec.height,
        feature_dim=prepared.feature_dim,
        preprocessing=spec,
        weights_origin=weights_origin,
        input_name=prepared.input_name,
        output_name=prepared.output_name,
        fixed_batch=prepared.fixed_batch,
        replace=replace,
    )


@entry_point
def python_info(plpy: Any) -> str:
    """``imgfeat.python_info()`` as JSON text: interpreter, sys.path, package versions, threads, cache."""
    info: dict[str, Any] = {
        "imgfeat": __version__,
        "library_path": __file__.rsplit("/", 2)[0],  # the installed tree, resolved at bootstrap
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
        from . import runtime

        info["onnxruntime"] = runtime.versions()
        info["settings"] = tunables(plpy)
        info["session_cache"] = _state(plpy)["cache"].info()
    except ImportError as exc:
        info["onnxruntime"] = f"unavailable: {exc}"
    return json.dumps(info)


@entry_point
def register_synthetic_model(plpy: Any, architecture: str, name: str | None, seed: int, replace: bool) -> str:
    """``imgfeat.register_synthetic_model``: build ``architecture`` with seeded weights and register it.

    Returns the registered name. Raises ModelError for an unknown architecture.
    """
    from . import registry, zoo
    from .errors import ModelError

    arch = zoo.ARCHITECTURES.get(architecture)
    if arch is None:
        raise ModelError(
            f"unknown architecture {architecture!r}", hint=f"choose one of {', '.join(sorted(zoo.ARCHITECTURES))}"
        )
    name = name or architecture
    proto = zoo.build_feature_extractor(architecture, zoo.synthetic_state_dict(architecture, seed=seed))
    onnx_bytes = proto.SerializeToString()
    del proto
    registry.store(
        plpy,
        name=name,
        onnx_bytes=onnx_bytes,
        architecture=architecture,
        input_width=arch.input_width,
        input_height=arch.input_height,
        feature_dim=arch.feature_dim,
        preprocessing=arch.preprocessing,
        weights_origin="synthetic",
        input_name="input",
        output_name="features",
        fixed_batch=False,
        replace=replace,
    )
    return name


FILE_READER_ROLES = ("imgfeat_file_reader", "pg_read_server_files")
"""Membership in either lets a role featurize files under ``imgfeat.image_root``."""


def image_root(plpy: Any) -> str:
    """The configured ``imgfeat.image_root``, after checking the caller may read image files.

    Raises:
        ConfigurationError: unset, or set by an untrusted source (a session's SET).
        FileAccessError: the caller is a member of neither :data:`FILE_READER_ROLES`.
    """
    from . import files, settings

    allowed = plpy.execute(
        "SELECT pg_catalog.pg_has_role(current_user, 'imgfeat_file_reader', 'MEMBER') "
        "OR pg_catalog.pg_has_role(current_user, 'pg_read_server_files', 'MEMBER') AS ok"
    )[0]["ok"]
    if not allowed:
        raise files.FileAccessError(
            "reading image files on the database server requires membership in imgfeat_file_reader",
            hint="A superuser grants it: GRANT imgfeat_file_reader TO <role>; or load the images as bytea "
            "(imgfeat load DIR --table T).",
        )
    root = settings.trusted_setting(plpy, settings.config_settings(plpy), "imgfeat.image_root")
    if root is None:
        files.require_root(None)
    return root  # type: ignore[return-value]


@entry_point
def featurize_image_file(plpy: Any, path: str | None, model_name: str, resize: str | None = None) -> Any:
    """``imgfeat.featurize_image_file``: features of a file under ``imgfeat.image_root``."""
    if path is None:
        return None
    from . import files, image

    data = files.read_image_file(image_root(plpy), path)
    knobs = tunables(plpy)
    model = load_model(plpy, model_name, knobs)
    spec = model.meta["info"].preprocessing
    if resize is not None:
        spec = spec.replace(resize=resize)
    tensor = image.image_to_tensor(data, spec, max_pixels=knobs["max_pixels"])
    return model.run(tensor[None])[0]


@entry_point
def featurize_table(
    plpy: Any, source: str, target: str, model_name: str, id_column: str, image_column: str,
    batch_size: int, on_error: str,
) -> None:
    """``CALL imgfeat.featurize``: see :mod:`imgfeat.jobs`."""
    from . import jobs

    try:
        jobs.featurize(
            plpy, source, target, model_name, id_column, image_column, batch_size, on_error,
            load_model=load_model, tunables=tunables, image_root=image_root,
        )
    finally:
        jobs.release_job_locks(plpy)


# --------------------------------------------------------------------------- classifiers (imgfeat.classifiers)


@entry_point
def train_logistic_regression(
    plpy: Any, classifier_name: str, source: str, features_column: str, label_column: str, l1_weight: float,
    l2_weight: float, max_iterations: int, normalize: bool, class_weight: str | None, replace: bool,
) -> None:
    """``CALL imgfeat.train_logistic_regression``: see :func:`imgfeat.classifiers.train`."""
    from . import classifiers

    classifiers.train(
        plpy, classifier_name, source, features_column, label_column, l1_weight, l2_weight, max_iterations,
        normalize, class_weight, replace,
    )


def classifier_cached(classifier_name: str | None, version: str | None) -> bool:
    """``imgfeat._classifier_cached``: see :func:`imgfeat.classifiers.cached` (no SPI, no errors)."""
    from . import classifiers

    return classifiers.cached(classifier_name, version)


@entry_point
def classify(
    plpy: Any, features: list[float] | None, classifier_name: str | None, row: dict[str, Any] | None,
    version: str | None, output: str,
) -> str | None:
    """``imgfeat.predict`` / ``imgfeat.predict_proba`` (no SPI): see :func:`imgfeat.classifiers.classify`."""
    from . import classifiers

    return classifiers.classify(plpy, features, classifier_name, row, version, output)


@entry_point
def predict_table(plpy: Any, classifier_name: str, source: str, features_column: str, id_column: str) -> Any:
    """``imgfeat.predict_table``: see :func:`imgfeat.classifiers.predict_table`."""
    from . import classifiers

    return classifiers.predict_table(plpy, classifier_name, source, features_column, id_column)


@entry_point
def evaluate_classifier(plpy: Any, classifier_name: str, source: str, features_column: str, label_column: str) -> str:
    """``imgfeat.evaluate`` (JSON text): see :func:`imgfeat.classifiers.evaluate`."""
    from . import classifiers

    return classifiers.evaluate(plpy, classifier_name, source, features_column, label_column)


# --------------------------------------------------------------------------- int8 quantization


@entry_point
def quantize_model(
    plpy: Any, model_name: str, calibration_source: str, image_column: str | None, new_name: str | None,
    calibration_rows: int, replace: bool,
) -> str:
    """``imgfeat.quantize_model``: see :func:`imgfeat.quantize.quantize_registered`; returns the new name."""
    from . import quantize

    return quantize.quantize_registered(
        plpy, model_name, calibration_source, image_column or "image", new_name, calibration_rows, bool(replace),
        max_pixels=tunables(plpy)["max_pixels"], image_root=image_root,
    )
