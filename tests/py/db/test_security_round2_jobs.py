"""Second red-team round, the featurize job's findings (copied from ``test_security_round2.py`` on
branch ``redteam2``, findings 6 and 7 there): attacks by non-superusers on ``CALL imgfeat.featurize``.

6. A featurize job checked that its target belongs to its caller once, then wrote to it by name
   in every later batch transaction: the owner of the target's schema dropped it between
   batches and put a table of its own there, whose trigger ran as the job's caller.
7. A featurize job gave the target it creates the source's id type: a domain of the source
   owner's, whose CHECK (a function its owner can redefine at any time) then ran as the job's
   caller for every row the job inserted, and for every row the caller inserts later.

Each test is the assertion that the attack fails (see its docstring for the repro, the impact
and the fix).
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from PIL import Image

from fix_roles import connect_as


def _png(width: int, height: int, mode: str = "RGB", color: Any = 0) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height), color).save(buf, format="PNG", compress_level=9)
    return buf.getvalue()


# --------------------------------------------------------------------------- 6. the target swapped between batches


@pytest.fixture
def bobs_schema(conn: psycopg.Connection[Any], alice: psycopg.Connection[Any], bob: psycopg.Connection[Any]) -> Iterator[str]:
    """A schema owned by bob in which alice may create tables (a team's shared workspace), and
    alice's own images and private table."""
    conn.execute("DROP SCHEMA IF EXISTS r2_shared CASCADE")
    conn.execute("CREATE SCHEMA r2_shared AUTHORIZATION imgfeat_test_bob")
    conn.execute("GRANT USAGE, CREATE ON SCHEMA r2_shared TO imgfeat_test_alice")
    conn.execute("GRANT CREATE ON SCHEMA public TO imgfeat_test_alice")
    alice.execute("DROP TABLE IF EXISTS public.alice_r2_src, public.alice_r2_secret")
    alice.execute("CREATE TABLE public.alice_r2_src (id int PRIMARY KEY, image bytea)")
    for i in range(1, 21):
        alice.execute("INSERT INTO public.alice_r2_src VALUES (%s, %s)", (i, _png(48, 48, "RGB", (i * 12, 40, 90))))
    alice.execute("CREATE TABLE public.alice_r2_secret AS SELECT 'only alice reads this'::text AS s")
    yield "r2_shared"
    alice.execute("DROP TABLE IF EXISTS public.alice_r2_src, public.alice_r2_secret")
    conn.execute("DROP SCHEMA IF EXISTS r2_shared CASCADE")


def test_a_target_swapped_between_batches_is_not_written(
    alice: psycopg.Connection[Any], bob: psycopg.Connection[Any], bobs_schema: str, resnet18: str
) -> None:
    """Repro: bob owns schema r2_shared, alice may create tables in it. Alice runs

        CALL imgfeat.featurize('public.alice_src', 'r2_shared.out', 'resnet18', batch_size => 1);

    The job creates r2_shared.out (alice's), checks once that it is hers, commits; bob, as the
    schema's owner, then drops it and creates r2_shared.out of his own with a BEFORE INSERT
    trigger. Every later batch's INSERT is replanned by name, lands in bob's table and runs
    bob's trigger as alice: here it copies alice's private table to bob (any SQL alice may run:
    drop her classifiers, read her data). The README promises the opposite ("A featurize job
    writes only into a target that belongs to its caller ... another role's table could carry
    triggers that would run with the caller's rights").

    Fix (imgfeat/db/jobs.py: store, and catalog.target_table): in every batch transaction, before
    the INSERT, take LOCK TABLE <target> IN ROW EXCLUSIVE MODE and check that the name still
    resolves to the OID checked at the start (to_regclass(quoted)::oid = tgt.oid) and that it
    still belongs to the caller; the lock keeps it so until the commit.
    """
    bob.execute(
        "CREATE TABLE r2_shared.loot (who name, what text); GRANT INSERT ON r2_shared.loot TO PUBLIC; "
        "CREATE FUNCTION r2_shared.steal() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN "
        "INSERT INTO r2_shared.loot SELECT current_user, (SELECT string_agg(s, ',') FROM public.alice_r2_secret); "
        "RETURN NEW; END $f$"
    )
    done = threading.Event()
    swapped: list[bool] = []

    def swap() -> None:
        with connect_as(bob.info.dsn, "imgfeat_test_bob") as attacker:
            attacker.execute("SET lock_timeout = '20ms'")
            deadline = time.monotonic() + 60
            while not done.is_set() and time.monotonic() < deadline:
                mine = attacker.execute(
                    "SELECT c.relowner = 'imgfeat_test_bob'::regrole FROM pg_class c WHERE c.oid = to_regclass('r2_shared.out')"
                ).fetchone()
                if mine is not None and not mine[0]:
                    try:
                        with attacker.transaction():
                            attacker.execute("DROP TABLE r2_shared.out")
                            attacker.execute(
                                "CREATE TABLE r2_shared.out (id int, model_name text, features real[], "
                                "featurized_at timestamptz DEFAULT now(), PRIMARY KEY (id, model_name))"
                            )
                            attacker.execute("GRANT SELECT, INSERT ON r2_shared.out TO PUBLIC")
                            attacker.execute("CREATE TRIGGER steal BEFORE INSERT ON r2_shared.out FOR EACH ROW EXECUTE FUNCTION r2_shared.steal()")
                        swapped.append(True)
                        return
                    except psycopg.Error:
                        pass
                time.sleep(0.001)

    attacker = threading.Thread(target=swap)
    attacker.start()
    try:
        alice.execute("CALL imgfeat.featurize('public.alice_r2_src', 'r2_shared.out', %s, batch_size => 1)", (resnet18,))
    except psycopg.Error:
        pass  # refusing to go on is a fine answer
    finally:
        done.set()
        attacker.join()
    assert swapped, "the attacker never found the moment to swap the target (test setup)"
    loot = bob.execute("SELECT who::text, what, count(*) FROM r2_shared.loot GROUP BY 1, 2").fetchall()
    assert loot == [], f"bob's trigger ran as alice inside her featurize job: {loot}"


# --------------------------------------------------------------------------- 7. another role's domain in the caller's target


@pytest.fixture
def bobs_domain_source(conn: psycopg.Connection[Any], alice: psycopg.Connection[Any], bob: psycopg.Connection[Any]) -> Iterator[str]:
    conn.execute("DROP SCHEMA IF EXISTS r2_bob CASCADE")
    conn.execute("CREATE SCHEMA r2_bob AUTHORIZATION imgfeat_test_bob")
    conn.execute("GRANT CREATE ON SCHEMA public TO imgfeat_test_alice")
    alice.execute("DROP TABLE IF EXISTS public.alice_r2_secret, public.alice_r2_feats")
    alice.execute("CREATE TABLE public.alice_r2_secret AS SELECT 'only alice reads this'::text AS s")
    bob.execute("GRANT USAGE ON SCHEMA r2_bob TO PUBLIC")
    bob.execute("CREATE TABLE r2_bob.loot (who name, what text); GRANT INSERT ON r2_bob.loot TO PUBLIC")
    bob.execute(
        "CREATE FUNCTION r2_bob.harmless(int) RETURNS boolean LANGUAGE plpgsql AS $f$ BEGIN "
        "INSERT INTO r2_bob.loot SELECT current_user, (SELECT string_agg(s, ',') FROM public.alice_r2_secret); RETURN true; "
        "EXCEPTION WHEN others THEN RETURN true; END $f$"
    )
    bob.execute("CREATE DOMAIN r2_bob.image_id AS int CHECK (r2_bob.harmless(VALUE))")
    bob.execute("CREATE TABLE r2_bob.images (id r2_bob.image_id PRIMARY KEY, image bytea)")
    for i in range(1, 4):
        bob.execute("INSERT INTO r2_bob.images VALUES (%s, %s)", (i, _png(32, 32, "RGB", (i * 50, 40, 90))))
    bob.execute("GRANT SELECT ON r2_bob.images TO imgfeat_test_alice")
    bob.execute("TRUNCATE r2_bob.loot")
    yield "r2_bob.images"
    alice.execute("DROP TABLE IF EXISTS public.alice_r2_secret, public.alice_r2_feats")
    conn.execute("DROP SCHEMA IF EXISTS r2_bob CASCADE")


def test_another_roles_domain_does_not_run_in_the_callers_job_or_target(
    alice: psycopg.Connection[Any], bob: psycopg.Connection[Any], bobs_domain_source: str, resnet18: str
) -> None:
    """Repro: bob shares a plain table (no view, no trigger) with alice whose id column is of his
    domain r2_bob.image_id (CHECK (r2_bob.harmless(VALUE))). Alice runs

        CALL imgfeat.featurize('r2_bob.images', 'public.alice_feats', 'resnet18');

    The job creates alice's target as (id r2_bob.image_id, ...) (catalog.target_ddl with the
    source column's format_type) and inserts through $1::r2_bob.image_id[]: bob's function runs
    as alice for each row (here copying her private table to bob), and keeps running as alice
    on every later INSERT into her own table, with whatever body bob gives it then.

    Fix (imgfeat/db/catalog.py: check_id_column / target_ddl, imgfeat/db/jobs.py: the INSERT):
    resolve a domain to its base type (pg_type.typbasetype, recursively) for the target's id
    column and for the casts, reading the source's ids as s.id::<base type>; or refuse id types
    (and domains in their chain) owned by a role other than the caller and the bootstrap superuser.
    """
    alice.execute("CALL imgfeat.featurize(%s, 'public.alice_r2_feats', %s)", (bobs_domain_source, resnet18))
    during = bob.execute("SELECT count(*) FROM r2_bob.loot").fetchone()
    id_type = alice.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'public.alice_r2_feats'::regclass AND attname = 'id'"
    ).fetchone()
    alice.execute("INSERT INTO public.alice_r2_feats (id, model_name, features) VALUES (100, 'mine', '{1}')")
    later = bob.execute("SELECT count(*) FROM r2_bob.loot").fetchone()
    assert during == (0,), f"bob's domain check ran as alice {during[0]} times during her job"  # type: ignore[index]
    assert id_type != ("r2_bob.image_id",), "alice's new target was given bob's domain"
    assert later == (0,)


