"""The Docker image, built and run: docker/Dockerfile on PostgreSQL 15 (Debian bookworm,
Python 3.11) and 17 (Debian trixie, Python 3.13).

The images are built on a test-only stand-in for the official ``postgres`` image
(tests/docker/standin, made from Debian packages by :mod:`dockerimages`; no registry is
reachable here), and each is started once as a user would, through
:class:`imgfeat_loader.testing.ImgfeatContainer` on the host's network, with the CMU faces
mounted read-only at /images and ``IMGFEAT_IMAGE_ROOT=/images``. The tests then check the
first start's work, featurizing, the seed's train/evaluate, the security settings, and that
a restart keeps the data (last: it restarts the container).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import psycopg
import pytest
from psycopg import conninfo, errors

import dockerimages
import imgfeat
from fix_docker import host_container
from imgfeat.image import image_to_tensor
from imgfeat.spec import Preprocessing

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PYTHON = {"15": "3.11", "17": "3.13"}
DBNAME = "faces_app"
ANALYST = "image_analyst"
ANALYST_PASSWORD = "analyst-secret"


@dataclass
class Running:
    major: str
    image: dockerimages.BuiltImage
    container: Any
    dsn: str
    face: Path  # a CMU face, relative to the faces directory (= /images in the container)

    def exec(self, *cmd: str) -> tuple[int, str]:
        code, out = self.container.exec(list(cmd))
        return int(code), out.decode(errors="replace")


@pytest.fixture(scope="module", params=sorted(dockerimages.DISTROS))
def running(
    request: pytest.FixtureRequest, imgfeat_image: Callable[[str], dockerimages.BuiltImage],
    cmu_faces: Path, face_files: list[Path],
) -> Iterator[Running]:
    major = request.param
    image = imgfeat_image(major)
    container = host_container(image.tag, dbname=DBNAME, password="it's a secret")
    container.with_volume_mapping(str(cmu_faces), "/images", "ro").with_env("IMGFEAT_IMAGE_ROOT", "/images")
    face = face_files[0].relative_to(cmu_faces)
    started = time.monotonic()
    container.start()
    try:
        dsn = container.dsn()
        with psycopg.connect(dsn) as conn:
            first = conn.execute("SELECT imgfeat.featurize_image(%s, 'resnet18')", [face_files[0].read_bytes()]).fetchone()
        seconds = time.monotonic() - started
        assert first is not None and len(first[0]) == 512
        dockerimages.record_measure(
            image.tag, "start_to_first_features_seconds", seconds,
            "container start (empty data directory) to the first featurized CMU face",
        )
        yield Running(major=major, image=image, container=container, dsn=dsn, face=face)
    finally:
        container.stop()


def test_image_is_docker_dockerfile_on_the_standin(running: Running) -> None:
    config = json.loads(dockerimages.docker("image", "inspect", "--format", "{{json .Config}}", running.image.tag).stdout)
    assert f"PG_MAJOR={running.major}" in config["Env"]
    assert config["Labels"]["org.opencontainers.image.title"] == "imgfeat/postgres"  # docker/Dockerfile's
    assert "org.imgfeat.test-standin" in config["Labels"]  # on the stand-in base
    assert (config["Entrypoint"], config["Cmd"]) == (["docker-entrypoint.sh"], ["postgres"])
    assert running.exec("python3", "-c", "import sys; print(sys.version)")[1].startswith(PYTHON[running.major] + ".")
    # Build-only packages are purged; the build's CA bundle (extra-ca-certs) is not left behind.
    assert running.exec("sh", "-c", "command -v make pip3 pg_config clang; dpkg -l | grep -E '^ii +(postgresql-server-dev|python3-pip)'")[1] == ""
    assert running.exec("test", "-e", "/tmp/imgfeat-build-ca.pem")[0] == 1
    extra = dockerimages.extra_ca_bundle()
    if extra is not None:
        body = [line for line in extra.read_text().splitlines() if line and not line.startswith("-----")][1]
        extra.unlink()
        assert body not in running.exec("sh", "-c", "cat /etc/ssl/certs/* /usr/local/share/ca-certificates/* 2>/dev/null")[1]


def test_first_start_created_the_extension_and_registered_the_baked_model(running: Running) -> None:
    with psycopg.connect(running.dsn) as conn:
        assert conn.execute("SELECT current_database(), current_setting('server_version_num')::int / 10000").fetchone() == (
            DBNAME, int(running.major))
        assert conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'imgfeat'").fetchone() == (
            imgfeat.__version__,)
        info = conn.execute("SELECT imgfeat.python_info()").fetchone()[0]
        assert info["python_version"].startswith(PYTHON[running.major] + ".")
        assert info["library_path"] == f"/usr/local/lib/imgfeat/{imgfeat.__version__}"
        manifest = conn.execute("SELECT pg_read_file('/usr/share/imgfeat/models/manifest.json')::jsonb").fetchone()[0]
        assert [(m["name"], m["architecture"], m["weights_origin"]) for m in manifest] == [
            ("resnet18", "resnet18", "synthetic")]
        rows = conn.execute(
            "SELECT name, architecture, weights_origin, feature_dim, input_width, sha256 FROM imgfeat.models").fetchall()
        assert rows == [("resnet18", "resnet18", "synthetic", 512, 224, manifest[0]["sha256"])]
        # Other databases: CREATE EXTENSION there (the image's files are installed).
        assert conn.execute(
            "SELECT default_version FROM pg_available_extensions WHERE name = 'imgfeat'").fetchone() == (imgfeat.__version__,)


def test_a_cmu_face_featurizes(running: Running, cmu_faces: Path) -> None:
    data = (cmu_faces / running.face).read_bytes()
    with psycopg.connect(running.dsn, autocommit=True) as conn:
        from_bytes, from_file = conn.execute(
            "SELECT imgfeat.featurize_image(%s, 'resnet18'), imgfeat.featurize_image_file(%s, 'resnet18')",
            [data, str(running.face)]).fetchone()
        conn.execute("SELECT imgfeat.register_synthetic_model('resnet18', 'resnet18_again', replace => true)")
        again = conn.execute("SELECT imgfeat.featurize_image(%s, 'resnet18_again')", [data]).fetchone()[0]
        onnx_bytes, prep, input_name, output_name = conn.execute(
            "SELECT imgfeat.model_onnx(name), preprocessing, input_name, output_name FROM imgfeat.models "
            "WHERE name = 'resnet18'").fetchone()
        conn.execute("SELECT imgfeat.drop_model('resnet18_again')")
    features = np.asarray(from_bytes, np.float32)
    assert features.shape == (512,) and np.isfinite(features).all() and (features != 0).any()
    assert from_file == from_bytes  # the same face, read from /images by the server
    # The baked model is register_synthetic_model's network, built by this image's own numpy.
    assert again == from_bytes
    # The container computes what this machine's imgfeat library computes from the same bytes.
    session = ort.InferenceSession(bytes(onnx_bytes), providers=["CPUExecutionProvider"])
    tensor = image_to_tensor(data, Preprocessing.from_json(prep))
    here = session.run([output_name], {input_name: tensor[None] if tensor.ndim == 3 else tensor})[0].reshape(-1)
    np.testing.assert_allclose(features, here, rtol=1e-5, atol=1e-6)


def test_the_seeds_train_and_evaluate(running: Running, cmu_faces: Path, tmp_path: Path) -> None:
    from imgfeat_loader.demo import run_demo

    result = run_demo(running.dsn, faces_dir=cmu_faces, report=tmp_path / "report.html", allow_download=False, threads=2)
    assert result.weights_origin == "synthetic"
    assert result.rows_featurized == 312
    evaluation = result.evaluation
    assert evaluation["n"] == 155
    assert evaluation["accuracy"] >= 0.85
    assert sum(map(sum, evaluation["confusion_matrix"]["matrix"])) == 155
    with psycopg.connect(running.dsn) as conn:
        predicted = conn.execute(
            "SELECT count(*) FILTER (WHERE imgfeat.predict('cmu_faces_left_right', features) = label), count(*) "
            "FROM imgfeat_demo.test").fetchone()
    assert predicted == (round(evaluation["accuracy"] * 155), 155)


def analyst_dsn(running: Running) -> str:
    return conninfo.make_conninfo(running.dsn, user=ANALYST, password=ANALYST_PASSWORD)


def test_security_settings_hold_in_the_container(running: Running, cmu_faces: Path) -> None:
    with psycopg.connect(running.dsn, autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {ANALYST}")
        conn.execute(f"CREATE ROLE {ANALYST} LOGIN PASSWORD '{ANALYST_PASSWORD}'")
        conn.execute(f"GRANT imgfeat_user TO {ANALYST}")
        conn.execute(f"GRANT CREATE ON SCHEMA public TO {ANALYST}")
        # PUBLIC gets nothing, not even USAGE on the schema.
        assert conn.execute("SELECT has_schema_privilege('public', 'imgfeat', 'USAGE')").fetchone() == (False,)
        # Loopback TCP needs the password on the host's network (ImgfeatContainer's default).
        hba = conn.execute(
            "SELECT DISTINCT auth_method FROM pg_hba_file_rules WHERE type = 'host'").fetchall()
        assert hba == [("scram-sha-256",)]
    data = (cmu_faces / running.face).read_bytes()
    with psycopg.connect(analyst_dsn(running), autocommit=True) as analyst:
        assert len(analyst.execute("SELECT imgfeat.featurize_image(%s, 'resnet18')", [data]).fetchone()[0]) == 512
        # Reading server files is pg_read_server_files' privilege, not imgfeat_user's.
        with pytest.raises(errors.InsufficientPrivilege):
            analyst.execute("SELECT imgfeat.featurize_image_file(%s, 'resnet18')", [str(running.face)])
        # Only imgfeat_admin writes the model registry.
        with pytest.raises(errors.InsufficientPrivilege):
            analyst.execute("DELETE FROM imgfeat.models")
        # A session cannot move the image root or the library directory.
        analyst.execute("SET imgfeat.image_root = '/'")
        analyst.execute("SET imgfeat.python_lib_dir = '/tmp'")
        info = analyst.execute("SELECT imgfeat.python_info()").fetchone()[0]
        assert info["library_path"] == f"/usr/local/lib/imgfeat/{imgfeat.__version__}"
    with psycopg.connect(running.dsn, autocommit=True) as conn:
        conn.execute("SET imgfeat.image_root = '/'")
        with pytest.raises(psycopg.Error, match="image_root"):
            conn.execute("SELECT imgfeat.featurize_image_file('/etc/passwd', 'resnet18')")


def test_restart_keeps_the_data(running: Running) -> None:
    with psycopg.connect(running.dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (note text)")
        conn.execute("INSERT INTO kept VALUES ('before the restart')")
        models_before = conn.execute("SELECT name, created_at FROM imgfeat.models ORDER BY name").fetchall()
        classifiers = conn.execute("SELECT name FROM imgfeat.classifiers ORDER BY name").fetchall()
        face_features = conn.execute(
            "SELECT imgfeat.featurize_image(pg_read_binary_file('/images/' || %s), 'resnet18')",
            [str(running.face)]).fetchone()[0]
    ready = "database system is ready to accept connections"
    ready_before = b"".join(running.container.get_logs()).decode(errors="replace").count(ready)
    running.container.restart()
    with psycopg.connect(running.dsn) as conn:
        assert conn.execute("SELECT note FROM kept").fetchall() == [("before the restart",)]
        # The first start's scripts did not run again: the models are the same rows.
        assert conn.execute("SELECT name, created_at FROM imgfeat.models ORDER BY name").fetchall() == models_before
        assert conn.execute("SELECT name FROM imgfeat.classifiers ORDER BY name").fetchall() == classifiers
        assert conn.execute(
            "SELECT imgfeat.featurize_image(pg_read_binary_file('/images/' || %s), 'resnet18')",
            [str(running.face)]).fetchone()[0] == face_features
    logs = b"".join(running.container.get_logs()).decode(errors="replace")
    assert logs.count("init process complete") == 1
    assert logs.count(ready) == ready_before + 1
