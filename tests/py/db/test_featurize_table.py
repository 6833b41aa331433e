"""CALL imgfeat.featurize: bulk, resumable, robust; featurize_image_file under the image root."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from imagefactory import broken_images


def test_featurize_312_faces_equals_featurize_image(
    analyst: psycopg.Connection[Any], faces_features: dict[int, np.ndarray], resnet18: str
) -> None:
    assert len(faces_features) == 312
    assert all(f.shape == (512,) and np.isfinite(f).all() for f in faces_features.values())
    rows = analyst.execute(
        "SELECT id, imgfeat.featurize_image(image, %s) FROM public.faces ORDER BY id", (resnet18,)
    ).fetchall()
    worst = max(float(np.max(np.abs(np.asarray(f, dtype=np.float32) - faces_features[i]))) for i, f in rows)
    assert worst <= 1e-5
    # different faces give different features
    assert not np.allclose(faces_features[1], faces_features[2])


def test_target_layout_and_rerun_adds_nothing(analyst: psycopg.Connection[Any], faces_features: dict[int, Any], resnet18: str) -> None:
    cols = analyst.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 'faces_r18'::regclass AND attnum > 0 ORDER BY attnum"
    ).fetchall()
    assert cols == [("id", "bigint"), ("model_name", "text"), ("features", "real[]"),
                    ("featurized_at", "timestamp with time zone")]
    before = analyst.execute("SELECT max(featurized_at) FROM faces_r18").fetchone()
    analyst.execute("CALL imgfeat.featurize('public.faces', 'faces_r18', %s)", (resnet18,))
    assert analyst.execute("SELECT count(*), max(featurized_at) FROM faces_r18").fetchone() == (312, before[0])  # type: ignore[index]
    job = analyst.execute(
        "SELECT status, rows_total, rows_done, percent, detail FROM imgfeat.featurize_progress ORDER BY job_id DESC LIMIT 1"
    ).fetchone()
    assert job == ("done", 0, 0, 100, "nothing to do: every row already had features")


def test_progress_tells_failed_from_interrupted_from_done(
    analyst: psycopg.Connection[Any], conn: psycopg.Connection[Any], face_files: list[Path], resnet18: str
) -> None:
    """featurize_progress: a job stopped by an error is failed, with the error; one whose backend is
    gone, or has moved on without recording the job's end, is interrupted; a finished one is done."""
    conn.execute("CREATE TABLE public.progress_src (id int PRIMARY KEY, image bytea)")
    for i, p in enumerate(face_files[:3], start=1):
        conn.execute("INSERT INTO public.progress_src VALUES (%s, %s)", (i, p.read_bytes()))
    conn.execute("INSERT INTO public.progress_src VALUES (4, 'not an image')")
    conn.execute("GRANT SELECT ON public.progress_src TO imgfeat_test_analyst")
    query = ("SELECT status, rows_done, rows_total, percent, error, detail FROM imgfeat.featurize_progress "
             "WHERE source = 'public.progress_src'::regclass ORDER BY job_id DESC LIMIT 1")
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):
        analyst.execute("CALL imgfeat.featurize('public.progress_src', 'progress_out', %s, batch_size => 2)", (resnet18,))
    status, done, total, percent, error, detail = analyst.execute(query).fetchone()  # type: ignore[misc]
    assert (status, done, total, percent) == ("failed", 2, 4, 50)
    assert error == "image id=4 in public.progress_src could not be featurized: not a recognised image format"
    assert detail == ("stopped by an error (the error column); the rows done before it are kept: "
                      "CALL imgfeat.featurize again to go on")
    analyst.execute("CALL imgfeat.featurize('public.progress_src', 'progress_out', %s, on_error => 'skip')", (resnet18,))
    assert analyst.execute(query).fetchone() == (
        "done", 1, 2, 100, None, "1 row could not be featurized: see imgfeat.featurize_errors")
    # A job row left 'running' by a backend that is still there but has moved on (idle, or busy
    # with a later statement) was interrupted, not running: forge one for this very session.
    pid = analyst.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
    job = conn.execute("SELECT max(job_id) FROM imgfeat.featurize_jobs WHERE source = 'public.progress_src'::regclass"
                       ).fetchone()[0]  # type: ignore[index]
    conn.execute("UPDATE imgfeat.featurize_jobs SET status = 'running', finished_at = NULL, pid = %s WHERE job_id = %s",
                 (pid, job))
    interrupted = analyst.execute(query).fetchone()
    assert interrupted is not None and interrupted[0] == "interrupted"
    assert interrupted[-1] == ("its session ended or moved on before the job did; the rows done before are kept: "
                               "CALL imgfeat.featurize again to go on")
    assert conn.execute(query).fetchone()[0] == "interrupted"  # type: ignore[index]
    # ... while the statement that started a job is still running, the job is running
    conn.execute("UPDATE imgfeat.featurize_jobs SET started_at = clock_timestamp() + interval '1 hour' WHERE job_id = %s",
                 (job,))
    assert analyst.execute(query).fetchone()[:1] == ("running",)


