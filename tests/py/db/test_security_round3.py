"""Third red-team round (imgfeat 0.3.0 after round 2): attacks by non-superusers on the mechanisms
added by the second round (caller proofs, pinned views, image checks, vector length checks),
written as the assertion that the attack fails. Each FAILS on the code it was written against
(branch ``redteam3`` = main at 0a54c7e); each docstring has the repro, the impact and the fix.

1. ``imgfeat_internal.check_job_rights`` passes a NULL target (three-valued logic): any analyst
   who may read a source records, overwrites and row-locks "legacy" failures (target NULL) of
   another role's source through ``imgfeat_internal.record_errors``, and stalls that role's
   featurize jobs on the source.
2. The Spark executors (``imgfeat_loader.spark_job``: ``_Writer``, ``read_table_range``) and the
   driver run their SQL under the connecting role's own ``search_path``: an operator another role
   planted in ``public`` (``=(varchar, varchar)``, an exact match where pg_catalog has only
   ``text = text``) runs as the job's role in every executor transaction.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from PIL import Image

from fix_roles import connect_as
from imgfeat.core.model_info import ROW_COLUMNS, ModelInfo
from imgfeat_loader import spark
from imgfeat_loader.spark_job import JobSpec, _Writer, read_table_range


def _png(width: int, height: int, mode: str = "RGB", color: Any = 0) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height), color).save(buf, format="PNG", compress_level=9)
    return buf.getvalue()


@pytest.fixture
def bobs_shared_images(conn: psycopg.Connection[Any], bob: psycopg.Connection[Any]) -> Iterator[str]:
    """Bob's images, readable by alice (a shared source: alice may featurize it into her own tables)."""
    conn.execute("GRANT CREATE ON SCHEMA public TO imgfeat_test_alice, imgfeat_test_bob")
    bob.execute("DROP TABLE IF EXISTS public.bob_r3_images, public.bob_r3_out")
    bob.execute("CREATE TABLE public.bob_r3_images (id int PRIMARY KEY, image bytea)")
    for i in range(1, 6):
        bob.execute("INSERT INTO public.bob_r3_images VALUES (%s, %s)", (i, _png(32, 32, "RGB", (i * 40, 40, 90))))
    bob.execute("GRANT SELECT ON public.bob_r3_images TO imgfeat_test_alice")
    conn.execute("DELETE FROM imgfeat.featurize_errors WHERE source = 'public.bob_r3_images'::regclass")
    yield "public.bob_r3_images"
    conn.execute("DELETE FROM imgfeat.featurize_errors WHERE source = 'public.bob_r3_images'::regclass")
    bob.execute("DROP TABLE IF EXISTS public.bob_r3_images, public.bob_r3_out")


# --------------------------------------------------------------------------- 1. check_job_rights and a NULL target


def test_a_null_target_does_not_pass_the_job_rights_check(
    conn: psycopg.Connection[Any], alice: psycopg.Connection[Any], bob: psycopg.Connection[Any], bobs_shared_images: str
) -> None:
    """Repro (alice: imgfeat_user with SELECT on bob's source, no target of bob's)::

        SELECT imgfeat_internal.record_errors('public.bob_images', NULL, 'resnet18',
                                              '{7}', '{x}', '{forged by alice}');

    check_job_rights tests ``NOT has_table_privilege(who, target, 'INSERT')``, which is NULL for
    a NULL target, and ``IF ... OR NULL`` does not raise: the proven caller passes without any
    right on a target. record_errors_definer then upserts (source, model, id, target NULL) rows —
    the "failures recorded before 0.3.0", which round 2 made removable only by the source's
    owner — and featurize_errors_key is NULLS NOT DISTINCT, so ON CONFLICT DO UPDATE
    overwrites bob's own legacy failure rows (error_class, message) and plants new ones that
    every reader of bob's source sees as failures of bob's source.

    Impact: alice changes another role's recorded data in the shared table (integrity), and —
    since the upsert row-locks those rows — she can stall bob's jobs: she plants committed legacy
    rows for bob's ids, then re-records them in an open transaction; bob's
    ``CALL imgfeat.featurize`` on his source deletes the legacy rows of the ids it featurized
    (clear_errors: he owns the source) and waits on alice's row locks for as long as she keeps
    her transaction open (see the next test).

    Fix (sql/src/40_featurize_table.sql: imgfeat_internal.check_job_rights): refuse NULLs
    explicitly — ``IF who IS NULL OR source IS NULL OR target IS NULL OR
    has_table_privilege(who, source, 'SELECT') IS NOT TRUE OR has_table_privilege(who, target,
    'INSERT') IS NOT TRUE THEN RAISE``; and make the wrappers STRICT-like (a NULL source, target
    or model is an error).
    """
    conn.execute(
        "INSERT INTO imgfeat.featurize_errors (source, target, id, model_name, error_class, message) "
        "VALUES (%s::regclass, NULL, '7', 'resnet18', 'image_decode_error', 'bob''s real failure')",
        (bobs_shared_images,),
    )
    try:
        alice.execute(
            "SELECT imgfeat_internal.record_errors(%s, NULL, 'resnet18', '{7,8}', '{x,x}', '{forged by alice,forged by alice}')",
            (bobs_shared_images,),
        )
    except psycopg.errors.InsufficientPrivilege:
        pass
    rows = bob.execute(
        "SELECT id, message FROM imgfeat.featurize_errors WHERE source = %s::regclass ORDER BY id", (bobs_shared_images,)
    ).fetchall()
    assert rows == [("7", "bob's real failure")], f"alice rewrote/planted failures of bob's source: {rows}"


