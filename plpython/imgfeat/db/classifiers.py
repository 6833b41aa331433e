"""Logistic-regression classifiers in the database: train, store, cache, predict, evaluate.

The server side of ``CALL imgfeat.train_logistic_regression``, ``imgfeat.predict``,
``imgfeat.predict_proba``, ``imgfeat.predict_table`` and ``imgfeat.evaluate``. Every
function takes ``plpy`` and runs its queries with the caller's rights (the SQL objects are
SECURITY INVOKER): reading a source the caller may not SELECT fails with PostgreSQL's own
permission error (SQLSTATE 42501).

The numbers come from the pure core: :func:`imgfeat.core.training.fit_logistic_regression`
trains (scikit-learn's ``LogisticRegression``), :class:`imgfeat.core.training.LogisticModel`
scores, :func:`imgfeat.core.metrics.classification_metrics` scores predictions. This module moves data between
tables and that core.

Storage (``imgfeat.classifiers``, one row per classifier, plain numbers — never pickles):
``coefficients`` is a 2-D ``float8[k][d]`` array (``k = 1`` for binary: the weights of the
positive class ``classes[2]`` in SQL's 1-based terms; ``k = n_classes`` for multiclass),
``intercepts`` ``float8[k]``, ``scale_mean``/``scale_std`` ``float8[d]`` (NULL when trained
with ``normalize => false``); the coefficients apply to ``(x - scale_mean) / scale_std``.

Source rows: a table, view or materialized view (``regclass``) with an array column of
numbers (the features; ``real[]`` from ``CALL imgfeat.featurize``, or ``float8[]``;
``numeric[]`` and integer arrays are cast to ``float8[]``) and a label column (``text``,
``varchar``, ``char``, an enum, ``smallint``/``integer``/``bigint`` or ``boolean``). Rows
are named in error messages by the source's ``id`` column when it has one, else by
``ctid`` (tables and materialized views), else by 0-based row number.

Per-backend cache: a classifier is built once and kept (at most
:data:`imgfeat.db.state.CLASSIFIER_CACHE_SIZE`, least recently used evicted) under its row's
version (``imgfeat_internal.classifier_versions``: ``trained_at``, ``xmin``, ``ctid``; a
replace, an UPDATE or a VACUUM FULL changes it), so a changed or deleted classifier is
never used stale. ``imgfeat.predict`` / ``predict_proba`` are PARALLEL SAFE: their SQL
wrapper looks the row up and passes it (:func:`classify`), because PL/Python's SPI opens a
subtransaction per query, which PostgreSQL refuses in parallel mode. ``predict_table`` and
``evaluate`` read their source through SPI and check the version with one query
(:func:`load`); they are PARALLEL UNSAFE.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core.errors import ImgfeatError, InsufficientPrivilegeError, InvalidParameterError, TrainingError
from ..core.training import _name_rows  # the core's "ids 3, 7 and 2 more" wording, shared
from . import catalog, state
from .catalog import Column, Relation

__all__ = [
    "FETCH_ROWS",
    "NAME_PATTERN",
    "ClassifierExistsError",
    "ClassifierNotFoundError",
    "evaluate_table",
    "load",
    "cached",
    "classify",
    "from_row",
    "predict_table",
    "train",
]

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
"""Classifier names: as featurizer model names (``imgfeat.models``), 1 to 63 characters of
lower-case letters, digits, ``_``, ``.``, ``-``, starting with a letter or digit. Also the
table's CHECK constraint."""

FETCH_ROWS = 200
"""Rows fetched per round trip from a source (``plpy.cursor(...).fetch``): small enough that a
result set stays in the CPU's cache, large enough to amortise the round trip."""

MAX_SOURCE_VALUES = 25_000_000
"""Most feature values (rows x features, summed over the rows' array lengths) that training and
``imgfeat.evaluate`` read from a source: e.g. 48,000 rows of 512 features, 12,000 of 2048.

PL/Python turns every element into a Python float (about 32 bytes each), so the source is
held to this before its arrays are converted: a running total of the arrays' cardinalities is
computed in SQL, and the rows past the cap are never handed to Python (about 800 MB of lists
at the cap). The error names the first row past it."""

