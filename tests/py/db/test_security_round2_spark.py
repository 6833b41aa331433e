"""The Spark path's executors against the attack of ``test_security_round2_jobs.py`` (finding 6):
the owner of the target's (or the source's) schema swaps in a table of its own between two
transactions of a job, whose trigger would run as the job's caller.

``featurize_spark`` checks its target (and source) once, on the driver; each executor then
reads and writes in transactions of its own, from its own connection. These tests drive the
executor side (:mod:`imgfeat_loader.spark_job`: ``_Writer``, ``write_partition``,
``read_table_range``) directly, as real non-superusers alice and bob, with a swap between two
of its transactions: no Spark needed, and the swap lands exactly between two writes.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import psycopg
import pytest
from test_security_round2_jobs import bobs_loot, bobs_schema  # noqa: F401  (fixtures)

from imgfeat.core.errors import ConfigurationError, InsufficientPrivilegeError
from imgfeat.core.model_info import ROW_COLUMNS, ModelInfo
from imgfeat_loader import spark
from imgfeat_loader.spark_job import JobSpec, PartitionSummary, _Writer, read_table_range, write_partition

BOBS_TABLE = [
    "CREATE TABLE r2_shared.out (id int, model_name text, features real[], "
    "featurized_at timestamptz DEFAULT now(), PRIMARY KEY (id, model_name))",
    "GRANT SELECT, INSERT ON r2_shared.out TO PUBLIC",
    "CREATE TRIGGER steal BEFORE INSERT ON r2_shared.out FOR EACH ROW EXECUTE FUNCTION r2_loot.steal_trigger()",
]


def _spec(alice: psycopg.Connection[Any], model: str, target: str, **more: Any) -> JobSpec:
    """What ``featurize_spark`` hands its executors when alice writes to ``target`` (checked and
    created here, on the "driver", as alice)."""
    with alice.cursor(row_factory=psycopg.rows.dict_row) as cur:
        row = cur.execute(f"SELECT {ROW_COLUMNS} FROM imgfeat.models WHERE name = %s", (model,)).fetchone()
    tgt = spark.target_relation(alice, target, "integer")
    return JobSpec(model_name=model, info=ModelInfo.from_row(row), batch_size=2, dsn=alice.info.dsn,
                   target=tgt.quoted, target_oid=tgt.oid, id_type="integer", **more)


def _features(n: int) -> np.ndarray:
    return np.arange(n * 4, dtype=np.float32).reshape(n, 4)


def _loot(bob: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return bob.execute("SELECT who::text, what, count(*) FROM r2_loot.loot GROUP BY 1, 2").fetchall()


def test_a_renamed_schema_does_not_redirect_the_executors_writes(
    conn: psycopg.Connection[Any], alice: psycopg.Connection[Any], bob: psycopg.Connection[Any], bobs_schema: str,  # noqa: F811
    bobs_loot: str, resnet18: str,  # noqa: F811
) -> None:
    """Repro (before the fix): alice's Spark job writes to r2_shared.out, her table in bob's
    schema. Between two batches of an executor, bob (who may CREATE in the database) renames
    r2_shared to r2_shared_old and puts a new r2_shared.out of his own with a trigger: the
    executor's next ``INSERT INTO r2_shared.out`` (by name, in a new transaction) lands in bob's
    table and runs his trigger as alice; her later batches are missing from her table.

    Fix: the executor writes through a temporary view bound to the OID the driver checked, in
    every transaction (spark_job.pin_target): both batches land in alice's table, now
    r2_shared_old.out, and bob's trigger never runs."""
    database = conn.info.dbname
    conn.execute("DROP SCHEMA IF EXISTS r2_shared_old CASCADE")
    conn.execute(f'GRANT CREATE ON DATABASE "{database}" TO imgfeat_test_bob')
    try:
        spec = _spec(alice, resnet18, "r2_shared.out")
        writer = _Writer(spec)
        try:
            assert writer.write([1, 2], _features(2), []) == 2
            with bob.transaction():
                bob.execute("ALTER SCHEMA r2_shared RENAME TO r2_shared_old")
                bob.execute("CREATE SCHEMA r2_shared")
                bob.execute("GRANT USAGE, CREATE ON SCHEMA r2_shared TO PUBLIC")
                for statement in BOBS_TABLE:
                    bob.execute(statement)
            assert writer.done([1, 2, 3, 4]) == {1, 2}
            assert writer.write([3, 4], _features(2), []) == 2
        finally:
            writer.close()
        assert _loot(bob) == [], "bob's trigger ran as alice inside her Spark job"
        assert bob.execute("SELECT count(*) FROM r2_shared.out").fetchone() == (0,)
        assert alice.execute("SELECT array_agg(id ORDER BY id) FROM r2_shared_old.out").fetchone() == ([1, 2, 3, 4],)
    finally:
        conn.execute("DROP SCHEMA IF EXISTS r2_shared_old CASCADE")
        conn.execute(f'REVOKE CREATE ON DATABASE "{database}" FROM imgfeat_test_bob')