def test_another_role_cannot_stall_a_featurize_job_through_legacy_failures(
    dsn: str, alice: psycopg.Connection[Any], bob: psycopg.Connection[Any], bobs_shared_images: str, resnet18: str
) -> None:
    """Repro: alice (SELECT on bob's source only) plants legacy failures (target NULL) of bob's ids
    through record_errors with a NULL target and commits; then, in an open transaction, records
    them again (ON CONFLICT DO UPDATE: row locks). Bob's ``CALL imgfeat.featurize`` on his own
    source featurizes those ids and its clear_errors (``DELETE ... e.target IS NULL AND bob owns
    the source``) waits on alice's locks: bob's job hangs until alice ends her transaction (here
    lock_timeout turns the hang into an error).

    Fix: as the previous test (check_job_rights refuses a NULL target).
    """
    ids = "{1,2,3,4,5}"
    with connect_as(dsn, "imgfeat_test_alice") as attacker:
        try:
            attacker.execute(
                "SELECT imgfeat_internal.record_errors(%s, NULL, %s, %s, array_fill('x'::text, ARRAY[5]), "
                "array_fill('planted'::text, ARRAY[5]))",
                (bobs_shared_images, resnet18, ids),
            )
        except psycopg.errors.InsufficientPrivilege:
            return  # fixed: the NULL target is refused
        attacker.execute("BEGIN")
        attacker.execute(
            "SELECT imgfeat_internal.record_errors(%s, NULL, %s, %s, array_fill('x'::text, ARRAY[5]), "
            "array_fill('held'::text, ARRAY[5]))",
            (bobs_shared_images, resnet18, ids),
        )
        try:
            bob.execute("SET lock_timeout = '3s'")
            try:
                bob.execute(
                    "CALL imgfeat.featurize(%s, 'public.bob_r3_out', %s, image_column => 'image')",
                    (bobs_shared_images, resnet18),
                )
            except psycopg.errors.LockNotAvailable:
                pytest.fail("alice's open transaction stalled bob's featurize job on his own source")
        finally:
            attacker.execute("ROLLBACK")


# --------------------------------------------------------------------------- 2. Spark executors and search_path


@pytest.fixture
def bobs_public_operator(conn: psycopg.Connection[Any], bob: psycopg.Connection[Any]) -> Iterator[str]:
    """Bob (CREATE on public, as the test fixtures and many pre-15 databases grant) plants
    ``public.=(varchar, varchar)`` and ``public.>(varchar, varchar)``, which log who ran them."""
    conn.execute("GRANT CREATE ON SCHEMA public TO imgfeat_test_alice, imgfeat_test_bob")
    bob.execute("DROP TABLE IF EXISTS public.bob_r3_loot")
    bob.execute("CREATE TABLE public.bob_r3_loot (who name, what text)")
    bob.execute("GRANT INSERT ON public.bob_r3_loot TO PUBLIC")
    for op, fn, body in (("=", "bob_r3_eq", "a::text = b::text"), (">", "bob_r3_gt", "a::text > b::text")):
        bob.execute(
            f"CREATE OR REPLACE FUNCTION public.{fn}(a varchar, b varchar) RETURNS boolean LANGUAGE plpgsql AS $f$ "
            f"BEGIN INSERT INTO public.bob_r3_loot VALUES (current_user, '{op}'); RETURN {body}; END $f$"
        )
        bob.execute(f"DROP OPERATOR IF EXISTS public.{op} (varchar, varchar)")
        bob.execute(f"CREATE OPERATOR public.{op} (LEFTARG = varchar, RIGHTARG = varchar, FUNCTION = public.{fn})")
    yield "public.bob_r3_loot"
    for op in ("=", ">"):
        bob.execute(f"DROP OPERATOR IF EXISTS public.{op} (varchar, varchar)")
    bob.execute("DROP FUNCTION IF EXISTS public.bob_r3_eq(varchar, varchar), public.bob_r3_gt(varchar, varchar)")
    bob.execute("DROP TABLE IF EXISTS public.bob_r3_loot")