MAX_FEATURE_VALUES = 1_000_000
"""Most elements one feature array of a training source may have (the largest feature layer of
the built-in models has 8192; the classifier's ``feature_dim`` bounds prediction sources)."""

_LIST_KNOWN = 50
"""How many known classifier names an 'unknown classifier' error lists."""

_LABEL_TYPES = {
    "text": "text", "varchar": "text", "bpchar": "text", "name": "text",
    "int2": "integer", "int4": "integer", "int8": "integer", "bool": "boolean",
}
"""Label column types (pg_type.typname) accepted, and the label type they train."""

_NUMERIC_ELEMENTS = ("float4", "float8", "numeric", "int2", "int4", "int8")
"""Array element types (pg_type.typname) a features column may have (see :func:`_features_expr`)."""


class ClassifierNotFoundError(ImgfeatError):
    """No classifier of that name (``42704`` undefined_object)."""

    sqlstate = "42704"


class ClassifierExistsError(ImgfeatError):
    """A classifier of that name exists and ``replace`` is false (``42710`` duplicate_object)."""

    sqlstate = "42710"


# --------------------------------------------------------------------------- sources


def _row_key(src: Relation) -> tuple[str | None, str]:
    """``(select expression, ORDER BY clause)`` naming and ordering a source's rows: ``id``, else
    ``ctid`` (tables, materialized views), else none (row numbers)."""
    if "id" in src.columns:
        col = src.columns["id"]
        return f"s.{col.quoted}::pg_catalog.text", f"ORDER BY s.{col.quoted}"
    if src.relkind in ("r", "m"):
        return "s.ctid::pg_catalog.text", "ORDER BY s.ctid"
    return None, ""


def _features_column(src: Relation, name: str | None) -> Column:
    col = src.column(name, "features")
    if col.element not in _NUMERIC_ELEMENTS:
        raise InvalidParameterError(
            f"features column {name!r} of {src.quoted} is {col.type}; it must be an array of numbers",
            hint="real[] as CALL imgfeat.featurize writes, or double precision[], numeric[], integer[]",
        )
    return col


def _features_expr(col: Column) -> str:
    """SQL reading the features column: ``real[]`` and ``float8[]`` as they are (PL/Python gives
    floats; a cast would cost a third of the read), other numeric arrays cast to ``float8[]``."""
    if col.element in ("float4", "float8"):
        return f"s.{col.quoted}"
    return f"s.{col.quoted}::pg_catalog.float8[]"


def _label_column(src: Relation, name: str | None) -> tuple[Column, str]:
    """The label column and the SQL expression reading it (enums as text)."""
    col = src.column(name, "label")
    if col.is_enum:
        return col, f"s.{col.quoted}::pg_catalog.text"
    if col.typname not in _LABEL_TYPES:
        raise InvalidParameterError(
            f"label column {name!r} of {src.quoted} is {col.type}; labels must be text, integer or boolean",
            hint="cast it in a view, e.g. CREATE VIEW v AS SELECT ..., label::text AS label FROM ...",
        )
    return col, f"s.{col.quoted}"


# --------------------------------------------------------------------------- prepared statements and reading


_PREPARED: dict[tuple[str, tuple[str, ...]], Any] = {}
"""Prepared statements of fixed queries (not of queries naming a source), kept for the backend."""


def _prepared(plpy: Any, query: str, types: list[str]) -> Any:
    key = (query, tuple(types))
    plan = _PREPARED.get(key)
    if plan is None:
        plan = _PREPARED[key] = plpy.prepare(query, types)
    return plan


def _fetch(plpy: Any, query: str) -> Any:
    """Rows of ``query`` in chunks of :data:`FETCH_ROWS` (a cursor: the result is never held whole)."""
    cursor = plpy.cursor(query)
    try:
        while True:
            chunk = cursor.fetch(FETCH_ROWS)
            if not chunk:
                return
            yield from chunk
    finally:
        cursor.close()


