"""A backend's state: the session's settings, whether it is in parallel mode, its loaded models,
the image root. Everything else in the database layer asks here.

A PostgreSQL backend is one process serving one connection, so module-level state lives as
long as the connection. Parallel workers are processes of their own, which cannot run queries
(PL/Python's SPI opens a subtransaction per query, which PostgreSQL refuses in parallel
mode): there the SQL wrappers pass what would be read (a model's registry row, the configured
pixel ceiling, the session's settings) and nothing here touches SPI.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

from ..core import runtime
from ..core.cache import LruCache
from ..core.errors import ModelError, ModelNotFoundError
from ..core.files import FileAccessError, require_root
from ..core.model_info import ModelInfo
from . import registry, settings
from .settings import Settings

_SESSIONS = runtime.SessionCache(runtime.DEFAULT_CACHE_SIZE)
"""The backend's onnxruntime sessions, by model name."""

_SPI: dict[str, Any] = {}
"""What needs SPI, made on first use: the registry's prepared statements, the settings query."""

_PIXEL_CEILING: dict[str, int] = {}
"""The configured ``imgfeat.max_image_pixels`` once known (read from the configuration, or
passed by the SQL wrapper in a process that cannot read it), keyed by the time this process
last loaded the configuration files (``pg_conf_load_time()`` as epoch seconds, text): at most
one entry; a reload (``SELECT pg_reload_conf()``, e.g. after ``ALTER SYSTEM``) changes the key,
so the ceiling is read again and a lowered one binds sessions already running."""

_LOAD_TIME_SQL = "pg_catalog.\"extract\"('epoch', pg_catalog.pg_conf_load_time())::pg_catalog.text"
"""The key of :data:`_PIXEL_CEILING` in SQL (the SQL wrappers compute the same expression)."""

_SYNTHETIC_NOTICED: set[str] = set()
"""Models whose synthetic-weights NOTICE this session has seen."""

CLASSIFIER_CACHE_SIZE = 32
"""Classifiers kept per backend (least recently used evicted). One is ``k x d`` floats."""

_CLASSIFIERS: LruCache[Any] = LruCache(CLASSIFIER_CACHE_SIZE)
"""The backend's classifiers, by name, versioned by their catalog row (see :mod:`imgfeat.db.classifiers`)."""


def sessions() -> runtime.SessionCache:
    """The backend's onnxruntime sessions."""
    return _SESSIONS


def classifiers() -> LruCache[Any]:
    """The backend's classifiers (:class:`imgfeat.db.classifiers.Loaded`)."""
    return _CLASSIFIERS


def in_parallel_mode() -> bool:
    """Whether this backend is in parallel mode (a parallel worker, or a leader running a
    parallel plan), where PL/Python's SPI calls fail. Asks the server's own
    ``IsInParallelMode()`` through ctypes; if that symbol cannot be found, answers True (the
    cautious side)."""
    try:
        func = ctypes.CDLL(None).IsInParallelMode
    except (AttributeError, OSError):
        return True
    func.restype = ctypes.c_bool
    func.argtypes = []
    return bool(func())


def registry_of(plpy: Any) -> registry.Registry:
    """The backend's :class:`~imgfeat.db.registry.Registry` (prepared once; needs SPI)."""
    if "registry" not in _SPI:
        _SPI["registry"] = registry.Registry(plpy)
    return _SPI["registry"]  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- procedures

PINNED_SEARCH_PATH = "pg_catalog, pg_temp"
"""The search_path imgfeat's SQL runs under: the system catalog first, the session's temporary
schema last (so no temporary type shadows a built-in one), nothing a user can create objects in."""


@dataclass(frozen=True)
class Caller:
    """What a procedure reads in its caller's context before it pins ``search_path``, and how
    it commits (:func:`procedure_context`)."""

    schema: str | None
    """The caller's ``current_schema()``: where an unqualified new target goes."""
    source_oid: int | None
    """The OID of the procedure's ``regclass`` argument (resolved with the caller's path)."""
    plpy: Any

    def commit(self) -> None:
        """Commit, and pin ``search_path`` again for the transaction that starts."""
        self.plpy.commit()
        _pin(self.plpy)


