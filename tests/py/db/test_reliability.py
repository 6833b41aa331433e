"""Reliability: bad-input corpus, SIGKILL and resume, concurrency, cancel, bounded session cache."""

from __future__ import annotations

import io
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from PIL import Image

from imagefactory import broken_images


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 100, 50)).save(buf, "PNG")
    return buf.getvalue()


def test_bad_input_corpus(conn: psycopg.Connection[Any], analyst: psycopg.Connection[Any], image_root: Path, resnet18: str) -> None:
    """Every broken kind -> a clear per-row error; odd-but-valid images featurize; nothing lost, no crash."""
    valid = {"one_by_one": _png(1, 1), "5000_by_1": _png(5000, 1), "png_named_jpg": _png(40, 30)}
    broken = broken_images()
    corpus = image_root / "corpus"
    corpus.mkdir(exist_ok=True)
    conn.execute("CREATE TABLE public.corpus (id int PRIMARY KEY, kind text, image text)")
    names = list(valid) + list(broken)
    for i, kind in enumerate(names, start=1):
        data = valid.get(kind, broken.get(kind))
        filename = f"{kind}.jpg" if kind == "png_named_jpg" else f"{kind}.img"
        (corpus / filename).write_bytes(data)  # type: ignore[arg-type]
        conn.execute("INSERT INTO public.corpus VALUES (%s, %s, %s)", (i, kind, f"corpus/{filename}"))
    (corpus / "..").resolve()
    conn.execute("INSERT INTO public.corpus VALUES (%s, 'device', '/dev/zero')", (len(names) + 1,))
    conn.execute("CALL imgfeat.featurize('public.corpus', 'corpus_r18', %s, batch_size => 4, on_error => 'skip')", (resnet18,))
    done = {r[0] for r in conn.execute(
        "SELECT c.kind FROM corpus_r18 f JOIN public.corpus c USING (id) WHERE array_length(f.features, 1) = 512"
    ).fetchall()}
    assert done == set(valid)
    errors = dict(conn.execute(
        "SELECT c.kind, e.message FROM imgfeat.featurize_errors e JOIN public.corpus c ON c.id::text = e.id "
        "WHERE e.source = 'public.corpus'::regclass"
    ).fetchall())
    assert set(errors) == set(broken) | {"device"}
    assert "pixels" in errors["huge_header_png"]
    assert "HEIF" in errors["heif_ftyp"]
    assert "outside imgfeat.image_root" in errors["device"]
    assert errors["empty"].startswith("image is empty") or "empty" in errors["empty"]
    assert conn.execute("SELECT 1").fetchone() == (1,)


def _wait_for_rows(su: psycopg.Connection[Any], target: str, at_least: int) -> tuple[int, int, str]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        row = su.execute(
            "SELECT pid, rows_done, status FROM imgfeat.featurize_progress WHERE target = %s ORDER BY job_id DESC LIMIT 1",
            (target,),
        ).fetchone()
        if row and row[1] >= at_least:
            return row  # type: ignore[return-value]
        time.sleep(0.05)
    raise AssertionError(f"{target}: no progress")


