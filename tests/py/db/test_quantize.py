"""int8 quantization in the database: imgfeat.quantize_model and `imgfeat models quantize`."""

from __future__ import annotations

from typing import Any

import numpy as np
import psycopg
import pytest

from imgfeat.core.quantize import cosine_similarity

CALIBRATION_ROWS = 16
"""Small, so the test stays quick; the bench calibrates on 64 training faces."""


@pytest.fixture(scope="session")
def resnet18_int8(dsn: str, faces_table: str, resnet18: str) -> dict[str, Any]:
    """resnet18 quantized in the database, calibrated on the even-numbered faces (a view)."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f"CREATE VIEW public.calibration_faces AS SELECT image FROM {faces_table} WHERE id % 2 = 0")
        cur = c.execute(
            "SELECT * FROM imgfeat.quantize_model(%s, 'public.calibration_faces', calibration_rows => %s)",
            (resnet18, CALIBRATION_ROWS),
        )
        cols = [d.name for d in cur.description or []]
        row = cur.fetchone()
    assert row is not None
    return dict(zip(cols, row))


def test_quantized_entry_inherits_the_base_model(conn: psycopg.Connection[Any], resnet18_int8: dict[str, Any], resnet18: str) -> None:
    assert resnet18_int8["name"] == "resnet18-int8"
    base = conn.execute(
        "SELECT architecture, input_width, input_height, feature_dim, preprocessing, weights_origin, input_name, "
        "output_name, fixed_batch, size_bytes FROM imgfeat.models WHERE name = %s", (resnet18,)
    ).fetchone()
    assert base is not None
    mine = tuple(resnet18_int8[k] for k in ("architecture", "input_width", "input_height", "feature_dim", "preprocessing",
                                             "weights_origin", "input_name", "output_name", "fixed_batch"))
    assert mine == base[:9]
    assert resnet18_int8["weights_origin"] == "synthetic"
    # int8 weights: about a quarter of the float32 bytes
    assert resnet18_int8["size_bytes"] < base[9] / 3
    stored = conn.execute("SELECT imgfeat.model_onnx('resnet18-int8')").fetchone()[0]  # type: ignore[index]
    assert len(stored) == resnet18_int8["size_bytes"]
    import onnx

    ops = {n.op_type for n in onnx.load_from_string(bytes(stored)).graph.node}
    assert ops & {"QLinearConv", "QuantizeLinear", "ConvInteger"}, ops


def test_int8_features_are_close_to_float32(
    analyst: psycopg.Connection[Any], resnet18_int8: dict[str, Any], resnet18: str, faces_table: str
) -> None:
    """On odd-numbered faces (not used for calibration): median cosine >= 0.99 (measured 0.9995), not identical."""
    rows = analyst.execute(
        f"SELECT imgfeat.featurize_image(image, %s), imgfeat.featurize_image(image, 'resnet18-int8') "
        f"FROM {faces_table} WHERE id %% 2 = 1 AND id <= 40 ORDER BY id",
        (resnet18,),
    ).fetchall()
    assert len(rows) == 20
    f32 = np.array([r[0] for r in rows], dtype=np.float32)
    i8 = np.array([r[1] for r in rows], dtype=np.float32)
    assert i8.shape == (20, 512) and np.isfinite(i8).all()
    cos = cosine_similarity(f32, i8)
    assert np.median(cos) >= 0.99, cos
    assert not np.array_equal(f32, i8)


def test_unknown_model(conn: psycopg.Connection[Any], faces_table: str) -> None:
    with pytest.raises(psycopg.errors.UndefinedObject) as exc:
        conn.execute("SELECT imgfeat.quantize_model('no_such_model', %s::regclass)", (faces_table,))
    assert "no_such_model" in (exc.value.diag.message_primary or "")


def test_empty_calibration_table(conn: psycopg.Connection[Any], resnet18: str) -> None:
    conn.execute("CREATE TABLE public.no_images (id int, image bytea)")
    conn.execute("INSERT INTO public.no_images VALUES (1, NULL)")
    with pytest.raises(psycopg.errors.InvalidParameterValue) as exc:
        conn.execute("SELECT imgfeat.quantize_model(%s, 'public.no_images', new_name => 'r18-empty')", (resnet18,))
    assert "has no images" in (exc.value.diag.message_primary or "")
    assert conn.execute("SELECT count(*) FROM imgfeat.models WHERE name = 'r18-empty'").fetchone() == (0,)


def test_bad_arguments(conn: psycopg.Connection[Any], resnet18: str, faces_table: str) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue) as exc:
        conn.execute("SELECT imgfeat.quantize_model(%s, %s::regclass, 'id', new_name => 'x1')", (resnet18, faces_table))
    assert "bytea" in (exc.value.diag.message_primary or "")
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        conn.execute("SELECT imgfeat.quantize_model(%s, %s::regclass, calibration_rows => 0, new_name => 'x1')",
                     (resnet18, faces_table))
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        conn.execute("SELECT imgfeat.quantize_model(%s, %s::regclass, 'no_column', new_name => 'x1')", (resnet18, faces_table))


def test_undecodable_calibration_images(conn: psycopg.Connection[Any], resnet18: str, faces_table: str) -> None:
    conn.execute("CREATE TABLE public.not_images (image bytea)")
    conn.execute("INSERT INTO public.not_images VALUES ('not an image'::bytea), ('\\x00'::bytea)")
    with pytest.raises(psycopg.errors.InvalidParameterValue) as exc:
        conn.execute("SELECT imgfeat.quantize_model(%s, 'public.not_images', new_name => 'x2')", (resnet18,))
    assert "none of the 2 calibration images" in (exc.value.diag.message_primary or "")
    # text columns are paths under imgfeat.image_root: labels are no files
    with pytest.raises(psycopg.errors.InvalidParameterValue) as exc:
        conn.execute("SELECT imgfeat.quantize_model(%s, %s::regclass, 'label', new_name => 'x2')", (resnet18, faces_table))
    assert "does not exist under imgfeat.image_root" in (exc.value.diag.message_detail or "")


def test_name_taken_needs_replace(conn: psycopg.Connection[Any], resnet18_int8: dict[str, Any], resnet18: str) -> None:
    with pytest.raises(psycopg.Error) as exc:
        conn.execute("SELECT imgfeat.quantize_model(%s, 'public.calibration_faces', calibration_rows => 2)", (resnet18,))
    assert "already registered" in (exc.value.diag.message_primary or "")


def test_analysts_cannot_register(analyst: psycopg.Connection[Any], resnet18: str, faces_table: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        analyst.execute("SELECT imgfeat.quantize_model(%s, %s::regclass, new_name => 'x3')", (resnet18, faces_table))


def test_cli_models_quantize(dsn: str, resnet18: str, faces_table: str, capsys: pytest.CaptureFixture[str]) -> None:
    from imgfeat_loader.cli import main

    assert main(["--dsn", dsn, "models", "quantize", resnet18, "--calibration-table", "public.calibration_faces",
                 "--new-name", "r18-cli-int8", "--rows", "4"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("registered r18-cli-int8: int8 resnet18, 512 features"), out
    assert main(["--dsn", dsn, "models", "quantize", "no_such_model", "--calibration-table", faces_table]) == 1
    assert "not registered" in capsys.readouterr().err
    with psycopg.connect(dsn, autocommit=True) as c:
        assert c.execute("SELECT architecture FROM imgfeat.models WHERE name = 'r18-cli-int8'").fetchone() == ("resnet18",)
