"""Tests for imgfeat.training: the rx -> scikit-learn mapping, scoring from stored data, errors."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import logsumexp
from sklearn.datasets import make_classification

from imgfeat.core.errors import InvalidParameterError, TrainingError
from imgfeat.core.training import (
    LogisticModel,
    _build_estimator,
    canonical_label,
    fit_logistic_regression,
    sklearn_params,
)



@pytest.fixture(scope="module")
def binary_data() -> tuple[np.ndarray, np.ndarray]:
    # Features on different scales, so the standardisation matters.
    X, y = make_classification(120, 6, n_informative=4, flip_y=0.1, random_state=3)
    return X * np.array([1.0, 10.0, 0.1, 100.0, 1.0, 5.0]) + 3.0, y


def _standardise(model: LogisticModel, X: np.ndarray) -> np.ndarray:
    assert model.mean is not None and model.scale is not None
    return (X - model.mean) / model.scale


def _minimise_binary(Z: np.ndarray, y: np.ndarray, l1: float, l2: float, sw: np.ndarray | None = None):
    """Minimise sum_i s_i logloss_i + l1 ||w||_1 + l2/2 ||w||^2 (intercept free) directly.

    The L1 term is made smooth by the split w = u - v, u, v >= 0 (L-BFGS-B with bounds):
    at the optimum min(u, v) = 0, so sum(u + v) = ||w||_1 and the minimiser is the same.
    """
    n, d = Z.shape
    sw = np.ones(n) if sw is None else sw

    def objective(p: np.ndarray) -> tuple[float, np.ndarray]:
        u, v, b = p[:d], p[d : 2 * d], p[2 * d]
        w = u - v
        z = Z @ w + b
        r = sw * (0.5 * (1.0 + np.tanh(0.5 * z)) - y)  # s_i * (sigmoid(z) - y)
        g = Z.T @ r + l2 * w
        value = np.sum(sw * (np.logaddexp(0.0, z) - y * z)) + l1 * np.sum(u + v) + 0.5 * l2 * w @ w
        return value, np.concatenate([g + l1, -g + l1, [r.sum()]])

    bounds = [(0.0, None)] * (2 * d) + [(None, None)]
    res = minimize(objective, np.zeros(2 * d + 1), jac=True, method="L-BFGS-B", bounds=bounds,
                   options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 20000})
    assert res.success, res.message
    return res.x[:d] - res.x[d : 2 * d], res.x[2 * d]


# --------------------------------------------------------------------------- the mapping


def test_sklearn_params_mapping() -> None:
    assert sklearn_params(0, 1) == {"C": 1.0, "l1_ratio": 0.0, "solver": "lbfgs"}
    assert sklearn_params(1, 3) == {"C": 0.25, "l1_ratio": 0.25, "solver": "saga"}
    assert sklearn_params(2, 0) == {"C": 0.5, "l1_ratio": 1.0, "solver": "saga"}
    none = sklearn_params(0, 0)
    assert none["C"] == float("inf") and none["l1_ratio"] == 0.0 and none["solver"] == "lbfgs"


@pytest.mark.parametrize("l1, l2", [(-1.0, 1.0), (0.0, -0.1), (float("nan"), 1.0), (0.0, float("inf"))])
def test_sklearn_params_rejects_bad_weights(l1: float, l2: float) -> None:
    with pytest.raises(InvalidParameterError, match="must be a finite number >= 0"):
        sklearn_params(l1, l2)


@pytest.mark.parametrize("class_weight", [None, "balanced"])
def test_l2_fit_minimises_the_stated_objective(binary_data, class_weight) -> None:
    X, y = binary_data
    if class_weight == "balanced":  # make it imbalanced so the weights are not all 1
        keep = (y == 1) | (np.arange(len(y)) % 3 == 0)
        X, y = X[keep], y[keep]
    model = fit_logistic_regression(X, y, l1_weight=0.0, l2_weight=1.0, class_weight=class_weight)
    counts = np.bincount(y)
    sw = None if class_weight is None else (len(y) / (2 * counts))[y]
    w, b = _minimise_binary(_standardise(model, X), y.astype(float), 0.0, 1.0, sw)
    np.testing.assert_allclose(model.coef[0], w, atol=1e-4, rtol=0)
    np.testing.assert_allclose(model.intercept[0], b, atol=1e-4, rtol=0)
    assert model.hyperparameters["solver"] == "lbfgs"
    assert model.warnings == []


@pytest.mark.parametrize("l1, l2", [(0.5, 0.5), (3.0, 0.0)])
def test_elastic_net_fit_minimises_the_stated_objective(binary_data, l1, l2) -> None:
    # saga stops when an epoch changes the weights by less than TOLERANCE (1e-6) relative to
    # their size; measured errors are ~1e-5..1e-4, hence 5e-4.
    X, y = binary_data
    model = fit_logistic_regression(X, y, l1_weight=l1, l2_weight=l2)
    w, b = _minimise_binary(_standardise(model, X), y.astype(float), l1, l2)
    np.testing.assert_allclose(model.coef[0], w, atol=5e-4, rtol=0)
    np.testing.assert_allclose(model.intercept[0], b, atol=5e-4, rtol=0)
    assert model.hyperparameters["solver"] == "saga"
    # The L1 term really acts: a strong one zeroes some weights, as the direct minimiser does.
    if l1 == 3.0:
        assert np.sum(np.abs(w) < 1e-8) >= 1
        np.testing.assert_array_equal(model.coef[0] == 0.0, np.abs(w) < 1e-8)


def test_multinomial_fit_minimises_the_stated_objective() -> None:
    X, y = make_classification(150, 5, n_informative=4, n_redundant=0, n_classes=3, random_state=1)
    model = fit_logistic_regression(X, y, l2_weight=2.0)
    Z = _standardise(model, X)
    k, d = 3, Z.shape[1]
    onehot = np.eye(k)[y]

    def objective(p: np.ndarray) -> tuple[float, np.ndarray]:
        W, b = p[: k * d].reshape(k, d), p[k * d :]
        S = Z @ W.T + b
        P = np.exp(S - logsumexp(S, axis=1, keepdims=True))
        value = np.sum(logsumexp(S, axis=1) - np.sum(S * onehot, axis=1)) + W.ravel() @ W.ravel()
        R = P - onehot
        return value, np.concatenate([(R.T @ Z + 2.0 * W).ravel(), R.sum(axis=0)])

    res = minimize(objective, np.zeros(k * d + k), jac=True, method="L-BFGS-B",
                   options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 20000})
    W, b = res.x[: k * d].reshape(k, d), res.x[k * d :]
    np.testing.assert_allclose(model.coef, W, atol=1e-4, rtol=0)
    # Unpenalised softmax intercepts are defined up to a common shift.
    np.testing.assert_allclose(model.intercept - model.intercept.mean(), b - b.mean(), atol=1e-4, rtol=0)


# --------------------------------------------------------------------------- scoring from data


@pytest.mark.parametrize("n_classes", [2, 4])
def test_stored_coefficients_score_like_sklearn(n_classes: int) -> None:
    X, y = make_classification(200, 8, n_informative=6, n_classes=n_classes, random_state=5)
    X = X * 7.0 - 2.0
    model = fit_logistic_regression(X, [f"c{v}" for v in y], l2_weight=0.5)
    estimator = _build_estimator(0.0, 0.5, 1000, None, 0).fit(_standardise(model, X), y)
    np.testing.assert_array_equal(model.coef, estimator.coef_)
    X_new = np.random.default_rng(0).normal(size=(50, 8)) * 10.0
    expected = estimator.predict_proba(_standardise(model, X_new))
    np.testing.assert_allclose(model.predict_proba(X_new), expected, atol=1e-10, rtol=0)
    assert model.predict(X_new) == [f"c{v}" for v in estimator.predict(_standardise(model, X_new))]
    decision = estimator.decision_function(_standardise(model, X_new))
    np.testing.assert_allclose(model.decision_function(X_new), decision, atol=1e-10, rtol=0)
    # A single vector is one row.
    np.testing.assert_array_equal(model.predict_proba(X_new[3]), model.predict_proba(X_new[3:4]))
    np.testing.assert_array_equal(model.predict_proba(list(X_new[3])), model.predict_proba(X_new[3:4]))


def test_record_round_trip_through_json_is_exact(binary_data) -> None:
    X, y = binary_data
    model = fit_logistic_regression(X, [bool(v) for v in y], l1_weight=0.1, l2_weight=1.0, class_weight="balanced")
    record = model.to_record()
    text = json.dumps(record, allow_nan=False)
    loaded = LogisticModel.from_record(json.loads(text))
    assert loaded.to_record() == record
    for name in ("coef", "intercept", "mean", "scale"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name))
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    assert loaded.predict(X) == model.predict(X)
    assert record["classes"] == ["false", "true"] and record["label_type"] == "boolean"
    assert record["hyperparameters"]["class_weight"] == "balanced"
    assert set(record["library_versions"]) == {"numpy", "scipy", "scikit-learn"}


def test_no_penalty_record_is_json_able(binary_data) -> None:
    X, y = binary_data
    model = fit_logistic_regression(X, y, l1_weight=0.0, l2_weight=0.0)
    assert model.hyperparameters["C"] is None  # infinity, stored as null
    json.dumps(model.to_record(), allow_nan=False)


def test_unnormalized_model_has_no_standardisation(binary_data) -> None:
    X, y = binary_data
    model = fit_logistic_regression(X / X.std(axis=0), y, normalize=False)
    assert model.mean is None and model.scale is None
    assert model.to_record()["mean"] is None
    estimator = _build_estimator(0.0, 1.0, 1000, None, 0).fit(X / X.std(axis=0), y)
    np.testing.assert_allclose(model.predict_proba(X / X.std(axis=0)), estimator.predict_proba(X / X.std(axis=0)),
                               atol=1e-10, rtol=0)


def test_constant_column_gets_scale_one() -> None:
    X, y = make_classification(60, 3, n_informative=2, n_redundant=0, random_state=0)
    X = np.column_stack([X, np.full(60, 0.1)])  # 0.1 * 60 / 60 is not exactly 0.1: std ~1e-17
    model = fit_logistic_regression(X, y)
    assert model.scale[3] == 1.0 and model.mean[3] == 0.1
    assert model.coef[0, 3] == 0.0


def test_from_record_rejects_inconsistent_arrays(binary_data) -> None:
    X, y = binary_data
    record = fit_logistic_regression(X, y).to_record()
    with pytest.raises(TrainingError, match=r"mean and scale must have 6 values, got 5 and 6"):
        LogisticModel.from_record({**record, "mean": record["mean"][:5]})
    with pytest.raises(TrainingError, match=r"coef must have shape \[1, d\] for 2 classes"):
        LogisticModel.from_record({**record, "coef": record["coef"] * 2})
    with pytest.raises(TrainingError, match="format"):
        LogisticModel.from_record({**record, "format": "pickle"})


def test_feature_length_mismatch_names_both_lengths(binary_data) -> None:
    X, y = binary_data
    model = fit_logistic_regression(X, y)
    with pytest.raises(TrainingError, match="feature vectors have 5 values but the classifier was trained on 6"):
        model.predict(X[:, :5])


def test_nan_at_prediction_names_ids(binary_data) -> None:
    X, y = binary_data
    model = fit_logistic_regression(X, y)
    bad = X[:3].copy()
    bad[1, 2] = np.nan
    with pytest.raises(TrainingError, match=r"in 1 row\(s\): ids b$"):
        model.predict_proba(bad, ids=["a", "b", "c"])


# --------------------------------------------------------------------------- labels


def test_multiclass_integer_labels_keep_type_and_numeric_order() -> None:
    X, y = make_classification(200, 10, n_informative=6, n_classes=4, random_state=2)
    codes = np.array([2, 10, 1, 30])[y]  # sorted as text this would be 1, 10, 2, 30
    model = fit_logistic_regression(X, list(codes))
    assert model.classes == ["1", "2", "10", "30"] and model.label_type == "integer"
    assert model.coef.shape == (4, 10) and model.intercept.shape == (4,)
    assert model.hyperparameters["multiclass"] == "multinomial"
    predicted = model.predict(X)
    assert set(predicted) <= set(model.classes)
    accuracy = np.mean(np.array(predicted) == np.array([str(c) for c in codes]))
    assert accuracy == pytest.approx(model.metrics["accuracy"])
    assert model.metrics["accuracy"] > 0.6 and "roc_auc" not in model.metrics
    proba = model.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)


def test_boolean_labels_positive_class_is_true() -> None:
    X, y = make_classification(100, 4, random_state=4)
    model = fit_logistic_regression(X, [bool(v) for v in y])
    assert model.classes == ["false", "true"] and model.label_type == "boolean"
    scores = model.decision_function(X)
    assert model.predict(X) == ["true" if s > 0 else "false" for s in scores]
    assert 0.5 < model.metrics["roc_auc"] <= 1.0


def test_canonical_label() -> None:
    assert [canonical_label(v) for v in (True, np.False_, 7, np.int64(-3), "up")] == ["true", "false", "7", "-3", "up"]
    with pytest.raises(TrainingError, match="float"):
        canonical_label(1.5)


@pytest.mark.slow
def test_cmu_faces_four_poses(cmu_faces: Path) -> None:
    from PIL import Image

    files = sorted(glob.glob(os.path.join(cmu_faces, "*", "*_4.pgm")))  # 32x30 versions
    assert len(files) >= 600, f"expected the 624 32x30 CMU faces under {cmu_faces}"
    X, poses, users = [], [], []
    for path in files:
        with Image.open(path) as image:
            X.append(np.asarray(image, dtype=np.float64).ravel() / 255.0)
        user, pose = os.path.basename(path).split("_")[:2]
        poses.append(pose)
        users.append(user)
    X = np.array(X)
    held_out = np.isin(users, sorted(set(users))[::4])  # 5 of the 20 people, unseen in training
    train, test = ~held_out, held_out
    model = fit_logistic_regression(X[train], [p for p, t in zip(poses, train) if t])
    assert model.classes == ["left", "right", "straight", "up"]
    assert model.coef.shape == (4, 960)
    from imgfeat.core.metrics import classification_metrics

    report = classification_metrics([p for p, t in zip(poses, test) if t], model.predict_proba(X[test]), model.classes)
    assert report["n"] == int(test.sum())
    # Raw pixels of people never seen: far above chance (0.25); measured 0.60.
    assert report["accuracy"] > 0.45
    assert model.metrics["accuracy"] > 0.95


# --------------------------------------------------------------------------- bad input


def test_single_class_is_an_error() -> None:
    with pytest.raises(TrainingError, match="all 3 training rows have the same label 'cat'"):
        fit_logistic_regression(np.eye(3), ["cat"] * 3)


def test_nan_and_inf_features_name_ids() -> None:
    X = np.ones((14, 2))
    X[:, 0] = np.arange(14)
    bad_rows = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12]
    X[bad_rows, 1] = np.nan
    X[12, 1] = np.inf
    ids = [100 + i for i in range(14)]
    with pytest.raises(TrainingError) as excinfo:
        fit_logistic_regression(X, [i % 2 for i in range(14)], ids=ids)
    message = excinfo.value.message
    assert "in 11 row(s): ids 101, 102, 103, 104, 105, 106, 107, 108, 109, 110 and 1 more" in message
    assert "112" not in message


def test_null_element_inside_a_row_is_reported_as_nan() -> None:
    rows = [[0.0, 1.0], [1.0, None], [2.0, 0.0]]
    with pytest.raises(TrainingError, match="NULL elements in 1 row.*ids b"):
        fit_logistic_regression(rows, ["x", "y", "x"], ids=["a", "b", "c"])


def test_ragged_rows_name_ids() -> None:
    rows = [[0.0, 1.0], [1.0, 2.0, 3.0], [2.0, 0.0], [3.0, 1.0]]
    with pytest.raises(TrainingError, match=r"most rows have 2 values but ids 11 have \[3\]"):
        fit_logistic_regression(rows, ["a", "b", "a", "b"], ids=[10, 11, 12, 13])


def test_null_feature_row_and_null_label_name_ids() -> None:
    with pytest.raises(TrainingError, match=r"features are NULL in 1 row\(s\): ids 2$"):
        fit_logistic_regression([[0.0], None, [1.0]], ["a", "b", "a"], ids=[1, 2, 3])
    with pytest.raises(TrainingError, match=r"labels are NULL in 1 row\(s\): ids 3$"):
        fit_logistic_regression([[0.0], [2.0], [1.0]], ["a", "b", None], ids=[1, 2, 3])


def test_mixed_label_types_are_an_error() -> None:
    with pytest.raises(TrainingError, match="labels mix types: text at ids a; integer at ids b, c"):
        fit_logistic_regression([[0.0], [2.0], [1.0]], ["x", 1, 2], ids=["a", "b", "c"])


def test_too_few_rows() -> None:
    with pytest.raises(TrainingError, match="need at least 2 training rows, got 1"):
        fit_logistic_regression([[1.0, 2.0]], ["a"])
    with pytest.raises(TrainingError, match="need at least 2 training rows, got 0"):
        fit_logistic_regression([], [])


def test_bad_parameters() -> None:
    X, y = np.eye(4), ["a", "b", "a", "b"]
    with pytest.raises(InvalidParameterError, match="l1_weight"):
        fit_logistic_regression(X, y, l1_weight=-0.5)
    with pytest.raises(InvalidParameterError, match="class_weight must be NULL or 'balanced'"):
        fit_logistic_regression(X, y, class_weight="auto")
    with pytest.raises(InvalidParameterError, match="max_iterations"):
        fit_logistic_regression(X, y, max_iterations=0)
    with pytest.raises(InvalidParameterError, match="ids has 3 values"):
        fit_logistic_regression(X, y, ids=[1, 2, 3])


def test_convergence_warning_becomes_advice(binary_data) -> None:
    X, y = binary_data
    # pytest runs with warnings as errors: a ConvergenceWarning escaping would fail this test.
    model = fit_logistic_regression(X, y, max_iterations=2, normalize=False)
    assert model.warnings == [
        "the lbfgs solver did not converge in 2 iterations: raise max_iterations, or set normalize => true"
    ]
    assert model.n_iter == 2
    converged = fit_logistic_regression(X, y)
    assert converged.warnings == [] and converged.n_iter < 1000