def _run_in_thread(dsn: str, sql: str, params: tuple[Any, ...]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as a:
                a.execute(sql, params)
        except BaseException as exc:  # noqa: BLE001 - the interruption is the point
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


def _local_server(server_dsn: str) -> None:
    if os.environ.get("IMGFEAT_TEST_DSN"):
        pytest.skip("SIGKILL needs the server on this machine (IMGFEAT_TEST_DSN points elsewhere)")


def _wait_for_crash_recovery(killed_pid: int, dsns: list[str], timeout: float = 180.0) -> None:
    """Wait until the postmaster has reaped ``killed_pid`` (it then refuses connections until
    crash recovery ends; before that a connection can still slip in and be cut) and every DSN
    connects again."""
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{killed_pid}").exists():  # a zombie until the postmaster reaps it
        assert time.monotonic() < deadline, f"backend {killed_pid} was not reaped"
        time.sleep(0.1)
    for conninfo in dsns:
        while True:
            try:
                with psycopg.connect(conninfo, autocommit=True) as conn:
                    conn.execute("SELECT 1")
                    break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


def test_sigkill_and_resume(dsn: str, server_dsn: str, analyst_dsn: str, faces_table: str, resnet18: str) -> None:
    """SIGKILL the backend mid-job: the cluster recovers; resuming gives one row per id, no partial arrays."""
    _local_server(server_dsn)
    thread, errors = _run_in_thread(
        analyst_dsn, "CALL imgfeat.featurize('public.faces', 'faces_killed', %s, batch_size => 8)", (resnet18,)
    )
    with psycopg.connect(dsn, autocommit=True) as su:
        pid, _, _ = _wait_for_rows(su, "public.faces_killed", 24)
    os.kill(pid, signal.SIGKILL)
    thread.join(60)
    assert errors
    _wait_for_crash_recovery(pid, [dsn, analyst_dsn])
    with psycopg.connect(analyst_dsn, autocommit=True) as a:
        partial = a.execute("SELECT count(*) FROM faces_killed").fetchone()[0]  # type: ignore[index]
        assert 24 <= partial < 312
        a.execute("CALL imgfeat.featurize('public.faces', 'faces_killed', %s, batch_size => 32)", (resnet18,))
        assert a.execute("SELECT count(*), count(DISTINCT id) FROM faces_killed").fetchone() == (312, 312)
        assert a.execute(
            "SELECT count(*) FROM faces_killed WHERE array_length(features, 1) IS DISTINCT FROM 512 "
            "OR EXISTS (SELECT 1 FROM unnest(features) x WHERE x = 'NaN' OR x IS NULL)"
        ).fetchone() == (0,)


def test_cancel_stops_quickly_and_keeps_committed(dsn: str, analyst_dsn: str, faces_table: str, resnet18: str) -> None:
    thread, errors = _run_in_thread(
        analyst_dsn, "CALL imgfeat.featurize('public.faces', 'faces_cancelled', %s, batch_size => 8)", (resnet18,)
    )
    with psycopg.connect(dsn, autocommit=True) as su:
        pid, done, _ = _wait_for_rows(su, "public.faces_cancelled", 16)
        asked = time.monotonic()
        su.execute("SELECT pg_cancel_backend(%s)", (pid,))
        thread.join(60)
        stopped_after = time.monotonic() - asked
        assert errors and isinstance(errors[0], psycopg.errors.QueryCanceled), errors
        kept = su.execute("SELECT count(*) FROM public.faces_cancelled").fetchone()[0]  # type: ignore[index]
    print(f"cancel: stopped {stopped_after:.2f} s after pg_cancel_backend, {kept} rows kept")
    assert stopped_after < 10
    assert kept >= done and kept % 8 == 0 and kept < 312


def test_eight_concurrent_sessions_match_serial(
    dsn: str, analyst_dsn: str, faces_table: str, faces_features: dict[int, np.ndarray], resnet18: str
) -> None:
    """8 sessions featurize disjoint slices of one table at once: all complete, identical to the serial run."""
    with psycopg.connect(dsn, autocommit=True) as su:
        for k in range(8):
            su.execute(f"CREATE VIEW public.faces_slice_{k} AS SELECT id, image FROM public.faces WHERE id % 8 = {k}")
            su.execute(f"GRANT SELECT ON public.faces_slice_{k} TO imgfeat_test_analyst")
    peak: dict[int, int] = {}
    failures: list[BaseException] = []

    def run(k: int) -> None:
        try:
            with psycopg.connect(analyst_dsn, autocommit=True) as a:
                pid = a.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
                a.execute(f"CALL imgfeat.featurize('public.faces_slice_{k}', 'faces_concurrent', %s)", (resnet18,))
                status = Path(f"/proc/{pid}/status")
                if status.exists():
                    hwm = [ln for ln in status.read_text().splitlines() if ln.startswith("VmHWM")]
                    peak[k] = int(hwm[0].split()[1]) * 1024 if hwm else 0
        except BaseException as exc:  # noqa: BLE001
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert not failures, failures
    with psycopg.connect(dsn, autocommit=True) as su:
        rows = su.execute("SELECT id, features FROM public.faces_concurrent ORDER BY id").fetchall()
    assert [r[0] for r in rows] == list(range(1, 313))
    worst = max(float(np.max(np.abs(np.asarray(f, dtype=np.float32) - faces_features[i]))) for i, f in rows)
    assert worst <= 1e-5
    if os.environ.get("IMGFEAT_TEST_DSN"):
        return  # the backends' memory is read from /proc: only when the server is on this machine
    assert sorted(peak) == list(range(8))
    total = sum(peak.values())
    print(f"8 concurrent sessions: peak RSS per backend {max(peak.values()) / 2**20:.0f} MB, sum {total / 2**20:.0f} MB")
    assert total < 24 * 2**30


def test_session_cache_is_bounded_lru(conn: psycopg.Connection[Any], analyst: psycopg.Connection[Any], face_bytes: bytes) -> None:
    for seed in (1, 2, 3):
        conn.execute("SELECT imgfeat.register_synthetic_model('resnet18', %s, %s, true)", (f"r18-seed{seed}", seed))
    analyst.execute("SET imgfeat.session_cache_size = 2")
    for seed in (1, 2, 3):
        analyst.execute("SELECT imgfeat.featurize_image(%s, %s)", (face_bytes, f"r18-seed{seed}"))
    cache = analyst.execute("SELECT imgfeat.python_info() -> 'session_cache'").fetchone()[0]  # type: ignore[index]
    assert [m["name"] for m in cache["loaded"]] == ["r18-seed2", "r18-seed3"]
    assert cache["evictions"] == 1
    analyst.execute("SELECT imgfeat.featurize_image(%s, 'r18-seed1')", (face_bytes,))
    cache = analyst.execute("SELECT imgfeat.python_info() -> 'session_cache'").fetchone()[0]  # type: ignore[index]
    assert [m["name"] for m in cache["loaded"]] == ["r18-seed3", "r18-seed1"]
    assert cache["loads"]["r18-seed1"] == 2
