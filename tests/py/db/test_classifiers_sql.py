"""Classifiers in the database: CALL imgfeat.train_logistic_regression, imgfeat.classifiers,
imgfeat.predict / predict_proba / predict_table, imgfeat.evaluate.

Most tests use small feature tables made here (numpy draws inserted into a real[] column);
the acceptance tests at the end featurize the CMU faces with the synthetic resnet18 and
compare with scikit-learn run directly in this process. Tables and classifiers are named
``clf_*`` (the test database is shared by the session).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from fix_roles import parallel_forcing_setting
from imgfeat.core import training

ANALYST = "imgfeat_test_analyst"


# --------------------------------------------------------------------------- helpers


def blobs(n: int, d: int, k: int, seed: int, spread: float = 1.5) -> tuple[np.ndarray, np.ndarray]:
    """``n`` float32 rows ``[n, d]`` in ``k`` overlapping Gaussian clusters; class index ``[n]``."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, spread, size=(k, d))
    y = np.arange(n) % k
    X = centers[y] + rng.normal(0.0, 1.0, size=(n, d)) + 3.0  # offset: standardisation matters
    return X.astype(np.float32), y


def make_table(
    conn: psycopg.Connection[Any], table: str, X: Any, labels: list[Any], *, label_type: str = "text",
    ids: list[Any] | None = None, extra: str = "",
) -> None:
    """``table (id bigint, features real[], label <label_type>)``; ``ids`` default 1..n; ``id`` omitted if ``ids == []``."""
    conn.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
    with_id = ids != []
    cols = ("id bigint, " if with_id else "") + f"features real[], label {label_type}{extra}"
    conn.execute(f"CREATE TABLE {table} ({cols})")
    ids = list(range(1, len(labels) + 1)) if ids is None else ids
    rows = [None if x is None else [None if v is None else float(v) for v in x] for x in X]
    with conn.cursor() as cur:
        if with_id:
            cur.executemany(f"INSERT INTO {table} (id, features, label) VALUES (%s, %s::real[], %s)", list(zip(ids, rows, labels)))
        else:
            cur.executemany(f"INSERT INTO {table} (features, label) VALUES (%s::real[], %s)", list(zip(rows, labels)))


def classifier_row(conn: psycopg.Connection[Any], name: str) -> dict[str, Any]:
    cur = conn.execute("SELECT *, array_dims(coefficients) AS dims FROM imgfeat.classifiers WHERE name = %s", (name,))
    row = cur.fetchone()
    assert row is not None, name
    return dict(zip([c.name for c in cur.description or []], row))