def _pin(plpy: Any) -> None:
    plpy.execute(f"SELECT pg_catalog.set_config('search_path', '{PINNED_SEARCH_PATH}', true)")


@contextmanager
def procedure_context(plpy: Any, source: str | None = None) -> Iterator[Caller]:
    """Run a procedure's body under :data:`PINNED_SEARCH_PATH`.

    Functions pin ``search_path`` with ``SET`` in their definition; procedures cannot (a
    procedure with a ``SET`` clause may not commit), so they would run their queries under the
    caller's path, where another role may have put an ``array_agg`` or an ``=`` of its own, or a
    temporary ``text`` type, that PostgreSQL would pick over the built-in one and run with the
    caller's rights. The path is pinned for the current transaction only (``SET LOCAL``), again
    after every :meth:`Caller.commit`, and given back at the end, so the caller's session keeps
    its own path whatever happens. ``source`` (a ``regclass`` argument, as text in the caller's
    terms) is resolved to an OID first, with the caller's path, as the caller meant it.
    """
    row = plpy.execute(
        "SELECT pg_catalog.current_setting('search_path') AS path, pg_catalog.current_schema() AS schema"
    )[0]
    oid = None
    if source is not None:
        oid = plpy.execute(
            plpy.prepare("SELECT $1::pg_catalog.regclass::pg_catalog.oid::pg_catalog.int8 AS oid", ["pg_catalog.text"]),
            [source],
        )[0]["oid"]
    _pin(plpy)
    try:
        yield Caller(row["schema"], oid, plpy)
    finally:
        plpy.execute(plpy.prepare("SELECT pg_catalog.set_config('search_path', $1, true)", ["pg_catalog.text"]),
                     [row["path"]])


# --------------------------------------------------------------------------- interrupts

POLL_SECONDS = 0.1
"""How often a long computation lets PostgreSQL act on a cancel or a termination."""

_ABANDONED: list[threading.Thread] = []
"""Computations whose query was cancelled while they ran; they finish (bounded) and are dropped."""


def interrupt_check(plpy: Any) -> Callable[[], None]:
    """A function that lets PostgreSQL act on a pending cancel (``pg_cancel_backend``,
    ``statement_timeout``) or termination (``pg_terminate_backend``): PL/Python checks for
    interrupts only when it runs a query, so long Python work calls this now and then; it
    raises the cancel's error, or the backend exits."""
    plan = plpy.prepare("SELECT 1")

    def check() -> None:
        plpy.execute(plan)

    return check


class _Stopped(BaseException):
    """Raised inside an abandoned computation's thread to end it (see :func:`_stop`)."""


def _stop(thread: threading.Thread) -> None:
    """Ask ``thread`` to stop: :class:`_Stopped` is raised in it at its next Python bytecode
    (``PyThreadState_SetAsyncExc``). Code that stays in C until it returns (scikit-learn's
    ``saga`` epochs) runs on to its own limit; Python-level loops (SciPy's L-BFGS-B, the
    ``lbfgs`` solver) end within an iteration."""

    if thread.ident is not None and thread.is_alive():
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(_Stopped))


def run_interruptibly(plpy: Any, work: Callable[[], T], what: str) -> T:
    """``work()``, run in a thread while this backend keeps answering cancels and terminations
    (:func:`interrupt_check` every :data:`POLL_SECONDS`): library code such as scikit-learn's
    solvers never returns to PostgreSQL until it is done. A cancelled ``work`` is asked to stop
    (:func:`_stop`: Python-level loops end within an iteration); what cannot be stopped runs
    on, bounded by its own limits, and the next call waits for nothing: it refuses to start
    while one is still running.

    Raises:
        ImgfeatError: an earlier cancelled ``what`` of this session is still running.
        Whatever ``work`` raises, or the cancel's error.
    """
    from ..core.errors import ImgfeatError

    _ABANDONED[:] = [t for t in _ABANDONED if t.is_alive()]
    if _ABANDONED:
        raise ImgfeatError(
            f"a cancelled {what} of this connection is still finishing",
            hint="Try again in a moment, or from a new connection.",
        )
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the backend's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, name=f"imgfeat-{what}", daemon=True)
    check = interrupt_check(plpy)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(POLL_SECONDS)
            if thread.is_alive():
                check()
    except BaseException:
        _stop(thread)
        _ABANDONED.append(thread)
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- settings


