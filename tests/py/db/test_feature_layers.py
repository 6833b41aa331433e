"""The feature layer (``pooled`` or ``spatial``) chosen at registration and recorded in
imgfeat.models, and the weights origin recorded for weight files (``custom`` unless vouched for)."""

from __future__ import annotations

import json

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import psycopg
import pytest

from imgfeat.core import image as im
from imgfeat.core import zoo


def local_features(arch: str, layer: str, data: bytes, seed: int = 0) -> np.ndarray:
    model = zoo.build_feature_extractor(arch, zoo.synthetic_state_dict(arch, seed=seed), layer).SerializeToString()
    x = im.image_to_tensor(data, zoo.ARCHITECTURES[arch].preprocessing)[None]
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(["features"], {"input": x})[0][0]


def test_register_synthetic_spatial(conn: psycopg.Connection[Any], face_bytes: bytes) -> None:
    row = conn.execute(
        "SELECT name, feature_dim, feature_layer, weights_origin FROM "
        "imgfeat.register_synthetic_model('resnet18', 'r18_spatial', feature_layer => 'spatial', replace => true)"
    ).fetchone()
    assert row == ("r18_spatial", 2048, "spatial", "synthetic")
    got = conn.execute("SELECT imgfeat.featurize_image(%s, 'r18_spatial')", (face_bytes,)).fetchone()[0]
    assert len(got) == 2048
    np.testing.assert_allclose(np.asarray(got, np.float32), local_features("resnet18", "spatial", face_bytes),
                               rtol=1e-5, atol=1e-5)
    assert conn.execute("SELECT feature_layer FROM imgfeat.models WHERE name = 'resnet18'").fetchone() in (None, ("pooled",))


def test_unknown_feature_layer_is_refused(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="unknown feature layer 'grid'"):
        conn.execute("SELECT imgfeat.register_synthetic_model('resnet18', 'r18_grid', feature_layer => 'grid')")
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("UPDATE imgfeat.models SET feature_layer = 'grid' WHERE true")


def test_register_model_checks_the_feature_layer_against_the_graph(conn: psycopg.Connection[Any]) -> None:
    spatial = zoo.build_feature_extractor("resnet18", zoo.synthetic_state_dict("resnet18", seed=1), "spatial")
    data = spatial.SerializeToString()
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="512"):  # a pooled resnet18 has 512
        conn.execute("SELECT imgfeat.register_model('r18_mislabelled', %s, 'resnet18')", (data,))
    row = conn.execute(
        "SELECT feature_dim, feature_layer, weights_origin FROM imgfeat.register_model('r18_s1', %s, 'resnet18', "
        "feature_layer => 'spatial', replace => true)", (data,)).fetchone()
    assert row == (2048, "spatial", "custom")


def test_cli_weights_origin_is_custom_unless_told(tmp_path: Path, dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    from imgfeat_loader.cli import main

    path = tmp_path / "random.pth"  # random weights: nothing says they are pre-trained
    torch.save({k: torch.from_numpy(np.array(v)) for k, v in zoo.synthetic_state_dict("resnet18", seed=2).items()}, path)
    assert main(["--dsn", dsn, "models", "add", "w_default", "--weights", str(path), "--arch", "resnet18", "--replace"]) == 0
    assert main(["--dsn", dsn, "models", "add", "w_vouched", "--weights", str(path), "--arch", "resnet18",
                 "--origin", "imagenet", "--feature-layer", "spatial", "--replace"]) == 0
    out = capsys.readouterr().out
    assert "registered w_default: resnet18, 512 pooled features, custom weights" in out
    assert "registered w_vouched: resnet18, 2048 spatial features, imagenet weights" in out
    assert main(["--dsn", dsn, "models", "list", "--json"]) == 0
    listing = [r for r in json.loads(capsys.readouterr().out) if r["name"].startswith("w_")]
    assert [(r["name"], r["feature_dim"], r["feature_layer"], r["weights_origin"]) for r in listing] == [
        ("w_default", 512, "pooled", "custom"), ("w_vouched", 2048, "spatial", "imagenet")]