def notices(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    """``(severity, message)`` of the notices ``conn`` receives from now on (a Diagnostic is
    only valid inside the handler)."""
    seen: list[tuple[str, str]] = []
    conn.add_notice_handler(lambda d: seen.append((d.severity_nonlocalized or "", d.message_primary or "")))
    return seen


@pytest.fixture
def binary_table(analyst: psycopg.Connection[Any]) -> Iterator[tuple[str, np.ndarray, list[str]]]:
    X, y = blobs(80, 6, 2, seed=1)
    labels = [["cat", "dog"][i] for i in y]
    make_table(analyst, "clf_pets", X, labels)
    yield "clf_pets", X, labels


# --------------------------------------------------------------------------- training and storage


def test_binary_classifier_is_stored_as_the_core_fits_it(
    analyst: psycopg.Connection[Any], binary_table: tuple[str, np.ndarray, list[str]]
) -> None:
    table, X, labels = binary_table
    seen = notices(analyst)
    analyst.execute(f"CALL imgfeat.train_logistic_regression('clf_pets', '{table}', replace => true)")
    expected = training.fit_logistic_regression(X.astype(np.float64), labels)
    row = classifier_row(analyst, "clf_pets")
    assert row["classes"] == ["cat", "dog"] and row["label_type"] == "text"
    assert row["dims"] == "[1:1][1:6]" and row["feature_dim"] == 6
    np.testing.assert_allclose(np.array(row["coefficients"]), expected.coef, rtol=0, atol=1e-12)
    np.testing.assert_allclose(row["intercepts"], expected.intercept, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(row["scale_mean"], expected.mean)
    np.testing.assert_array_equal(row["scale_std"], expected.scale)
    hp = row["hyperparameters"]
    assert {k: hp[k] for k in ("l1_weight", "l2_weight", "max_iterations", "normalize", "class_weight", "C", "l1_ratio", "solver")} == {
        "l1_weight": 0.0, "l2_weight": 1.0, "max_iterations": 1000, "normalize": True, "class_weight": None,
        "C": 1.0, "l1_ratio": 0.0, "solver": "lbfgs",
    }
    assert row["training_rows"] == 80 and row["model_name"] is None
    assert row["training_source"] == "public.clf_pets"
    assert row["training_metrics"]["accuracy"] == pytest.approx(expected.metrics["accuracy"], abs=1e-12)
    assert set(row["training_metrics"]) == {"accuracy", "log_loss", "roc_auc"}
    assert set(row["library_versions"]) == {"numpy", "scipy", "scikit-learn"}
    assert row["trained_by"] == ANALYST and row["owner"] == ANALYST and row["format"] == training.RECORD_FORMAT
    assert any("trained classifier 'clf_pets'" in m and "80 rows x 6 features" in m for _, m in seen)


def test_predict_and_proba_agree_with_the_model(
    analyst: psycopg.Connection[Any], binary_table: tuple[str, np.ndarray, list[str]]
) -> None:
    table, X, labels = binary_table
    analyst.execute(f"CALL imgfeat.train_logistic_regression('clf_pets', '{table}', replace => true)")
    model = training.fit_logistic_regression(X.astype(np.float64), labels)
    rows = analyst.execute(
        f"SELECT imgfeat.predict('clf_pets', features), imgfeat.predict_proba('clf_pets', features) FROM {table} ORDER BY id"
    ).fetchall()
    assert [r[0] for r in rows] == model.predict(X.astype(np.float64))
    proba = np.array([[r[1]["cat"], r[1]["dog"]] for r in rows])
    np.testing.assert_allclose(proba, model.predict_proba(X.astype(np.float64)), rtol=0, atol=1e-12)
    assert all(set(r[1]) == {"cat", "dog"} for r in rows)
    # the set-based form returns the same labels and the probability of that label
    table_rows = analyst.execute(f"SELECT id, label, probability FROM imgfeat.predict_table('clf_pets', '{table}')").fetchall()
    assert [t[0] for t in table_rows] == [str(i) for i in range(1, 81)]
    assert [t[1] for t in table_rows] == [r[0] for r in rows]
    np.testing.assert_allclose([t[2] for t in table_rows], proba.max(axis=1), rtol=0, atol=1e-12)
    assert analyst.execute("SELECT imgfeat.predict('clf_pets', NULL), imgfeat.predict_proba('clf_pets', NULL)").fetchone() == (None, None)


def test_predict_table_null_features_give_null_rows(analyst: psycopg.Connection[Any], binary_table: Any) -> None:
    table, X, labels = binary_table
    analyst.execute(f"CALL imgfeat.train_logistic_regression('clf_pets', '{table}', replace => true)")
    analyst.execute(f"INSERT INTO {table} VALUES (1000, NULL, 'cat')")
    last = analyst.execute(f"SELECT * FROM imgfeat.predict_table('clf_pets', '{table}') WHERE id = '1000'").fetchall()
    assert last == [("1000", None, None)]


def test_integer_labels_multiclass(analyst: psycopg.Connection[Any]) -> None:
    X, y = blobs(90, 4, 3, seed=2)
    make_table(analyst, "clf_ints", X, [int(v) * 10 for v in y], label_type="integer")
    analyst.execute("CALL imgfeat.train_logistic_regression('clf_ints', 'clf_ints', replace => true)")
    row = classifier_row(analyst, "clf_ints")
    assert row["classes"] == ["0", "10", "20"] and row["label_type"] == "integer"
    assert row["dims"] == "[1:3][1:4]" and len(row["intercepts"]) == 3
    assert row["hyperparameters"]["multiclass"] == "multinomial"
    assert "roc_auc" not in row["training_metrics"]
    model = training.fit_logistic_regression(X.astype(np.float64), [int(v) * 10 for v in y])
    got = [r[0] for r in analyst.execute("SELECT imgfeat.predict('clf_ints', features) FROM clf_ints ORDER BY id")]
    assert got == model.predict(X.astype(np.float64))
    report = analyst.execute("SELECT imgfeat.evaluate('clf_ints', 'clf_ints')").fetchone()[0]  # type: ignore[index]
    assert report["n"] == 90 and "auc" not in report and set(report["per_class"]) == {"0", "10", "20"}
    assert report["accuracy"] == pytest.approx(np.mean(np.array(got) == np.array([str(int(v) * 10) for v in y])))


def test_boolean_labels(analyst: psycopg.Connection[Any]) -> None:
    X, y = blobs(40, 3, 2, seed=3)
    make_table(analyst, "clf_bools", X, [bool(v) for v in y], label_type="boolean")
    analyst.execute("CALL imgfeat.train_logistic_regression('clf_bools', 'clf_bools', replace => true)")
    row = classifier_row(analyst, "clf_bools")
    assert row["classes"] == ["false", "true"] and row["label_type"] == "boolean"
    got = {r[0] for r in analyst.execute("SELECT imgfeat.predict('clf_bools', features) FROM clf_bools")}
    assert got == {"false", "true"}
    report = analyst.execute("SELECT imgfeat.evaluate('clf_bools', 'clf_bools')").fetchone()[0]  # type: ignore[index]
    assert report["n"] == 40 and 0.5 < report["auc"] <= 1.0


def test_hyperparameters_normalize_false_l1_balanced(analyst: psycopg.Connection[Any], binary_table: Any) -> None:
    table, X, labels = binary_table
    analyst.execute(
        f"CALL imgfeat.train_logistic_regression('clf_pets_l1', '{table}', l1_weight => 0.5, l2_weight => 1.5, "
        "\"normalize\" => false, class_weight => 'balanced', max_iterations => 5000, replace => true)"
    )
    row = classifier_row(analyst, "clf_pets_l1")
    assert row["scale_mean"] is None and row["scale_std"] is None
    hp = row["hyperparameters"]
    assert (hp["C"], hp["l1_ratio"], hp["solver"], hp["normalize"], hp["class_weight"]) == (0.5, 0.25, "saga", False, "balanced")
    expected = training.fit_logistic_regression(
        X.astype(np.float64), labels, l1_weight=0.5, l2_weight=1.5, normalize=False, class_weight="balanced",
        max_iterations=5000,
    )
    np.testing.assert_allclose(np.array(row["coefficients"]), expected.coef, rtol=0, atol=1e-9)


def test_featurizer_model_name_recorded(analyst: psycopg.Connection[Any]) -> None:
    X, y = blobs(20, 3, 2, seed=4)
    make_table(analyst, "clf_withmodel", X, [str(v) for v in y], extra=", model_name text DEFAULT 'resnet18'")
    analyst.execute("CALL imgfeat.train_logistic_regression('clf_withmodel', 'clf_withmodel', replace => true)")
    assert classifier_row(analyst, "clf_withmodel")["model_name"] == "resnet18"
    analyst.execute("UPDATE clf_withmodel SET model_name = 'alexnet' WHERE id = 3")
    with pytest.raises(psycopg.errors.InvalidParameterValue) as exc:
        analyst.execute("CALL imgfeat.train_logistic_regression('clf_withmodel', 'clf_withmodel', replace => true)")
    assert "2 featurizer models" in (exc.value.diag.message_primary or "")


def test_quoted_identifiers_and_views(analyst: psycopg.Connection[Any]) -> None:
    X, y = blobs(30, 3, 2, seed=5)
    analyst.execute('DROP TABLE IF EXISTS "Clf Odd""Table" CASCADE')
    analyst.execute('CREATE TABLE "Clf Odd""Table" (id int, "Feat Vec" real[], "the label" varchar(5))')
    with analyst.cursor() as cur:
        cur.executemany('INSERT INTO "Clf Odd""Table" VALUES (%s, %s::real[], %s)',
                        [(i, [float(v) for v in x], "ab"[c]) for i, (x, c) in enumerate(zip(X, y))])
    analyst.execute(
        "CALL imgfeat.train_logistic_regression('clf_odd', '\"Clf Odd\"\"Table\"', features_column => 'Feat Vec', "
        "label_column => 'the label', replace => true)"
    )
    assert classifier_row(analyst, "clf_odd")["training_source"] == 'public."Clf Odd""Table"'
    analyst.execute('CREATE OR REPLACE VIEW clf_odd_view AS SELECT "Feat Vec" AS features, "the label" AS label FROM "Clf Odd""Table"')
    report = analyst.execute("SELECT imgfeat.evaluate('clf_odd', 'clf_odd_view')").fetchone()[0]  # type: ignore[index]
    assert report["n"] == 30
    with pytest.raises(psycopg.errors.InvalidParameterValue) as exc:
        analyst.execute("CALL imgfeat.train_logistic_regression('clf_odd2', '\"Clf Odd\"\"Table\"')")
    assert "'features' does not exist" in (exc.value.diag.message_primary or "")
    assert "Feat Vec" in (exc.value.diag.message_detail or "")


# --------------------------------------------------------------------------- the cache


def test_cache_reloads_when_the_classifier_changes(
    analyst: psycopg.Connection[Any], analyst_dsn: str, conn: psycopg.Connection[Any]
) -> None:
    X = np.array([[0.0], [1.0], [2.0], [3.0]], dtype=np.float32)
    make_table(analyst, "clf_swap", X, ["low", "low", "high", "high"])
    analyst.execute("CALL imgfeat.train_logistic_regression('clf_swap', 'clf_swap', replace => true)")
    q = "SELECT imgfeat.predict('clf_swap', '{3}')"
    assert analyst.execute(q).fetchone() == ("high",)
    with psycopg.connect(analyst_dsn, autocommit=True) as other:  # another session replaces it
        other.execute("UPDATE clf_swap SET label = CASE label WHEN 'low' THEN 'high' ELSE 'low' END")
        other.execute("CALL imgfeat.train_logistic_regression('clf_swap', 'clf_swap', replace => true)")
    assert analyst.execute(q).fetchone() == ("low",)
    conn.execute("UPDATE imgfeat.classifiers SET intercepts = ARRAY[-100.0] WHERE name = 'clf_swap'")  # a superuser's edit
    assert analyst.execute(q).fetchone() == ("high",)  # intercept -100: classes[1] = 'high'
    assert analyst.execute("SELECT imgfeat.drop_classifier('clf_swap')").fetchone() == (True,)
    with pytest.raises(psycopg.errors.UndefinedObject):
        analyst.execute(q)


def test_replace_keeps_owner(analyst: psycopg.Connection[Any], conn: psycopg.Connection[Any], binary_table: Any) -> None:
    table, _, _ = binary_table
    analyst.execute(f"CALL imgfeat.train_logistic_regression('clf_owned', '{table}', replace => true)")
    first = classifier_row(analyst, "clf_owned")["trained_at"]
    conn.execute(f"CALL imgfeat.train_logistic_regression('clf_owned', 'public.{table}', l2_weight => 2, replace => true)")
    row = classifier_row(analyst, "clf_owned")
    assert (row["owner"], row["trained_by"], row["hyperparameters"]["l2_weight"]) == (ANALYST, "postgres", 2.0)
    assert row["trained_at"] > first


# --------------------------------------------------------------------------- errors


def expect_error(conn: psycopg.Connection[Any], sql: str, error: type[Exception], *fragments: str) -> Any:
    with pytest.raises(error) as exc:
        conn.execute(sql)
    diag = exc.value.diag  # type: ignore[attr-defined]
    text = f"{diag.message_primary}\n{diag.message_detail}\n{diag.message_hint}"
    for fragment in fragments:
        assert fragment in text, text
    assert "Traceback" not in (diag.message_primary or "")
    return diag


def test_single_class_is_an_error(analyst: psycopg.Connection[Any]) -> None:
    make_table(analyst, "clf_one", np.ones((5, 2)), ["x"] * 5)
    expect_error(
        analyst, "CALL imgfeat.train_logistic_regression('clf_one', 'clf_one')", psycopg.errors.InvalidParameterValue,
        "all 5 training rows have the same label 'x'", "at least 2 classes",
    )
    assert analyst.execute("SELECT count(*) FROM imgfeat.classifiers WHERE name = 'clf_one'").fetchone() == (0,)


def test_null_and_non_finite_features_name_ids(analyst: psycopg.Connection[Any]) -> None:
    X: list[Any] = [[float(i), 1.0] for i in range(30)]
    X[6] = None
    X[8] = None
    make_table(analyst, "clf_nulls", X, ["a", "b"] * 15, ids=[100 + i for i in range(30)])
    expect_error(analyst, "CALL imgfeat.train_logistic_regression('clf_nulls', 'clf_nulls')",
                 psycopg.errors.InvalidParameterValue, "NULL in 2 row(s): ids 106, 108")
    analyst.execute("UPDATE clf_nulls SET features = '{NaN,1}' WHERE features IS NULL")
    analyst.execute("UPDATE clf_nulls SET features = '{1,Infinity}' WHERE id = 101")
    analyst.execute("UPDATE clf_nulls SET features = '{1,NULL}' WHERE id = 120")
    expect_error(analyst, "CALL imgfeat.train_logistic_regression('clf_nulls', 'clf_nulls')",
                 psycopg.errors.InvalidParameterValue, "NaN, infinity or NULL elements in 4 row(s): ids 101, 106, 108, 120")
    analyst.execute("UPDATE clf_nulls SET features = '{NaN,NaN}'")  # 30 bad rows: 10 named
    diag = expect_error(analyst, "CALL imgfeat.train_logistic_regression('clf_nulls', 'clf_nulls')",
                        psycopg.errors.InvalidParameterValue, "ids 100, 101, 102, 103, 104, 105, 106, 107, 108, 109 and 20 more")
    assert "110" not in (diag.message_primary or "")


def test_null_labels_name_ids(analyst: psycopg.Connection[Any]) -> None:
    make_table(analyst, "clf_nolabel", [[1.0], [2.0], [3.0]], ["a", None, "b"])
    expect_error(analyst, "CALL imgfeat.train_logistic_regression('clf_nolabel', 'clf_nolabel')",
                 psycopg.errors.InvalidParameterValue, "labels are NULL in 1 row(s): ids 2")


def test_ragged_features_name_ids(analyst: psycopg.Connection[Any]) -> None:
    X = [[1.0, 2.0]] * 6 + [[1.0, 2.0, 3.0]]
    make_table(analyst, "clf_ragged", X, ["a", "b"] * 3 + ["a"])
    expect_error(analyst, "CALL imgfeat.train_logistic_regression('clf_ragged', 'clf_ragged')",
                 psycopg.errors.InvalidParameterValue, "most rows have 2 values but ids 7 have [3]")
    analyst.execute("UPDATE clf_ragged SET features = '{{1,2},{3,4}}' WHERE id = 7")
    expect_error(analyst, "CALL imgfeat.train_logistic_regression('clf_ragged', 'clf_ragged')",
                 psycopg.errors.InvalidParameterValue, "one-dimensional", "ids 7")


def test_rows_without_id_are_named_by_ctid_or_number(analyst: psycopg.Connection[Any]) -> None:
    make_table(analyst, "clf_noid", [[1.0], None, [3.0]], ["a", "b", "a"], ids=[])
    expect_error(analyst, "CALL imgfeat.train_logistic_regression('clf_noid', 'clf_noid')",
                 psycopg.errors.InvalidParameterValue, "ids (0,2)")
    analyst.execute("CREATE OR REPLACE VIEW clf_noid_view AS SELECT features, label FROM clf_noid")
    expect_error(analyst, "CALL imgfeat.train_logistic_regression('clf_noid', 'clf_noid_view')",
                 psycopg.errors.InvalidParameterValue, "rows 1 (0-based)")


def test_predict_errors(analyst: psycopg.Connection[Any], binary_table: Any) -> None:
    table, _, _ = binary_table
    analyst.execute(f"CALL imgfeat.train_logistic_regression('clf_pets', '{table}', replace => true)")
    expect_error(analyst, "SELECT imgfeat.predict('clf_pets', '{1,2,3}')", psycopg.errors.InvalidParameterValue,
                 "features have 3 values but classifier 'clf_pets' expects 6")
    expect_error(analyst, "SELECT imgfeat.predict_proba('clf_pets', '{1,2,3,4,5,NaN}')", psycopg.errors.InvalidParameterValue,
                 "NaN, infinity or NULL", "first at [6]")
    expect_error(analyst, "SELECT imgfeat.predict('clf_pets', '{1,2,NULL,4,5,6}')", psycopg.errors.InvalidParameterValue,
                 "first at [3]")
    expect_error(analyst, "SELECT imgfeat.predict(NULL, '{1}')", psycopg.errors.InvalidParameterValue,
                 "classifier_name must not be NULL")
    diag = expect_error(analyst, "SELECT imgfeat.predict('clf_no_such', '{1}')", psycopg.errors.UndefinedObject,
                        "classifier 'clf_no_such' does not exist", "known classifiers:", "clf_pets")
    assert (diag.message_detail or "").startswith("known classifiers:")
    analyst.execute(f"UPDATE {table} SET features = '{{1,2}}' WHERE id IN (3, 5)")
    expect_error(analyst, f"SELECT * FROM imgfeat.predict_table('clf_pets', '{table}')", psycopg.errors.InvalidParameterValue,
                 "features of ids 3, 5 do not have the 6 values")
    expect_error(analyst, f"SELECT imgfeat.evaluate('clf_pets', '{table}')", psycopg.errors.InvalidParameterValue,
                 "ids 3, 5")


def test_existing_name_without_replace(analyst: psycopg.Connection[Any], binary_table: Any) -> None:
    table, _, _ = binary_table
    analyst.execute(f"CALL imgfeat.train_logistic_regression('clf_taken', '{table}', replace => true)")
    expect_error(analyst, f"CALL imgfeat.train_logistic_regression('clf_taken', '{table}')",
                 psycopg.errors.DuplicateObject, "classifier 'clf_taken' already exists", "replace => true")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ("'Bad Name', 'clf_pets'", "invalid classifier name"),
        ("'clf_x', 'clf_pets', l2_weight => -1", "l2_weight must be a finite number >= 0"),
        ("'clf_x', 'clf_pets', l1_weight => 'NaN'", "l1_weight must be a finite number >= 0"),
        ("'clf_x', 'clf_pets', max_iterations => 0", "max_iterations must be >= 1"),
        ("'clf_x', 'clf_pets', class_weight => 'heavy'", "class_weight must be NULL or 'balanced'"),
        ("'clf_x', 'clf_pets', label_column => 'features'", "labels must be text, integer or boolean"),
        ("'clf_x', 'clf_pets', features_column => 'label'", "it must be an array of numbers"),
    ],
)
def test_bad_arguments(analyst: psycopg.Connection[Any], binary_table: Any, args: str, fragment: str) -> None:
    expect_error(analyst, f"CALL imgfeat.train_logistic_regression({args})", psycopg.errors.InvalidParameterValue, fragment)


