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
from imgfeat.core.image import image_to_tensor
from imgfeat.core.spec import Preprocessing

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PYTHON = {"15": "3.11", "17": "3.13"}
DBNAME = "faces_app"
ANALYST = "image_analyst"  # imgfeat_user only
FILE_READER = "image_file_reader"  # imgfeat_file_reader
ROLE_PASSWORD = "role-secret"


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
        assert info["library_path"].startswith(f"/usr/local/lib/imgfeat/.{imgfeat.__version__}-")  # the installed tree
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


def role_dsn(running: Running, role: str) -> str:
    return conninfo.make_conninfo(running.dsn, user=role, password=ROLE_PASSWORD)


def test_security_settings_hold_in_the_container(running: Running, cmu_faces: Path) -> None:
    """What tests/py/test_security*.py check on a local cluster, here inside the image: a role
    with only imgfeat_user reads no files and chooses no code; a file reader reads under the
    image root only; the library is root's."""
    with psycopg.connect(running.dsn, autocommit=True) as conn:
        for role, grants in ((ANALYST, ["imgfeat_user"]), (FILE_READER, ["imgfeat_file_reader"])):
            conn.execute(f"DROP ROLE IF EXISTS {role}")
            conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{ROLE_PASSWORD}'")
            for grant in grants:
                conn.execute(f"GRANT {grant} TO {role}")
        # PUBLIC gets nothing, not even USAGE on the extension's schemas.
        schemas = conn.execute(
            "SELECT nspname, has_schema_privilege('public', oid, 'USAGE') FROM pg_namespace "
            "WHERE nspname LIKE 'imgfeat%' ORDER BY 1").fetchall()
        assert schemas and not any(usage for _, usage in schemas), schemas
        # No function taking a catalog row (the internal, trusting ones) is the analysts' to call,
        # and nothing reads a library-directory setting.
        row_functions = conn.execute(
            "SELECT p.oid::regprocedure::text, has_function_privilege('imgfeat_user', p.oid, 'EXECUTE') "
            "AND has_schema_privilege('imgfeat_user', p.pronamespace, 'USAGE') "
            "FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass AND d.deptype = 'e' "
            "JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'imgfeat' "
            "WHERE p.proargtypes::oid[] && ARRAY['imgfeat.models'::regtype, 'imgfeat.classifiers'::regtype]::oid[]"
        ).fetchall()
        assert row_functions and [f for f, callable_ in row_functions if callable_] == []
        assert conn.execute(
            "SELECT count(*) FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass "
            "AND d.deptype = 'e' JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'imgfeat' "
            "WHERE p.prosrc LIKE '%%python_lib_dir%%' OR pg_get_function_arguments(p.oid) LIKE '%%lib_dir%%'"
        ).fetchone() == (0,)
        assert conn.execute(
            "SELECT pg_has_role('imgfeat_file_reader', 'pg_read_server_files', 'MEMBER')").fetchone() == (False,)
        # Loopback TCP needs the password on the host's network (ImgfeatContainer's default).
        hba = conn.execute("SELECT DISTINCT auth_method FROM pg_hba_file_rules WHERE type = 'host'").fetchall()
        assert hba == [("scram-sha-256",)]
        library = conn.execute("SELECT imgfeat.python_info()->>'library_path'").fetchone()[0]
    data = (cmu_faces / running.face).read_bytes()
    with psycopg.connect(role_dsn(running, ANALYST), autocommit=True) as analyst:
        expected = analyst.execute("SELECT imgfeat.featurize_image(%s, 'resnet18')", [data]).fetchone()[0]
        assert len(expected) == 512
        with pytest.raises(errors.InsufficientPrivilege) as exc:
            analyst.execute("SELECT imgfeat.featurize_image_file(%s, 'resnet18')", [str(running.face)])
        assert "imgfeat_file_reader" in (exc.value.diag.message_hint or "")
        with pytest.raises(errors.InsufficientPrivilege):
            analyst.execute("DELETE FROM imgfeat.models")
        with pytest.raises(errors.InsufficientPrivilege):
            analyst.execute("SELECT imgfeat.register_synthetic_model('resnet18', 'mine')")
        # A session's library directory is nobody's business: the features stay the same.
        analyst.execute("SET imgfeat.python_lib_dir = '/tmp'")
        assert analyst.execute("SELECT imgfeat.featurize_image(%s, 'resnet18')", [data]).fetchone()[0] == expected
    with psycopg.connect(role_dsn(running, FILE_READER), autocommit=True) as reader:
        got = reader.execute("SELECT imgfeat.featurize_image_file(%s, 'resnet18')", [str(running.face)]).fetchone()[0]
        assert got == expected
        reader.execute("SET imgfeat.image_root = '/'")  # a session's value is refused, not used
        with pytest.raises(errors.ObjectNotInPrerequisiteState, match="outside the server configuration"):
            reader.execute("SELECT imgfeat.featurize_image_file('etc/passwd', 'resnet18')")
        reader.execute("RESET imgfeat.image_root")
        for outside in ("/etc/passwd", "../../../../etc/passwd", "PG_VERSION", "/var/lib/postgresql/data/PG_VERSION"):
            with pytest.raises((errors.InsufficientPrivilege, errors.InvalidTextRepresentation)):
                reader.execute("SELECT imgfeat.featurize_image_file(%s, 'resnet18')", [outside])
    # The library is the installed tree, root's and writable by no one else.
    version = imgfeat.__version__
    assert running.exec("readlink", "-f", f"/usr/local/lib/imgfeat/{version}")[1].strip() == library
    assert running.exec("stat", "-c", "%U %a", "/usr/local/lib/imgfeat", library)[1].split() == ["root", "755", "root", "755"]
    assert running.exec("find", "/usr/local/lib/imgfeat", "-perm", "/022", "!", "-type", "l", "-print", "-quit")[1] == ""


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