def test_the_spark_executors_do_not_run_operators_planted_in_public(
    alice: psycopg.Connection[Any], bob: psycopg.Connection[Any], bobs_public_operator: str, resnet18: str
) -> None:
    """Repro: bob (CREATE on schema public) runs::

        CREATE FUNCTION public.eq(a varchar, b varchar) RETURNS boolean LANGUAGE plpgsql
            AS $$ BEGIN <anything, as whoever calls it>; RETURN a::text = b::text; END $$;
        CREATE OPERATOR public.= (LEFTARG = varchar, RIGHTARG = varchar, FUNCTION = public.eq);

    alice runs ``imgfeat spark featurize`` from her table whose ids are varchar into her target.
    Every executor's done-id lookup (``_Writer.done``: ``t.id = ANY (%s::character varying[])``)
    and its psycopg reader (``read_table_range``: ``s.id > %s``, ``t.id = s.id``) resolve ``=`` /
    ``>`` under alice's search_path ("$user", public): bob's operator is an exact match for
    (varchar, varchar) where pg_catalog has only texteq through a cast, so PostgreSQL picks it
    (CVE-2018-1058's pattern) and bob's function runs as alice in every batch (here it only logs
    current_user; it could read her tables or drop her classifiers). The in-database job pins
    ``search_path = pg_catalog, pg_temp`` for exactly this (README, Procedures); the executors
    and the driver (``imgfeat_loader.spark``) do not.

    Fix (loader/imgfeat_loader/spark_job.py, spark.py, and the CLI's connections): connect with
    ``options='-c search_path=pg_catalog,pg_temp'`` (or ``SET search_path`` at the start of each
    transaction) and schema-qualify operators (``OPERATOR(pg_catalog.=)``) and casts.
    """
    alice.execute("DROP TABLE IF EXISTS public.alice_r3_vsrc, public.alice_r3_vout")
    alice.execute("CREATE TABLE public.alice_r3_vsrc (id varchar PRIMARY KEY, image bytea)")
    for i in range(1, 4):
        alice.execute("INSERT INTO public.alice_r3_vsrc VALUES (%s, %s)", (f"img{i}", _png(32, 32, "RGB", (i * 50, 40, 90))))
    try:
        with alice.cursor(row_factory=psycopg.rows.dict_row) as cur:
            row = cur.execute(f"SELECT {ROW_COLUMNS} FROM imgfeat.models WHERE name = %s", (resnet18,)).fetchone()
        tgt = spark.target_relation(alice, "public.alice_r3_vout", "character varying")
        src_oid = alice.execute("SELECT 'public.alice_r3_vsrc'::regclass::oid::int8").fetchone()[0]  # type: ignore[index]
        spec = JobSpec(model_name=resnet18, info=ModelInfo.from_row(row), batch_size=2, dsn=alice.info.dsn,
                       target=tgt.quoted, target_oid=tgt.oid, id_type="character varying", source_oid=src_oid)
        writer = _Writer(spec)
        try:
            writer.done(["img1", "img2"])
        finally:
            writer.close()
        list(read_table_range(spec, '"public"."alice_r3_vsrc"', '"id"', '"image"', "img0", None))
        loot = bob.execute(f"SELECT who::text, what, count(*) FROM {bobs_public_operator} GROUP BY 1, 2 ORDER BY 2").fetchall()
        assert loot == [], f"bob's operators ran inside alice's Spark executors: {loot}"
    finally:
        alice.execute("DROP TABLE IF EXISTS public.alice_r3_vsrc, public.alice_r3_vout")