def test_paths_under_image_root_equal_bytea(
    analyst: psycopg.Connection[Any], conn: psycopg.Connection[Any], image_root: Path, face_files: list[Path],
    faces_features: dict[int, np.ndarray], resnet18: str,
) -> None:
    dest = image_root / "faces"
    dest.mkdir(exist_ok=True)
    for p in face_files:
        shutil.copy(p, dest / p.name)
    dest.chmod(0o755)
    conn.execute("CREATE TABLE public.face_paths (id bigint PRIMARY KEY, image text)")
    with conn.cursor().copy("COPY public.face_paths (id, image) FROM STDIN") as copy:
        for i, p in enumerate(face_files, start=1):
            # half relative to the root, half absolute inside it
            copy.write_row((i, f"faces/{p.name}" if i % 2 else str(dest / p.name)))
    conn.execute("GRANT SELECT ON public.face_paths TO imgfeat_test_analyst")
    conn.execute("GRANT pg_read_server_files TO imgfeat_test_analyst")
    try:
        analyst.execute("CALL imgfeat.featurize('public.face_paths', 'face_paths_r18', %s, batch_size => 64)", (resnet18,))
        rows = analyst.execute("SELECT id, features FROM face_paths_r18 ORDER BY id").fetchall()
        assert len(rows) == 312
        worst = max(float(np.max(np.abs(np.asarray(f, dtype=np.float32) - faces_features[i]))) for i, f in rows)
        assert worst <= 1e-5
        one = analyst.execute("SELECT imgfeat.featurize_image_file(%s, %s)", (f"faces/{face_files[0].name}", resnet18)).fetchone()[0]  # type: ignore[index]
        assert np.max(np.abs(np.asarray(one, dtype=np.float32) - faces_features[1])) <= 1e-5
    finally:
        conn.execute("REVOKE pg_read_server_files FROM imgfeat_test_analyst")


@pytest.mark.parametrize(
    "path, error",
    [
        ("../../../etc/passwd", "outside imgfeat.image_root"),
        ("/etc/passwd", "outside imgfeat.image_root"),
        ("link_out", "outside imgfeat.image_root"),
        ("a_directory", "directory"),
        ("missing.png", "does not exist"),
    ],
)
def test_file_access_is_confined(conn: psycopg.Connection[Any], image_root: Path, resnet18: str, path: str, error: str) -> None:
    (image_root / "a_directory").mkdir(exist_ok=True)
    link = image_root / "link_out"
    if not link.is_symlink():
        link.symlink_to("/etc/hostname")
    with pytest.raises(psycopg.Error) as exc:
        conn.execute("SELECT imgfeat.featurize_image_file(%s, %s)", (path, resnet18))
    assert error in (exc.value.diag.message_primary or "")