def test_a_target_swapped_between_batches_stops_the_partition(
    alice: psycopg.Connection[Any], bob: psycopg.Connection[Any], bobs_schema: str, bobs_loot: str,  # noqa: F811
    resnet18: str,
) -> None:
    """Bob, who owns r2_shared, drops alice's r2_shared.out between two batches of an executor and
    creates his own (with a trigger) under its name. The executor's next transaction writes
    nothing (bob's trigger never runs) and stops with an error naming the table; a partition that
    starts after the swap stops at once (PartitionSummary.error), and the driver raises it."""
    spec = _spec(alice, resnet18, "r2_shared.out")
    writer = _Writer(spec)
    try:
        assert writer.write([1, 2], _features(2), []) == 2
        with bob.transaction():
            bob.execute("DROP TABLE r2_shared.out")
            for statement in BOBS_TABLE:
                bob.execute(statement)
        with pytest.raises(ConfigurationError, match=re.escape(f"target table {spec.target} was dropped while the Spark job ran")):
            writer.write([3, 4], _features(2), [])
        with pytest.raises(ConfigurationError):
            writer.done([3, 4])
    finally:
        writer.close()
    summary = write_partition(spec, None, [(5, b"never decoded"), (6, b"never decoded")])
    assert summary.error is not None and summary.error.error_class == "configuration_error"
    assert f"{spec.target} was dropped" in summary.error.message
    assert summary.featurized == 0
    assert _loot(bob) == [], "bob's trigger ran as alice inside her Spark job"
    assert bob.execute("SELECT count(*) FROM r2_shared.out").fetchone() == (0,)
    report = spark.SparkReport(resnet18, "files", spec.target)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=re.escape(f"{spec.target} was dropped")) as exc:
        spark._merge(report, [PartitionSummary(featurized=2), summary])
    assert "2 images were featurized and committed before the job stopped" in str(exc.value.detail)


def test_a_target_given_to_another_role_is_not_written(
    conn: psycopg.Connection[Any], alice: psycopg.Connection[Any], bob: psycopg.Connection[Any], bobs_schema: str,  # noqa: F811
    bobs_loot: str, resnet18: str,  # noqa: F811
) -> None:
    """The same table (same OID) given to bob between two batches (here by a superuser: bob
    could then add a trigger to it) is not written: imgfeat writes only into the caller's tables."""
    spec = _spec(alice, resnet18, "r2_shared.out")
    writer = _Writer(spec)
    try:
        assert writer.write([1, 2], _features(2), []) == 2
        conn.execute("ALTER TABLE r2_shared.out OWNER TO imgfeat_test_bob")
        bob.execute("CREATE TRIGGER steal BEFORE INSERT ON r2_shared.out FOR EACH ROW EXECUTE FUNCTION r2_loot.steal_trigger()")
        with pytest.raises(InsufficientPrivilegeError, match=re.escape(f"{spec.target} now belongs to imgfeat_test_bob")):
            writer.write([3, 4], _features(2), [])
    finally:
        writer.close()
    assert _loot(bob) == []
    assert bob.execute("SELECT array_agg(id ORDER BY id) FROM r2_shared.out").fetchone() == ([1, 2],)


def test_a_source_swapped_before_the_psycopg_reader_is_not_read(
    alice: psycopg.Connection[Any], bob: psycopg.Connection[Any], bobs_schema: str, bobs_loot: str,  # noqa: F811
    resnet18: str,
) -> None:
    """Alice's source r2_shared.src, in bob's schema, checked by the driver; bob puts a view of his
    (whose function would run as alice when read) under its name before an executor reads its id
    range. The reader stops naming the source, without reading the view."""
    alice.execute("CREATE TABLE r2_shared.src (id int PRIMARY KEY, image bytea)")
    alice.execute("INSERT INTO r2_shared.src SELECT id, image FROM public.alice_r2_src")
    alice.execute("DROP TABLE IF EXISTS public.alice_r2_out")
    try:
        src = spark.source_table(alice, "r2_shared.src", "id", "image")
        spec = _spec(alice, resnet18, "public.alice_r2_out", source_oid=src.oid)
        assert len(list(read_table_range(spec, src.quoted, src.id_quoted, src.image_quoted, None, 5))) == 5
        with bob.transaction():
            bob.execute("DROP TABLE r2_shared.src")
            bob.execute("CREATE VIEW r2_shared.src AS SELECT g AS id, NULL::bytea AS image FROM generate_series(1, 40) g "
                        "WHERE r2_loot.steal()")
            bob.execute("GRANT SELECT ON r2_shared.src TO PUBLIC")
        with pytest.raises(ConfigurationError, match=r"source table r2_shared\.src was dropped while the Spark job ran"):
            list(read_table_range(spec, src.quoted, src.id_quoted, src.image_quoted, None, None))
        summary = write_partition(spec, None, read_table_range(spec, src.quoted, src.id_quoted, src.image_quoted, 5, None))
        assert summary.error is not None and "r2_shared.src was dropped" in summary.error.message
        assert _loot(bob) == [], "bob's view ran its function as alice inside her Spark job"
    finally:
        alice.execute("DROP TABLE IF EXISTS public.alice_r2_out")


def test_a_role_without_the_temporary_privilege_is_told_what_is_missing(
    conn: psycopg.Connection[Any], alice: psycopg.Connection[Any], bobs_schema: str, resnet18: str,  # noqa: F811
) -> None:
    """The Spark path's views (and the writers' batch table) are temporary: without TEMPORARY on
    the database the driver stops before anything is created or started, saying so."""
    from types import SimpleNamespace

    session = SimpleNamespace(sparkContext=SimpleNamespace(master="local[1]", defaultParallelism=1))
    database = conn.info.dbname
    conn.execute(f'REVOKE TEMPORARY ON DATABASE "{database}" FROM PUBLIC')
    try:
        with pytest.raises(InsufficientPrivilegeError, match="needs the TEMPORARY privilege"):
            spark.featurize_spark(session, alice.info.dsn, resnet18, table="public.alice_r2_src",  # type: ignore[arg-type]
                                  target="public.alice_r2_out", reader="psycopg")
        assert alice.execute("SELECT to_regclass('public.alice_r2_out')").fetchone() == (None,)
    finally:
        conn.execute(f'GRANT TEMPORARY ON DATABASE "{database}" TO PUBLIC')
