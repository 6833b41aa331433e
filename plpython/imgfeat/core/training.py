"""Logistic-regression training and scoring, stored as plain data.

The seed is MicrosoftML's ``rxLogisticRegression`` (L-BFGS logistic regression with
``l1Weight`` / ``l2Weight``). We fit with scikit-learn's :class:`LogisticRegression` and keep
only numbers: a :class:`LogisticModel` holds the coefficients, the intercepts, the
standardisation and the class labels, and scores with numpy. Stored in
``imgfeat.classifiers`` (float8[] / text[] / jsonb columns, see :meth:`LogisticModel.to_record`),
a classifier is data, never pickled code, and a model read back from the table scores exactly
as the one that was trained.

The objective
-------------
For weights ``w`` (one vector per class for multiclass, one for binary), intercept ``b`` and
training rows ``(x_i, y_i)`` with sample weights ``s_i`` (1, or scikit-learn's "balanced"
class weights)::

    minimise  sum_i s_i * logloss_i(w, b)  +  l1_weight * ||w||_1  +  (l2_weight / 2) * ||w||_2^2

The intercept is not penalised. This is the ML.NET / MicrosoftML L-BFGS logistic
regression objective: ``LbfgsTrainerBase.DifferentiableFunction`` adds
``0.5 * L2Weight * ||w||^2`` over the non-bias weights to the summed (weighted) loss and
scales both by ``1 / WeightSum``; ``L1Optimizer`` adds ``L1Weight / NumGoodRows * ||w||_1``
(dotnet/machinelearning, src/Microsoft.ML.StandardTrainers/Standard/LogisticRegression/
LbfgsPredictorBase.cs). Without sample weights ``WeightSum == NumGoodRows == n`` and the
whole objective is the one above divided by ``n``, which has the same minimiser. The
documentation of ``LbfgsLogisticRegressionBinaryTrainer``
(https://learn.microsoft.com/dotnet/api/microsoft.ml.trainers.lbfgslogisticregressionbinarytrainer,
"Training Algorithm Details") describes the same elastic-net penalty, "a linear combination of
L1-norm and L2-norm" regularisations, over the weights ``w``. Multiclass
(``type="multiClass"`` in rx, ML.NET's ``LbfgsMaximumEntropy``) is the softmax loss with the
same penalty on all ``k`` weight vectors, as scikit-learn's multinomial loss.

With "balanced" class weights ML.NET would scale the L1 term by ``1 / n`` and the rest by
``1 / sum(s_i)``; scikit-learn's balanced weights sum to ``n``, so the two agree.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .errors import InvalidParameterError, TrainingError

__all__ = [
    "LABEL_TYPES",
    "RECORD_FORMAT",
    "TOLERANCE",
    "LogisticModel",
    "canonical_label",
    "fit_logistic_regression",
    "sklearn_params",
]

TOLERANCE = 1e-6
"""Stopping tolerance passed to scikit-learn (``tol``). For ``lbfgs`` it is the projected
gradient tolerance of the mean loss; for ``saga`` the maximum relative change of the weights
in one epoch. Tighter than scikit-learn's default (1e-4), in the spirit of MicrosoftML's
``optTol = 1e-7``."""

LABEL_TYPES = ("text", "integer", "boolean")
"""How labels were typed at training; predictions are text (see :func:`canonical_label`)."""

RECORD_FORMAT = "imgfeat.logistic_regression/1"
"""Version tag written by :meth:`LogisticModel.to_record` and checked by ``from_record``."""

_MAX_NAMED = 10
"""How many offending row ids an error message names."""


# --------------------------------------------------------------------------- parameters


MAX_ITERATIONS = 100_000
"""Largest ``max_iterations``: a bound on how long one training can run (a cancelled one runs
on in its backend until it stops: see :func:`imgfeat.db.state.run_interruptibly`). Well-scaled
features converge in tens to a few hundred iterations."""

def sklearn_params(l1_weight: float, l2_weight: float) -> dict[str, Any]:
    """Map rxLogisticRegression's ``l1Weight`` / ``l2Weight`` to scikit-learn's arguments.

    scikit-learn (>= 1.8, no ``penalty``) minimises
    ``C * sum_i s_i logloss_i + l1_ratio * ||w||_1 + (1 - l1_ratio) / 2 * ||w||_2^2``.
    Dividing our objective (module docstring) by ``l1_weight + l2_weight`` gives exactly that
    with ``C = 1 / (l1_weight + l2_weight)`` and ``l1_ratio = l1_weight / (l1_weight + l2_weight)``.
    Both weights 0 means no penalty: ``C = inf``.

    Solvers (scikit-learn 1.9 table "solver / l1_ratio / multinomial"): ``lbfgs`` when
    ``l1_weight == 0`` (pure L2 or none); ``saga`` whenever ``l1_weight > 0`` (L1 or elastic
    net, binary or multinomial). ``liblinear`` is not used: it penalises the intercept.

    Returns a dict ``{"C": float, "l1_ratio": float, "solver": str}`` to pass to
    ``LogisticRegression(**...)``.

    Raises :class:`InvalidParameterError` if a weight is negative, NaN or infinite.
    """
    for name, value in (("l1_weight", l1_weight), ("l2_weight", l2_weight)):
        if value is None or not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool):
            raise InvalidParameterError(f"{name} must be a number, got {value!r}")
        if not math.isfinite(float(value)) or float(value) < 0:
            raise InvalidParameterError(
                f"{name} must be a finite number >= 0, got {value!r}",
                hint="l1_weight and l2_weight are regularisation weights, as in rxLogisticRegression",
            )
    l1, l2 = float(l1_weight), float(l2_weight)
    total = l1 + l2
    if total == 0.0:
        return {"C": math.inf, "l1_ratio": 0.0, "solver": "lbfgs"}
    return {"C": 1.0 / total, "l1_ratio": l1 / total, "solver": "lbfgs" if l1 == 0.0 else "saga"}


# --------------------------------------------------------------------------- labels


def canonical_label(value: Any) -> str:
    """The text form of one label, as predictions return it and the classifier stores it.

    ``bool`` -> ``'true'`` / ``'false'`` (PostgreSQL's ``boolean::text``), integers ->
    ``str(int)``, strings unchanged. Raises :class:`TrainingError` for NULL or other types.
    """
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, str):
        return value
    if value is None:
        raise TrainingError("label is NULL")
    raise TrainingError(
        f"label {value!r} has type {type(value).__name__}; labels must be text, integer or boolean"
    )


def _label_type(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "boolean"
    if isinstance(value, (int, np.integer)):
        return "integer"
    if isinstance(value, str):
        return "text"
    raise TypeError(value)


def _name_rows(positions: Sequence[int], ids: Sequence[Any] | None) -> str:
    """``"ids 3, 7, 9"`` (or ``"rows 0, 5"``, 0-based, without ids), at most 10 and a count."""
    shown = list(positions[:_MAX_NAMED])
    if ids is not None:
        text = "ids " + ", ".join(str(ids[p]) for p in shown)
    else:
        text = "rows " + ", ".join(str(p) for p in shown) + " (0-based)"
    if len(positions) > _MAX_NAMED:
        text += f" and {len(positions) - _MAX_NAMED} more"
    return text


def _encode_labels(y: Sequence[Any], ids: Sequence[Any] | None) -> tuple[list[str], str, np.ndarray]:
    """Validate labels; return ``(classes, label_type, index of each row's class)``.

    Classes are sorted in the labels' own order (numbers numerically, ``false < true``,
    text by code point, as ``numpy.unique`` sorts them), then turned into text.
    """
    values = list(y.tolist() if isinstance(y, np.ndarray) else y)
    nulls = [i for i, v in enumerate(values) if v is None]
    if nulls:
        raise TrainingError(f"labels are NULL in {len(nulls)} row(s): {_name_rows(nulls, ids)}")
    types: dict[str, list[int]] = {}
    for i, v in enumerate(values):
        try:
            types.setdefault(_label_type(v), []).append(i)
        except TypeError:
            bad = [j for j, w in enumerate(values) if not isinstance(w, (bool, np.bool_, int, np.integer, str))]
            raise TrainingError(
                f"labels must be text, integer or boolean; got {type(v).__name__} at {_name_rows(bad, ids)}"
            ) from None
    if len(types) > 1:
        summary = "; ".join(f"{t} at {_name_rows(pos, ids)}" for t, pos in types.items())
        raise TrainingError(f"labels mix types: {summary}")
    label_type = next(iter(types))
    if label_type == "boolean":
        keys: list[Any] = [bool(v) for v in values]
    elif label_type == "integer":
        keys = [int(v) for v in values]
    else:
        keys = values
    distinct = sorted(set(keys))
    index_of = {k: i for i, k in enumerate(distinct)}
    codes = np.fromiter((index_of[k] for k in keys), dtype=np.intp, count=len(keys))
    return [canonical_label(k) for k in distinct], label_type, codes


# --------------------------------------------------------------------------- features


def _as_matrix(X: Any, ids: Sequence[Any] | None, *, what: str = "features") -> np.ndarray:
    """Float64 ``[n, d]`` from an array or a list of rows; NULL rows and ragged rows raise."""
    if isinstance(X, np.ndarray) and X.dtype != object:
        matrix = np.asarray(X, dtype=np.float64)
    else:
        rows = list(X)
        nulls = [i for i, r in enumerate(rows) if r is None]
        if nulls:
            raise TrainingError(f"{what} are NULL in {len(nulls)} row(s): {_name_rows(nulls, ids)}")
        lengths = [len(r) for r in rows]
        if len(set(lengths)) > 1:
            expected, _ = Counter(lengths).most_common(1)[0]
            odd = [i for i, n in enumerate(lengths) if n != expected]
            raise TrainingError(
                f"{what} have different lengths: most rows have {expected} values but "
                f"{_name_rows(odd, ids)} have {sorted({lengths[i] for i in odd})}",
                hint="every row's feature vector must come from the same model and layer",
            )
        # None inside a row becomes NaN here and is reported by the finiteness check.
        matrix = np.asarray(rows, dtype=np.float64) if rows else np.empty((0, 0))
    if matrix.ndim != 2:
        raise TrainingError(f"{what} must be a 2-D array [rows, features], got shape {matrix.shape}")
    return matrix


def _check_finite(matrix: np.ndarray, ids: Sequence[Any] | None, *, what: str = "features") -> None:
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite).tolist()
        raise TrainingError(
            f"{what} contain NaN, infinity or NULL elements in {len(bad)} row(s): {_name_rows(bad, ids)}",
            hint="exclude those rows, or re-featurize the images",
        )


def _standardisation(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population standard deviation (``ddof=0``, as scikit-learn's StandardScaler)
    of each column. A column whose values are all equal gets scale 1 and, as mean, that value
    itself (the float mean can differ from it by rounding), so it standardises to exactly 0."""
    mean = X.mean(axis=0)
    scale = X.std(axis=0)
    constant = np.ptp(X, axis=0) == 0
    mean[constant] = X[0, constant]
    scale[constant] = 1.0
    return mean, scale


# --------------------------------------------------------------------------- the model


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out = np.empty_like(z)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _float_list(a: np.ndarray | None) -> Any:
    return None if a is None else np.asarray(a, dtype=np.float64).tolist()


@dataclass(frozen=True)
class LogisticModel:
    """A trained logistic-regression classifier, as data.

    Attributes:
        classes: class labels as text (:func:`canonical_label`), sorted; ``len >= 2``.
        label_type: ``'text'``, ``'integer'`` or ``'boolean'``: the labels' type at training.
        coef: float64 ``[k, d]``; ``k = 1`` for binary (the weights of the positive class
            ``classes[1]``, scikit-learn's convention), ``k = len(classes)`` for multiclass.
            The weights apply to standardised features when ``mean``/``scale`` are set.
        intercept: float64 ``[k]``.
        mean, scale: float64 ``[d]`` standardisation ``(x - mean) / scale`` applied before
            ``coef``, or both ``None`` (``normalize=False``).
        hyperparameters: what the model was trained with (JSON-able; ``C`` is ``None`` for
            "no penalty", i.e. infinity).
        n_iter: iterations the solver ran (epochs for ``saga``).
        training_rows: number of training rows.
        metrics: on the training data: ``accuracy``, ``log_loss``, and ``roc_auc`` for binary.
        warnings: advice, e.g. when the solver did not converge.
        library_versions: numpy, scipy and scikit-learn versions used for training.
    """

    classes: list[str]
    label_type: str
    coef: np.ndarray
    intercept: np.ndarray
    mean: np.ndarray | None
    scale: np.ndarray | None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    n_iter: int = 0
    training_rows: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    library_versions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        coef = np.array(self.coef, dtype=np.float64, ndmin=2)
        intercept = np.array(self.intercept, dtype=np.float64, ndmin=1)
        object.__setattr__(self, "coef", coef)
        object.__setattr__(self, "intercept", intercept)
        for name in ("mean", "scale"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, np.array(value, dtype=np.float64, ndmin=1))
        classes = [str(c) for c in self.classes]
        object.__setattr__(self, "classes", classes)
        problems = []
        if len(classes) < 2 or len(set(classes)) != len(classes):
            problems.append(f"classes must be at least 2 distinct labels, got {classes!r}")
        if self.label_type not in LABEL_TYPES:
            problems.append(f"label_type must be one of {LABEL_TYPES}, got {self.label_type!r}")
        k = 1 if len(classes) == 2 else len(classes)
        if coef.ndim != 2 or coef.shape[0] != k or coef.shape[1] < 1:
            problems.append(f"coef must have shape [{k}, d] for {len(classes)} classes, got {coef.shape}")
        if intercept.shape != (k,):
            problems.append(f"intercept must have shape [{k}], got {intercept.shape}")
        if (self.mean is None) != (self.scale is None):
            problems.append("mean and scale must both be set or both be NULL")
        elif self.mean is not None:
            d = coef.shape[1]
            if self.mean.shape != (d,) or self.scale.shape != (d,):
                problems.append(f"mean and scale must have {d} values, got {self.mean.shape[0]} and {self.scale.shape[0]}")
            elif not (np.isfinite(self.mean).all() and np.isfinite(self.scale).all() and (self.scale > 0).all()):
                problems.append("mean must be finite and scale finite and > 0")
        if not (np.isfinite(coef).all() and np.isfinite(intercept).all()):
            problems.append("coef and intercept must be finite")
        if problems:
            raise TrainingError("invalid logistic-regression classifier: " + "; ".join(problems))

    @property
    def n_features(self) -> int:
        """``d``, the feature-vector length the model expects."""
        return int(self.coef.shape[1])

    def _matrix(self, X: Any, ids: Sequence[Any] | None) -> np.ndarray:
        if isinstance(X, np.ndarray) and X.dtype != object and X.ndim == 1:
            X = X[np.newaxis, :]
        elif not isinstance(X, np.ndarray) and len(X) > 0 and not isinstance(X[0], (Sequence, np.ndarray)) and X[0] is not None:
            X = [X]
        matrix = _as_matrix(X, ids)
        if matrix.shape[1] != self.n_features:
            raise TrainingError(
                f"feature vectors have {matrix.shape[1]} values but the classifier was trained on {self.n_features}",
                hint="featurize with the same model and layer as the training data",
            )
        _check_finite(matrix, ids)
        return matrix

    def decision_function(self, X: Any, *, ids: Sequence[Any] | None = None) -> np.ndarray:
        """Linear scores. ``X``: ``[n, d]`` (or one vector ``[d]``), anything float64 accepts.

        Returns float64 ``[n]`` for binary (the positive class ``classes[1]``'s logit, as
        scikit-learn) or ``[n, k]`` for multiclass. Raises :class:`TrainingError` if the
        vectors do not have ``d`` values or hold NaN/infinity (naming ``ids`` when given).
        """
        Z = self._matrix(X, ids)
        if self.mean is not None:
            Z = (Z - self.mean) / self.scale
        scores = Z @ self.coef.T + self.intercept
        return scores[:, 0] if len(self.classes) == 2 else scores

    def predict_proba(self, X: Any, *, ids: Sequence[Any] | None = None) -> np.ndarray:
        """Class probabilities, float64 ``[n, len(classes)]`` in the order of ``classes``.

        Binary: ``[1 - sigmoid(s), sigmoid(s)]``; multiclass: softmax of the scores.
        Errors as :meth:`decision_function`.
        """
        scores = self.decision_function(X, ids=ids)
        if scores.ndim == 1:
            p = _sigmoid(scores)
            return np.column_stack([1.0 - p, p])
        return _softmax(scores)

    def predict(self, X: Any, *, ids: Sequence[Any] | None = None) -> list[str]:
        """The most probable class of each row, as text (``classes`` entries); ``[n]``.

        Binary ties (probability exactly 0.5) go to ``classes[0]``, as scikit-learn.
        """
        proba = self.predict_proba(X, ids=ids)
        return [self.classes[i] for i in np.argmax(proba, axis=1)]

    def to_record(self) -> dict[str, Any]:
        """Plain Python types for the ``imgfeat.classifiers`` columns (JSON-able).

        Keys: ``format`` (:data:`RECORD_FORMAT`), ``classes`` (list[str], a text[]),
        ``label_type``, ``coef`` (list of ``k`` float lists; a float8[][]), ``intercept``,
        ``mean``, ``scale`` (float lists or ``None``), ``n_features``, ``hyperparameters``,
        ``n_iter``, ``training_rows``, ``metrics``, ``warnings``, ``library_versions``.
        Floats are Python floats, whose ``repr`` round-trips exactly through JSON and float8.
        """
        return {
            "format": RECORD_FORMAT,
            "classes": list(self.classes),
            "label_type": self.label_type,
            "coef": _float_list(self.coef),
            "intercept": _float_list(self.intercept),
            "mean": _float_list(self.mean),
            "scale": _float_list(self.scale),
            "n_features": self.n_features,
            "hyperparameters": dict(self.hyperparameters),
            "n_iter": int(self.n_iter),
            "training_rows": int(self.training_rows),
            "metrics": dict(self.metrics),
            "warnings": list(self.warnings),
            "library_versions": dict(self.library_versions),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> LogisticModel:
        """Rebuild a model from :meth:`to_record`'s dict (e.g. a row of ``imgfeat.classifiers``).

        Raises :class:`TrainingError` if the record is of another format or its arrays do not fit.
        """
        fmt = record.get("format", RECORD_FORMAT)
        if fmt != RECORD_FORMAT:
            raise TrainingError(f"classifier record has format {fmt!r}, expected {RECORD_FORMAT!r}")
        missing = [k for k in ("classes", "label_type", "coef", "intercept") if k not in record]
        if missing:
            raise TrainingError(f"classifier record lacks {', '.join(missing)}")
        model = cls(
            classes=list(record["classes"]),
            label_type=record["label_type"],
            coef=np.array(record["coef"], dtype=np.float64, ndmin=2),
            intercept=np.array(record["intercept"], dtype=np.float64, ndmin=1),
            mean=None if record.get("mean") is None else np.array(record["mean"], dtype=np.float64),
            scale=None if record.get("scale") is None else np.array(record["scale"], dtype=np.float64),
            hyperparameters=dict(record.get("hyperparameters") or {}),
            n_iter=int(record.get("n_iter") or 0),
            training_rows=int(record.get("training_rows") or 0),
            metrics=dict(record.get("metrics") or {}),
            warnings=list(record.get("warnings") or []),
            library_versions=dict(record.get("library_versions") or {}),
        )
        n_features = record.get("n_features")
        if n_features is not None and int(n_features) != model.n_features:
            raise TrainingError(f"classifier record says n_features={n_features} but coef has {model.n_features} columns")
        return model


# --------------------------------------------------------------------------- training


def _build_estimator(
    l1_weight: float, l2_weight: float, max_iterations: int, class_weight: str | None, random_state: int
) -> Any:
    """The scikit-learn estimator :func:`fit_logistic_regression` fits (not kept in the model)."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(
        **sklearn_params(l1_weight, l2_weight),
        tol=TOLERANCE,
        max_iter=max_iterations,
        class_weight=class_weight,
        random_state=random_state,
    )


def _library_versions() -> dict[str, str]:
    import scipy
    import sklearn

    return {"numpy": np.__version__, "scipy": scipy.__version__, "scikit-learn": sklearn.__version__}


def fit_logistic_regression(
    X: Any,
    y: Sequence[Any],
    *,
    l1_weight: float = 0.0,
    l2_weight: float = 1.0,
    max_iterations: int = 1000,
    normalize: bool = True,
    class_weight: str | None = None,
    random_state: int = 0,
    ids: Sequence[Any] | None = None,
) -> LogisticModel:
    """Train a (binary or multinomial) logistic regression; see the module docstring's objective.

    Args:
        X: features, float64 ``[n, d]`` array or a list of ``n`` equal-length rows.
        y: ``n`` labels, all text, all integer or all boolean (not NULL). Two distinct labels
            train a binary model (positive class ``classes[1]``), more a multinomial (softmax) one.
        l1_weight, l2_weight: rxLogisticRegression's regularisation weights, ``>= 0``.
        max_iterations: solver iteration limit (L-BFGS iterations, or saga epochs), 1 to :data:`MAX_ITERATIONS`.
        normalize: standardise each feature with the training mean and standard deviation
            (constant columns: scale 1); the standardisation is part of the model.
        class_weight: ``None`` or ``'balanced'`` (weights ``n / (n_classes * count(class))``).
        random_state: seed for saga's sampling order (lbfgs is deterministic).
        ids: optional row ids (same length as ``X``), named in error messages.

    Returns:
        A :class:`LogisticModel`. A solver that stops at ``max_iterations`` without converging
        does not raise: the model is returned with advice in ``model.warnings``.

    Raises:
        InvalidParameterError: negative/non-finite weights, ``max_iterations`` out of range, an unknown
            ``class_weight``, ``ids`` of the wrong length.
        TrainingError: fewer than 2 rows, rows and labels of different counts, NULL or ragged
            feature rows, NaN/infinite features, NULL or mixed-type labels, a single class
            (offending rows named by id, at most 10).
    """
    params = sklearn_params(l1_weight, l2_weight)
    if (isinstance(max_iterations, bool) or not isinstance(max_iterations, (int, np.integer))
            or not 1 <= max_iterations <= MAX_ITERATIONS):
        raise InvalidParameterError(f"max_iterations must be an integer from 1 to {MAX_ITERATIONS}, got {max_iterations!r}")
    if class_weight not in (None, "balanced"):
        raise InvalidParameterError(
            f"class_weight must be NULL or 'balanced', got {class_weight!r}",
            hint="'balanced' weights each class by n_rows / (n_classes * rows_in_class)",
        )
    labels = list(y.tolist() if isinstance(y, np.ndarray) else y)
    if ids is not None:
        ids = list(ids)
        if len(ids) != len(labels):
            raise InvalidParameterError(f"ids has {len(ids)} values but there are {len(labels)} labels")
    matrix = _as_matrix(X, ids)
    n = matrix.shape[0]
    if n != len(labels):
        raise TrainingError(f"{n} feature rows but {len(labels)} labels")
    if n < 2:
        raise TrainingError(f"need at least 2 training rows, got {n}")
    if matrix.shape[1] < 1:
        raise TrainingError("feature vectors are empty (0 values)")
    _check_finite(matrix, ids)
    classes, label_type, codes = _encode_labels(labels, ids)
    if len(classes) < 2:
        raise TrainingError(
            f"all {n} training rows have the same label {classes[0]!r}; need at least 2 classes",
            hint="check the label column and the source query's filter",
        )

    if normalize:
        mean, scale = _standardisation(matrix)
        Z = (matrix - mean) / scale
    else:
        mean = scale = None
        Z = matrix

    from sklearn.exceptions import ConvergenceWarning

    estimator = _build_estimator(l1_weight, l2_weight, int(max_iterations), class_weight, random_state)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        estimator.fit(Z, codes)
    advice: list[str] = []
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            if not advice:
                advice.append(_convergence_advice(int(max_iterations), params["solver"], normalize, l1_weight, l2_weight))
        else:  # not ours to swallow: re-issue (pytest turns it into an error)
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

    model = LogisticModel(
        classes=classes,
        label_type=label_type,
        coef=np.asarray(estimator.coef_, dtype=np.float64),
        intercept=np.asarray(estimator.intercept_, dtype=np.float64),
        mean=mean,
        scale=scale,
        hyperparameters={
            "l1_weight": float(l1_weight),
            "l2_weight": float(l2_weight),
            "max_iterations": int(max_iterations),
            "normalize": bool(normalize),
            "class_weight": class_weight,
            "random_state": int(random_state),
            "solver": params["solver"],
            "C": None if math.isinf(params["C"]) else params["C"],
            "l1_ratio": params["l1_ratio"],
            "tol": TOLERANCE,
            "multiclass": "multinomial" if len(classes) > 2 else "binary",
        },
        n_iter=int(np.max(estimator.n_iter_)),
        training_rows=n,
        warnings=advice,
        library_versions=_library_versions(),
    )
    from .metrics import classification_metrics

    report = classification_metrics([classes[i] for i in codes], model.predict_proba(matrix), classes)
    training_metrics: dict[str, Any] = {"accuracy": report["accuracy"], "log_loss": report["log_loss"]}
    if len(classes) == 2:
        training_metrics["roc_auc"] = report["auc"]
    return replace(model, metrics=training_metrics)


def _convergence_advice(max_iterations: int, solver: str, normalize: bool, l1: float, l2: float) -> str:
    tips = ["raise max_iterations"]
    if not normalize:
        tips.append("set normalize => true")
    if l1 + l2 == 0:
        tips.append("add regularisation (l2_weight > 0): without it separable classes have no finite optimum")
    return f"the {solver} solver did not converge in {max_iterations} iterations: " + ", or ".join(tips)