def test_file_access_needs_the_file_reader_role(analyst: psycopg.Connection[Any], resnet18: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as exc:
        analyst.execute("SELECT imgfeat.featurize_image_file('faces/x.pgm', %s)", (resnet18,))
    assert "imgfeat_file_reader" in (exc.value.diag.message_primary or "")
    assert "GRANT imgfeat_file_reader TO" in (exc.value.diag.message_hint or "")


def test_session_cannot_move_the_image_root(conn: psycopg.Connection[Any], resnet18: str) -> None:
    conn.execute("SET imgfeat.image_root = '/'")
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as exc:
        conn.execute("SELECT imgfeat.featurize_image_file('etc/passwd', %s)", (resnet18,))
    assert "server configuration" in (exc.value.diag.message_primary or "")


@pytest.fixture(scope="module")
def mixed_table(dsn: str, face_files: list[Path]) -> tuple[str, list[int], dict[int, str]]:
    """20 good faces and one image of each broken kind, interleaved; returns (table, good ids, bad id -> kind)."""
    broken = broken_images()
    good_ids: list[int] = []
    bad: dict[int, str] = {}
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE public.mixed (id int PRIMARY KEY, image bytea)")
        next_id = 1
        kinds = iter(broken.items())
        for p in face_files[:20]:
            c.execute("INSERT INTO public.mixed VALUES (%s, %s)", (next_id, p.read_bytes()))
            good_ids.append(next_id)
            next_id += 1
            kind = next(kinds, None)
            if kind:
                c.execute("INSERT INTO public.mixed VALUES (%s, %s)", (next_id, kind[1]))
                bad[next_id] = kind[0]
                next_id += 1
        c.execute("INSERT INTO public.mixed VALUES (%s, NULL)", (next_id,))
        bad[next_id] = "null"
        c.execute("GRANT SELECT ON public.mixed TO imgfeat_test_analyst")
    return "public.mixed", good_ids, bad


def test_skip_records_every_bad_row(
    analyst: psycopg.Connection[Any], mixed_table: tuple[str, list[int], dict[int, str]], resnet18: str
) -> None:
    table, good_ids, bad = mixed_table
    analyst.execute(f"CALL imgfeat.featurize('{table}', 'mixed_skip', %s, batch_size => 8, on_error => 'skip')", (resnet18,))
    done = [r[0] for r in analyst.execute("SELECT id FROM mixed_skip ORDER BY id").fetchall()]
    errors = dict(analyst.execute(
        "SELECT id::int, message FROM imgfeat.featurize_errors WHERE source = %s::regclass AND model_name = %s",
        (table, resnet18),
    ).fetchall())
    assert done == good_ids
    assert sorted(errors) == sorted(bad), bad
    for bad_id, message in errors.items():
        assert message and "Traceback" not in message, (bad[bad_id], message)
    assert analyst.execute("SELECT 1").fetchone() == (1,)


def test_raise_names_the_id_and_keeps_committed_batches(
    analyst: psycopg.Connection[Any], mixed_table: tuple[str, list[int], dict[int, str]], resnet18: str
) -> None:
    table, good_ids, bad = mixed_table
    first_bad = min(bad)
    with pytest.raises(psycopg.Error) as exc:
        analyst.execute(f"CALL imgfeat.featurize('{table}', 'mixed_raise', %s, batch_size => 1)", (resnet18,))
    assert f"id={first_bad}" in (exc.value.diag.message_primary or "")
    kept = analyst.execute("SELECT count(*) FROM mixed_raise").fetchone()[0]  # type: ignore[index]
    assert kept == len([i for i in good_ids if i < first_bad])


def test_injection_in_identifiers_fails_harmlessly(analyst: psycopg.Connection[Any], faces_table: str, resnet18: str) -> None:
    with pytest.raises(psycopg.Error):
        analyst.execute("CALL imgfeat.featurize('public.faces', 'out; drop table x; --', %s)", (resnet18,))
    with pytest.raises(psycopg.Error) as exc:
        analyst.execute("CALL imgfeat.featurize('public.faces', 'out2', %s, image_column => 'image; drop table x')", (resnet18,))
    assert "does not exist" in (exc.value.diag.message_primary or "")
    assert analyst.execute("SELECT to_regclass('public.faces') IS NOT NULL").fetchone() == (True,)


def test_terminated_job_resumes_with_one_row_per_id(
    dsn: str, analyst_dsn: str, faces_table: str, resnet18: str
) -> None:
    """Kill the backend mid-job (pg_terminate_backend); calling again completes with exactly one row per id."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(analyst_dsn, autocommit=True) as a:
                a.execute("CALL imgfeat.featurize('public.faces', 'faces_resume', %s, batch_size => 8)", (resnet18,))
        except BaseException as exc:  # noqa: BLE001 - the kill is expected
            errors.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    with psycopg.connect(dsn, autocommit=True) as su:
        deadline = time.monotonic() + 120
        row = None
        while time.monotonic() < deadline:
            row = su.execute(
                "SELECT pid, rows_done, status FROM imgfeat.featurize_progress WHERE target = 'public.faces_resume' "
                "ORDER BY job_id DESC LIMIT 1"
            ).fetchone()
            if row and row[1] >= 16:
                break
            time.sleep(0.05)
        assert row is not None and row[2] == "running", row
        su.execute("SELECT pg_terminate_backend(%s)", (row[0],))
        worker.join(60)
        assert errors, "the job was expected to be killed mid-way"
        partial = su.execute("SELECT count(*) FROM public.faces_resume").fetchone()[0]  # type: ignore[index]
        assert 16 <= partial < 312
        assert su.execute(
            "SELECT status FROM imgfeat.featurize_progress WHERE target = 'public.faces_resume' ORDER BY job_id DESC LIMIT 1"
        ).fetchone() == ("interrupted",)
    with psycopg.connect(analyst_dsn, autocommit=True) as a:
        a.execute("CALL imgfeat.featurize('public.faces', 'faces_resume', %s, batch_size => 32)", (resnet18,))
        assert a.execute("SELECT count(*), count(DISTINCT id) FROM faces_resume").fetchone() == (312, 312)
        assert a.execute("SELECT count(*) FROM faces_resume WHERE array_length(features, 1) <> 512").fetchone() == (0,)


def test_bad_arguments(analyst: psycopg.Connection[Any], faces_table: str, resnet18: str) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        analyst.execute("CALL imgfeat.featurize('public.faces', 'x1', %s, batch_size => 0)", (resnet18,))
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        analyst.execute("CALL imgfeat.featurize('public.faces', 'x1', %s, on_error => 'ignore')", (resnet18,))
    with pytest.raises(psycopg.errors.InvalidParameterValue) as exc:
        analyst.execute("CALL imgfeat.featurize('public.faces', 'x1', %s, image_column => 'id')", (resnet18,))
    assert "bytea" in (exc.value.diag.message_primary or "")
    with pytest.raises(psycopg.errors.UndefinedObject):
        analyst.execute("CALL imgfeat.featurize('public.faces', 'x1', 'no_model')")
    assert analyst.execute("SELECT to_regclass('x1')").fetchone() == (None,)


def test_parallel_workers_equal_serial(
    analyst: psycopg.Connection[Any], faces_features: dict[int, np.ndarray], resnet18: str
) -> None:
    """featurize_image is PARALLEL SAFE for real: a parallel plan launches workers and gives the same features."""
    for setting in ("max_parallel_workers_per_gather = 2", "parallel_setup_cost = 0", "parallel_tuple_cost = 0",
                    "min_parallel_table_scan_size = 0"):
        analyst.execute(f"SET {setting}")
    query = "SELECT id, imgfeat.featurize_image(image, %s) FROM public.faces WHERE id <= 40"
    plan = "\n".join(r[0] for r in analyst.execute("EXPLAIN (ANALYZE, COSTS OFF) " + query, (resnet18,)).fetchall())
    assert "Gather" in plan and "Workers Launched: 2" in plan, plan
    rows = analyst.execute(query, (resnet18,)).fetchall()
    assert len(rows) == 40
    worst = max(float(np.max(np.abs(np.asarray(f, dtype=np.float32) - faces_features[i]))) for i, f in rows)
    assert worst <= 1e-5


def test_duplicate_and_null_ids(analyst: psycopg.Connection[Any], conn: psycopg.Connection[Any], face_files: list[Path], resnet18: str) -> None:
    conn.execute("CREATE TABLE public.dup_ids (id int, image bytea)")
    for i, p in zip((1, 1, 2, None), face_files):
        conn.execute("INSERT INTO public.dup_ids VALUES (%s, %s)", (i, p.read_bytes()))
    conn.execute("GRANT SELECT ON public.dup_ids TO imgfeat_test_analyst")
    with pytest.raises(psycopg.errors.InvalidParameterValue) as exc:
        analyst.execute("CALL imgfeat.featurize('public.dup_ids', 'dup_out', %s)", (resnet18,))
    assert "not unique: 1 appear" in (exc.value.diag.message_primary or "")
    assert analyst.execute("SELECT to_regclass('dup_out')").fetchone() == (None,)
    conn.execute("DELETE FROM public.dup_ids WHERE id = 1")
    notices: list[str] = []
    analyst.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    analyst.execute("CALL imgfeat.featurize('public.dup_ids', 'dup_out', %s)", (resnet18,))
    assert any("1 rows of public.dup_ids have a NULL id" in n for n in notices), notices
    assert analyst.execute("SELECT count(*) FROM dup_out").fetchone() == (1,)


def test_unusable_ids_and_targets_are_refused_clearly(analyst: psycopg.Connection[Any], faces_table: str, resnet18: str) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue) as exc:
        analyst.execute("CALL imgfeat.featurize('public.faces', 'x2', %s, id_column => 'image')", (resnet18,))
    assert "must be a scalar type" in (exc.value.diag.message_primary or "")
    with pytest.raises(psycopg.errors.InvalidParameterValue) as exc:
        analyst.execute("CALL imgfeat.featurize('public.faces', 'a.b.c.d', %s)", (resnet18,))
    assert "table or schema.table" in (exc.value.diag.message_primary or "")
    with pytest.raises(psycopg.errors.InvalidParameterValue) as exc:
        analyst.execute("CALL imgfeat.featurize('public.faces', '\"unterminated', %s)", (resnet18,))
    assert "not a valid table name" in (exc.value.diag.message_primary or "")
    assert analyst.execute("SELECT to_regclass('x2')").fetchone() == (None,)


def test_the_same_job_twice_at_once_is_refused(dsn: str, analyst_dsn: str, faces_table: str, resnet18: str) -> None:
    thread, errors = None, []  # type: ignore[var-annotated]

    def run() -> None:
        try:
            with psycopg.connect(analyst_dsn, autocommit=True) as a:
                a.execute("CALL imgfeat.featurize('public.faces', 'faces_once', %s, batch_size => 8)", (resnet18,))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    with psycopg.connect(dsn, autocommit=True) as su:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            row = su.execute("SELECT rows_done FROM imgfeat.featurize_progress WHERE target = 'public.faces_once' "
                             "AND status = 'running'").fetchone()
            if row and row[0] >= 8:
                break
            time.sleep(0.05)
        with psycopg.connect(analyst_dsn, autocommit=True) as second:
            with pytest.raises(psycopg.errors.InvalidParameterValue) as exc:
                second.execute("CALL imgfeat.featurize('public.faces', 'faces_once', %s)", (resnet18,))
        assert "already running" in (exc.value.diag.message_primary or "")
        su.execute("SELECT pg_cancel_backend(pid) FROM imgfeat.featurize_progress WHERE target = 'public.faces_once' AND status = 'running'")
    thread.join(60)
    # the lock went with the cancelled job: the same job runs to the end now
    with psycopg.connect(analyst_dsn, autocommit=True) as a:
        a.execute("CALL imgfeat.featurize('public.faces', 'faces_once', %s)", (resnet18,))
        assert a.execute("SELECT count(*) FROM faces_once").fetchone() == (312,)