def test_training_needs_select_on_the_source(analyst: psycopg.Connection[Any], conn: psycopg.Connection[Any]) -> None:
    make_table(conn, "public.clf_secret", [[1.0], [2.0]], ["a", "b"])
    expect_error(analyst, "CALL imgfeat.train_logistic_regression('clf_secret', 'public.clf_secret')",
                 psycopg.errors.InsufficientPrivilege, "permission denied for table clf_secret")
    conn.execute("CALL imgfeat.train_logistic_regression('clf_secret', 'public.clf_secret', replace => true)")
    expect_error(analyst, "SELECT imgfeat.evaluate('clf_secret', 'public.clf_secret')",
                 psycopg.errors.InsufficientPrivilege, "permission denied")


def test_convergence_warning_becomes_a_notice(analyst: psycopg.Connection[Any], binary_table: Any) -> None:
    table, _, _ = binary_table
    seen = notices(analyst)
    analyst.execute(f"CALL imgfeat.train_logistic_regression('clf_hasty', '{table}', max_iterations => 1, replace => true)")
    advice = [(severity, m) for severity, m in seen if "did not converge" in m]
    assert len(advice) == 1 and "raise max_iterations" in advice[0][1] and advice[0][0] == "NOTICE"
    assert classifier_row(analyst, "clf_hasty")["warnings"] == [
        "the lbfgs solver did not converge in 1 iterations: raise max_iterations"
    ]


