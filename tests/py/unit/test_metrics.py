"""Tests for imgfeat.metrics.evaluate: hand-computed values and agreement with sklearn.metrics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn import metrics as skm

from imgfeat.core.errors import InvalidParameterError
from imgfeat.core.metrics import classification_metrics

# A fixed binary example. P(yes) per row; predicted = yes when P(yes) > 0.5.
P_YES = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.1, 0.7, 0.4])
Y_TRUE = ["yes", "yes", "yes", "no", "no", "no", "yes", "no"]
CLASSES = ["no", "yes"]


def _binary_proba() -> np.ndarray:
    return np.column_stack([1.0 - P_YES, P_YES])


def test_binary_by_hand() -> None:
    report = classification_metrics(Y_TRUE, _binary_proba(), CLASSES)
    # predicted: yes yes no yes no no yes no -> TP 3, FN 1 (row 2), FP 1 (row 3), TN 3
    assert report["n"] == 8
    assert report["accuracy"] == 0.75
    assert report["confusion_matrix"] == {"labels": ["no", "yes"], "matrix": [[3, 1], [1, 3]]}
    for label in CLASSES:
        assert report["per_class"][label] == {"precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 4}
    assert report["macro_f1"] == 0.75
    # AUC: of the 16 (positive, negative) pairs, the positive scores higher in 14.
    assert report["auc"] == pytest.approx(14 / 16, abs=1e-15)
    p_true = [0.9, 0.8, 0.3, 0.4, 0.8, 0.9, 0.7, 0.6]
    assert report["log_loss"] == pytest.approx(-np.mean(np.log(p_true)), rel=1e-12)


def test_binary_agrees_with_sklearn_metrics() -> None:
    report = classification_metrics(Y_TRUE, _binary_proba(), CLASSES)
    y_pred = ["yes" if p > 0.5 else "no" for p in P_YES]
    assert report["accuracy"] == skm.accuracy_score(Y_TRUE, y_pred)
    precision, recall, f1, support = skm.precision_recall_fscore_support(Y_TRUE, y_pred, labels=CLASSES)
    for i, label in enumerate(CLASSES):
        got = report["per_class"][label]
        assert (got["precision"], got["recall"], got["f1"], got["support"]) == (
            precision[i], recall[i], f1[i], support[i])
    assert report["confusion_matrix"]["matrix"] == skm.confusion_matrix(Y_TRUE, y_pred, labels=CLASSES).tolist()
    assert report["auc"] == skm.roc_auc_score([y == "yes" for y in Y_TRUE], P_YES)
    assert report["log_loss"] == skm.log_loss(Y_TRUE, _binary_proba(), labels=CLASSES)


def test_roc_curve_is_finite_and_json_able() -> None:
    report = classification_metrics(Y_TRUE, _binary_proba(), CLASSES)
    roc = report["roc"]
    fpr, tpr, thresholds = skm.roc_curve([y == "yes" for y in Y_TRUE], P_YES)
    assert math.isinf(thresholds[0])  # what we replace
    assert roc["fpr"] == fpr.tolist() and roc["tpr"] == tpr.tolist()
    assert roc["thresholds"][0] == pytest.approx(1.9)  # max score 0.9 + 1
    assert roc["thresholds"][1:] == thresholds[1:].tolist()
    assert (roc["fpr"][0], roc["tpr"][0], roc["fpr"][-1], roc["tpr"][-1]) == (0.0, 0.0, 1.0, 1.0)
    text = json.dumps(report, allow_nan=False)  # no NaN/inf, no numpy scalars
    assert json.loads(text) == report
    assert all(type(v) is float for v in roc["thresholds"])


def test_multiclass_by_hand_and_against_sklearn() -> None:
    classes = ["cat", "dog", "eel"]
    proba = np.array([
        [0.7, 0.2, 0.1],  # cat -> cat
        [0.5, 0.4, 0.1],  # dog -> cat
        [0.1, 0.8, 0.1],  # dog -> dog
        [0.2, 0.3, 0.5],  # eel -> eel
        [0.3, 0.6, 0.1],  # eel -> dog
        [0.6, 0.3, 0.1],  # cat -> cat
    ])
    y_true = ["cat", "dog", "dog", "eel", "eel", "cat"]
    report = classification_metrics(y_true, proba, classes)
    assert report["confusion_matrix"]["matrix"] == [[2, 0, 0], [1, 1, 0], [0, 1, 1]]
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["per_class"]["cat"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert report["per_class"]["eel"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert "auc" not in report and "roc" not in report
    y_pred = [classes[i] for i in proba.argmax(axis=1)]
    f1 = skm.f1_score(y_true, y_pred, labels=classes, average=None)
    assert [report["per_class"][c]["f1"] for c in classes] == f1.tolist()
    assert report["macro_f1"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro"), abs=1e-15)
    assert report["log_loss"] == pytest.approx(skm.log_loss(y_true, proba, labels=classes), rel=1e-15)


def test_class_never_predicted_has_zero_precision_without_warning() -> None:
    # pytest turns warnings into errors: sklearn's UndefinedMetricWarning would fail here.
    proba = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4]])
    report = classification_metrics(["a", "b", "b"], proba, ["a", "b"])
    assert report["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert report["auc"] == 1.0


def test_single_true_class_has_no_auc() -> None:
    report = classification_metrics(["yes", "yes"], np.array([[0.2, 0.8], [0.6, 0.4]]), ["no", "yes"])
    assert report["auc"] is None and report["roc"] is None
    assert report["accuracy"] == 0.5


def test_bad_input() -> None:
    proba = _binary_proba()
    with pytest.raises(InvalidParameterError, match=r"1 label\(s\) are not classes of the classifier: 'maybe'"):
        classification_metrics(Y_TRUE[:-1] + ["maybe"], proba, CLASSES)
    with pytest.raises(InvalidParameterError, match=r"shape \[8, 2\]"):
        classification_metrics(Y_TRUE, proba[:, :1], CLASSES)
    with pytest.raises(InvalidParameterError, match="sum to 1"):
        classification_metrics(Y_TRUE, proba * 0.5, CLASSES)
    with pytest.raises(InvalidParameterError, match="NaN"):
        classification_metrics(Y_TRUE, np.where(proba > 0.85, np.nan, proba), CLASSES)
    with pytest.raises(InvalidParameterError, match="no rows"):
        classification_metrics([], np.empty((0, 2)), CLASSES)
    with pytest.raises(InvalidParameterError, match="at least 2 distinct"):
        classification_metrics(["a"], np.ones((1, 1)), ["a"])