# --------------------------------------------------------------------------- beyond the red team's repros


def _swap_while_alice_runs(attacker_dsn: str, ready: str, swap: list[str], call: str, alice: psycopg.Connection[Any],
                           params: tuple[Any, ...]) -> tuple[bool, psycopg.Error | None]:
    """Run ``call`` as alice while bob, from his own connection, runs the statements ``swap`` in one
    transaction as soon as the query ``ready`` answers true (retrying while alice's batch holds
    its locks). Returns whether bob swapped, and alice's error if her job stopped."""
    done = threading.Event()
    swapped: list[bool] = []

    def attack() -> None:
        with connect_as(attacker_dsn, "imgfeat_test_bob") as attacker:
            attacker.execute("SET lock_timeout = '20ms'")
            deadline = time.monotonic() + 60
            while not done.is_set() and time.monotonic() < deadline:
                if attacker.execute(ready).fetchone() == (True,):
                    try:
                        with attacker.transaction():
                            for statement in swap:
                                attacker.execute(statement)
                        swapped.append(True)
                        return
                    except psycopg.Error:
                        pass
                time.sleep(0.001)

    thread = threading.Thread(target=attack)
    thread.start()
    error: psycopg.Error | None = None
    try:
        alice.execute(call, params)
    except psycopg.Error as exc:
        error = exc
    finally:
        done.set()
        thread.join()
    return bool(swapped), error