# --------------------------------------------------------------------------- evaluate and the catalog


def test_evaluate_binary_report(analyst: psycopg.Connection[Any], binary_table: Any) -> None:
    table, _, labels = binary_table
    analyst.execute(f"CALL imgfeat.train_logistic_regression('clf_pets', '{table}', replace => true)")
    report = analyst.execute(f"SELECT imgfeat.evaluate('clf_pets', '{table}')").fetchone()[0]  # type: ignore[index]
    predicted = [r[0] for r in analyst.execute(f"SELECT imgfeat.predict('clf_pets', features) FROM {table} ORDER BY id")]
    assert report["n"] == 80
    assert report["accuracy"] == pytest.approx(np.mean(np.array(predicted) == np.array(labels)), abs=1e-12)
    matrix = report["confusion_matrix"]
    assert matrix["labels"] == ["cat", "dog"]
    assert matrix["matrix"][0][0] == sum(p == t == "cat" for p, t in zip(predicted, labels))
    assert sum(map(sum, matrix["matrix"])) == 80
    assert set(report["per_class"]["dog"]) == {"precision", "recall", "f1", "support"}
    assert 0.5 < report["auc"] <= 1.0
    roc = report["roc"]
    assert len(roc["fpr"]) == len(roc["tpr"]) == len(roc["thresholds"]) >= 2
    assert roc["fpr"][0] == 0.0 and roc["tpr"][-1] == 1.0 and all(math.isfinite(t) for t in roc["thresholds"])


