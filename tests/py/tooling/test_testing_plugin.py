"""imgfeat_loader.testing and its pytest plugin: a user's suite using ``imgfeat_db``.

The user's suites run with pytest's ``pytester``, on the local backend (a throwaway cluster
with the locally installed extension) and on the Docker backend: the image built from
docker/Dockerfile for PostgreSQL 15 and 17 (tests/py/dockerimages.py), on the host's network.
The Docker tests skip with the reason when no Docker engine answers (they fail under CI=true).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest

import dockerimages
import imgfeat
from imgfeat_loader import testing

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[3]
NO_DOCKER = "unix:///nonexistent/imgfeat-test/docker.sock"

USER_SUITE = '''
import math
from pathlib import Path
from types import SimpleNamespace

FACE = (Path(__file__).parent / "face.pgm").read_bytes()


def test_extension_created(imgfeat_db):
    row = imgfeat_db.execute("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'imgfeat'").fetchone()
    assert row == ("{version}",)


def test_featurize_a_face(imgfeat_db):
    imgfeat_db.execute("SELECT imgfeat.register_synthetic_model('resnet18', 'plugin_test_r18')")
    features = imgfeat_db.execute("SELECT imgfeat.featurize_image(%s, 'plugin_test_r18')", [FACE]).fetchone()[0]
    assert len(features) == 512
    assert all(math.isfinite(x) for x in features)
    assert any(x != 0 for x in features)


def test_previous_test_was_rolled_back(imgfeat_db):
    names = [r[0] for r in imgfeat_db.execute("SELECT name FROM imgfeat.models")]
    assert "plugin_test_r18" not in names


def test_session_server(imgfeat_server, imgfeat_dsn):
    assert imgfeat_dsn == imgfeat_server.dsn
    assert imgfeat_server.backend == "{backend}"
    print("REASON:", imgfeat_server.reason)
'''


def plugin_args() -> list[str]:
    """``-p`` for the plugin unless the installed distribution's pytest11 entry point loads it."""
    installed = any(
        ep.value == "imgfeat_loader.pytest_plugin" for ep in importlib.metadata.entry_points(group="pytest11")
    )
    return [] if installed else ["-p", "imgfeat_loader.pytest_plugin"]


@pytest.fixture
def user_suite(pytester: pytest.Pytester, face_bytes: bytes) -> pytest.Pytester:
    (pytester.path / "face.pgm").write_bytes(face_bytes)
    return pytester


def write_suite(pytester: pytest.Pytester, backend: str) -> None:
    pytester.makepyfile(test_user=USER_SUITE.replace("{version}", imgfeat.__version__).replace("{backend}", backend))