def remember_pixel_ceiling(configured: str | None) -> int:
    """Keep the configured pixel ceiling passed by an SQL wrapper, as ``'<key>:<setting>'``
    (key: :data:`_LOAD_TIME_SQL`; setting ``''``: none configured) and return it. The value of
    a key stands until the key changes (a configuration reload); a value without a key (older
    callers) is used for this call only."""
    key, sep, value = (configured or "").partition(":")
    if not sep:
        return settings.pixel_ceiling(configured)
    if key not in _PIXEL_CEILING:
        ceiling = settings.pixel_ceiling(value)
        _PIXEL_CEILING.clear()
        _PIXEL_CEILING[key] = ceiling
    return _PIXEL_CEILING[key]


def cached_pixel_ceiling() -> str | None:
    """The configured pixel ceiling this process knows, as ``'<key>:<ceiling>'`` (the key: when
    the configuration was loaded, :data:`_PIXEL_CEILING`), or ``None`` (no SPI). The SQL wrapper
    uses it only when its key is the current ``pg_conf_load_time()``."""
    for key, ceiling in _PIXEL_CEILING.items():
        return f"{key}:{ceiling}"
    return None


def pixel_ceiling(plpy: Any) -> int:
    """The configured pixel ceiling, read from the configuration files on first use and after
    every reload of them (needs SPI)."""
    if "load_time" not in _SPI:
        _SPI["load_time"] = plpy.prepare(f"SELECT {_LOAD_TIME_SQL} AS key")
    key = plpy.execute(_SPI["load_time"])[0]["key"]
    if key not in _PIXEL_CEILING:
        configured = settings.config_settings(plpy).get("imgfeat.max_image_pixels")
        remember_pixel_ceiling(f"{key}:{configured or ''}")
    return _PIXEL_CEILING[key]


def current_settings(plpy: Any) -> Settings:
    """The session's settings, read now (needs SPI)."""
    if "settings" not in _SPI:
        _SPI["settings"] = plpy.prepare(
            "SELECT pg_catalog.current_setting('imgfeat.max_image_pixels', true) AS max_pixels, "
            "pg_catalog.current_setting('imgfeat.intra_op_num_threads', true) AS intra, "
            "pg_catalog.current_setting('imgfeat.inter_op_num_threads', true) AS inter, "
            "pg_catalog.current_setting('imgfeat.session_cache_size', true) AS cache_size"
        )
    row = plpy.execute(_SPI["settings"])[0]
    return settings.settings_from(row["max_pixels"], row["intra"], row["inter"], row["cache_size"], pixel_ceiling(plpy))


# --------------------------------------------------------------------------- models


def model_info(plpy: Any, name: str) -> ModelInfo:
    """What the registry says about model ``name``, read now (needs SPI).

    Raises:
        ModelNotFoundError: no such model, listing the registered ones.
    """
    return registry_of(plpy).info(name)


def passed_model_info(plpy: Any, name: str, row: dict[str, Any] | None) -> ModelInfo:
    """What the registry says about model ``name``, from the registry row an SQL wrapper read
    and passed (``None``: no such model); no SPI unless to list the registered models.

    Raises:
        ModelNotFoundError: ``row`` is None (listing the registered models outside parallel mode).
    """
    if row is None:
        if in_parallel_mode():
            from ..core.zoo.catalog import registration_hint

            raise ModelNotFoundError(f"model {name!r} is not registered",
                                     detail="SELECT name FROM imgfeat.models lists the registered ones.",
                                     hint=registration_hint(name))
        raise registry_of(plpy).not_found(name)
    return ModelInfo.from_row(row)