def test_catalog_entries(conn: psycopg.Connection[Any]) -> None:
    dumped = conn.execute(
        "SELECT 'imgfeat.classifiers'::regclass = ANY (extconfig) FROM pg_extension WHERE extname = 'imgfeat'"
    ).fetchone()
    assert dumped == (True,)
    comments = conn.execute(
        "SELECT p.proname, obj_description(p.oid, 'pg_proc') FROM pg_proc p "
        "WHERE p.pronamespace = 'imgfeat'::regnamespace AND p.proname IN "
        "('train_logistic_regression', 'predict', 'predict_proba', 'predict_table', 'evaluate')"
    ).fetchall()
    assert len(comments) == 5 and all(c and len(c) > 80 for _, c in comments)
    assert "C = 1 / (l1_weight + l2_weight)" in dict(comments)["train_logistic_regression"]
    assert conn.execute("SELECT obj_description('imgfeat.classifiers'::regclass, 'pg_class') IS NOT NULL").fetchone() == (True,)
    labels = conn.execute(
        "SELECT pronamespace::regnamespace::text || '.' || proname, provolatile, proparallel, prosecdef FROM pg_proc "
        "WHERE pronamespace IN ('imgfeat'::regnamespace, 'imgfeat_internal'::regnamespace) "
        "AND proname IN ('predict', 'predict_proba', 'classify', 'predict_table', 'evaluate') ORDER BY 1"
    ).fetchall()
    # predict and predict_proba are the only callers of the internal classify (SECURITY DEFINER)
    assert labels == [
        ("imgfeat.evaluate", "s", "u", False), ("imgfeat.predict", "s", "s", True),
        ("imgfeat.predict_proba", "s", "s", True), ("imgfeat.predict_table", "s", "u", False),
        ("imgfeat_internal.classify", "s", "s", False),
    ]