def test_local_backend_runs_a_users_suite(user_suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(testing.BACKEND_ENV, "local")
    write_suite(user_suite, "local")
    result = user_suite.runpytest_subprocess(*plugin_args(), "-W", "error", "-s")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*REASON: local backend requested*"])


def test_auto_without_docker_falls_back_to_local(user_suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(testing.BACKEND_ENV, raising=False)
    monkeypatch.setenv("DOCKER_HOST", NO_DOCKER)
    write_suite(user_suite, "local")
    result = user_suite.runpytest_subprocess(*plugin_args(), "-W", "error", "-s", "-k", "session_server or extension")
    result.assert_outcomes(passed=2, deselected=2)
    result.stdout.fnmatch_lines([f"*REASON: auto: no Docker engine: cannot reach {NO_DOCKER}*"])


def test_command_line_option_overrides_the_environment(
    user_suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(testing.BACKEND_ENV, "docker")
    monkeypatch.setenv("DOCKER_HOST", NO_DOCKER)
    write_suite(user_suite, "local")
    result = user_suite.runpytest_subprocess(*plugin_args(), "--imgfeat-backend", "local", "-k", "session_server")
    result.assert_outcomes(passed=1, deselected=3)


def test_docker_requested_without_engine_errors_with_the_reason(
    user_suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(testing.BACKEND_ENV, "docker")
    monkeypatch.setenv("DOCKER_HOST", NO_DOCKER)
    write_suite(user_suite, "docker")
    result = user_suite.runpytest_subprocess(*plugin_args(), "-k", "extension_created or session_server")
    result.assert_outcomes(errors=2, deselected=2)
    result.stdout.fnmatch_lines(
        [f"*imgfeat test server: IMGFEAT_TEST_BACKEND=docker but no Docker engine: cannot reach {NO_DOCKER}*"]
    )
    assert "Traceback" not in result.stdout.str()


def test_unknown_backend_errors(user_suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(testing.BACKEND_ENV, "podman")
    write_suite(user_suite, "local")
    result = user_suite.runpytest_subprocess(*plugin_args(), "-k", "extension_created")
    result.assert_outcomes(errors=1, deselected=3)
    result.stdout.fnmatch_lines(["*IMGFEAT_TEST_BACKEND must be one of auto, docker, local, not 'podman'*"])


def test_local_backend_without_the_extension_fails_clearly(
    user_suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stands in for a machine where `make install` was not run: the plugin asks for an
    # extension the local PostgreSQL does not have.
    monkeypatch.setenv(testing.BACKEND_ENV, "local")
    monkeypatch.setattr(testing, "EXTENSION", "imgfeat_not_installed")
    write_suite(user_suite, "local")
    result = user_suite.runpytest_inprocess(*plugin_args(), "-k", "extension_created")
    result.assert_outcomes(errors=1, deselected=3)
    result.stdout.fnmatch_lines(
        ["*the imgfeat_not_installed extension is not installed in the local PostgreSQL (*): run `make install`*"]
    )


def test_user_fixture_settings_reach_the_server(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(testing.BACKEND_ENV, "local")
    pytester.makeconftest(
        '''
import pytest

@pytest.fixture(scope="session")
def imgfeat_settings():
    return {"imgfeat.image_root": "/srv/imgfeat-test-images"}
'''
    )
    pytester.makepyfile(
        '''
def test_image_root(imgfeat_db):
    row = imgfeat_db.execute(
        "SELECT setting FROM imgfeat_internal.config_settings() WHERE name = 'imgfeat.image_root'").fetchone()
    assert row == ("/srv/imgfeat-test-images",)
'''
    )
    pytester.runpytest_subprocess(*plugin_args(), "-W", "error").assert_outcomes(passed=1)


def test_resolve_backend() -> None:
    assert testing.resolve_backend("local") == ("local", "local backend requested")
    with pytest.raises(testing.ImgfeatTestSetupError, match="must be one of auto, docker, local, not 'lxc'"):
        testing.resolve_backend("lxc")


def test_resolve_backend_without_docker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", NO_DOCKER)
    reason = testing.docker_unavailable_reason()
    assert reason is not None and reason.startswith(f"no Docker engine: cannot reach {NO_DOCKER}: ")
    backend, why = testing.resolve_backend("auto")
    assert (backend, why.split(": cannot reach")[0]) == ("local", "auto: no Docker engine")
    monkeypatch.setenv(testing.BACKEND_ENV, "AUTO")
    assert testing.resolve_backend()[0] == "local"
    with pytest.raises(testing.ImgfeatTestSetupError, match="IMGFEAT_TEST_BACKEND=docker but no Docker engine"):
        testing.resolve_backend("docker")


def test_local_server_settings_and_alter_system(tmp_path: Path) -> None:
    query = "SELECT setting FROM imgfeat_internal.config_settings() WHERE name = 'imgfeat.image_root'"
    with testing.local_server({"imgfeat.image_root": "/srv/a"}) as server:
        assert server.backend == "local" and server.cluster is not None
        with psycopg.connect(server.dsn) as conn:
            assert conn.execute(query).fetchone() == ("/srv/a",)
            assert conn.execute("SELECT current_database()").fetchone() == (testing.LOCAL_DBNAME,)
        testing.apply_settings(server.dsn, {"imgfeat.image_root": "/srv/it's b", "imgfeat.max_image_pixels": "1000"})
        with psycopg.connect(server.dsn) as conn:
            assert conn.execute(query).fetchone() == ("/srv/it's b",)
            assert conn.execute(query.replace("image_root", "max_image_pixels")).fetchone() == ("1000",)
        data_dir = server.cluster.data_dir
    assert not data_dir.exists()


def test_container_class_is_a_postgres_container() -> None:
    from testcontainers.community.postgres import PostgresContainer

    from imgfeat_loader.testing import ImgfeatContainer

    assert issubclass(ImgfeatContainer, PostgresContainer)
    assert ImgfeatContainer.__module__ == "imgfeat_loader.testing"
    assert callable(ImgfeatContainer.dsn) and callable(ImgfeatContainer.get_connection_url)
    assert testing.DEFAULT_IMAGE == "imgfeat/postgres:15"


class FakeDockerClient:
    """Stands in for testcontainers' DockerClient (no engine here): knows a set of local images."""

    local_images: set[str] = set()

    def __init__(self, **kwargs: object) -> None:
        self.client = SimpleNamespace(images=SimpleNamespace(get=self._get_image))

    def _get_image(self, name: str) -> object:
        import docker

        if name not in self.local_images:
            raise docker.errors.ImageNotFound(f"No such image: {name}")
        return object()


@pytest.fixture
def fake_docker(monkeypatch: pytest.MonkeyPatch) -> type[FakeDockerClient]:
    monkeypatch.setattr("testcontainers.core.container.DockerClient", FakeDockerClient)
    monkeypatch.setattr(FakeDockerClient, "local_images", set())
    return FakeDockerClient


def test_container_refuses_to_pull_the_default_image(fake_docker: type[FakeDockerClient]) -> None:
    container = testing.ImgfeatContainer()
    assert (container.image, container.pull) == ("imgfeat/postgres:15", False)
    with pytest.raises(testing.ImgfeatTestSetupError) as err:
        container.start()
    assert str(err.value) == (
        "Docker image 'imgfeat/postgres:15' is not on this Docker engine (and pull=False); build it: "
        "docker build -f docker/Dockerfile -t imgfeat/postgres:15 .  (in an imgfeat source checkout; "
        "see docker/README.md), or use IMGFEAT_TEST_BACKEND=local"
    )


def test_container_connection_strings_and_readiness(
    fake_docker: type[FakeDockerClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    container = testing.ImgfeatContainer("registry.example/imgfeat:16", username="u", password="p'w", dbname="app")
    container._container = SimpleNamespace(id="c0ffee", status="running")
    monkeypatch.setattr(container, "get_container_host_ip", lambda: "127.0.0.1")
    monkeypatch.setattr(container, "get_exposed_port", lambda port: 55000 + port)
    assert psycopg.conninfo.conninfo_to_dict(container.dsn()) == {
        "host": "127.0.0.1", "port": "60432", "user": "u", "password": "p'w", "dbname": "app"}
    assert psycopg.conninfo.conninfo_to_dict(container.dsn("other"))["dbname"] == "other"
    assert container.get_connection_url() == "postgresql://u:p%27w@127.0.0.1:60432/app"

    calls: list[str] = []
    answers = {"SELECT 1": [(2, b"no TCP yet"), (0, b"1")], "extversion": [(0, b"")]}

    def fake_exec(cmd: list[str]) -> SimpleNamespace:
        calls.append(cmd[-1])
        key = "SELECT 1" if cmd[-1].endswith('"SELECT 1"') else "extversion"
        code, out = answers[key].pop(0)
        return _Result(code, out)

    monkeypatch.setattr(container, "exec", fake_exec)
    container.startup_timeout = 30.0
    monkeypatch.setattr("testcontainers.core.config.testcontainers_config.sleep_time", 0.01)
    with pytest.raises(testing.ImgfeatTestSetupError, match="database 'app' has no imgfeat extension"):
        container._connect()
    assert len(calls) == 3
    assert calls[0] == (
        "PGPASSWORD='p'\"'\"'w' psql -X -tA --username u --dbname app --host 127.0.0.1 -c \"SELECT 1\""
    )
    # The image's extension answers: ready.
    answers.update({"SELECT 1": [(0, b"1")], "extversion": [(0, b"0.1.0\n")]})
    container._connect()


class _Result(tuple):  # docker's ExecResult: (exit_code, output) with attribute access
    def __new__(cls, exit_code: int, output: bytes) -> "_Result":
        return super().__new__(cls, (exit_code, output))

    @property
    def exit_code(self) -> int:
        return int(self[0])

    @property
    def output(self) -> bytes:
        return bytes(self[1])


def test_host_network_container(fake_docker: type[FakeDockerClient]) -> None:
    container = testing.ImgfeatContainer("registry.example/imgfeat:17", network="host", password="pw")
    assert container.ports == {} and container._kwargs["network_mode"] == "host"
    container._configure()
    container._container = SimpleNamespace(id="c0ffee", status="running")
    port = container.host_port
    assert isinstance(port, int) and port > 0
    assert container.env["PGPORT"] == str(port)
    assert container.env["POSTGRES_INITDB_ARGS"] == "--auth-host=scram-sha-256"
    assert container._command == ["postgres", "-c", "listen_addresses=127.0.0.1"]
    assert psycopg.conninfo.conninfo_to_dict(container.dsn()) == {
        "host": "127.0.0.1", "port": str(port), "user": "test", "password": "pw", "dbname": "test"}
    assert container.get_connection_url() == f"postgresql://test:pw@127.0.0.1:{port}/test"
    # What the caller sets is kept.
    mine = testing.ImgfeatContainer("x", network="host").with_env("POSTGRES_INITDB_ARGS", "--auth-host=trust")
    mine.with_command(["postgres", "-c", "listen_addresses=127.0.0.1", "-p", "6000"])
    mine._configure()
    assert mine.env["POSTGRES_INITDB_ARGS"] == "--auth-host=trust"
    assert mine._command == ["postgres", "-c", "listen_addresses=127.0.0.1", "-p", "6000"]
    with pytest.raises(ValueError, match="network must be one of bridge, host, not 'overlay'"):
        testing.ImgfeatContainer("x", network="overlay")
    with pytest.raises(testing.ImgfeatTestSetupError, match="the container is not started"):
        testing.ImgfeatContainer("x", network="host").dsn()


def test_unknown_network_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(testing.BACKEND_ENV, "docker")
    monkeypatch.setenv(testing.NETWORK_ENV, "macvlan")
    monkeypatch.setattr(testing, "docker_unavailable_reason", lambda: None)
    with pytest.raises(testing.ImgfeatTestSetupError, match="IMGFEAT_TEST_NETWORK must be one of bridge, host, not 'macvlan'"):
        with testing.imgfeat_server():
            pass


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.parametrize("major", sorted(dockerimages.DISTROS))
def test_docker_backend_runs_a_users_suite(
    user_suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
    imgfeat_image: Callable[[str], dockerimages.BuiltImage], major: str,
) -> None:
    """ImgfeatContainer and the plugin's imgfeat_db on the image built from docker/Dockerfile
    (on the stand-in base, see dockerimages), on the host's network."""
    image = imgfeat_image(major).tag
    with testing.ImgfeatContainer(image, network="host") as pg:
        assert pg.get_connection_url().startswith(f"postgresql://{pg.username}:{pg.password}@127.0.0.1:")
        with psycopg.connect(pg.dsn()) as conn:
            assert conn.execute(
                "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'imgfeat'"
            ).fetchone() == (imgfeat.__version__,)
            assert conn.execute("SELECT current_setting('server_version_num')::int / 10000").fetchone() == (int(major),)
            info = conn.execute("SELECT imgfeat.python_info()").fetchone()[0]
            assert info["python_version"].startswith({"15": "3.11.", "17": "3.13."}[major])
        with psycopg.connect(pg.get_connection_url()) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == (pg.dbname,)
    monkeypatch.setenv(testing.BACKEND_ENV, "docker")
    monkeypatch.setenv(testing.IMAGE_ENV, image)
    monkeypatch.setenv(testing.NETWORK_ENV, "host")
    write_suite(user_suite, "docker")
    result = user_suite.runpytest_subprocess(*plugin_args(), "-W", "error", "-s")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*REASON: docker backend requested*"])
