"""Security: roles, table privileges, row ownership of classifiers and jobs, no pickle."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import psycopg
import pytest

from fix_roles import connect_as

ROOT = Path(__file__).resolve().parents[3]


def test_roles_exist_and_nest(conn: psycopg.Connection[Any]) -> None:
    assert conn.execute(
        "SELECT pg_has_role('imgfeat_admin', 'imgfeat_user', 'MEMBER'), "
        "pg_has_role('imgfeat_user', 'imgfeat_admin', 'MEMBER')"
    ).fetchone() == (True, False)


def test_public_gets_nothing(stranger: psycopg.Connection[Any], resnet18: str, face_bytes: bytes) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        stranger.execute("SELECT imgfeat.featurize_image(%s, %s)", (face_bytes, resnet18))


def test_user_cannot_write_the_registry(alice: psycopg.Connection[Any], resnet18: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        alice.execute("DELETE FROM imgfeat.models")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        alice.execute("UPDATE imgfeat.model_chunks SET data = '\\x00'")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        alice.execute("SELECT imgfeat.register_synthetic_model('resnet18', 'mine')")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        alice.execute("SELECT imgfeat.drop_model(%s)", (resnet18,))
    assert alice.execute("SELECT count(*) FROM imgfeat.models WHERE name = %s", (resnet18,)).fetchone() == (1,)


def test_admin_registers_and_drops(admin: psycopg.Connection[Any], face_bytes: bytes) -> None:
    row = admin.execute("SELECT name, weights_origin FROM imgfeat.register_synthetic_model('resnet18', 'admin-r18', 7)").fetchone()
    assert row == ("admin-r18", "synthetic")
    assert len(admin.execute("SELECT imgfeat.featurize_image(%s, 'admin-r18')", (face_bytes,)).fetchone()[0]) == 512  # type: ignore[index]
    assert admin.execute("SELECT imgfeat.drop_model('admin-r18')").fetchone() == (True,)


@pytest.fixture
def tiny_features(conn: psycopg.Connection[Any]) -> str:
    conn.execute("DROP TABLE IF EXISTS public.tiny_features")
    conn.execute("CREATE TABLE public.tiny_features (id int PRIMARY KEY, features real[], label text)")
    conn.execute(
        "INSERT INTO public.tiny_features SELECT i, ARRAY[i % 2 + random() * 0.1, random()]::real[], "
        "CASE WHEN i % 2 = 0 THEN 'a' ELSE 'b' END FROM generate_series(1, 40) i"
    )
    conn.execute("GRANT SELECT ON public.tiny_features TO imgfeat_user")
    return "public.tiny_features"


def test_classifiers_belong_to_their_owner(
    alice: psycopg.Connection[Any], bob: psycopg.Connection[Any], admin: psycopg.Connection[Any], tiny_features: str
) -> None:
    alice.execute("SELECT imgfeat.drop_classifier('alice_clf')")
    alice.execute(f"CALL imgfeat.train_logistic_regression('alice_clf', '{tiny_features}')")
    # bob uses it ...
    assert bob.execute("SELECT imgfeat.predict('alice_clf', ARRAY[1, 0.5]::real[])").fetchone() is not None
    # ... but cannot replace, update or delete it
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as exc:
        bob.execute(f"CALL imgfeat.train_logistic_regression('alice_clf', '{tiny_features}', replace => true)")
    assert "belongs to imgfeat_test_alice" in (exc.value.diag.message_primary or "")
    for attempt in ("UPDATE imgfeat.classifiers SET intercepts = '{0}' WHERE name = 'alice_clf'",
                    "DELETE FROM imgfeat.classifiers WHERE name = 'alice_clf'",
                    "SELECT imgfeat.drop_classifier('alice_clf')",
                    "SELECT imgfeat_internal.store_classifier(name, format, classes, label_type, coefficients, '{0}', "
                    "scale_mean, scale_std, feature_dim, hyperparameters, model_name, training_source, training_rows, "
                    "n_iterations, training_metrics, warnings, library_versions, true) "
                    "FROM imgfeat.classifiers WHERE name = 'alice_clf'"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            bob.execute(attempt)
    assert alice.execute(
        "SELECT owner, intercepts <> '{0}' FROM imgfeat.classifiers WHERE name = 'alice_clf'"
    ).fetchone() == ("imgfeat_test_alice", True)
    # the admin manages any classifier
    admin.execute(f"CALL imgfeat.train_logistic_regression('alice_clf', '{tiny_features}', replace => true)")
    assert admin.execute("SELECT owner, trained_by FROM imgfeat.classifiers WHERE name = 'alice_clf'").fetchone() == (
        "imgfeat_test_alice", "imgfeat_test_admin")
    assert admin.execute("SELECT imgfeat.drop_classifier('alice_clf')").fetchone() == (True,)
    assert admin.execute("SELECT imgfeat.drop_classifier('alice_clf')").fetchone() == (False,)


def test_procedures_run_with_the_callers_rights(alice: psycopg.Connection[Any], conn: psycopg.Connection[Any], resnet18: str) -> None:
    conn.execute("DROP TABLE IF EXISTS public.secret_images")
    conn.execute("CREATE TABLE public.secret_images (id int PRIMARY KEY, image bytea)")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        alice.execute("CALL imgfeat.featurize('public.secret_images', 'stolen', %s)", (resnet18,))


def test_job_rows_are_written_by_their_owner(
    alice: psycopg.Connection[Any], bob: psycopg.Connection[Any], conn: psycopg.Connection[Any], resnet18: str, dsn: str
) -> None:
    conn.execute("DROP TABLE IF EXISTS public.empty_images")
    conn.execute("CREATE TABLE public.empty_images (id int PRIMARY KEY, image bytea)")
    conn.execute("GRANT SELECT ON public.empty_images TO imgfeat_user")
    conn.execute("GRANT CREATE ON SCHEMA public TO imgfeat_user")
    alice.execute("CALL imgfeat.featurize('public.empty_images', 'alice_out', %s)", (resnet18,))
    job = alice.execute("SELECT job_id FROM imgfeat.featurize_jobs WHERE started_by = current_user ORDER BY job_id DESC LIMIT 1").fetchone()
    assert job is not None
    for attempt in ("UPDATE imgfeat.featurize_jobs SET status = 'done', rows_done = 999 WHERE job_id = %s",
                    "INSERT INTO imgfeat.featurize_jobs (source, target, model_name, rows_total, started_by) "
                    "VALUES ('public.empty_images', 'x', 'x', 0, 'imgfeat_test_alice') RETURNING %s",
                    # the job's own update function: only the backend that runs it, as its role
                    "SELECT imgfeat_internal.update_job(%s, 999, 0, 1.0, 'done', NULL, NULL)"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            bob.execute(attempt, job)
    with connect_as(dsn, "imgfeat_test_alice") as elsewhere, pytest.raises(psycopg.errors.InsufficientPrivilege):
        elsewhere.execute("SELECT imgfeat_internal.update_job(%s, 999, 0, 1.0, 'done', NULL, NULL)", job)  # not alice elsewhere
    assert alice.execute("SELECT status, rows_done FROM imgfeat.featurize_jobs WHERE job_id = %s", job).fetchone() == ("done", 0)


def test_no_code_carrying_formats_in_the_library() -> None:
    """No pickle, joblib, cloudpickle, marshal, shelve or dill anywhere in the server library or the loader."""
    banned = {"pickle", "cPickle", "joblib", "cloudpickle", "marshal", "shelve", "dill"}
    for path in list((ROOT / "plpython" / "imgfeat").rglob("*.py")) + list((ROOT / "loader").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module.split(".")[0]]
            assert not banned.intersection(names), f"{path}: imports {names}"


def test_forged_model_rows_are_refused(alice: psycopg.Connection[Any], face_bytes: bytes) -> None:
    """The internal function behind featurize_image takes a registry row: no caller may hand it one."""
    victim = Path("/tmp/imgfeat_victim.onnx")
    victim.write_bytes(b"keep me")
    forged_path = (
        "SELECT imgfeat_internal.featurize_image(%s, ROW('zz', 'resnet18', 224, 224, 512, "
        "'{\"width\": 224, \"height\": 224}', 'custom', 'input', 'features', false, '/tmp/imgfeat_victim', 6, now(), 'pooled', "
        "'fp32', '{onnxruntime}')"
        "::imgfeat.models, 'zz', NULL, NULL, NULL, NULL, NULL, NULL)"
    )
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        alice.execute(forged_path, (face_bytes,))
    assert victim.read_bytes() == b"keep me"
    victim.unlink()


def test_model_rows_are_checked_where_they_name_files_or_size_memory() -> None:
    """Defence in depth: a registry row that names files or sizes memory beyond the limits is
    refused by the library even if it came from somewhere other than the catalog."""
    from imgfeat.core.errors import InvalidParameterError, ModelError
    from imgfeat.core.model_info import ModelInfo

    row = {"name": "zz", "architecture": "resnet18", "input_width": 224, "input_height": 224, "feature_dim": 512,
           "preprocessing": {"width": 224, "height": 224}, "weights_origin": "custom", "input_name": "input",
           "output_name": "features", "fixed_batch": False, "sha256": "a" * 64, "size_bytes": 6}
    assert ModelInfo.from_row(row).sha256 == "a" * 64
    with pytest.raises(ModelError, match="sha256"):
        ModelInfo.from_row({**row, "sha256": "/tmp/imgfeat_victim"})
    with pytest.raises(InvalidParameterError, match="input size"):
        ModelInfo.from_row({**row, "preprocessing": {"width": 10000, "height": 10000}})
    for precision, engines in (("fp16", ["onnxruntime"]), ("bf16", ["tensorrt"]), ("int8", [])):
        with pytest.raises(ModelError, match="is not one imgfeat runs"):
            ModelInfo.from_row({**row, "precision": precision, "engines": engines})


def test_errors_and_jobs_are_visible_to_who_can_read_the_source(
    alice: psycopg.Connection[Any], bob: psycopg.Connection[Any], conn: psycopg.Connection[Any], resnet18: str
) -> None:
    conn.execute("DROP TABLE IF EXISTS public.alice_only")
    conn.execute("CREATE TABLE public.alice_only (id int PRIMARY KEY, image bytea)")
    conn.execute("INSERT INTO public.alice_only VALUES (1, 'not an image'), (2, NULL)")
    conn.execute("GRANT SELECT ON public.alice_only TO imgfeat_test_alice")
    conn.execute("GRANT CREATE ON SCHEMA public TO imgfeat_user")
    for _ in range(2):  # a second run replaces the failures instead of piling them up
        alice.execute("CALL imgfeat.featurize('public.alice_only', 'alice_only_out', %s, on_error => 'skip')", (resnet18,))
    assert alice.execute(
        "SELECT id, count(*) FROM imgfeat.featurize_errors WHERE source = 'public.alice_only'::regclass GROUP BY id ORDER BY id"
    ).fetchall() == [("1", 1), ("2", 1)]
    assert bob.execute("SELECT count(*) FROM imgfeat.featurize_errors WHERE source::text LIKE '%alice_only%'").fetchone() == (0,)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        bob.execute("DELETE FROM imgfeat.featurize_errors")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):  # bob may not read the source
        bob.execute("SELECT imgfeat_internal.clear_errors('public.alice_only', 'public.alice_only_out', %s, '{1,2}')", (resnet18,))
    assert alice.execute("SELECT count(*) FROM imgfeat.featurize_errors WHERE source = 'public.alice_only'::regclass").fetchone() == (2,)
    assert bob.execute("SELECT count(*) FROM imgfeat.featurize_progress WHERE target LIKE '%alice_only%'").fetchone() == (0,)
    assert alice.execute("SELECT count(*) FROM imgfeat.featurize_progress WHERE target LIKE '%alice_only%'").fetchone()[0] >= 2  # type: ignore[index]


def test_concurrent_failure_records_keep_one_row_per_id(
    alice: psycopg.Connection[Any], bob: psycopg.Connection[Any], conn: psycopg.Connection[Any], dsn: str, resnet18: str
) -> None:
    """Two jobs of an analyst (Spark retries a task while its first try still writes) record a
    failure of the same id at once: featurize_errors keeps one row, the later one, written by
    imgfeat's own SECURITY DEFINER writer; another analyst cannot overwrite it."""
    import threading

    conn.execute("DROP TABLE IF EXISTS public.alice_race, public.alice_race_out")
    conn.execute("CREATE TABLE public.alice_race (id int PRIMARY KEY, image bytea)")
    conn.execute("CREATE TABLE public.alice_race_out (id int, model_name text, features real[])")
    conn.execute("GRANT SELECT ON public.alice_race TO imgfeat_test_alice")
    conn.execute("GRANT INSERT ON public.alice_race_out TO imgfeat_test_alice")
    record = ("SELECT imgfeat_internal.record_errors('public.alice_race', 'public.alice_race_out', %s, "
              "ARRAY['7', '7'], ARRAY['image_decode_error', 'image_decode_error'], ARRAY[%s, %s])")
    with connect_as(dsn, "imgfeat_test_alice") as first:
        with first.transaction():
            first.execute(record, (resnet18, "first try (a)", "first try"))  # duplicates in one call: the last wins
            blocked: list[BaseException] = []

            def second_try() -> None:
                try:
                    alice.execute(record, (resnet18, "retry (a)", "retry"))
                except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                    blocked.append(exc)

            worker = threading.Thread(target=second_try)
            worker.start()
            pid = alice.info.backend_pid
            for _ in range(600):  # until the retry waits on the first try's uncommitted row
                if conn.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() == ("Lock",):
                    break
                worker.join(0.1)
            else:
                pytest.fail("the retry never waited for the first try's row")
        worker.join()
    assert blocked == []
    rows = conn.execute("SELECT target::text, id, message FROM imgfeat.featurize_errors "
                        "WHERE source = 'public.alice_race'::regclass").fetchall()
    assert rows == [("alice_race_out", "7", "retry")]
    with pytest.raises(psycopg.errors.InsufficientPrivilege):  # bob may not read the source
        bob.execute(record, (resnet18, "forged", "forged"))
    assert conn.execute("SELECT message FROM imgfeat.featurize_errors WHERE source = 'public.alice_race'::regclass").fetchall() == [("retry",)]


def test_trained_by_cannot_be_forged(alice: psycopg.Connection[Any], tiny_features: str) -> None:
    alice.execute("SELECT imgfeat.drop_classifier('alice_forge')")
    alice.execute(f"CALL imgfeat.train_logistic_regression('alice_forge', '{tiny_features}')")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        alice.execute("UPDATE imgfeat.classifiers SET trained_by = 'postgres' WHERE name = 'alice_forge'")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        alice.execute(
            "INSERT INTO imgfeat.classifiers (name, classes, label_type, coefficients, intercepts, feature_dim, hyperparameters, "
            "training_rows, training_metrics, library_versions, trained_by) "
            "SELECT 'forged', classes, label_type, coefficients, intercepts, feature_dim, hyperparameters, training_rows, "
            "training_metrics, library_versions, 'postgres' FROM imgfeat.classifiers WHERE name = 'alice_forge'"
        )