@pytest.fixture
def bobs_loot(conn: psycopg.Connection[Any], bob: psycopg.Connection[Any]) -> Iterator[str]:
    """Bob's schema r2_loot: a table anyone may insert into, and a function that copies alice's
    secret there (as whoever runs it) and returns true."""
    conn.execute("DROP SCHEMA IF EXISTS r2_loot CASCADE")
    conn.execute("CREATE SCHEMA r2_loot AUTHORIZATION imgfeat_test_bob")
    bob.execute("GRANT USAGE ON SCHEMA r2_loot TO PUBLIC")
    bob.execute("CREATE TABLE r2_loot.loot (who name, what text); GRANT INSERT ON r2_loot.loot TO PUBLIC")
    bob.execute(
        "CREATE FUNCTION r2_loot.steal() RETURNS boolean LANGUAGE plpgsql AS $f$ BEGIN "
        "INSERT INTO r2_loot.loot SELECT current_user, (SELECT string_agg(s, ',') FROM public.alice_r2_secret); "
        "RETURN true; EXCEPTION WHEN others THEN RETURN true; END $f$"
    )
    bob.execute(
        "CREATE FUNCTION r2_loot.steal_trigger() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN "
        "PERFORM r2_loot.steal(); RETURN NEW; END $f$"
    )
    yield "r2_loot.loot"
    conn.execute("DROP SCHEMA IF EXISTS r2_loot CASCADE")


