"""Foundation: the extension in a real PostgreSQL, the library bootstrap, featurize_image."""

from __future__ import annotations

import os

import math
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from imgfeat import __version__


def test_python_info_reports_the_server_python(analyst: psycopg.Connection[Any]) -> None:
    info = analyst.execute("SELECT imgfeat.python_info()").fetchone()[0]  # type: ignore[index]
    assert info["imgfeat"] == __version__
    assert info["python_executable"].startswith("/usr/bin/python3")
    # the tree the installed symlink <IMGFEAT_LIB_DIR>/<version> pointed at when the backend started
    # (a server elsewhere, IMGFEAT_TEST_DSN, has its own install: only the stamp's form is checked)
    if not os.environ.get("IMGFEAT_TEST_DSN"):
        lib_dir = os.environ.get("IMGFEAT_LIB_DIR", "/usr/local/lib/imgfeat")
        assert info["library_path"] == os.path.realpath(f"{lib_dir}/{__version__}")
    assert os.path.basename(info["library_path"]).startswith(f".{__version__}-")
    assert info["sys_path"][0] == info["library_path"]
    for pkg in ("numpy", "onnxruntime", "PIL", "sklearn", "onnx"):
        assert not str(info["packages"][pkg]).startswith("MISSING"), pkg
    assert "CPUExecutionProvider" in info["onnxruntime"]["providers"]
    assert info["settings"]["intra_op_num_threads"] >= 1


def test_featurize_image_equals_the_library_in_python(
    analyst: psycopg.Connection[Any], resnet18: str, face_bytes: bytes, dsn: str
) -> None:
    """512 finite floats, equal (max abs diff <= 1e-5) to the library run directly on the same bytes."""
    import onnxruntime as ort

    from imgfeat.core import image
    from imgfeat.core.model_info import ModelInfo

    feats = analyst.execute("SELECT imgfeat.featurize_image(%s, %s)", (face_bytes, resnet18)).fetchone()[0]  # type: ignore[index]
    assert len(feats) == 512
    assert all(math.isfinite(x) for x in feats)
    assert np.std(feats) > 0

    with psycopg.connect(dsn) as su:
        onnx_bytes = su.execute("SELECT imgfeat.model_onnx(%s)", (resnet18,)).fetchone()[0]  # type: ignore[index]
        cur = su.execute(
            "SELECT name, architecture, input_width, input_height, feature_dim, preprocessing::text AS preprocessing, "
            "weights_origin, input_name, output_name, fixed_batch, sha256, size_bytes FROM imgfeat.models WHERE name = %s",
            (resnet18,),
        )
        row = dict(zip([c.name for c in cur.description or []], cur.fetchone() or ()))
    info = ModelInfo.from_row(row)
    session = ort.InferenceSession(bytes(onnx_bytes), providers=["CPUExecutionProvider"])
    tensor = image.image_to_tensor(face_bytes, info.preprocessing)
    expected = session.run([info.output_name], {info.input_name: tensor[None]})[0][0]
    assert np.max(np.abs(np.asarray(feats, dtype=np.float32) - expected)) <= 1e-5


def test_session_is_cached_per_backend(analyst: psycopg.Connection[Any], resnet18: str, face_bytes: bytes) -> None:
    for _ in range(3):
        analyst.execute("SELECT imgfeat.featurize_image(%s, %s)", (face_bytes, resnet18))
    info = analyst.execute("SELECT imgfeat.python_info()").fetchone()[0]  # type: ignore[index]
    assert info["session_cache"]["loads"] == {resnet18: 1}


def test_synthetic_model_notice_once_per_session(analyst: psycopg.Connection[Any], resnet18: str, face_bytes: bytes) -> None:
    notices: list[str] = []
    analyst.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    analyst.execute("SELECT imgfeat.featurize_image(%s, %s)", (face_bytes, resnet18))
    analyst.execute("SELECT imgfeat.featurize_image(%s, %s)", (face_bytes, resnet18))
    assert sum("synthetic" in n for n in notices) == 1


def test_null_image_gives_null(analyst: psycopg.Connection[Any], resnet18: str) -> None:
    assert analyst.execute("SELECT imgfeat.featurize_image(NULL, %s)", (resnet18,)).fetchone() == (None,)


@pytest.mark.parametrize("data", [b"", b"this is not an image at all"])
def test_undecodable_bytes_error_cleanly(analyst: psycopg.Connection[Any], resnet18: str, data: bytes) -> None:
    with pytest.raises(psycopg.errors.InvalidTextRepresentation) as exc:
        analyst.execute("SELECT imgfeat.featurize_image(%s, %s)", (data, resnet18))
    message = exc.value.diag.message_primary or ""
    assert "Traceback" not in message
    assert "image" in message.lower()
    # the backend survived: the same connection still works
    assert analyst.execute("SELECT 1").fetchone() == (1,)


