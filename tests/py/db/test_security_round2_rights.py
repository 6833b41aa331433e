"""Second red-team round (imgfeat 0.3.0), the findings about rights: attacks by non-superusers
that succeeded on the code they were written against (branch ``redteam2``), written as the
assertion that the attack fails. Copied from ``redteam2:tests/py/db/test_security_round2.py``
(its numbering):

2. The advisory-lock key of a featurize job is shown to every role in ``pg_locks`` while the
   job runs: any role that can log in reads it and blocks the job from ever running again.
3. ``imgfeat_internal.clear_errors`` deleted the failures recorded before 0.3.0
   (``target IS NULL``) of every job on a source, for any role that may read the source and
   owns some target.
8. ``imgfeat_internal.caller()`` took the session's role (SET ROLE, else SESSION_USER) for the
   caller of the SECURITY DEFINER writers, not the role whose code runs: an analyst's index
   expression, evaluated by a superuser's ANALYZE (or autovacuum), dropped any classifier as the
   superuser; a SECURITY DEFINER function of bob's acted as whoever called it.
11. CREATE EXTENSION took a pre-existing role imgfeat_definer (or imgfeat_*) as it found it,
    e.g. one that can log in.
12. CREATE EXTENSION installed into a pre-existing schema ``imgfeat`` owned by someone else.
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


# --------------------------------------------------------------------------- 2. the job lock key in pg_locks


@pytest.fixture
def bobs_images(conn: psycopg.Connection[Any], bob: psycopg.Connection[Any]) -> Iterator[str]:
    conn.execute("GRANT CREATE ON SCHEMA public TO imgfeat_test_bob")
    bob.execute("DROP TABLE IF EXISTS public.bob_r2_images, public.bob_r2_out")
    bob.execute("CREATE TABLE public.bob_r2_images (id int PRIMARY KEY, image bytea)")
    for i in range(1, 13):
        bob.execute("INSERT INTO public.bob_r2_images VALUES (%s, %s)", (i, _png(48, 48, "RGB", (i * 20, 40, 90))))
    yield "public.bob_r2_images"
    bob.execute("DROP TABLE IF EXISTS public.bob_r2_images, public.bob_r2_out")


def test_a_running_jobs_lock_key_cannot_be_read_from_pg_locks(
    bob: psycopg.Connection[Any], stranger: psycopg.Connection[Any], bobs_images: str, resnet18: str
) -> None:
    """Repro: while bob's CALL imgfeat.featurize(...) runs, a role with no imgfeat rights at all runs

        SELECT (classid::bigint << 32) | objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1;

    (pg_locks is readable by PUBLIC) and then SELECT pg_advisory_lock(<that key>). The key is
    the job's permanent row in imgfeat_internal.job_locks, so from then on every run of bob's
    job (a resume, new rows) fails with "... is already running", for as long as the attacker's
    session lives, and again whenever it likes.

    Fix (imgfeat/db/jobs.py: _lock_job and imgfeat_internal.job_lock_key in
    sql/src/40_featurize_table.sql): a key that is seen once must be worth nothing: when the
    lock is held, let job_lock_key (SECURITY DEFINER) check through pg_locks whether its holder is
    a backend running this job (featurize_jobs: status running, that pid, same source/target/model);
    if not, give the job a fresh random key (UPDATE job_locks) and lock that. Or serialise jobs with
    something pg_locks does not publish (e.g. a row of job_locks locked FOR UPDATE per batch plus
    a running-job check on featurize_jobs).
    """
    call = f"CALL imgfeat.featurize('{bobs_images}', 'public.bob_r2_out', %s, batch_size => 1)"
    seen: set[int] = set()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            bob.execute(call, (resnet18,))
        except BaseException as exc:  # noqa: BLE001 - reported below
            failure.append(exc)

    job = threading.Thread(target=run)
    job.start()
    while job.is_alive():
        for (key,) in stranger.execute(
            "SELECT (classid::bigint << 32) | objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1"
        ):
            seen.add(key)
        time.sleep(0.002)
    job.join()
    assert not failure, failure
    for key in seen:  # the attacker holds every key it saw
        stranger.execute("SELECT pg_advisory_lock(%s)", (key,))
    try:
        bob.execute("INSERT INTO public.bob_r2_images VALUES (99, %s)", (_png(48, 48),))
        bob.execute("SET lock_timeout = '5s'")
        try:
            bob.execute(call, (resnet18,))
        except psycopg.Error as exc:
            pytest.fail(f"a role without imgfeat rights blocked bob's job with a key read from pg_locks: {exc.diag.message_primary}")
        assert bob.execute("SELECT count(*) FROM public.bob_r2_out").fetchone() == (13,)
    finally:
        stranger.execute("SELECT pg_advisory_unlock_all()")


# --------------------------------------------------------------------------- 3. other roles' recorded failures


def test_clear_errors_leaves_other_roles_failures_alone(
    conn: psycopg.Connection[Any], alice: psycopg.Connection[Any], bob: psycopg.Connection[Any], bobs_images: str
) -> None:
    """Repro (alice: imgfeat_user with SELECT on bob's source and a features table of her own)::

        SELECT imgfeat_internal.clear_errors('public.bob_images', 'public.alice_out', 'resnet18', '{7}');

    deletes bob's recorded failure of id 7 when it was recorded before 0.3.0 (target IS NULL: every
    row an upgraded installation has), though alice's target has nothing to do with bob's job:
    the DELETE matches ``e.target = target OR e.target IS NULL``.

    Fix (sql/src/40_featurize_table.sql: imgfeat_internal.clear_errors): delete rows with a NULL
    target only for a caller who may run every job that could have written them (e.g. the
    source's owner), or give legacy rows their target in the upgrade script (from
    featurize_jobs) and match e.target = target only.
    """
    conn.execute(f"GRANT SELECT ON {bobs_images} TO imgfeat_test_alice")
    conn.execute("GRANT CREATE ON SCHEMA public TO imgfeat_test_alice")
    conn.execute("DELETE FROM imgfeat.featurize_errors WHERE source = %s::regclass", (bobs_images,))
    # a failure of bob's job, as imgfeat 0.2.0 recorded it (no target), kept by the upgrade
    conn.execute(
        "INSERT INTO imgfeat.featurize_errors (source, id, model_name, error_class, message, target) "
        "VALUES (%s::regclass, '7', 'resnet18', 'image_decode_error', 'bob''s failure', NULL)",
        (bobs_images,),
    )
    alice.execute("DROP TABLE IF EXISTS public.alice_r2_out")
    alice.execute("CREATE TABLE public.alice_r2_out (id int, model_name text, features real[], PRIMARY KEY (id, model_name))")
    try:
        alice.execute(
            "SELECT imgfeat_internal.clear_errors(%s, 'public.alice_r2_out', 'resnet18', '{7}')", (bobs_images,)
        )
    except psycopg.errors.InsufficientPrivilege:
        pass
    left = bob.execute(
        "SELECT count(*) FROM imgfeat.featurize_errors WHERE source = %s::regclass AND id = '7'", (bobs_images,)
    ).fetchone()
    alice.execute("DROP TABLE IF EXISTS public.alice_r2_out")
    assert left == (1,), "alice deleted bob's recorded failure through a target of her own"


# --------------------------------------------------------------------------- 8. caller() is the session, not the code


@pytest.fixture
def alices_classifier(conn: psycopg.Connection[Any], alice: psycopg.Connection[Any]) -> Iterator[str]:
    conn.execute("GRANT CREATE ON SCHEMA public TO imgfeat_test_alice, imgfeat_test_bob")
    alice.execute("DROP TABLE IF EXISTS public.alice_r2_train")
    alice.execute(
        "CREATE TABLE public.alice_r2_train AS SELECT i AS id, ARRAY[i % 2 + (i % 7) / 10.0, (i % 5) / 5.0]::real[] AS features, "
        "CASE WHEN i % 2 = 0 THEN 'even' ELSE 'odd' END AS label FROM generate_series(1, 40) i"
    )
    alice.execute("SELECT imgfeat.drop_classifier('alices_r2_clf')")
    alice.execute("CALL imgfeat.train_logistic_regression('alices_r2_clf', 'public.alice_r2_train')")
    yield "alices_r2_clf"
    conn.execute("DELETE FROM imgfeat.classifiers WHERE name = 'alices_r2_clf'")
    alice.execute("DROP TABLE IF EXISTS public.alice_r2_train")


def test_an_analysts_code_run_by_maintenance_cannot_act_as_the_superuser(
    conn: psycopg.Connection[Any], bob: psycopg.Connection[Any], alices_classifier: str
) -> None:
    """Repro (bob: imgfeat_user with CREATE on a schema)::

        CREATE FUNCTION public.bob_idx(int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$
        BEGIN PERFORM imgfeat.drop_classifier('alices_clf'); RETURN $1;
        EXCEPTION WHEN others THEN RETURN $1; END $$;
        CREATE TABLE public.bob_t (x int);
        CREATE INDEX ON public.bob_t (public.bob_idx(x));
        INSERT INTO public.bob_t SELECT generate_series(1, 3);   -- as bob: refused, swallowed

    then a superuser's ANALYZE (a nightly VACUUM ANALYZE; also REINDEX, CLUSTER, VACUUM FULL,
    REFRESH MATERIALIZED VIEW, pg_restore) evaluates the expression as bob (current_user = bob,
    security-restricted), but imgfeat_internal.caller() reads the session's role: 'postgres', a
    member of imgfeat_admin, so alice's classifier is dropped. Autovacuum's auto-analyze does
    the same with nobody's action (its session user is the bootstrap superuser); with
    store_classifier(..., replace => true) bob replaces alice's numbers and her name stays its
    owner; with job_lock_key he gets any job's lock key.

    Fix (sql/src/40_featurize_table.sql: imgfeat_internal.caller() and its users): a SECURITY
    DEFINER function cannot learn who called it, so do not authorise on the session's identity.
    Let PostgreSQL check the real current_user: give imgfeat_user INSERT-only rights on
    append-only tables with row-level security (WITH CHECK (owner = current_user) and "the name is
    new or its owner is current_user"; INSERT allows only ROW EXCLUSIVE locks, which block no
    reader), a replace or a drop being a new version row or a tombstone. At the least, refuse in
    the definer functions a caller() that is a superuser or has imgfeat_admin (they can write the
    tables themselves), which closes the maintenance and autovacuum paths.
    """
    bob.execute("DROP TABLE IF EXISTS public.bob_r2_t")
    bob.execute(
        "CREATE OR REPLACE FUNCTION public.bob_r2_idx(int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $f$ "
        f"BEGIN PERFORM imgfeat.drop_classifier('{alices_classifier}'); RETURN $1; "
        "EXCEPTION WHEN others THEN RETURN $1; END $f$"
    )
    bob.execute("CREATE TABLE public.bob_r2_t (x int)")
    bob.execute("CREATE INDEX ON public.bob_r2_t (public.bob_r2_idx(x))")
    bob.execute("INSERT INTO public.bob_r2_t SELECT generate_series(1, 3)")
    present = "SELECT count(*) FROM imgfeat.classifiers WHERE name = %s"
    assert conn.execute(present, (alices_classifier,)).fetchone() == (1,)  # bob alone could not drop it
    try:
        conn.execute("ANALYZE public.bob_r2_t")  # the DBA's routine maintenance
        assert conn.execute(present, (alices_classifier,)).fetchone() == (1,), (
            "bob's index expression dropped alice's classifier as the superuser running ANALYZE"
        )
    finally:
        bob.execute("DROP TABLE IF EXISTS public.bob_r2_t")
        bob.execute("DROP FUNCTION IF EXISTS public.bob_r2_idx(int)")


def test_another_roles_security_definer_function_cannot_act_as_its_caller(
    alice: psycopg.Connection[Any], bob: psycopg.Connection[Any], alices_classifier: str
) -> None:
    """Repro: bob (imgfeat_user) publishes a SECURITY DEFINER function, which PostgreSQL runs with
    bob's rights only::

        CREATE FUNCTION public.bob_version() RETURNS text LANGUAGE plpgsql SECURITY DEFINER
        SET search_path = pg_catalog AS $$ BEGIN
          BEGIN PERFORM imgfeat_internal.store_classifier(c.name, ..., ARRAY[50.0]::float8[], ..., true)
                  FROM imgfeat.classifiers c WHERE c.name = 'alices_clf';
          EXCEPTION WHEN others THEN NULL; END;
          RETURN 'bob 1.0'; END $$;

    When alice runs SELECT public.bob_version(), imgfeat_internal.caller() answers 'alice' (the
    session's role), so store_classifier replaces alice's classifier with bob's intercept: her
    name stays its owner and trained_by, and every prediction with it is now bob's.

    Fix: as test_an_analysts_code_run_by_maintenance_cannot_act_as_the_superuser (authorise on
    current_user through row-level security, not on the session's role).
    """
    query = "SELECT imgfeat.predict_proba(%s, ARRAY[1, 0.4]::real[])"
    expected = alice.execute(query, (alices_classifier,)).fetchone()
    bob.execute(
        "CREATE OR REPLACE FUNCTION public.bob_r2_version() RETURNS text LANGUAGE plpgsql SECURITY DEFINER "
        "SET search_path = pg_catalog AS $f$ BEGIN BEGIN "
        "PERFORM imgfeat_internal.store_classifier(c.name, c.format, c.classes, c.label_type, c.coefficients, "
        "ARRAY[50.0]::float8[], c.scale_mean, c.scale_std, c.feature_dim, c.hyperparameters, c.model_name, "
        "c.training_source, c.training_rows, c.n_iterations, c.training_metrics, c.warnings, c.library_versions, true) "
        f"FROM imgfeat.classifiers c WHERE c.name = '{alices_classifier}'; "
        "EXCEPTION WHEN others THEN NULL; END; RETURN 'bob 1.0'; END $f$"
    )
    bob.execute("GRANT EXECUTE ON FUNCTION public.bob_r2_version() TO PUBLIC")
    try:
        assert bob.execute("SELECT public.bob_r2_version()").fetchone() == ("bob 1.0",)
        assert alice.execute(query, (alices_classifier,)).fetchone() == expected  # bob alone cannot
        assert alice.execute("SELECT public.bob_r2_version()").fetchone() == ("bob 1.0",)
        assert alice.execute(query, (alices_classifier,)).fetchone() == expected, (
            "bob's SECURITY DEFINER function replaced alice's classifier when she called it"
        )
    finally:
        bob.execute("DROP FUNCTION IF EXISTS public.bob_r2_version()")


# --------------------------------------------------------------------------- 11. squatted role names


def test_the_extension_refuses_a_definer_role_that_can_log_in(conn: psycopg.Connection[Any], server_dsn: str) -> None:
    """Repro: before the DBA installs imgfeat, a CREATEROLE user (on PostgreSQL 16+ a non-superuser
    who can administer only the roles it creates) runs

        CREATE ROLE imgfeat_definer LOGIN PASSWORD 'known';

    sql/src/05_roles.sql creates imgfeat_definer only "if missing" and checks nothing about an
    existing one, so CREATE EXTENSION imgfeat makes that login role the owner of the SECURITY
    DEFINER wrappers and gives it the internal functions that trust the rows they are given
    (imgfeat_internal.featurize_image, classify): logging in as it, the squatter poisons every
    backend's model and classifier caches, writes imgfeat.classifiers directly, and so on. The
    same holds for imgfeat_admin / imgfeat_file_reader / imgfeat_user created beforehand with
    members of the squatter's choosing.

    Fix (sql/src/05_roles.sql): when a role exists, check it (imgfeat_definer: NOLOGIN, NOINHERIT,
    not superuser, no members, no memberships; the others: NOLOGIN, not superuser, no CREATEROLE,
    BYPASSRLS, REPLICATION) and refuse to install otherwise, naming what is wrong; or create the
    roles with a per-installation name.
    """
    dbname = "imgfeat_r2_squat"
    conn.execute("ALTER ROLE imgfeat_definer LOGIN")  # as a squatter's pre-created role would be
    try:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{dbname}"')
            admin.execute(f'CREATE DATABASE "{dbname}"')
        try:
            with psycopg.connect(conn.info.dsn.replace(f"dbname={conn.info.dbname}", f"dbname={dbname}"), autocommit=True) as fresh:
                try:
                    fresh.execute("CREATE EXTENSION imgfeat CASCADE")
                except psycopg.Error:
                    return  # refused: fine
                can_login = fresh.execute("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'imgfeat_definer'").fetchone()
                owner = fresh.execute(
                    "SELECT pg_get_userbyid(proowner) FROM pg_proc WHERE oid = 'imgfeat.predict(text, real[])'::regprocedure"
                ).fetchone()
            assert can_login == (False,), (
                f"CREATE EXTENSION accepted a pre-existing imgfeat_definer that can log in as the owner of {owner}"
            )
        finally:
            with psycopg.connect(server_dsn, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    finally:
        conn.execute("ALTER ROLE imgfeat_definer NOLOGIN")


# --------------------------------------------------------------------------- 12. a squatted schema


def test_the_extension_refuses_a_schema_owned_by_someone_else(
    conn: psycopg.Connection[Any], server_dsn: str, alice: psycopg.Connection[Any], bob: psycopg.Connection[Any]
) -> None:
    """Repro: alice owns a database (a non-superuser: an application's owner role) and runs, before
    a superuser installs imgfeat in it, CREATE SCHEMA imgfeat. Then CREATE EXTENSION imgfeat
    succeeds and the schema stays alice's. She creates

        CREATE FUNCTION imgfeat.predict(classifier_name text, features text) RETURNS text
        LANGUAGE plpgsql AS $$ BEGIN RAISE NOTICE 'running as %', current_user; RETURN 'forged'; END $$;

    and bob's SELECT imgfeat.predict('his_clf', '{1,0.4}') runs her code with bob's rights (an
    unknown-typed literal prefers the text parameter). As the schema's owner she may also rename
    it and create a schema imgfeat of her own whose tables the library's SPI queries then read
    (imgfeat.models, imgfeat.classifiers).

    Fix (the install script, e.g. sql/src/00_schema.sql): refuse to install unless the schema
    imgfeat belongs to the role running CREATE EXTENSION (a superuser) and holds nothing else:
    DO $$ BEGIN IF (SELECT nspowner FROM pg_namespace WHERE nspname = 'imgfeat') <>
    (SELECT oid FROM pg_roles WHERE rolname = current_user) THEN RAISE EXCEPTION ...; END IF; END $$.
    """
    dbname = "imgfeat_r2_schema"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{dbname}"')
        admin.execute(f'CREATE DATABASE "{dbname}" OWNER imgfeat_test_alice')
    db_dsn = conn.info.dsn.replace(f"dbname={conn.info.dbname}", f"dbname={dbname}")
    try:
        with connect_as(db_dsn, "imgfeat_test_alice") as owner:
            owner.execute("CREATE SCHEMA imgfeat")
        with psycopg.connect(db_dsn, autocommit=True) as su:
            try:
                su.execute("CREATE EXTENSION imgfeat CASCADE")
            except psycopg.Error:
                return  # refused: fine
            schema_owner = su.execute("SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'imgfeat'").fetchone()
        with connect_as(db_dsn, "imgfeat_test_alice") as owner:
            owner.execute(
                "CREATE FUNCTION imgfeat.predict(classifier_name text, features text) RETURNS text LANGUAGE plpgsql "
                "AS $f$ BEGIN RETURN 'forged by alice, run as ' || current_user; END $f$"
            )
            owner.execute("GRANT EXECUTE ON FUNCTION imgfeat.predict(text, text) TO PUBLIC")
        with connect_as(db_dsn, "imgfeat_test_bob") as victim:
            try:
                got = victim.execute("SELECT imgfeat.predict('some_clf', '{1,0.4}')").fetchone()
            except psycopg.Error:
                got = None
        assert schema_owner != ("imgfeat_test_alice",) and got != ("forged by alice, run as imgfeat_test_bob",), (
            f"CREATE EXTENSION installed into alice's schema imgfeat; bob's predict ran her function: {got}"
        )
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


# --------------------------------------------------------------------------- the fix of 8: proofs of the caller


def test_analysts_cannot_forge_read_remove_or_lock_the_caller_proofs(alice: psycopg.Connection[Any]) -> None:
    """imgfeat_internal.caller_proofs: an analyst inserts only a proof naming itself, its backend and its
    transaction; reads, changes and deletes none; and can lock it in no mode stronger than ROW EXCLUSIVE."""
    for attack in (
        "INSERT INTO imgfeat_internal.caller_proofs (role) VALUES ('imgfeat_test_bob')",
        "INSERT INTO imgfeat_internal.caller_proofs (role) VALUES ('postgres')",
        "INSERT INTO imgfeat_internal.caller_proofs (backend_pid) VALUES (pg_backend_pid() + 1)",
        "INSERT INTO imgfeat_internal.caller_proofs (xid) VALUES ('1'::xid8)",
        "SELECT * FROM imgfeat_internal.caller_proofs",
        "INSERT INTO imgfeat_internal.caller_proofs DEFAULT VALUES RETURNING role",
        "DELETE FROM imgfeat_internal.caller_proofs",
        "UPDATE imgfeat_internal.caller_proofs SET role = 'postgres'",
        "TRUNCATE imgfeat_internal.caller_proofs",
        "LOCK TABLE imgfeat_internal.caller_proofs IN SHARE MODE",
        "LOCK TABLE imgfeat_internal.caller_proofs IN EXCLUSIVE MODE",
        "LOCK TABLE imgfeat_internal.caller_proofs IN ACCESS EXCLUSIVE MODE",
        # a SECURITY DEFINER half called without a proof
        "SELECT imgfeat_internal.drop_classifier_definer('whatever')",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege), alice.transaction():
            alice.execute(attack)
    with alice.transaction():  # her own proof is accepted
        alice.execute("INSERT INTO imgfeat_internal.caller_proofs DEFAULT VALUES")
        assert alice.execute("SELECT imgfeat_internal.drop_classifier_definer('no_such_classifier')").fetchone() == (False,)


def test_what_analysts_can_do_to_the_caller_proofs_blocks_no_one(
    dsn: str, alice: psycopg.Connection[Any], bob: psycopg.Connection[Any], conn: psycopg.Connection[Any]
) -> None:
    """Alice holds ROW EXCLUSIVE on caller_proofs and an uncommitted proof of hers: bob still trains,
    replaces and drops his classifiers (each call inserts and consumes a proof)."""
    conn.execute("GRANT CREATE ON SCHEMA public TO imgfeat_test_bob")
    bob.execute("DROP TABLE IF EXISTS public.bob_r2_proof_train")
    bob.execute(
        "CREATE TABLE public.bob_r2_proof_train AS SELECT i AS id, ARRAY[i % 2, (i % 5) / 5.0]::real[] AS features, "
        "i % 2 = 0 AS label FROM generate_series(1, 20) i"
    )
    with connect_as(dsn, "imgfeat_test_alice") as attacker:
        attacker.execute("BEGIN")
        attacker.execute("LOCK TABLE imgfeat_internal.caller_proofs IN ROW EXCLUSIVE MODE")
        attacker.execute("INSERT INTO imgfeat_internal.caller_proofs DEFAULT VALUES")
        try:
            bob.execute("SET lock_timeout = '5s'")
            bob.execute("CALL imgfeat.train_logistic_regression('bob_r2_proof', 'public.bob_r2_proof_train')")
            bob.execute("CALL imgfeat.train_logistic_regression('bob_r2_proof', 'public.bob_r2_proof_train', replace => true)")
            assert bob.execute("SELECT imgfeat.drop_classifier('bob_r2_proof')").fetchone() == (True,)
        finally:
            attacker.execute("ROLLBACK")
            bob.execute("DROP TABLE IF EXISTS public.bob_r2_proof_train")


def test_a_proof_left_by_another_roles_code_is_not_taken_for_the_caller(
    alice: psycopg.Connection[Any], bob: psycopg.Connection[Any], alices_classifier: str
) -> None:
    """Bob's SECURITY DEFINER function leaves a proof of bob's in alice's transaction: her own drop
    in that transaction is refused (two proofs: ambiguous), never done as bob, nor as her for bob."""
    bob.execute(
        "CREATE OR REPLACE FUNCTION public.bob_r2_leave_proof() RETURNS text LANGUAGE plpgsql SECURITY DEFINER "
        "SET search_path = pg_catalog AS $f$ BEGIN INSERT INTO imgfeat_internal.caller_proofs DEFAULT VALUES; "
        "RETURN 'bob 1.0'; END $f$"
    )
    bob.execute("GRANT EXECUTE ON FUNCTION public.bob_r2_leave_proof() TO PUBLIC")
    try:
        with pytest.raises(psycopg.errors.InsufficientPrivilege), alice.transaction():
            alice.execute("SELECT public.bob_r2_leave_proof()")
            alice.execute("SELECT imgfeat.drop_classifier(%s)", (alices_classifier,))
        assert alice.execute("SELECT count(*) FROM imgfeat.classifiers WHERE name = %s", (alices_classifier,)).fetchone() == (1,)
        assert alice.execute("SELECT imgfeat.drop_classifier(%s)", (alices_classifier,)).fetchone() == (True,)
    finally:
        bob.execute("DROP FUNCTION IF EXISTS public.bob_r2_leave_proof()")


def test_a_role_that_bypasses_row_level_security_cannot_forge_a_proof(dsn: str, conn: psycopg.Connection[Any]) -> None:
    """BYPASSRLS skips the policy of caller_proofs, not its trigger: such an analyst still proves only itself."""
    conn.execute("DROP ROLE IF EXISTS imgfeat_test_bypass")
    conn.execute("CREATE ROLE imgfeat_test_bypass LOGIN BYPASSRLS IN ROLE imgfeat_user")
    try:
        with connect_as(dsn, "imgfeat_test_bypass") as bypass:
            for forged in ("(role) VALUES ('postgres')", "(backend_pid) VALUES (pg_backend_pid() + 1)", "(xid) VALUES ('1'::xid8)"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege), bypass.transaction():
                    bypass.execute(f"INSERT INTO imgfeat_internal.caller_proofs {forged}")
            assert bypass.execute("SELECT imgfeat.drop_classifier('no_such_classifier')").fetchone() == (False,)
    finally:
        conn.execute("DROP ROLE IF EXISTS imgfeat_test_bypass")