def test_a_renamed_schema_does_not_redirect_the_jobs_writes(
    conn: psycopg.Connection[Any], alice: psycopg.Connection[Any], bob: psycopg.Connection[Any], bobs_schema: str,
    bobs_loot: str, resnet18: str,
) -> None:
    """Renaming a schema takes no lock on its tables: bob, who owns r2_shared (and may CREATE in
    the database), renames it while alice's job writes to r2_shared.out and puts a new r2_shared
    with an out table of his own (and a trigger) under the old name. Every batch must still go to
    alice's table (now r2_shared_old.out), and bob's trigger never run."""
    database = conn.info.dbname
    conn.execute("DROP SCHEMA IF EXISTS r2_shared_old CASCADE")
    conn.execute(f'GRANT CREATE ON DATABASE "{database}" TO imgfeat_test_bob')
    try:
        swapped, error = _swap_while_alice_runs(
            bob.info.dsn,
            "SELECT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = to_regclass('r2_shared.out') "
            "AND c.relowner = 'imgfeat_test_alice'::regrole)",
            [
                "ALTER SCHEMA r2_shared RENAME TO r2_shared_old",
                "CREATE SCHEMA r2_shared",
                "GRANT USAGE, CREATE ON SCHEMA r2_shared TO PUBLIC",
                "CREATE TABLE r2_shared.out (id int, model_name text, features real[], "
                "featurized_at timestamptz DEFAULT now(), PRIMARY KEY (id, model_name))",
                "GRANT SELECT, INSERT ON r2_shared.out TO PUBLIC",
                "CREATE TRIGGER steal BEFORE INSERT ON r2_shared.out FOR EACH ROW EXECUTE FUNCTION r2_loot.steal_trigger()",
            ],
            "CALL imgfeat.featurize('public.alice_r2_src', 'r2_shared.out', %s, batch_size => 1)",
            alice,
            (resnet18,),
        )
        assert swapped, "the attacker never found the moment to rename the schema (test setup)"
        assert error is None, f"alice's job into her renamed table stopped: {error}"
        loot = bob.execute("SELECT who::text, what, count(*) FROM r2_loot.loot GROUP BY 1, 2").fetchall()
        assert loot == [], f"bob's trigger ran as alice inside her featurize job: {loot}"
        assert bob.execute("SELECT count(*) FROM r2_shared.out").fetchone() == (0,)
        assert alice.execute("SELECT count(*) FROM r2_shared_old.out").fetchone() == (20,)
    finally:
        conn.execute("DROP SCHEMA IF EXISTS r2_shared_old CASCADE")
        conn.execute(f'REVOKE CREATE ON DATABASE "{database}" FROM imgfeat_test_bob')