def test_unknown_model_lists_registered(analyst: psycopg.Connection[Any], resnet18: str, face_bytes: bytes) -> None:
    with pytest.raises(psycopg.errors.UndefinedObject) as exc:
        analyst.execute("SELECT imgfeat.featurize_image(%s, 'no_such_model')", (face_bytes,))
    assert "no_such_model" in (exc.value.diag.message_primary or "")
    assert resnet18 in (exc.value.diag.message_detail or "")


def test_session_set_lib_dir_is_ignored(analyst: psycopg.Connection[Any]) -> None:
    """The library's location is fixed at install: a session's imgfeat.python_lib_dir means nothing.
    (test_security_attacks.py plants real code where such a setting points.)"""
    analyst.execute("SET imgfeat.python_lib_dir = '/tmp/evil'")
    info = analyst.execute("SELECT imgfeat.python_info()").fetchone()[0]  # type: ignore[index]
    assert info["library_path"].startswith(os.path.realpath(os.environ.get("IMGFEAT_LIB_DIR", "/usr/local/lib/imgfeat")))
    assert "/tmp/evil" not in " ".join(info["sys_path"])


def test_missing_package_names_it(dsn: str, tmp_path: Path) -> None:
    """A library directory without onnxruntime: a clean ERROR naming the package."""
    from imgfeat.db import server

    err = server.missing_package("onnxruntime")
    assert "onnxruntime" in err.message and "python_info" in (err.hint or "")


def test_functions_pin_search_path(conn: psycopg.Connection[Any]) -> None:
    rows = conn.execute(
        "SELECT p.proname, p.prokind, p.proconfig FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname IN ('imgfeat', 'imgfeat_internal')"
    ).fetchall()
    assert rows
    for name, kind, config in rows:
        if kind == "p":
            continue  # procedures that commit cannot carry SET; their SQL is schema-qualified
        assert config and any(c.startswith("search_path=pg_catalog") for c in config), name


PUBLIC_FUNCTIONS = {
    "featurize_image", "featurize_image_file", "featurize", "register_model", "register_large_model",
    "register_synthetic_model", "drop_model", "model_onnx", "quantize_model", "register_bf16_model",
    "train_logistic_regression",
    "drop_classifier", "predict", "predict_proba", "predict_table", "evaluate", "python_info",
}
"""What users call: the README's Reference and Troubleshooting sections."""

README = Path(__file__).resolve().parents[3] / "README.md"


def test_the_public_schema_holds_what_users_call(conn: psycopg.Connection[Any]) -> None:
    """``\\df imgfeat.*`` lists the documented functions and procedures and nothing internal (those
    live in imgfeat_internal, out of users' sight)."""
    listed = {r[0] for r in conn.execute(
        "SELECT p.proname FROM pg_proc p WHERE p.pronamespace = 'imgfeat'::regnamespace").fetchall()}
    assert listed == PUBLIC_FUNCTIONS
    readme = README.read_text(encoding="utf-8")
    assert [f for f in sorted(PUBLIC_FUNCTIONS) if f"imgfeat.{f}(" not in readme] == []
    assert conn.execute("SELECT count(*) FROM pg_proc WHERE pronamespace = 'imgfeat_internal'::regnamespace "
                        "AND proname LIKE '\\_%'").fetchone() == (0,)


def _comments(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    """Every COMMENT on an object of the extension (columns included): (object, text)."""
    return conn.execute(
        "SELECT pg_describe_object(d.classoid, d.objoid, d.objsubid), d.description FROM pg_description d "
        "JOIN pg_depend e ON e.classid = d.classoid AND e.objid = d.objoid AND e.deptype = 'e' "
        "AND e.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'imgfeat')"
    ).fetchall()


def test_comments_have_no_numbers_to_misread(conn: psycopg.Connection[Any]) -> None:
    """A SQLSTATE code is written as one (``SQLSTATE 54000``), never bare where it could be read as
    a value — ``imgfeat.max_image_pixels (54000)`` read as a pixel limit — and no setting is
    followed by a bare number in parentheses."""
    import re

    from psycopg import errors

    comments = _comments(conn)
    assert len(comments) >= 40
    bare, after_setting = [], []
    for obj, text in comments:
        for m in re.finditer(r"\b[0-9][0-9A-Z]{4}\b", text):
            try:
                errors.lookup(m.group(0))
            except KeyError:
                continue  # a number, not a SQLSTATE code
            if not text[: m.start()].endswith("SQLSTATE "):
                bare.append((obj, text[max(0, m.start() - 40): m.end() + 5]))
        after_setting += [(obj, m.group(0)) for m in re.finditer(r"imgfeat\.[a-z_]+ \(\d[^)]*\)", text)]
    assert bare == [] and after_setting == []
