"""Classification metrics as JSON-able dicts (what ``imgfeat.evaluate`` returns as jsonb).

Computed with :mod:`sklearn.metrics`; every number is a Python ``int``/``float`` (no numpy
scalars) and finite, so the result goes through ``json.dumps(..., allow_nan=False)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .errors import InvalidParameterError

__all__ = ["classification_metrics"]

_PROBA_SUM_TOLERANCE = 1e-6
"""How far a row of probabilities may sum from 1."""


def _floats(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values]


def classification_metrics(y_true: Sequence[str], proba: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """Score predicted probabilities against true labels.

    Args:
        y_true: ``n`` true labels, as text (``imgfeat.training.canonical_label``); each must be
            one of ``classes``.
        proba: float ``[n, len(classes)]`` class probabilities (rows sum to 1), columns in the
            order of ``classes`` (``LogisticModel.predict_proba``).
        classes: the classifier's class labels, at least 2.

    Returns a dict:
        ``n``; ``accuracy``; ``log_loss`` (natural log, mean over rows; sklearn clips
        probabilities away from 0 and 1 so it stays finite); ``per_class``: ``{label: {"precision",
        "recall", "f1", "support"}}`` for every class (precision
        or F1 of a class never predicted, recall of a class absent from ``y_true``, is 0 —
        scikit-learn's ``zero_division=0``); ``macro_f1``; ``confusion_matrix``:
        ``{"labels": classes, "matrix": [[...]]}`` with rows = true class, columns = predicted
        class (the argmax of ``proba``, first class on ties).
        For 2 classes also ``auc`` (ROC AUC with ``classes[1]`` positive) and ``roc``:
        ``{"fpr": [...], "tpr": [...], "thresholds": [...]}`` from ``sklearn.metrics.roc_curve``
        (``drop_intermediate=True``). ``roc_curve`` puts ``+inf`` first in ``thresholds``
        ("predict no row positive"); that is replaced by ``max(score) + 1``, the value
        scikit-learn itself used before 1.3, so every threshold is a finite number and the
        meaning (no score reaches it) is kept. If ``y_true`` holds only one of the two
        classes, ROC is undefined and ``auc`` and ``roc`` are ``None``.

    Raises:
        InvalidParameterError: fewer than 2 classes, no rows, ``proba`` of the wrong shape or
            not finite, rows not summing to 1, labels not among ``classes`` (named, at most 10).
    """
    from sklearn import metrics as skm

    classes = [str(c) for c in classes]
    k = len(classes)
    if k < 2 or len(set(classes)) != k:
        raise InvalidParameterError(f"classes must be at least 2 distinct labels, got {classes!r}")
    labels = [str(v) for v in y_true]
    n = len(labels)
    if n == 0:
        raise InvalidParameterError("nothing to evaluate: no rows")
    proba = np.asarray(proba, dtype=np.float64)
    if proba.shape != (n, k):
        raise InvalidParameterError(f"proba must have shape [{n}, {k}] (rows, classes), got {list(proba.shape)}")
    if not np.isfinite(proba).all():
        raise InvalidParameterError("proba contains NaN or infinity")
    if np.abs(proba.sum(axis=1) - 1.0).max() > _PROBA_SUM_TOLERANCE:
        raise InvalidParameterError("rows of proba must sum to 1")
    index_of = {c: i for i, c in enumerate(classes)}
    unknown = sorted({v for v in labels if v not in index_of})
    if unknown:
        shown = ", ".join(repr(v) for v in unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
        raise InvalidParameterError(
            f"{len(unknown)} label(s) are not classes of the classifier: {shown}",
            detail=f"classes: {classes!r}",
            hint="evaluate only rows whose label the classifier was trained on",
        )

    true_idx = np.fromiter((index_of[v] for v in labels), dtype=np.intp, count=n)
    pred_idx = np.argmax(proba, axis=1)
    all_idx = list(range(k))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        true_idx, pred_idx, labels=all_idx, zero_division=0.0
    )
    matrix = skm.confusion_matrix(true_idx, pred_idx, labels=all_idx)
    result: dict[str, Any] = {
        "n": n,
        "accuracy": float(skm.accuracy_score(true_idx, pred_idx)),
        "log_loss": float(skm.log_loss(true_idx, proba, labels=all_idx)),
        "macro_f1": float(np.mean(f1)),
        "per_class": {
            classes[i]: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i in all_idx
        },
        "confusion_matrix": {"labels": classes, "matrix": [[int(c) for c in row] for row in matrix]},
    }
    if k == 2:
        positive = true_idx == 1
        if positive.all() or not positive.any():
            result["auc"] = None
            result["roc"] = None
        else:
            score = proba[:, 1]
            fpr, tpr, thresholds = skm.roc_curve(positive, score)
            thresholds = np.where(np.isinf(thresholds), float(score.max()) + 1.0, thresholds)
            result["auc"] = float(skm.roc_auc_score(positive, score))
            result["roc"] = {"fpr": _floats(fpr), "tpr": _floats(tpr), "thresholds": _floats(thresholds)}
    return result
