"""Precision as part of a model's identity (issue 18): bf16 variants (imgfeat.register_bf16_model)
run by OpenVINO, int8 variants on OpenVINO where the server has it and on onnxruntime otherwise,
fp32 models on onnxruntime's CPU provider as before; all decided by the catalog row.

Tolerances (centered cosine: the fp32 features' mean over the faces subtracted first, since
these non-negative features share a large mean and a plain cosine is near 1 for anything):

* bf16 vs fp32, EfficientNet-Lite0 with its real ImageNet weights: median >= 0.99 (measured
  0.995 on this AMD EPYC, avx512_bf16); synthetic resnet18: >= 0.995 (measured 0.998).
* int8 on OpenVINO vs int8 on onnxruntime (the same QDQ file): median >= 0.97 (measured 0.985
  for the synthetic resnet18, 0.997 for EfficientNet-Lite0), and each engine's int8 features
  as close to fp32 as the other's within 0.02: the engines round differently, neither is the
  reference.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from imgfeat.core import engines

FACES = 24
"""Faces featurized per comparison (odd ids, not used for calibration)."""

NEEDS_BF16 = pytest.mark.skipif(engines.cpu().bf16_isa is None,
                                reason="this CPU has neither amx_bf16 nor avx512_bf16: "
                                "test_bf16_is_refused_without_bf16_instructions runs instead")
"""bf16 models run only on CPUs with bf16 instructions; elsewhere they fail (tested below)."""


def centered_cosine(a: np.ndarray, b: np.ndarray, mean: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64) - mean
    b = np.asarray(b, np.float64) - mean
    return np.einsum("ij,ij->i", a, b) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def features(c: psycopg.Connection[Any], faces_table: str, model: str) -> np.ndarray:
    rows = c.execute(
        f"SELECT imgfeat.featurize_image(image, %s) FROM {faces_table} WHERE id %% 2 = 1 ORDER BY id LIMIT %s",
        (model, FACES),
    ).fetchall()
    assert len(rows) == FACES
    return np.array([r[0] for r in rows], dtype=np.float32)


def loaded(c: psycopg.Connection[Any], model: str) -> dict[str, Any]:
    """What this connection's python_info says about its session for ``model``."""
    info = c.execute("SELECT imgfeat.python_info()").fetchone()[0]  # type: ignore[index]
    entries = [m for m in info["session_cache"]["loaded"] if m["name"] == model]
    assert len(entries) == 1, info["session_cache"]
    return entries[0]  # type: ignore[no-any-return]


def catalog(c: psycopg.Connection[Any], model: str) -> tuple[str, list[str], str, str]:
    row = c.execute("SELECT precision, engines, sha256, feature_layer FROM imgfeat.models WHERE name = %s",
                    (model,)).fetchone()
    assert row is not None
    return row  # type: ignore[return-value]