def test_predict_runs_in_parallel_workers(conn: psycopg.Connection[Any], binary_table: Any) -> None:
    """predict / predict_proba are PARALLEL SAFE for real: forced into a parallel worker (no SPI
    is allowed there), they give the serial results; predict_table stays serial (PARALLEL UNSAFE)."""
    table, _, _ = binary_table
    conn.execute(f"CALL imgfeat.train_logistic_regression('clf_pets', 'public.{table}', replace => true)")
    query = (f"SELECT id, imgfeat.predict('clf_pets', features), imgfeat.predict_proba('clf_pets', features) "
             f"FROM public.{table} ORDER BY id")
    serial = conn.execute(query).fetchall()
    force = parallel_forcing_setting(conn)  # force_parallel_mode, debug_parallel_query from PostgreSQL 16
    with conn.transaction():
        for setting in ("parallel_setup_cost = 0", "parallel_tuple_cost = 0", "min_parallel_table_scan_size = 0",
                        "max_parallel_workers_per_gather = 2", f"{force} = on"):
            conn.execute(f"SET LOCAL {setting}")
        plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN (ANALYZE, VERBOSE, COSTS OFF) {query}"))
        parallel = conn.execute(query).fetchall()
        table_plan = "\n".join(r[0] for r in conn.execute(
            f"EXPLAIN SELECT * FROM imgfeat.predict_table('clf_pets', 'public.{table}')"))
        with pytest.raises(psycopg.errors.UndefinedObject) as exc, conn.transaction():
            conn.execute(f"SELECT imgfeat.predict('clf_no_such', features) FROM public.{table}")
    assert "Gather" in plan and "Workers Launched: 0" not in plan, plan
    assert parallel == serial
    assert "Gather" not in table_plan
    # in a worker no query can list the known classifiers: the detail says how to
    assert exc.value.diag.message_detail == "list them with SELECT name FROM imgfeat.classifiers"


