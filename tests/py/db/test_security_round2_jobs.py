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