@pytest.fixture(scope="session")
def resnet18_bf16(dsn: str, resnet18: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("SELECT imgfeat.register_bf16_model(%s, replace => true)", (resnet18,))
    return f"{resnet18}-bf16"


@pytest.fixture(scope="session")
def effnet(dsn: str, efficientnet_pth: Path) -> str:
    """EfficientNet-Lite0 with its real ImageNet weights, and its bf16 variant."""
    from imgfeat.core import zoo

    onnx_bytes = zoo.build_feature_extractor(
        "efficientnet_lite0", zoo.load_state_dict(efficientnet_pth, arch="efficientnet_lite0"), "pooled"
    ).SerializeToString()
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("SELECT imgfeat.register_model('effnet_real', %s, 'efficientnet_lite0', 'imagenet', replace => true)",
                  (onnx_bytes,))
        c.execute("SELECT imgfeat.register_bf16_model('effnet_real', replace => true)")
    return "effnet_real"


@pytest.fixture(scope="session")
def resnet18_int8_16(dsn: str, faces_table: str, resnet18: str) -> str:
    """resnet18 quantized on 16 even-numbered faces (its own name: test_quantize has its own)."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(f"CREATE OR REPLACE VIEW public.precision_calibration AS SELECT image FROM {faces_table} WHERE id % 2 = 0")
        c.execute("SELECT imgfeat.quantize_model(%s, 'public.precision_calibration', new_name => 'r18_int8_engines', "
                  "calibration_rows => 16, replace => true)", (resnet18,))
    return "r18_int8_engines"


def test_catalog_records_precision_and_engines(conn: psycopg.Connection[Any], resnet18: str, resnet18_bf16: str,
                                               resnet18_int8_16: str) -> None:
    base = catalog(conn, resnet18)
    assert base[:2] == ("fp32", ["onnxruntime"])
    bf16 = catalog(conn, resnet18_bf16)
    assert bf16[:2] == ("bf16", ["openvino"])
    assert bf16[2:] == base[2:]  # the same graph (sha256) and feature layer: only the precision differs
    assert catalog(conn, resnet18_int8_16)[:2] == ("int8", ["openvino", "onnxruntime"])
    row = conn.execute("SELECT architecture, feature_dim, preprocessing, weights_origin FROM imgfeat.models "
                       "WHERE name IN (%s, %s) ORDER BY name", (resnet18, resnet18_bf16)).fetchall()
    assert row[0] == row[1]


def test_the_catalog_refuses_a_precision_on_the_wrong_engine(conn: psycopg.Connection[Any], resnet18: str,
                                                             resnet18_bf16: str) -> None:
    for model, engines_ in ((resnet18_bf16, "{onnxruntime}"), (resnet18_bf16, "{openvino,onnxruntime}"),
                            (resnet18, "{openvino}"), (resnet18, "{}"), (resnet18, "{tensorrt}")):
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("UPDATE imgfeat.models SET engines = %s WHERE name = %s", (engines_, model))
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("UPDATE imgfeat.models SET precision = 'fp16' WHERE name = %s", (resnet18,))


def test_variants_are_made_of_fp32_models_only(conn: psycopg.Connection[Any], resnet18_bf16: str,
                                                faces_table: str) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="is a bf16 variant"):
        conn.execute("SELECT imgfeat.register_bf16_model(%s)", (resnet18_bf16,))
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="is a bf16 variant"):
        conn.execute("SELECT imgfeat.quantize_model(%s, %s::regclass, calibration_rows => 1)", (resnet18_bf16, faces_table))
    with pytest.raises(psycopg.errors.UndefinedObject):
        conn.execute("SELECT imgfeat.register_bf16_model('no_such_model')")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="already registered"):
        conn.execute("SELECT imgfeat.register_bf16_model('resnet18')")


def test_analysts_may_not_register_variants(analyst: psycopg.Connection[Any], resnet18: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        analyst.execute("SELECT imgfeat.register_bf16_model(%s, 'mine-bf16')", (resnet18,))


@NEEDS_BF16
def test_bf16_runs_on_openvino_close_to_fp32(analyst: psycopg.Connection[Any], faces_table: str, resnet18: str,
                                             resnet18_bf16: str) -> None:
    """Synthetic resnet18: centered cosine median >= 0.995 (measured 0.998), not identical; the
    session is OpenVINO's with bf16 kernels; the fp32 model's is onnxruntime's CPU provider."""
    f32 = features(analyst, faces_table, resnet18)
    bf16 = features(analyst, faces_table, resnet18_bf16)
    cos = centered_cosine(bf16, f32, f32.mean(0))
    assert np.median(cos) >= 0.995 and cos.min() >= 0.98, cos
    assert not np.array_equal(f32, bf16)
    fp32_session = loaded(analyst, resnet18)
    assert (fp32_session["precision"], fp32_session["engine"], fp32_session["route"]) == ("fp32", "onnxruntime", "cpu")
    assert fp32_session["kernels"] is None
    session = loaded(analyst, resnet18_bf16)
    assert (session["precision"], session["engine"]) == ("bf16", "openvino")
    if session["route"] == "runtime":  # OpenVINO's own API shows its kernels: every convolution in bf16
        assert session["kernels"] and all("bf16" in k for k in session["kernels"]), session["kernels"]
        assert sum(session["kernels"].values()) == 20  # resnet18: 17 convolutions + 3 downsampling 1x1
    else:
        assert session["route"] == "plugin"


@NEEDS_BF16
def test_bf16_on_real_weights(analyst: psycopg.Connection[Any], faces_table: str, effnet: str) -> None:
    """EfficientNet-Lite0, ImageNet weights: centered cosine median >= 0.99 (measured 0.995)."""
    f32 = features(analyst, faces_table, effnet)
    bf16 = features(analyst, faces_table, f"{effnet}-bf16")
    cos = centered_cosine(bf16, f32, f32.mean(0))
    assert np.median(cos) >= 0.99 and cos.min() >= 0.95, cos


@NEEDS_BF16
def test_call_featurize_runs_bf16(analyst_dsn: str, faces_table: str, resnet18_bf16: str) -> None:
    """CALL imgfeat.featurize with the bf16 variant: the same engine as featurize_image (batches
    of 16 against single images: within 2e-2 of the features' scale)."""
    with psycopg.connect(analyst_dsn, autocommit=True) as a:
        a.execute("DROP TABLE IF EXISTS precision_feats")
        a.execute("CALL imgfeat.featurize(%s, 'precision_feats', %s, batch_size => 16)", (faces_table, resnet18_bf16))
        got = np.array([r[0] for r in a.execute(
            "SELECT features FROM precision_feats WHERE model_name = %s AND id %% 2 = 1 ORDER BY id LIMIT %s",
            (resnet18_bf16, FACES))], np.float32)
        single = features(a, faces_table, resnet18_bf16)
        assert loaded(a, resnet18_bf16)["engine"] == "openvino"
    assert got.shape == single.shape == (FACES, 512)
    assert np.abs(got - single).max() <= 2e-2 * np.abs(single).max()


@NEEDS_BF16
def test_bf16_sessions_use_the_session_threads(analyst: psycopg.Connection[Any], face_bytes: bytes,
                                                resnet18_bf16: str) -> None:
    for threads in (1, 2):
        analyst.execute(f"SET imgfeat.intra_op_num_threads = {threads}")
        analyst.execute("SELECT imgfeat.featurize_image(%s, %s)", (face_bytes, resnet18_bf16))
        assert loaded(analyst, resnet18_bf16)["threads"] == threads


def test_int8_runs_on_openvino_and_on_onnxruntime_alike(
    conn: psycopg.Connection[Any], analyst_dsn: str, faces_table: str, resnet18: str, resnet18_int8_16: str
) -> None:
    """The same QDQ file on either engine (chosen by the catalog row alone): centered cosine
    between them median >= 0.97, and as close to fp32 as each other within 0.02."""
    with psycopg.connect(analyst_dsn, autocommit=True) as a:
        f32 = features(a, faces_table, resnet18)
        on_openvino = features(a, faces_table, resnet18_int8_16)
        assert loaded(a, resnet18_int8_16)["engine"] == "openvino"
        conn.execute("UPDATE imgfeat.models SET engines = '{onnxruntime}' WHERE name = %s", (resnet18_int8_16,))
        try:
            on_onnxruntime = features(a, faces_table, resnet18_int8_16)  # same connection: the row decides
            assert loaded(a, resnet18_int8_16)["engine"] == "onnxruntime"
        finally:
            conn.execute("UPDATE imgfeat.models SET engines = '{openvino,onnxruntime}' WHERE name = %s",
                         (resnet18_int8_16,))
    mean = f32.mean(0)
    between = centered_cosine(on_openvino, on_onnxruntime, mean)
    assert np.median(between) >= 0.97, between
    to_fp32 = [np.median(centered_cosine(x, f32, mean)) for x in (on_openvino, on_onnxruntime)]
    assert abs(to_fp32[0] - to_fp32[1]) <= 0.02, to_fp32
    assert min(to_fp32) >= 0.95, to_fp32


@NEEDS_BF16
def test_bf16_in_parallel_workers(dsn: str, faces_table: str, resnet18_bf16: str) -> None:
    """Parallel workers load the bf16 variant on OpenVINO too (each its own session), with the
    same features as the leader alone."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("SELECT imgfeat.featurize_image(image, %s) FROM " + faces_table + " LIMIT 1", (resnet18_bf16,))
        query = (f"SELECT id, imgfeat.featurize_image(image, '{resnet18_bf16}') AS f FROM {faces_table} "
                 f"WHERE id <= {FACES}")
        serial = dict(c.execute(query).fetchall())
        c.execute("SET max_parallel_workers_per_gather = 2; SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0; "
                  "SET min_parallel_table_scan_size = 0; SET imgfeat.intra_op_num_threads = 1")
        plan = c.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + query).fetchone()[0]  # type: ignore[index]
        parallel = dict(c.execute(query).fetchall())
    text = json.dumps(plan)
    assert '"Workers Launched": ' in text and '"Workers Launched": 0' not in text, text[:500]
    assert serial.keys() == parallel.keys()
    for key in serial:
        np.testing.assert_allclose(parallel[key], serial[key], rtol=0, atol=2e-2 * max(map(abs, serial[key])))


@pytest.mark.skipif(engines.cpu().bf16_isa is not None, reason="this CPU has bf16 instructions")
def test_bf16_is_refused_without_bf16_instructions(analyst: psycopg.Connection[Any], face_bytes: bytes,
                                                   resnet18: str, resnet18_bf16: str) -> None:
    """On a CPU without bf16 instructions a bf16 model fails with 0A000 naming what is missing;
    the fp32 model it was made of still runs."""
    with pytest.raises(psycopg.errors.FeatureNotSupported, match="no bf16 instructions"):
        analyst.execute("SELECT imgfeat.featurize_image(%s, %s)", (face_bytes, resnet18_bf16))
    assert len(analyst.execute("SELECT imgfeat.featurize_image(%s, %s)", (face_bytes, resnet18)).fetchone()[0]) == 512  # type: ignore[index]


def test_python_info_reports_the_plugin_and_the_isa(analyst: psycopg.Connection[Any]) -> None:
    info = analyst.execute("SELECT imgfeat.python_info()").fetchone()[0]  # type: ignore[index]
    ov = info["openvino"]
    cpu = engines.cpu()  # the client runs on the database server's machine here
    assert ov["cpu"]["vendor"] == cpu.vendor and ov["cpu"]["bf16_isa"] == cpu.bf16_isa
    plugin = ov["plugin"]
    assert plugin["installed"] and plugin["loaded"] and plugin["version"] == "1.8.1"
    assert plugin["library"].startswith(info["library_path"] + "/onnxruntime_ep_openvino/")
    if cpu.vendor == engines.INTEL_VENDOR:
        assert plugin["usable"] and "CPU" in plugin["devices"]
    else:  # the plugin's factory offers devices of Intel hardware only
        assert not plugin["usable"] and plugin["devices"] == []
        assert "Intel hardware only" in plugin["reason"]
    runtime = ov["runtime"]
    assert runtime["installed"] and runtime["version"].startswith("2026.4.1")
    assert ("BF16" in runtime["capabilities"]) == (cpu.bf16_isa is not None)