def _read_labelled(
    plpy: Any, src: Relation, feat: Column, label_expr: str, expected: tuple[int, str] | None = None
) -> tuple[list[str] | None, list[Any], list[Any]]:
    """Every row of ``src`` as ``(ids or None, labels, feature lists)``, in :meth:`Source.row_key` order.

    Features are read with :func:`_features_expr` (PL/Python lists of float, ``None`` for NULL elements,
    ``None`` for a NULL array). Before any array is converted, each row's cardinality and the
    running total are computed in SQL: an array of more than :data:`MAX_FEATURE_VALUES` elements
    (or, with ``expected`` = ``(feature_dim, classifier name)``, of another length), or one that
    takes the total past :data:`MAX_SOURCE_VALUES`, is never handed to Python and raises,
    naming its row. Raises :class:`TrainingError` for multi-dimensional arrays.
    """
    key, order = _row_key(src)
    col = f"s.{feat.quoted}"
    per_row = MAX_FEATURE_VALUES if expected is None else expected[0]
    fits = (f"pg_catalog.cardinality({col}) <= {int(per_row)}" if expected is None
            else f"pg_catalog.cardinality({col}) = {int(per_row)}")
    query = (
        f"SELECT {key or 'NULL::pg_catalog.text'} AS key, {label_expr} AS label, "
        f"pg_catalog.cardinality({col}) AS n, "
        f"CASE WHEN {fits} AND pg_catalog.sum(CASE WHEN {fits} THEN pg_catalog.cardinality({col}) END) OVER w "
        f"<= {MAX_SOURCE_VALUES} THEN {_features_expr(feat)} END AS features "
        f"FROM {src.quoted} AS s WINDOW w AS ({order} ROWS UNBOUNDED PRECEDING) {order}"
    )
    keys: list[Any] = []
    labels: list[Any] = []
    rows: list[Any] = []
    wrong: list[int] = []
    total = 0
    for r in _fetch(plpy, query):
        n = r["n"]
        if n is not None and r["features"] is None:
            n = int(n)
            if expected is not None and n != expected[0]:
                wrong.append(len(keys))  # named all together below (nothing of it was converted)
            else:
                _refuse_row(src, len(keys), r["key"] if key is not None else None, n, total)
        elif n is not None:
            total += int(n)
        keys.append(r["key"])
        labels.append(r["label"])
        rows.append(r["features"])
    ids = keys if key is not None else None
    if wrong and expected is not None:
        raise InvalidParameterError(
            f"features of {_name_rows(wrong, ids)} of {src.quoted} do not have the {expected[0]} values "
            f"classifier {expected[1]!r} expects",
            detail="checked from the arrays' cardinality before conversion",
        )
    _reject_nested(rows, ids)
    return ids, labels, rows


def _refuse_row(src: Relation, position: int, row_id: Any, n: int, before: int) -> None:
    """The error for a row whose features :func:`_read_labelled` would not convert."""
    row = f"id {row_id}" if row_id is not None else f"row {position} (0-based)"
    if n > MAX_FEATURE_VALUES:
        raise TrainingError(
            f"features of {row} of {src.quoted} have {n:,} values; at most {MAX_FEATURE_VALUES:,} a row are read",
            detail="checked from the array's cardinality before conversion",
        )
    raise TrainingError(
        f"{src.quoted} holds more than {MAX_SOURCE_VALUES:,} feature values (rows x features): "
        f"{row} takes the total from {before:,} to {before + n:,}",
        detail="rows are read in order and counted before their arrays are converted; nothing past the limit was read",
        hint="train or evaluate on a sample of the rows (e.g. a view with TABLESAMPLE or LIMIT)",
    )


# --------------------------------------------------------------------------- training


def _check_name(name: str | None) -> str:
    if name is None or not re.match(NAME_PATTERN, name):
        raise InvalidParameterError(
            f"invalid classifier name {name!r}",
            hint="1 to 63 lower-case letters, digits, '_', '.' or '-', starting with a letter or digit",
        )
    return name


def _exists(plpy: Any, name: str) -> bool:
    plan = _prepared(plpy, "SELECT 1 FROM imgfeat.classifiers WHERE name = $1", ["pg_catalog.text"])
    return bool(plpy.execute(plan, [name]))