# --------------------------------------------------------------------------- acceptance: CMU faces


POSES = ("left", "right", "straight", "up")


def split_rule(files: list[Path]) -> dict[Path, str]:
    """The documented split: within each pose, files sorted by path alternate train (even
    index) / test (odd index). Left/right: 157 left -> 79 train + 78 test, 155 right -> 78 + 77,
    so 157 train / 155 test; the four poses: 313 train / 311 test."""
    split: dict[Path, str] = {}
    for pose in POSES:
        for i, p in enumerate(sorted(f for f in files if f.stem.split("_")[1] == pose)):
            split[p] = "train" if i % 2 == 0 else "test"
    return split


@pytest.fixture(scope="module")
def cmu_features(cmu_faces: Path, analyst_dsn: str, resnet18: str) -> str:
    """All full-resolution CMU faces of the four poses (624), featurized once by the analyst with
    CALL imgfeat.featurize; views ``clf_cmu_{lr,pose}_{train,test}`` (id, model_name, features, label)."""
    files = sorted(p for p in cmu_faces.glob("*/*.pgm") if len(p.stem.split("_")) == 4)
    split = split_rule(files)
    with psycopg.connect(analyst_dsn, autocommit=True) as a:
        a.execute("DROP TABLE IF EXISTS clf_cmu_images, clf_cmu_features CASCADE")
        a.execute("CREATE TABLE clf_cmu_images (id bigint PRIMARY KEY, image bytea, label text, split text, path text)")
        with a.cursor().copy("COPY clf_cmu_images FROM STDIN") as copy:
            for i, p in enumerate(files, start=1):
                copy.write_row((i, p.read_bytes(), p.stem.split("_")[1], split[p], str(p)))
        a.execute("CALL imgfeat.featurize('clf_cmu_images', 'clf_cmu_features', %s)", (resnet18,))
        for task, poses in (("lr", "('left', 'right')"), ("pose", "('left', 'right', 'straight', 'up')")):
            for side in ("train", "test"):
                a.execute(
                    f"CREATE VIEW clf_cmu_{task}_{side} AS SELECT f.id, f.model_name, f.features, i.label "
                    f"FROM clf_cmu_features f JOIN clf_cmu_images i USING (id) "
                    f"WHERE i.split = '{side}' AND i.label IN {poses}"
                )
    return resnet18


