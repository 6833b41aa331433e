"""Attacks on the precision and engine of a model (issue 18), by non-superusers, for real.

What runs a model (engine, precision, OpenVINO's configuration, the plugin library loaded) is
the catalog row's and the installed library tree's: an analyst (``imgfeat_user`` only) can
neither change the row, nor forge one, nor name a library or a precision with a setting; and
what one role does in a pooled backend leaves another role's cached session as the catalog
says. Style and roles: ``test_security_attacks.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest

from fix_roles import connect_as, ensure_role
from imgfeat.core import engines

NEEDS_BF16 = pytest.mark.skipif(engines.cpu().bf16_isa is None,
                                reason="the attack featurizes with a bf16 model, which this CPU cannot run")

REFUSED = (psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedFunction, psycopg.errors.InvalidSchemaName)

SETTINGS = {
    "imgfeat.precision": "fp32",
    "imgfeat.engine": "onnxruntime",
    "imgfeat.engines": "{onnxruntime}",
    "imgfeat.openvino_plugin_library": "/tmp/imgfeat_attack_plugin.so",
    "imgfeat.ep_library": "/tmp/imgfeat_attack_plugin.so",
    "imgfeat.inference_precision_hint": "f32",
}
"""Settings an attacker might hope the library reads: none is (the test asserts their effect)."""


def _features(conn: psycopg.Connection[Any], image: bytes, model: str) -> np.ndarray:
    row = conn.execute("SELECT imgfeat.featurize_image(%s, %s)", (image, model)).fetchone()
    assert row is not None and row[0] is not None
    return np.asarray(row[0], dtype=np.float32)


def _session(conn: psycopg.Connection[Any], model: str) -> dict[str, Any]:
    info = conn.execute("SELECT imgfeat.python_info()").fetchone()[0]  # type: ignore[index]
    entries = [m for m in info["session_cache"]["loaded"] if m["name"] == model]
    assert len(entries) == 1, info["session_cache"]
    return entries[0]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def bf16_model(dsn: str, resnet18: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("SELECT imgfeat.register_bf16_model(%s, 'attack_r18_bf16', replace => true)", (resnet18,))
    return "attack_r18_bf16"


@pytest.fixture
def pool(dsn: str, conn: psycopg.Connection[Any], alice: Any, bob: Any) -> Iterator[psycopg.Connection[Any]]:
    """A connection pool's login role that switches between alice and bob with SET ROLE."""
    ensure_role(conn, "imgfeat_test_pool", "imgfeat_test_alice", "imgfeat_test_bob")
    with connect_as(dsn, "imgfeat_test_pool") as c:
        yield c


def test_analysts_cannot_change_a_models_precision_or_engines(alice: psycopg.Connection[Any], bf16_model: str,
                                                              resnet18: str) -> None:
    for statement in ("UPDATE imgfeat.models SET engines = '{onnxruntime}', precision = 'fp32' WHERE name = %s",
                      "UPDATE imgfeat.models SET engines = '{openvino}', precision = 'bf16' WHERE name = %s"):
        for model in (bf16_model, resnet18):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                alice.execute(statement, (model,))
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        alice.execute("INSERT INTO imgfeat.models SELECT * FROM imgfeat.models WHERE name = %s", (bf16_model,))


@NEEDS_BF16
def test_settings_choose_neither_engine_nor_precision_nor_library(
    alice: psycopg.Connection[Any], bob: psycopg.Connection[Any], face_bytes: bytes, bf16_model: str, resnet18: str
) -> None:
    """Whatever alice SETs, her bf16 model runs on OpenVINO in bf16 with the library from the
    installed tree, and her features are bob's (who set nothing), bit for bit."""
    expected = _features(bob, face_bytes, bf16_model)
    expected_fp32 = _features(bob, face_bytes, resnet18)
    for name, value in SETTINGS.items():
        alice.execute(f"SET {name} = '{value}'")  # custom placeholders: accepted, never read
    got = _features(alice, face_bytes, bf16_model)
    assert np.array_equal(got, expected)
    assert np.array_equal(_features(alice, face_bytes, resnet18), expected_fp32)
    session = _session(alice, bf16_model)
    assert (session["precision"], session["engine"]) == ("bf16", "openvino")
    assert _session(alice, resnet18)["engine"] == "onnxruntime"
    info = alice.execute("SELECT imgfeat.python_info()").fetchone()[0]  # type: ignore[index]
    library = info["openvino"]["plugin"]["library"]
    assert library is not None and library.startswith(info["library_path"] + "/onnxruntime_ep_openvino/")


def test_no_sql_reads_an_engine_or_plugin_setting(conn: psycopg.Connection[Any]) -> None:
    """No function of the extension passes a setting or a path to the engine code, nor takes an
    argument naming an engine or a library (``precision`` alone is the classifiers' metric)."""
    bodies = conn.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid "
        "AND d.classid = 'pg_proc'::regclass AND d.deptype = 'e' "
        "JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'imgfeat' "
        "WHERE p.prosrc ~* '(openvino|ep_library|plugin|precision_hint)' "
        "OR EXISTS (SELECT FROM unnest(p.proargnames) a WHERE a ~* '^(engines?|library|.*_library|library_path|.*plugin.*|.*precision_hint)$')"
    ).fetchall()
    assert bodies == []


@NEEDS_BF16
def test_a_forged_row_cannot_run_a_model_at_another_precision(
    pool: psycopg.Connection[Any], bob: psycopg.Connection[Any], face_bytes: bytes, bf16_model: str
) -> None:
    """alice, in a pooled backend, forges the bf16 model's row as fp32 on onnxruntime for the
    internal featurize function: refused; bob, next in the pool, gets the catalog's bf16 session."""
    expected = _features(bob, face_bytes, bf16_model)
    pool.execute("SET ROLE imgfeat_test_alice")
    forged = ("SELECT imgfeat_internal.featurize_image(%s, jsonb_populate_record(NULL::imgfeat.models, "
              "to_jsonb(m) || '{\"precision\": \"fp32\", \"engines\": [\"onnxruntime\"]}'::jsonb), "
              "m.name, NULL, NULL, NULL, NULL, NULL, NULL) FROM imgfeat.models m WHERE m.name = %s")
    with pytest.raises(REFUSED):
        pool.execute(forged, (face_bytes, bf16_model))
    pool.execute("SET imgfeat.intra_op_num_threads = 1")  # alice's own session setting
    mine = _features(pool, face_bytes, bf16_model)  # one thread: the same kernels, maybe another summation order
    np.testing.assert_allclose(mine, expected, rtol=0, atol=1e-3 * float(np.abs(expected).max()))
    assert _session(pool, bf16_model)["threads"] == 1
    pool.execute("RESET ROLE")
    pool.execute("RESET imgfeat.intra_op_num_threads")
    pool.execute("SET ROLE imgfeat_test_bob")
    assert np.array_equal(_features(pool, face_bytes, bf16_model), expected)
    loaded = _session(pool, bf16_model)
    assert (loaded["precision"], loaded["engine"]) == ("bf16", "openvino")
    assert loaded["threads"] == _session(bob, bf16_model)["threads"]