def _check_may_replace(plpy: Any, name: str) -> None:
    """Only a classifier's owner (or a member of imgfeat_admin, or a superuser) may replace it.

    Raises:
        ClassifierPermissionError: the classifier belongs to another role.
    """
    plan = _prepared(
        plpy,
        "SELECT c.owner::text AS owner, (c.owner = current_user OR pg_catalog.pg_has_role(current_user, 'imgfeat_admin', 'MEMBER') "
        "OR (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user)) AS allowed "
        "FROM imgfeat.classifiers c WHERE c.name = $1",
        ["pg_catalog.text"],
    )
    rows = plpy.execute(plan, [name])
    if rows and not rows[0]["allowed"]:
        raise ClassifierPermissionError(
            f"classifier {name!r} belongs to {rows[0]['owner']}: only its owner or imgfeat_admin may replace it",
            hint="train under another name",
        )


class ClassifierPermissionError(InsufficientPrivilegeError):
    """Replacing another role's classifier (``42501`` insufficient_privilege)."""


def _featurizer(plpy: Any, src: Relation) -> str | None:
    """The source's single ``model_name`` value, ``None`` without that column or any value.

    Raises :class:`TrainingError` when the rows come from several featurizer models: their
    features are not comparable, and a featurize target holds one row per (id, model).
    """
    col = src.columns.get("model_name")
    if col is None:
        return None
    names = plpy.execute(
        f"SELECT pg_catalog.array_agg(DISTINCT s.{col.quoted}::pg_catalog.text) "
        f"FILTER (WHERE s.{col.quoted} IS NOT NULL) AS names FROM {src.quoted} AS s"
    )[0]["names"] or []
    if len(names) > 1:
        shown = ", ".join(repr(n) for n in names[:10])
        raise TrainingError(
            f"the rows of {src.quoted} hold features of {len(names)} featurizer models ({shown}); "
            "a classifier is trained on one model's features",
            hint=f"train on a view that keeps one model, e.g. CREATE VIEW v AS SELECT * FROM {src.quoted} "
            f"WHERE model_name = {names[0]!r}",
        )
    return names[0] if names else None


def train(
    plpy: Any,
    classifier_name: str | None,
    source: str | int | None,
    features_column: str | None,
    label_column: str | None,
    l1_weight: float | None,
    l2_weight: float | None,
    max_iterations: int | None,
    normalize: bool | None,
    class_weight: str | None,
    replace: bool | None,
) -> None:
    """The body of ``CALL imgfeat.train_logistic_regression``: read, fit, store one row.

    Reads every row of ``source`` (ordered by its ``id`` column when it has one, else by
    ``ctid``), fits :func:`imgfeat.core.training.fit_logistic_regression` (binary for two distinct
    labels, multinomial for more) and writes the classifier to ``imgfeat.classifiers``
    (``replace``: overwrite a classifier of that name, keeping its ``owner``). Solver advice
    (e.g. no convergence within ``max_iterations``) becomes a NOTICE; a NOTICE summarises
    the result.

    Regularisation is given in rxLogisticRegression's terms and mapped by
    :func:`imgfeat.core.training.sklearn_params`: minimising ``sum_i logloss_i + l1_weight *
    ||w||_1 + l2_weight / 2 * ||w||_2^2`` is scikit-learn's objective with
    ``C = 1 / (l1_weight + l2_weight)`` and ``l1_ratio = l1_weight / (l1_weight + l2_weight)``
    (both weights 0: ``C = inf``, no penalty); solver ``lbfgs`` when ``l1_weight == 0``, else
    ``saga``. ``normalize`` standardises with the training mean and population standard
    deviation, stored as ``scale_mean`` / ``scale_std`` and applied again at prediction.

    Raises:
        InvalidParameterError: bad name or hyper-parameter, missing or mistyped column.
        ClassifierExistsError: the name is taken and ``replace`` is false.
        TrainingError: a single class, NULL/ragged/non-finite features or NULL labels
            (at most 10 offending rows named), features of several featurizer models.
        plpy.SPIError: PostgreSQL's own errors, e.g. 42501 when the caller may not read ``source``.
    """
    from ..core import training

    name = _check_name(classifier_name)
    for arg, value in (("l1_weight", l1_weight), ("l2_weight", l2_weight), ("max_iterations", max_iterations),
                       ("normalize", normalize), ("replace", replace)):
        if value is None:
            raise InvalidParameterError(f"{arg} must not be NULL")
    training.sklearn_params(l1_weight, l2_weight)  # validates the weights before reading any data
    if max_iterations < 1:  # type: ignore[operator]
        raise InvalidParameterError(f"max_iterations must be >= 1, got {max_iterations}")
    if class_weight not in (None, "balanced"):
        raise InvalidParameterError(
            f"class_weight must be NULL or 'balanced', got {class_weight!r}",
            hint="'balanced' weights each class by n_rows / (n_classes * rows_in_class)",
        )
    if not replace and _exists(plpy, name):
        raise ClassifierExistsError(
            f"classifier {name!r} already exists",
            hint="pass replace => true to overwrite it, or choose another name",
        )
    if replace:
        _check_may_replace(plpy, name)
    src = catalog.relation(catalog.PlpyDatabase(plpy), source)
    feat = _features_column(src, features_column)
    _, label_expr = _label_column(src, label_column)
    featurizer = _featurizer(plpy, src)
    ids, labels, rows = _read_labelled(plpy, src, feat, label_expr)
    model = state.run_interruptibly(plpy, lambda: training.fit_logistic_regression(
        rows, labels, l1_weight=l1_weight, l2_weight=l2_weight, max_iterations=int(max_iterations),  # type: ignore[arg-type]
        normalize=bool(normalize), class_weight=class_weight, ids=ids,
    ), "training")
    del rows
    for advice in model.warnings:
        plpy.notice(
            f"imgfeat: classifier {name!r}: {advice}",
            hint="the classifier was stored anyway; CALL the procedure again with replace => true to retrain",
        )
    _store(plpy, name, model, featurizer, src.quoted, bool(replace))
    kind = "binary" if len(model.classes) == 2 else f"{len(model.classes)}-class"
    plpy.notice(
        f"imgfeat: trained classifier {name!r} ({kind}: {', '.join(model.classes[:10])}"
        f"{', ...' if len(model.classes) > 10 else ''}) on {model.training_rows} rows x {model.n_features} features; "
        f"training accuracy {model.metrics['accuracy']:.3f}"
    )


