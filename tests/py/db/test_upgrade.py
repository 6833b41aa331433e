"""Upgrades: every path PostgreSQL reports to the current version keeps models and classifiers,
and leaves the same objects as a fresh install."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import conninfo, sql
from psycopg.types.json import Jsonb

# One row per extension member object, with everything that defines it.
SNAPSHOT = """
WITH members AS (
    SELECT d.classid, d.objid, d.objsubid FROM pg_depend d
    WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
      AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'imgfeat')
)
SELECT pg_describe_object(m.classid, m.objid, m.objsubid) AS object,
       coalesce(
         CASE m.classid
           WHEN 'pg_proc'::regclass THEN
             (SELECT pg_get_functiondef(p.oid) || ' acl=' || coalesce(p.proacl::text, '')
              FROM pg_proc p WHERE p.oid = m.objid)
           WHEN 'pg_class'::regclass THEN
             (SELECT c.relkind::text || ' acl=' || coalesce(c.relacl::text, '') || ' rls=' || c.relrowsecurity::text || ' cols=' ||
                     (SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull::text
                                        || ' ' || coalesce(pg_get_expr(ad.adbin, ad.adrelid), '') || ' ' || a.attstorage::text
                                        || ' ' || coalesce(col_description(c.oid, a.attnum), ''), ', ' ORDER BY a.attnum)
                      FROM pg_attribute a LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
                      WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
                     || ' constraints=' || coalesce((SELECT string_agg(pg_get_constraintdef(k.oid), '; ' ORDER BY pg_get_constraintdef(k.oid))
                                                     FROM pg_constraint k WHERE k.conrelid = c.oid), '')
                     || ' indexes=' || coalesce((SELECT string_agg(regexp_replace(pg_get_indexdef(i.indexrelid), ' ON .*? USING', ' USING'), '; ' ORDER BY 1)
                                                 FROM pg_index i WHERE i.indrelid = c.oid), '')
                     || ' policies=' || coalesce((SELECT string_agg(pol.polname || ' ' || pol.polcmd::text || ' ' ||
                                                  coalesce(pg_get_expr(pol.polqual, pol.polrelid), '') || ' ' ||
                                                  coalesce(pg_get_expr(pol.polwithcheck, pol.polrelid), ''), '; ' ORDER BY pol.polname)
                                                  FROM pg_policy pol WHERE pol.polrelid = c.oid), '')
                     || ' view=' || coalesce(pg_get_viewdef(c.oid), '') || ' options=' || coalesce(c.reloptions::text, '')
              FROM pg_class c WHERE c.oid = m.objid)
           WHEN 'pg_type'::regclass THEN (SELECT format_type(t.oid, NULL) FROM pg_type t WHERE t.oid = m.objid)
         END, '') AS definition,
       coalesce(obj_description(m.objid, m.classid::regclass::text), '') AS comment
FROM members m
ORDER BY 1
"""


def _fresh_db(server_dsn: str, prefix: str) -> str:
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_dsn, autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return conninfo.make_conninfo(server_dsn, dbname=name)


def _drop_db(server_dsn: str, db_dsn: str) -> None:
    name = conninfo.conninfo_to_dict(db_dsn)["dbname"]
    with psycopg.connect(server_dsn, autocommit=True) as c:
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(str(name))))


def _copy_rows(src: psycopg.Connection[Any], dst: psycopg.Connection[Any], table: str, where: str, params: tuple[Any, ...]) -> int:
    """Copy rows of an imgfeat table between databases: the columns the older version has (a
    column added later takes its default in the upgrade)."""
    have = {r[0] for r in dst.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped", (table,))}
    cur = src.execute(f"SELECT * FROM {table} WHERE {where}", params)
    keep = [i for i, c in enumerate(cur.description or []) if c.name in have]
    cols = [(cur.description or [])[i].name for i in keep]
    rows = [[row[i] for i in keep] for row in cur.fetchall()]
    for row in rows:
        dst.execute(
            sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                sql.SQL(table), sql.SQL(", ").join(map(sql.Identifier, cols)), sql.SQL(", ").join(sql.Placeholder() * len(cols))
            ),
            [Jsonb(v) if isinstance(v, dict) else v for v in row],
        )
    return len(rows)


@pytest.fixture(scope="module")
def trained(dsn: str, resnet18: str) -> str:
    """A small classifier in the test database, to carry across the upgrade."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE IF NOT EXISTS public.upgrade_features (id int PRIMARY KEY, features real[], label text)")
        c.execute("INSERT INTO public.upgrade_features SELECT i, ARRAY[i % 2, (i * 7 % 5) / 5.0]::real[], "
                  "CASE WHEN i % 2 = 0 THEN 'even' ELSE 'odd' END FROM generate_series(1, 30) i ON CONFLICT DO NOTHING")
        c.execute("CALL imgfeat.train_logistic_regression('upgrade_clf', 'public.upgrade_features', replace => true)")
    return "upgrade_clf"