def session_for(plpy: Any, info: ModelInfo, current: Settings) -> runtime.LoadedModel:
    """The backend's session for the registered model ``info``: at the precision and on the first
    available of the engines its catalog row records (:func:`imgfeat.core.runtime.load`).

    No SPI when it is cached. The cache is keyed by the model's bytes (sha256), its input and
    output, its precision and engines and the thread settings; what the catalog says about the model otherwise
    (preprocessing, feature_dim) is the caller's ``info``, read for every call, never the
    cache's. On a miss the ONNX bytes come from the server-side file cache
    (``<data directory>/imgfeat_models/<sha256>.onnx``, verified) or, outside parallel mode,
    from ``imgfeat.model_chunks`` (then written to the file cache, so parallel workers find
    them). A NOTICE says once per session when a model has synthetic weights.

    Raises:
        ModelError: bytes missing from the file cache in parallel mode, or corrupt.
        EngineUnavailableError: none of the model's engines can run it on this server.
    """
    _SESSIONS.shrink(current.session_cache_size)

    def load() -> runtime.LoadedModel:
        # onnxruntime reads the model from the verified file cache: the backend never holds
        # the model's bytes itself (a large model would otherwise be in memory twice).
        data: str | bytes | None = registry.cached_path(info)
        if data is None:
            if in_parallel_mode():
                raise ModelError(
                    f"model {info.name!r} is not in the server's model file cache, which parallel workers need",
                    hint="Run the query once without parallelism (SET max_parallel_workers_per_gather = 0), "
                    "or register the model again.",
                )
            data = registry_of(plpy).stream_to_cache(info)
            if data is None:  # the cache directory is not writable: hold the bytes instead
                data = registry_of(plpy).read_bytes(info)
        # The precision and engines are the catalog row's (``info``), never a setting's.
        return runtime.load(info, data, current.intra_op_num_threads, current.inter_op_num_threads)

    key = (info.sha256, info.input_name, info.output_name, info.fixed_batch, info.precision, info.engines,
           current.intra_op_num_threads, current.inter_op_num_threads)
    model = _SESSIONS.get(info.name, key, load)  # type: ignore[arg-type]
    if info.weights_origin == "synthetic" and info.name not in _SYNTHETIC_NOTICED:
        _SYNTHETIC_NOTICED.add(info.name)
        plpy.notice(
            f"imgfeat: model {info.name!r} has synthetic (seeded random) weights, not pre-trained ones",
            detail="Its features are fit for tests and offline demos only.",
            hint="Register pre-trained weights: imgfeat models download NAME, or imgfeat models add NAME --weights FILE --arch ARCH.",
        )
    return model


# --------------------------------------------------------------------------- files


FILE_READER_ROLES = ("imgfeat_file_reader", "pg_read_server_files")
"""Membership in either lets a role featurize files under ``imgfeat.image_root``."""


def image_root(plpy: Any) -> str:
    """The configured ``imgfeat.image_root``, after checking the caller may read image files.

    Raises:
        ConfigurationError: unset, or set by an untrusted source (a session's SET).
        FileAccessError: the caller is a member of neither :data:`FILE_READER_ROLES`.
    """
    allowed = plpy.execute(
        "SELECT pg_catalog.pg_has_role(current_user, 'imgfeat_file_reader', 'MEMBER') "
        "OR pg_catalog.pg_has_role(current_user, 'pg_read_server_files', 'MEMBER') AS ok"
    )[0]["ok"]
    if not allowed:
        raise FileAccessError(
            "reading image files on the database server requires membership in imgfeat_file_reader",
            hint="A superuser grants it: GRANT imgfeat_file_reader TO <role>; or load the images as bytea "
            "(imgfeat load DIR --table T).",
        )
    return require_root(settings.trusted_setting(plpy, settings.config_settings(plpy), "imgfeat.image_root"))