def _reject_nested(rows: list[Any], ids: list[Any] | None) -> None:
    """Multi-dimensional feature arrays (PL/Python gives nested lists) are an error."""
    bad = [i for i, r in enumerate(rows) if r and isinstance(r[0], list)]
    if bad:
        raise TrainingError(
            f"features must be one-dimensional arrays; {_name_rows(bad, ids)} hold multi-dimensional ones"
        )


_COLUMNS = (
    "name", "format", "classes", "label_type", "coefficients", "intercepts", "scale_mean", "scale_std",
    "feature_dim", "hyperparameters", "model_name", "training_source", "training_rows", "n_iterations",
    "training_metrics", "warnings", "library_versions",
)
_TYPES = (
    "pg_catalog.text", "pg_catalog.text", "pg_catalog.text[]", "pg_catalog.text", "pg_catalog.float8[]",
    "pg_catalog.float8[]", "pg_catalog.float8[]", "pg_catalog.float8[]", "pg_catalog.int4", "pg_catalog.jsonb",
    "pg_catalog.text", "pg_catalog.text", "pg_catalog.int8", "pg_catalog.int4", "pg_catalog.jsonb",
    "pg_catalog.text[]", "pg_catalog.jsonb",
)


def _store(plpy: Any, name: str, model: Any, featurizer: str | None, source: str, replace: bool) -> None:
    record = model.to_record()
    values = [
        name, record["format"], record["classes"], record["label_type"], record["coef"], record["intercept"],
        record["mean"], record["scale"], record["n_features"], json.dumps(record["hyperparameters"], allow_nan=False),
        featurizer, source, record["training_rows"], record["n_iter"], json.dumps(record["metrics"], allow_nan=False),
        record["warnings"], json.dumps(record["library_versions"]),
    ]
    placeholders = ", ".join(f"${i}" for i in range(1, len(_COLUMNS) + 2))
    # Analysts do not write imgfeat.classifiers themselves: this SECURITY DEFINER function does,
    # for the caller, keeping the owner of a replaced classifier (50_classifiers.sql).
    query = f"SELECT imgfeat_internal.store_classifier({placeholders})"
    plpy.execute(_prepared(plpy, query, [*_TYPES, "pg_catalog.bool"]), [*values, replace])