def test_a_source_swapped_between_batches_is_not_read(
    alice: psycopg.Connection[Any], bob: psycopg.Connection[Any], bobs_schema: str, bobs_loot: str, resnet18: str
) -> None:
    """Alice featurizes her table r2_shared.src, in bob's schema, into her own public table. Bob,
    as the schema's owner, drops her source between batches and puts a view of his under its
    name whose function would run as alice when read. The job must stop (what was committed
    stays), naming the source and why, without reading the view."""
    alice.execute("DROP TABLE IF EXISTS public.alice_r2_out")
    alice.execute("CREATE TABLE r2_shared.src (id int PRIMARY KEY, image bytea)")
    alice.execute("INSERT INTO r2_shared.src SELECT id, image FROM public.alice_r2_src")
    try:
        swapped, error = _swap_while_alice_runs(
            bob.info.dsn,
            "SELECT to_regclass('public.alice_r2_out') IS NOT NULL",
            [
                "DROP TABLE r2_shared.src",
                "CREATE VIEW r2_shared.src AS SELECT g AS id, NULL::bytea AS image FROM generate_series(1, 40) g "
                "WHERE r2_loot.steal()",
                "GRANT SELECT ON r2_shared.src TO PUBLIC",
            ],
            "CALL imgfeat.featurize('r2_shared.src', 'public.alice_r2_out', %s, batch_size => 1, on_error => 'skip')",
            alice,
            (resnet18,),
        )
        assert swapped, "the attacker never found the moment to swap the source (test setup)"
        loot = bob.execute("SELECT who::text, what, count(*) FROM r2_loot.loot GROUP BY 1, 2").fetchall()
        assert loot == [], f"bob's view ran its function as alice inside her featurize job: {loot}"
        done = alice.execute("SELECT count(*) FROM public.alice_r2_out").fetchone()[0]  # type: ignore[index]
        if done < 20:  # else bob swapped after the last batch
            assert error is not None, f"the job ended after {done} of 20 rows without an error"
        if error is not None:
            assert error.sqlstate == "55000", error
            assert "source table r2_shared.src was dropped" in str(error.diag.message_primary)
    finally:
        alice.execute("DROP TABLE IF EXISTS public.alice_r2_out")


def test_an_existing_target_with_another_roles_domain_is_refused(
    alice: psycopg.Connection[Any], bob: psycopg.Connection[Any], bobs_domain_source: str, resnet18: str
) -> None:
    """A target alice made herself (or one an earlier imgfeat created) whose id column is of bob's
    domain: storing an id would run bob's CHECK as alice. The job refuses it before any row."""
    alice.execute(
        "CREATE TABLE public.alice_r2_feats (id r2_bob.image_id, model_name text, features real[], "
        "PRIMARY KEY (id, model_name))"
    )
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as exc:
        alice.execute("CALL imgfeat.featurize(%s, 'public.alice_r2_feats', %s)", (bobs_domain_source, resnet18))
    assert "public.alice_r2_feats" in str(exc.value.diag.message_primary)
    assert "r2_bob.image_id" in str(exc.value.diag.message_primary)
    assert bob.execute("SELECT count(*) FROM r2_bob.loot").fetchone() == (0,)


