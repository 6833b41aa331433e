"""Timed runs: raw onnxruntime, CALL imgfeat.featurize, SQL queries, the client-side script.

Every function returns wall seconds (``time.perf_counter``) and CPU seconds of the process
that did the work (this process for client-side runs, the backend, all its threads, for
in-database runs), so that the table can show both.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort
import psycopg

from .environment import BenchEnv, backend_stat


@dataclass
class Run:
    """One timed run: ``images`` processed in ``wall`` seconds using ``cpu`` CPU seconds."""

    images: int
    wall: float
    cpu: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.images / self.wall

    @property
    def cpu_ms(self) -> float:
        return 1000.0 * self.cpu / self.images


def cpu_busy(interval: float = 0.5) -> float:
    """The machine's busy fraction (0..1 of all CPUs) over ``interval`` seconds, from /proc/stat."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as fh:
            values = [int(v) for v in fh.readline().split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return sum(values[:8]), idle

    total0, idle0 = sample()
    time.sleep(interval)
    total1, idle1 = sample()
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


QUIET = 0.15
"""A round starts when the machine is at most this busy (other users of a shared machine)."""


def wait_for_quiet(max_wait: float = 60.0) -> float:
    """Wait (up to ``max_wait`` seconds) until the machine is quiet; returns the seconds waited.

    Both sides of a comparison need the same CPUs: a round measured while another job
    runs says nothing. Waiting is bounded so that a permanently busy machine still gets
    measured (its figures then show the noise)."""
    start = time.perf_counter()
    while cpu_busy() > QUIET and time.perf_counter() - start < max_wait:
        time.sleep(0.5)
    return time.perf_counter() - start


def best(runs: list[Run]) -> Run:
    """The fastest round (noise on a shared machine only ever slows a run down)."""
    return max(runs, key=lambda r: r.rate)


def median_run(runs: list[Run]) -> Run:
    """The round of median rate (of an even count, the slower of the middle two): what P1 and
    the rows compared with it report, so that one lucky round flatters neither side."""
    ordered = sorted(runs, key=lambda r: r.rate)
    return ordered[(len(ordered) - 1) // 2]


def raw_session(model: bytes, intra: int, inter: int = 1) -> ort.InferenceSession:
    """What a user would create: onnxruntime's default options, with the thread counts set."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra
    opts.inter_op_num_threads = inter
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


def raw_sessions(model: bytes, intra: int, inter: int = 1) -> list[ort.InferenceSession]:
    """The two raw baselines, in this order: onnxruntime's default options (threads spin while waiting for
    work) and imgfeat's own (no spinning, :data:`imgfeat.runtime.INTRA_OP_SPINNING`); each
    round takes the faster, so that neither choice flatters the database side."""
    from imgfeat.core.runtime import session_options

    tuned = ort.InferenceSession(model, sess_options=session_options(intra, inter), providers=["CPUExecutionProvider"])
    return [raw_session(model, intra, inter), tuned]


def raw_best(sessions: list[ort.InferenceSession], tensors: np.ndarray, batch: int) -> Run:
    """:func:`raw_run` with each session; the fastest run."""
    return max((raw_run(s, tensors, batch) for s in sessions), key=lambda r: r.rate)


def raw_run(session: ort.InferenceSession, tensors: np.ndarray, batch: int) -> Run:
    """Preprocessed float32 NCHW tensors already in memory, through ``session`` ``batch`` at a time."""
    name = session.get_inputs()[0].name
    session.run(None, {name: tensors[:batch]})  # warm-up, as the database side's session is warm
    cpu, start = time.process_time(), time.perf_counter()
    for i in range(0, len(tensors), batch):
        session.run(None, {name: tensors[i : i + batch]})
    return Run(len(tensors), time.perf_counter() - start, time.process_time() - cpu)


def session_settings(conn: psycopg.Connection[Any], intra: int, inter: int = 1) -> int:
    """SET the onnxruntime thread settings; returns the backend's pid."""
    conn.execute("SET client_min_messages = warning")
    conn.execute(f"SET imgfeat.intra_op_num_threads = {int(intra)}")
    conn.execute(f"SET imgfeat.inter_op_num_threads = {int(inter)}")
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    return int(row[0])


def warm(conn: psycopg.Connection[Any], model: str) -> None:
    """Load ``model`` into the backend (one featurize_image call) so timed runs exclude loading."""
    conn.execute("SELECT imgfeat.featurize_image(image, %s) FROM faces ORDER BY id LIMIT 1", (model,)).fetchall()


def call_featurize(conn: psycopg.Connection[Any], pid: int, model: str, target: str, batch: int,
                   source: str = "faces") -> Run:
    """``CALL imgfeat.featurize`` into a fresh ``target``; extra: the job's timings and rows."""
    conn.execute(f"DROP TABLE IF EXISTS {target}")
    before = backend_stat(pid)["cpu"]
    start = time.perf_counter()
    conn.execute("CALL imgfeat.featurize(%s, %s, %s, batch_size => %s)", (source, target, model, batch))
    wall = time.perf_counter() - start
    cpu = backend_stat(pid)["cpu"] - before
    row = conn.execute(
        "SELECT rows_done, timings FROM imgfeat.featurize_jobs WHERE target = %s ORDER BY job_id DESC LIMIT 1",
        (f"public.{target}",),
    ).fetchone()
    assert row is not None
    timings = row[1] if isinstance(row[1], dict) else json.loads(row[1])
    return Run(int(row[0]), wall, cpu, {"timings": timings})


def timed_query(conn: psycopg.Connection[Any], pid: int | None, sql: str, params: Any = None, images: int = 1) -> Run:
    """Wall and backend CPU of one query (results fetched)."""
    before = backend_stat(pid)["cpu"] if pid else 0.0
    start = time.perf_counter()
    rows = conn.execute(sql, params).fetchall()
    wall = time.perf_counter() - start
    cpu = backend_stat(pid)["cpu"] - before if pid else 0.0
    return Run(images, wall, cpu, {"rows": rows})


def client_script(env: BenchEnv, session: ort.InferenceSession, spec: Any, batch: int, target: str) -> Run:
    """What a user would otherwise write: SELECT the bytes with psycopg, decode and preprocess
    in the client (imgfeat's own Pillow code, the same as the server's), run onnxruntime
    in the client, COPY the features back. ``session`` is created beforehand (the database
    side's session is warm too)."""
    from imgfeat.core.image import images_to_batch

    name = session.get_inputs()[0].name
    cpu, start = time.process_time(), time.perf_counter()
    with psycopg.connect(env.dsn) as conn:
        rows = conn.execute("SELECT id, image FROM faces ORDER BY id").fetchall()
        ids: list[int] = []
        features: list[np.ndarray] = []
        for i in range(0, len(rows), batch):
            chunk = rows[i : i + batch]
            tensors, good, _ = images_to_batch([bytes(r[1]) for r in chunk], spec)
            out = session.run(None, {name: tensors})[0]
            ids.extend(chunk[j][0] for j in good)
            features.extend(out.reshape(len(good), -1))
        conn.execute(f"DROP TABLE IF EXISTS {target}")
        conn.execute(f"CREATE TABLE {target} (id bigint PRIMARY KEY, features real[] NOT NULL)")
        with conn.cursor().copy(f"COPY {target} (id, features) FROM STDIN") as copy:
            for i, f in zip(ids, features):
                copy.write_row((i, f.tolist()))
        conn.commit()
    return Run(len(ids), time.perf_counter() - start, time.process_time() - cpu)