def test_every_upgrade_path(server_dsn: str, dsn: str, resnet18: str, trained: str, face_bytes: bytes) -> None:
    with psycopg.connect(dsn, autocommit=True) as cur_db:
        default = cur_db.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'imgfeat'").fetchone()[0]  # type: ignore[index]
        versions = [r[0] for r in cur_db.execute("SELECT version FROM pg_available_extension_versions WHERE name = 'imgfeat'")]
        paths = dict(cur_db.execute(
            "SELECT source, path FROM pg_extension_update_paths('imgfeat') WHERE target = %s AND path IS NOT NULL", (default,)
        ).fetchall())
        expected_features = np.asarray(
            cur_db.execute("SELECT imgfeat.featurize_image(%s, %s)", (face_bytes, resnet18)).fetchone()[0], dtype=np.float32  # type: ignore[index]
        )
        expected_label = cur_db.execute("SELECT imgfeat.predict(%s, ARRAY[1, 0.4]::real[])", (trained,)).fetchone()
    # every earlier release reaches the current version
    assert sorted(paths) == sorted(v for v in versions if v != default)
    assert paths, "no earlier release to upgrade from"

    fresh = _fresh_db(server_dsn, "imgfeat_fresh")
    try:
        with psycopg.connect(fresh, autocommit=True) as c:
            c.execute("CREATE EXTENSION imgfeat CASCADE")
            want = c.execute(SNAPSHOT).fetchall()
    finally:
        _drop_db(server_dsn, fresh)

    for source, path in paths.items():
        upgraded = _fresh_db(server_dsn, "imgfeat_upgrade")
        try:
            with psycopg.connect(upgraded, autocommit=True) as c, psycopg.connect(dsn, autocommit=True) as cur_db:
                c.execute("CREATE EXTENSION imgfeat VERSION %s CASCADE" % sql.quote(source))  # noqa: UP031 - literal, quoted
                assert _copy_rows(cur_db, c, "imgfeat.models", "name = %s", (resnet18,)) == 1
                assert _copy_rows(cur_db, c, "imgfeat.model_chunks", "model_name = %s", (resnet18,)) >= 1
                assert _copy_rows(cur_db, c, "imgfeat.classifiers", "name = %s", (trained,)) == 1
                # failures as Spark jobs of earlier releases left them: several rows for one id
                c.execute("CREATE TABLE public.upgrade_src (id int PRIMARY KEY, image bytea)")
                c.execute("INSERT INTO imgfeat.featurize_errors (source, id, model_name, error_class, message, failed_at) "
                          "SELECT 'public.upgrade_src', '7', 'resnet18', 'image_decode_error', 'run ' || n, "
                          "'2025-01-01'::timestamptz + n * interval '1 hour' FROM generate_series(1, 3) n")
                c.execute("ALTER EXTENSION imgfeat UPDATE")
                assert c.execute("SELECT id, message FROM imgfeat.featurize_errors").fetchall() == [("7", "run 3")], path
                assert c.execute("SELECT extversion FROM pg_extension WHERE extname = 'imgfeat'").fetchone() == (default,)
                # the data survived and works with the current library
                got = np.asarray(c.execute("SELECT imgfeat.featurize_image(%s, %s)", (face_bytes, resnet18)).fetchone()[0], dtype=np.float32)  # type: ignore[index]
                assert np.max(np.abs(got - expected_features)) <= 1e-5, path
                assert c.execute("SELECT imgfeat.predict(%s, ARRAY[1, 0.4]::real[])", (trained,)).fetchone() == expected_label
                # and the objects are exactly those of a fresh install
                have = c.execute(SNAPSHOT).fetchall()
                missing = sorted(set(want) - set(have))
                extra = sorted(set(have) - set(want))
                assert not missing and not extra, f"upgrade {path} differs from a fresh install:\nmissing {missing[:3]}\nextra {extra[:3]}"
        finally:
            _drop_db(server_dsn, upgraded)


def test_upgrade_records_the_precision_of_existing_models(server_dsn: str, dsn: str, resnet18: str,
                                                           faces_table: str) -> None:
    """From 0.2.0 (no precision column): an int8 QDQ model made by imgfeat.quantize_model becomes
    precision int8 on engines {openvino,onnxruntime}; a float model fp32 on {onnxruntime}."""
    with psycopg.connect(dsn, autocommit=True) as cur_db:
        cur_db.execute("SELECT imgfeat.quantize_model(%s, %s::regclass, new_name => 'upgrade-q8', calibration_rows => 2, "
                       "replace => true)", (resnet18, faces_table))
    upgraded = _fresh_db(server_dsn, "imgfeat_upgrade_precision")
    try:
        with psycopg.connect(upgraded, autocommit=True) as c, psycopg.connect(dsn, autocommit=True) as cur_db:
            c.execute("CREATE EXTENSION imgfeat VERSION '0.2.0' CASCADE")
            for name in (resnet18, "upgrade-q8"):
                assert _copy_rows(cur_db, c, "imgfeat.models", "name = %s", (name,)) == 1
                assert _copy_rows(cur_db, c, "imgfeat.model_chunks", "model_name = %s", (name,)) >= 1
            c.execute("ALTER EXTENSION imgfeat UPDATE")
            rows = dict(((n, (p, e)) for n, p, e in c.execute("SELECT name, precision, engines FROM imgfeat.models")))
    finally:
        _drop_db(server_dsn, upgraded)
    assert rows == {resnet18: ("fp32", ["onnxruntime"]), "upgrade-q8": ("int8", ["openvino", "onnxruntime"])}