def test_ids_of_a_domain_chain_are_stored_as_its_base_type(
    conn: psycopg.Connection[Any], alice: psycopg.Connection[Any], resnet18: str
) -> None:
    """A source id of a domain over a domain over varchar(12): the new target's id is
    ``character varying(12)``, and every row is featurized (resumes find them done). A domain
    over bytea is no id type."""
    conn.execute("GRANT CREATE ON SCHEMA public TO imgfeat_test_alice")
    alice.execute("DROP TABLE IF EXISTS public.alice_r2_dsrc, public.alice_r2_dout")
    alice.execute("DROP DOMAIN IF EXISTS public.alice_r2_code, public.alice_r2_key, public.alice_r2_blob")
    alice.execute("CREATE DOMAIN public.alice_r2_key AS varchar(12) CHECK (VALUE <> '')")
    alice.execute("CREATE DOMAIN public.alice_r2_code AS public.alice_r2_key")
    alice.execute("CREATE DOMAIN public.alice_r2_blob AS bytea")
    try:
        alice.execute("CREATE TABLE public.alice_r2_dsrc (id public.alice_r2_code PRIMARY KEY, image bytea, "
                      "blob public.alice_r2_blob)")
        for i in range(1, 5):
            alice.execute("INSERT INTO public.alice_r2_dsrc VALUES (%s, %s, 'x')", (f"img-{i}", _png(32, 32, "RGB", (i * 40, 9, 9))))
        call = "CALL imgfeat.featurize('public.alice_r2_dsrc', 'public.alice_r2_dout', %s, id_column => %s, batch_size => 3)"
        alice.execute(call, (resnet18, "id"))
        alice.execute(call, (resnet18, "id"))
        assert alice.execute(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'public.alice_r2_dout'::regclass AND attname = 'id'"
        ).fetchone() == ("character varying(12)",)
        assert alice.execute("SELECT count(*), count(DISTINCT id) FROM public.alice_r2_dout").fetchone() == (4, 4)
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="must be a scalar type"):
            alice.execute(call, (resnet18, "blob"))
    finally:
        alice.execute("DROP TABLE IF EXISTS public.alice_r2_dsrc, public.alice_r2_dout")
        alice.execute("DROP DOMAIN IF EXISTS public.alice_r2_code, public.alice_r2_key, public.alice_r2_blob")


def test_the_spark_path_gives_a_new_target_the_base_type_too(
    alice: psycopg.Connection[Any], bob: psycopg.Connection[Any], bobs_domain_source: str
) -> None:
    """``imgfeat spark featurize`` resolves its source and creates its target with the same
    catalog code: the id type it passes to the target and to its executors' casts is the type
    under bob's domain, so his CHECK runs neither there nor on later inserts."""
    from imgfeat_loader import spark

    src = spark.source_table(alice, bobs_domain_source, "id", "image")
    assert src.id_type == "integer"
    quoted = spark.prepare_target(alice, "public.alice_r2_feats", src.id_type)
    assert quoted == "public.alice_r2_feats"
    assert alice.execute(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 'public.alice_r2_feats'::regclass AND attname = 'id'"
    ).fetchone() == ("integer",)
    alice.execute("INSERT INTO public.alice_r2_feats (id, model_name, features) VALUES (7, 'mine', '{1}')")
    assert bob.execute("SELECT count(*) FROM r2_bob.loot").fetchone() == (0,)


def test_a_caller_without_the_temporary_privilege_is_told_what_is_missing(
    conn: psycopg.Connection[Any], alice: psycopg.Connection[Any], bobs_schema: str, resnet18: str
) -> None:
    """The job's views are temporary: without TEMPORARY on the database it stops before anything,
    saying so (42501), instead of failing on its first CREATE."""
    database = conn.info.dbname
    conn.execute(f'REVOKE TEMPORARY ON DATABASE "{database}" FROM PUBLIC')
    try:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="needs the TEMPORARY privilege"):
            alice.execute("CALL imgfeat.featurize('public.alice_r2_src', 'public.alice_r2_out', %s)", (resnet18,))
        assert alice.execute("SELECT to_regclass('public.alice_r2_out')").fetchone() == (None,)
    finally:
        conn.execute(f'GRANT TEMPORARY ON DATABASE "{database}" TO PUBLIC')