def sklearn_reference(analyst: psycopg.Connection[Any], task: str) -> tuple[Any, Any, np.ndarray, list[str], list[int]]:
    """StandardScaler + LogisticRegression with the documented equivalent of the defaults
    (l1_weight 0, l2_weight 1, max_iterations 1000): ``sklearn_params(0, 1)`` = C 1, l1_ratio 0,
    lbfgs; tol = ``training.TOLERANCE``. Returns (scaler, fitted model, test X, test labels, test ids)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    def rows(side: str) -> tuple[np.ndarray, list[str], list[int]]:
        data = analyst.execute(f"SELECT id, features, label FROM clf_cmu_{task}_{side} ORDER BY id").fetchall()
        # real[] arrives as the shortest decimal that round-trips to float32: back to float32
        # first, then float64 exactly as the server reads it
        X = np.array([r[1] for r in data], dtype=np.float32).astype(np.float64)
        return X, [r[2] for r in data], [r[0] for r in data]

    X_train, y_train, _ = rows("train")
    X_test, y_test, test_ids = rows("test")
    scaler = StandardScaler().fit(X_train)
    model = LogisticRegression(**training.sklearn_params(0.0, 1.0), tol=training.TOLERANCE, max_iter=1000)
    model.fit(scaler.transform(X_train), y_train)
    return scaler, model, X_test, y_test, test_ids


@pytest.mark.slow
def test_cmu_left_right_equals_scikit_learn(analyst: psycopg.Connection[Any], cmu_features: str) -> None:
    """Train on 157 faces, evaluate on 155: accuracy equals scikit-learn's on the same rows, the
    coefficients agree within 1e-6 (both in the standardised space: our scale_mean/scale_std are
    StandardScaler's mean_/scale_), and predict agrees row by row."""
    assert analyst.execute("SELECT count(*) FROM clf_cmu_lr_train").fetchone() == (157,)
    assert analyst.execute("SELECT count(*) FROM clf_cmu_lr_test").fetchone() == (155,)
    analyst.execute("CALL imgfeat.train_logistic_regression('clf_cmu_lr', 'clf_cmu_lr_train', replace => true)")
    report = analyst.execute("SELECT imgfeat.evaluate('clf_cmu_lr', 'clf_cmu_lr_test')").fetchone()[0]  # type: ignore[index]
    scaler, reference, X_test, y_test, test_ids = sklearn_reference(analyst, "lr")
    expected_accuracy = reference.score(scaler.transform(X_test), y_test)
    print(f"\nCMU left/right, synthetic resnet18: test accuracy {report['accuracy']:.4f} "
          f"(scikit-learn {expected_accuracy:.4f}), AUC {report['auc']:.4f}, n = {report['n']}")
    assert report["n"] == 155
    assert report["accuracy"] == expected_accuracy
    row = classifier_row(analyst, "clf_cmu_lr")
    assert row["model_name"] == cmu_features and row["feature_dim"] == 512 and row["training_rows"] == 157
    assert list(reference.classes_) == row["classes"] == ["left", "right"]
    assert np.max(np.abs(np.array(row["coefficients"]) - reference.coef_)) <= 1e-6
    assert np.max(np.abs(np.array(row["intercepts"]) - reference.intercept_)) <= 1e-6
    np.testing.assert_allclose(row["scale_mean"], scaler.mean_, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(row["scale_std"], scaler.scale_, rtol=1e-12, atol=1e-12)
    predicted = dict(analyst.execute("SELECT id, imgfeat.predict('clf_cmu_lr', features) FROM clf_cmu_lr_test").fetchall())
    expected = dict(zip(test_ids, reference.predict(scaler.transform(X_test))))
    assert predicted == expected
    table = {int(i): lab for i, lab, _ in analyst.execute(
        "SELECT * FROM imgfeat.predict_table('clf_cmu_lr', 'clf_cmu_lr_test')").fetchall()}
    assert table == expected


@pytest.mark.slow
def test_cmu_four_poses_multiclass(analyst: psycopg.Connection[Any], cmu_features: str) -> None:
    """The four poses (313 train / 311 test faces): multinomial, equal to scikit-learn's."""
    analyst.execute("CALL imgfeat.train_logistic_regression('clf_cmu_pose', 'clf_cmu_pose_train', replace => true)")
    report = analyst.execute("SELECT imgfeat.evaluate('clf_cmu_pose', 'clf_cmu_pose_test')").fetchone()[0]  # type: ignore[index]
    scaler, reference, X_test, y_test, test_ids = sklearn_reference(analyst, "pose")
    expected_accuracy = reference.score(scaler.transform(X_test), y_test)
    print(f"\nCMU four poses, synthetic resnet18: test accuracy {report['accuracy']:.4f} "
          f"(scikit-learn {expected_accuracy:.4f}), macro F1 {report['macro_f1']:.4f}, n = {report['n']}")
    assert report["n"] == 311 and "auc" not in report
    assert report["accuracy"] == expected_accuracy
    assert report["accuracy"] > 0.5  # chance is 0.25
    assert report["confusion_matrix"]["labels"] == list(POSES)
    row = classifier_row(analyst, "clf_cmu_pose")
    assert row["dims"] == "[1:4][1:512]" and row["training_rows"] == 313
    assert np.max(np.abs(np.array(row["coefficients"]) - reference.coef_)) <= 1e-6
    predicted = dict(analyst.execute("SELECT id, imgfeat.predict('clf_cmu_pose', features) FROM clf_cmu_pose_test").fetchall())
    assert predicted == dict(zip(test_ids, reference.predict(scaler.transform(X_test))))
    proba = analyst.execute(
        "SELECT imgfeat.predict_proba('clf_cmu_pose', features) FROM clf_cmu_pose_test ORDER BY id LIMIT 1"
    ).fetchone()[0]  # type: ignore[index]
    np.testing.assert_allclose(
        [proba[c] for c in POSES], reference.predict_proba(scaler.transform(X_test[:1]))[0], rtol=0, atol=1e-6
    )