# --------------------------------------------------------------------------- the cache


@dataclass(frozen=True)
class Loaded:
    """A classifier read from ``imgfeat.classifiers``: its model and where it came from."""

    name: str
    model: Any
    """:class:`imgfeat.core.training.LogisticModel`."""
    featurizer: str | None
    version: str


def _unknown(plpy: Any, name: str | None) -> ClassifierNotFoundError:
    """The error for an unknown classifier, listing the known ones (unless in parallel mode,
    where no query can run)."""
    hint = "train one with CALL imgfeat.train_logistic_regression(name, source, ...)"
    if state.in_parallel_mode():
        return ClassifierNotFoundError(
            f"classifier {name!r} does not exist", detail="list them with SELECT name FROM imgfeat.classifiers", hint=hint
        )
    names = [r["name"] for r in plpy.execute(
        _prepared(plpy, f"SELECT name FROM imgfeat.classifiers ORDER BY name LIMIT {_LIST_KNOWN + 1}", [])
    )]
    if names:
        more = " and more" if len(names) > _LIST_KNOWN else ""
        detail = "known classifiers: " + ", ".join(names[:_LIST_KNOWN]) + more
    else:
        detail = "there are no classifiers yet"
    return ClassifierNotFoundError(
        f"classifier {name!r} does not exist",
        detail=detail,
        hint=hint,
    )


_ROW_COLUMNS = (
    "(v.classifier).format, (v.classifier).classes, (v.classifier).label_type, (v.classifier).coefficients, "
    "(v.classifier).intercepts, (v.classifier).scale_mean, (v.classifier).scale_std, (v.classifier).feature_dim, "
    "(v.classifier).hyperparameters::pg_catalog.text AS hyperparameters, (v.classifier).model_name, v.version"
)


def load(plpy: Any, name: str | None) -> Loaded:
    """The classifier ``name``, from this backend's cache if its row did not change.

    For queries that use SPI anyway (``predict_table``, ``evaluate``); the per-row functions
    get the row from their SQL wrapper (:func:`from_row`). One query per call reads the row's
    version from ``imgfeat_internal.classifier_versions`` (the one definition of a classifier
    row's version: any replace, UPDATE or VACUUM FULL changes it); the arrays are read only
    when it changed. Raises :class:`ClassifierNotFoundError` (listing known names in its detail).
    """
    if name is None:
        raise InvalidParameterError("classifier_name must not be NULL")
    rows = plpy.execute(
        _prepared(plpy, "SELECT v.version FROM imgfeat_internal.classifier_versions v WHERE v.name = $1",
                  ["pg_catalog.text"]),
        [name],
    )
    if not rows:
        state.classifiers().pop(name)
        raise _unknown(plpy, name)
    hit = state.classifiers().peek(name, rows[0]["version"])
    if hit is not None:
        return hit  # type: ignore[no-any-return]
    row = plpy.execute(
        _prepared(plpy, f"SELECT {_ROW_COLUMNS} FROM imgfeat_internal.classifier_versions v WHERE v.name = $1",
                  ["pg_catalog.text"]),
        [name],
    )[0]
    return _remember(name, row, row["version"])


def _remember(name: str, row: dict[str, Any], version: str) -> Loaded:
    """Build the model of an ``imgfeat.classifiers`` row (a dict of its columns;
    ``hyperparameters`` as JSON text) and cache it under ``version``."""
    from ..core.training import LogisticModel

    model = LogisticModel.from_record({
        "format": row["format"], "classes": row["classes"], "label_type": row["label_type"],
        "coef": row["coefficients"], "intercept": row["intercepts"], "mean": row["scale_mean"],
        "scale": row["scale_std"], "n_features": row["feature_dim"],
        "hyperparameters": json.loads(row["hyperparameters"]),
    })
    loaded = Loaded(name, model, row["model_name"], version)
    state.classifiers().put(name, version, loaded)
    return loaded


def cached(name: str | None, version: str | None) -> bool:
    """Whether this backend holds classifier ``name`` at ``version`` (no SPI). The SQL wrappers
    ask this first and pass the (detoasted, converted) row only when it is ``False``."""
    return name is not None and version is not None and state.classifiers().peek(name, version) is not None


def from_row(plpy: Any, name: str | None, row: dict[str, Any] | None, version: str | None) -> Loaded:
    """The classifier called ``name`` whose row version is ``version`` (``None``: no such
    name): from the cache, else built from ``row`` (its ``imgfeat.classifiers`` row, which the
    SQL wrapper passes only when :func:`cached` said no). No SPI (parallel workers), except to
    list known names for an unknown one outside parallel mode.

    Raises :class:`ClassifierNotFoundError`.
    """
    if name is None:
        raise InvalidParameterError("classifier_name must not be NULL")
    if version is None:
        state.classifiers().pop(name)
        raise _unknown(plpy, name)
    hit = state.classifiers().peek(name, version)
    if hit is not None:
        return hit  # type: ignore[no-any-return]
    if row is None:  # cached() said yes a moment ago: only a bug could get here
        raise ImgfeatError(f"internal error: classifier {name!r} left the backend's cache; run the query again")
    return _remember(name, row, version)


# --------------------------------------------------------------------------- prediction


def _vector(clf: Loaded, features: list[Any]) -> np.ndarray:
    """One feature vector as float64 ``[1, d]``, or an error naming what is wrong."""
    d = clf.model.n_features
    if features and isinstance(features[0], list):
        raise InvalidParameterError("features must be a one-dimensional array")
    x = np.asarray(features, dtype=np.float64)  # NULL elements (None) become NaN
    if x.shape != (d,):
        raise InvalidParameterError(
            f"features have {x.shape[0]} values but classifier {clf.name!r} expects {d}",
            hint=_featurizer_hint(clf),
        )
    if not np.isfinite(x).all():
        bad = np.flatnonzero(~np.isfinite(x))
        raise InvalidParameterError(
            f"features contain NaN, infinity or NULL at {len(bad)} position(s), first at [{int(bad[0]) + 1}]"
        )
    return x[np.newaxis, :]


def _featurizer_hint(clf: Loaded) -> str:
    if clf.featurizer:
        return f"the classifier was trained on features of model {clf.featurizer!r}; featurize with that model"
    return "featurize with the same model and layer as the training data"


def classify(
    plpy: Any, features: list[Any] | None, classifier_name: str | None, row: dict[str, Any] | None,
    version: str | None, output: str,
) -> str | None:
    """``imgfeat.predict`` (``output='label'``: the most probable class as text) and
    ``imgfeat.predict_proba`` (``output='proba'``: JSON text ``{label: probability}`` over all
    classes) of one feature vector; ``None`` for NULL features.

    ``row``/``version``: the classifier's ``imgfeat.classifiers`` row and version, looked up
    by the SQL wrapper, so that no SPI runs here and the function is parallel safe.
    ``output='length <n>'``: the wrapper found ``n`` elements where the classifier expects
    ``feature_dim`` (compared from the array's cardinality, so a huge array is never
    converted) and passed an empty array: raises :class:`InvalidParameterError`.
    Raises :class:`ClassifierNotFoundError`, or :class:`InvalidParameterError` for a vector
    of the wrong length, multi-dimensional, or holding NaN/infinity/NULL.
    """
    if features is None:
        return None
    clf = from_row(plpy, classifier_name, row, version)
    if output.startswith("length "):  # the SQL wrapper refused the vector from its cardinality
        raise InvalidParameterError(
            f"features have {output[len('length '):]} values but classifier {clf.name!r} expects {clf.model.n_features}",
            hint=_featurizer_hint(clf),
        )
    proba = clf.model.predict_proba(_vector(clf, features))[0]
    if output == "label":
        return clf.model.classes[int(np.argmax(proba))]
    return json.dumps({c: float(p) for c, p in zip(clf.model.classes, proba)}, allow_nan=False)


def predict_table(
    plpy: Any, classifier_name: str | None, source: str | None, features_column: str | None, id_column: str | None
) -> list[tuple[str | None, str | None, float | None]]:
    """``imgfeat.predict_table``: ``(id, label, probability of that label)`` for every row of ``source``.

    Rows are read in ``id_column`` order, :data:`FETCH_ROWS` at a time, and scored as one
    matrix per chunk. A NULL feature vector gives a NULL label and probability. Raises for
    vectors of the wrong length or holding NaN/infinity/NULL elements (naming ids, at most 10).
    """
    clf = load(plpy, classifier_name)
    src = catalog.relation(catalog.PlpyDatabase(plpy), source)
    feat = _features_column(src, features_column)
    idc = src.column(id_column, "id")
    d = int(clf.model.n_features)
    cursor = plpy.cursor(  # an array of another length is refused from its cardinality, never converted
        f"SELECT s.{idc.quoted}::pg_catalog.text AS id, pg_catalog.cardinality(s.{feat.quoted}) AS n, "
        f"CASE WHEN pg_catalog.cardinality(s.{feat.quoted}) = {d} THEN {_features_expr(feat)} END AS features "
        f"FROM {src.quoted} AS s ORDER BY s.{idc.quoted}"
    )
    out: list[tuple[str | None, str | None, float | None]] = []
    classes = clf.model.classes
    try:
        while True:
            chunk = cursor.fetch(FETCH_ROWS)
            if not chunk:
                break
            ids = [r["id"] for r in chunk]
            wrong = [i for i, r in enumerate(chunk) if r["n"] is not None and r["n"] != d]
            if wrong:
                raise InvalidParameterError(
                    f"features of {_name_rows(wrong, ids)} do not have the {d} values classifier {clf.name!r} expects",
                    detail=f"id {ids[wrong[0]]} has {chunk[wrong[0]]['n']} (checked from the arrays' cardinality before conversion)",
                    hint=_featurizer_hint(clf),
                )
            present = [i for i, r in enumerate(chunk) if r["features"] is not None]
            rows = [chunk[i]["features"] for i in present]
            present_ids = [ids[i] for i in present]
            _reject_nested(rows, present_ids)
            lengths = {len(r) for r in rows}
            if lengths - {clf.model.n_features}:
                bad = [j for j, r in enumerate(rows) if len(r) != clf.model.n_features]
                raise InvalidParameterError(
                    f"features of {_name_rows(bad, present_ids)} do not have the {clf.model.n_features} values "
                    f"classifier {clf.name!r} expects",
                    hint=_featurizer_hint(clf),
                )
            results: list[tuple[str | None, float | None]] = [(None, None)] * len(chunk)
            if rows:
                proba = clf.model.predict_proba(rows, ids=present_ids)
                best = np.argmax(proba, axis=1)
                for j, i in enumerate(present):
                    results[i] = (classes[best[j]], float(proba[j, best[j]]))
            out.extend((ids[i], *results[i]) for i in range(len(chunk)))
    finally:
        cursor.close()
    return out


# --------------------------------------------------------------------------- evaluation


def evaluate_table(
    plpy: Any, classifier_name: str | None, source: str | None, features_column: str | None, label_column: str | None
) -> str:
    """``imgfeat.evaluate``: :func:`imgfeat.core.metrics.classification_metrics` of the classifier on every row of ``source``, as JSON text.

    Labels are compared as text (:func:`imgfeat.core.training.canonical_label`). Raises for NULL
    labels or features, vectors of the wrong length or not finite (naming ids, at most 10),
    labels that are not classes of the classifier.
    """
    from ..core.metrics import classification_metrics
    from ..core.training import canonical_label

    clf = load(plpy, classifier_name)
    src = catalog.relation(catalog.PlpyDatabase(plpy), source)
    feat = _features_column(src, features_column)
    _, label_expr = _label_column(src, label_column)
    ids, labels, rows = _read_labelled(plpy, src, feat, label_expr, (clf.model.n_features, clf.name))
    if not rows:
        raise InvalidParameterError(f"nothing to evaluate: {src.quoted} has no rows")
    nulls = [i for i, v in enumerate(labels) if v is None]
    if nulls:
        raise TrainingError(f"labels are NULL in {len(nulls)} row(s): {_name_rows(nulls, ids)}")
    proba = clf.model.predict_proba(rows, ids=ids)
    result = classification_metrics([canonical_label(v) for v in labels], proba, clf.model.classes)
    return json.dumps(result, allow_nan=False)
