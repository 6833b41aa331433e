"""Throwaway PostgreSQL servers with imgfeat, for integration tests: in Docker or local.

Two ways to get a server with the ``imgfeat`` extension:

* ``docker``: :class:`ImgfeatContainer`, a testcontainers-python ``PostgresContainer`` running
  the image built from imgfeat's ``docker/Dockerfile`` (default :data:`DEFAULT_IMAGE`). Its
  first start creates the extension (and registers any models baked into the image) in the
  container's default database. On a bridge network with a mapped port (testcontainers'
  default), or on the host's network (``network="host"``, ``IMGFEAT_TEST_NETWORK=host``) for
  engines without a bridge network: then the server listens on 127.0.0.1 only, at a free port.
* ``local``: :class:`imgfeat_loader.cluster.LocalCluster` (the cluster imgfeat's own tests
  use: initdb into a temporary directory, a free port, trust authentication) with
  ``CREATE EXTENSION imgfeat CASCADE`` in a database :data:`LOCAL_DBNAME`. This needs
  PostgreSQL and imgfeat installed on the machine (``make install``).

:func:`resolve_backend` chooses (``auto``: Docker when an engine answers, else local), and
:func:`imgfeat_server` starts and stops either. The pytest plugin
(:mod:`imgfeat_loader.pytest_plugin`) wraps these in fixtures.

``ImgfeatContainer`` needs the ``testing`` extra (``pip install 'imgfeat[testing]'``:
testcontainers and the docker SDK); it is imported lazily, so the local backend works
without them.
"""

from __future__ import annotations

import gc
import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import conninfo, sql

if TYPE_CHECKING:
    from .cluster import LocalCluster

DEFAULT_IMAGE = "imgfeat/postgres:15"
"""Image used by :class:`ImgfeatContainer` by default: build it with
``docker build -f docker/Dockerfile -t imgfeat/postgres:15 .`` in an imgfeat checkout."""

BACKENDS = ("auto", "docker", "local")
"""Values of ``IMGFEAT_TEST_BACKEND`` (and ``--imgfeat-backend``)."""

BACKEND_ENV = "IMGFEAT_TEST_BACKEND"
IMAGE_ENV = "IMGFEAT_TEST_IMAGE"
NETWORK_ENV = "IMGFEAT_TEST_NETWORK"

NETWORKS = ("bridge", "host")
"""Values of ``IMGFEAT_TEST_NETWORK`` (and ``--imgfeat-network``): how a container is reached.
``bridge`` (default): Docker's default network, the port mapped by testcontainers. ``host``:
the host's network, for engines without a bridge network (``dockerd --bridge=none``)."""

EXTENSION = "imgfeat"
"""The extension the servers must have."""

LOCAL_DBNAME = "imgfeat_test"
"""The database created in a local cluster for the tests."""

BUILD_HINT = "docker build -f docker/Dockerfile -t {image} .  (in an imgfeat source checkout; see docker/README.md)"


class ImgfeatTestSetupError(RuntimeError):
    """No server with imgfeat can be provided as requested; the message says why and what to do."""


def docker_unavailable_reason() -> str | None:
    """``None`` when a Docker engine answers a ping, else why not (starts with ``no Docker engine: ``).

    Uses the docker SDK's ``docker.from_env()`` (``DOCKER_HOST``, ``DOCKER_TLS_VERIFY``,
    ``DOCKER_CERT_PATH``; default ``unix:///var/run/docker.sock``) with a 5 s timeout.
    """
    try:
        import docker
    except ImportError:
        return "no Docker engine: the docker SDK is not installed (pip install 'imgfeat[testing]')"
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"

    def ping() -> str | None:
        client = None
        try:
            client = docker.from_env(timeout=5)
            client.ping()
            return None
        except Exception as exc:  # any failure means: not usable; the reason is reported
            return f"no Docker engine: cannot reach {host}: {exc}"
        finally:
            if client is not None:
                client.close()

    # A failed docker.from_env() leaves its socket to the garbage collector; close it here,
    # silently, instead of as a ResourceWarning in some later test.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        reason = ping()
        gc.collect()
    return reason


def resolve_backend(requested: str | None = None) -> tuple[str, str]:
    """Choose the backend: ``(backend, why)`` with backend ``docker`` or ``local``.

    ``requested`` is ``auto`` (default), ``docker`` or ``local``; ``None`` reads
    ``IMGFEAT_TEST_BACKEND`` (default ``auto``).

    Raises:
        ImgfeatTestSetupError: an unknown value, or ``docker`` requested and no engine answers.
    """
    value = (requested if requested is not None else os.environ.get(BACKEND_ENV, "") or "auto").strip().lower()
    if value not in BACKENDS:
        raise ImgfeatTestSetupError(f"{BACKEND_ENV} must be one of {', '.join(BACKENDS)}, not {value!r}")
    if value == "local":
        return "local", "local backend requested"
    reason = docker_unavailable_reason()
    if value == "docker":
        if reason is not None:
            raise ImgfeatTestSetupError(
                f"{BACKEND_ENV}=docker but {reason}. Start Docker (or set DOCKER_HOST), "
                f"or use {BACKEND_ENV}=local with PostgreSQL and imgfeat installed on this machine."
            )
        return "docker", "docker backend requested"
    if reason is None:
        return "docker", "auto: a Docker engine answered"
    return "local", f"auto: {reason}"


def apply_settings(dsn: str, settings: Mapping[str, str]) -> None:
    """``ALTER SYSTEM SET`` each setting and reload the configuration (superuser ``dsn``).

    imgfeat honours settings such as ``imgfeat.image_root`` only from the configuration
    files, which ``ALTER SYSTEM`` writes (postgresql.auto.conf).
    """
    if not settings:
        return
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name, value in settings.items():
            ident = sql.SQL(".").join(sql.Identifier(part) for part in name.split("."))
            # SET first: before PostgreSQL 17, ALTER SYSTEM accepts a placeholder setting
            # (an extension's, like imgfeat.image_root) only once the session has defined it.
            conn.execute(sql.SQL("SET {} = {}").format(ident, sql.Literal(str(value))))
            conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(ident, sql.Literal(str(value))))
            conn.execute(sql.SQL("RESET {}").format(ident))
        conn.execute("SELECT pg_catalog.pg_reload_conf()")


def _define_container_class() -> type:
    from docker import errors as docker_errors
    from testcontainers.core.wait_strategies import ExecWaitStrategy

    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:  # testcontainers < 4.15 (where testcontainers.postgres is not yet deprecated)
        from testcontainers.postgres import PostgresContainer  # type: ignore[no-redef]

    class ImgfeatContainer(PostgresContainer):  # type: ignore[misc]
        """PostgreSQL with imgfeat in Docker: a testcontainers ``PostgresContainer``.

        Args:
            image: an image built from imgfeat's docker/Dockerfile (default :data:`DEFAULT_IMAGE`).
            pull: let Docker pull ``image`` from its registry when it is not on the engine. Off
                by default: the default name is a local build's tag, and pulling it would fetch
                whatever a registry serves under that name.
            startup_timeout: seconds to wait for the first start, which creates the extension
                and registers the models baked into the image (a large model takes a while).
            network: ``bridge`` (default; testcontainers maps the port) or ``host``: the
                container shares the host's network (``network_mode="host"``), for engines
                without a bridge network. Then the server listens on 127.0.0.1 only, at a port
                free when ``start`` is called (``PGPORT``, which the official image honours), and
                unless ``POSTGRES_INITDB_ARGS`` is given, loopback connections need the password
                (``--auth-host=scram-sha-256``; the image's default trusts loopback, which on the
                host's network would let every local user in). testcontainers' reaper (Ryuk)
                needs a bridge and an image from Docker Hub: where there is none, set
                ``TESTCONTAINERS_RYUK_DISABLED=true`` (``stop()`` and the context manager still
                remove the container).
            **kwargs: ``PostgresContainer``'s (``username``, ``password``, ``dbname``, default
                ``test``; ``port`` 5432, the server's port inside a bridged container) and
                ``DockerContainer``'s.

        Use as a context manager (``with ImgfeatContainer() as pg: psycopg.connect(pg.dsn())``)
        or call ``start()`` / ``stop()``. ``get_connection_url()`` (inherited) gives
        ``postgresql://user:password@host:port/dbname`` without a driver suffix (psycopg and
        SQLAlchemy 2 with psycopg take it); ``dsn()`` a libpq key=value string.

        Raises (from ``start``):
            ImgfeatTestSetupError: the image can be neither found nor pulled, or the started
                database has no imgfeat extension (not an imgfeat image).
        """

        def __init__(
            self,
            image: str = DEFAULT_IMAGE,
            *,
            pull: bool = False,
            startup_timeout: float = 600.0,
            network: str = "bridge",
            **kwargs: Any,
        ) -> None:
            if network not in NETWORKS:
                raise ValueError(f"network must be one of {', '.join(NETWORKS)}, not {network!r}")
            kwargs.setdefault("driver", None)
            super().__init__(image=image, **kwargs)
            self.pull = pull
            self.startup_timeout = float(startup_timeout)
            self.network = network
            self.host_port: int | None = None
            if network == "host":
                self.ports = {}  # nothing to publish: the server is on the host's network
                self.with_kwargs(network_mode="host")

        def _configure(self) -> None:
            super()._configure()
            if self.network == "host":
                from .cluster import free_port

                self.host_port = free_port()
                self.with_env("PGPORT", str(self.host_port))
                self.env.setdefault("POSTGRES_INITDB_ARGS", "--auth-host=scram-sha-256")
                if self._command is None:
                    self.with_command(["postgres", "-c", "listen_addresses=127.0.0.1"])

        def get_container_host_ip(self) -> str:
            if self.network == "host":
                return "127.0.0.1"
            return str(super().get_container_host_ip())

        def get_exposed_port(self, port: int) -> int:
            if self.network == "host":
                if self.host_port is None:
                    raise ImgfeatTestSetupError("the container is not started")
                return self.host_port
            return int(super().get_exposed_port(port))

        def start(self) -> "ImgfeatContainer":
            if not self.pull:
                try:
                    self.get_docker_client().client.images.get(self.image)
                except docker_errors.ImageNotFound:
                    raise ImgfeatTestSetupError(
                        f"Docker image {self.image!r} is not on this Docker engine (and pull=False); build it: "
                        f"{BUILD_HINT.format(image=self.image)}, or use {BACKEND_ENV}=local"
                    ) from None
            try:
                super().start()
            except docker_errors.APIError as exc:
                if self._container is not None:
                    raise
                raise ImgfeatTestSetupError(
                    f"Docker image {self.image!r} is not available ({exc}); build it: {BUILD_HINT.format(image=self.image)}"
                ) from exc
            return self

        def _psql(self, query: str) -> list[str]:
            password = self.password.replace("'", "'\"'\"'")
            return [
                "sh", "-c",
                f"PGPASSWORD='{password}' psql -X -tA --username {self.username} --dbname {self.dbname} "
                f"--host 127.0.0.1 -c \"{query}\"",
            ]

        def _connect(self) -> None:
            # The entrypoint runs docker/initdb/*.sql on a Unix-socket-only server first;
            # TCP on 127.0.0.1 answers only once that is done and the real server is up.
            strategy = ExecWaitStrategy(self._psql("SELECT 1")).with_startup_timeout(self.startup_timeout)
            strategy.wait_until_ready(self)
            query = f"SELECT extversion FROM pg_catalog.pg_extension WHERE extname = '{EXTENSION}'"
            code, output = self.exec(self._psql(query))
            if code != 0 or not output.strip():
                raise ImgfeatTestSetupError(
                    f"container of {self.image!r} started, but database {self.dbname!r} has no {EXTENSION} "
                    f"extension: is the image built from imgfeat's docker/Dockerfile? "
                    f"({output.decode(errors='replace').strip()})"
                )

        def restart(self) -> "ImgfeatContainer":
            """Restart the container (``docker restart``; the data directory is kept) and wait
            until the server answers again."""
            self.get_wrapped_container().restart()
            self._connect()
            return self

        def dsn(self, dbname: str | None = None) -> str:
            """A libpq key=value connection string to ``dbname`` (default: the container's database)."""
            return conninfo.make_conninfo(
                host=self.get_container_host_ip(),
                port=str(self.get_exposed_port(self.port)),
                user=self.username,
                password=self.password,
                dbname=dbname or self.dbname,
            )

    ImgfeatContainer.__module__ = __name__
    ImgfeatContainer.__qualname__ = "ImgfeatContainer"
    return ImgfeatContainer


def __getattr__(name: str) -> Any:
    # ImgfeatContainer is defined on first use so that importing this module (and the local
    # backend) does not need testcontainers.
    if name == "ImgfeatContainer":
        try:
            cls = _define_container_class()
        except ImportError as exc:
            raise ImportError(
                f"imgfeat_loader.testing.ImgfeatContainer needs testcontainers: pip install 'imgfeat[testing]' ({exc})"
            ) from exc
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class ImgfeatServer:
    """A running server with imgfeat.

    Attributes:
        backend: ``docker`` or ``local``.
        dsn: superuser libpq connection string to a database with the extension created.
        reason: why this backend was chosen.
        container: the :class:`ImgfeatContainer` (docker backend), else ``None``.
        cluster: the :class:`~imgfeat_loader.cluster.LocalCluster` (local backend), else ``None``.
    """

    backend: str
    dsn: str
    reason: str
    container: Any = None
    cluster: LocalCluster | None = None


def create_imgfeat_database(admin_dsn: str, dbname: str, *, where: str) -> str:
    """Create ``dbname`` with ``CREATE EXTENSION imgfeat CASCADE``; returns its DSN.

    ``where`` names the server in messages.

    Raises:
        ImgfeatTestSetupError: imgfeat (or plpython3u) is not installed on that server, or
            creating the extension fails (the server's error is quoted).
    """
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT default_version FROM pg_catalog.pg_available_extensions WHERE name = %s", [EXTENSION]
        ).fetchone()
        if row is None:
            raise ImgfeatTestSetupError(
                f"the {EXTENSION} extension is not installed in {where}: run `make install` (as root) in an "
                f"imgfeat source checkout, or use Docker ({BACKEND_ENV}=docker with an image built by "
                f"{BUILD_HINT.format(image=DEFAULT_IMAGE)})"
            )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    dsn = conninfo.make_conninfo(admin_dsn, dbname=dbname)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {} CASCADE").format(sql.Identifier(EXTENSION)))
    except psycopg.Error as exc:
        raise ImgfeatTestSetupError(
            f"CREATE EXTENSION {EXTENSION} CASCADE failed in {where}: {exc}".rstrip()
            + " (PL/Python needs postgresql-plpython3-<major>; `make install` installs imgfeat)"
        ) from exc
    return dsn


@contextmanager
def local_server(settings: Mapping[str, str] | None = None) -> Iterator[ImgfeatServer]:
    """A throwaway local cluster with a database :data:`LOCAL_DBNAME` holding the extension.

    ``settings`` go into postgresql.conf (e.g. ``{"imgfeat.image_root": "/data/images"}``).

    Raises:
        ImgfeatTestSetupError: no PostgreSQL server binaries, the cluster does not start, or
            imgfeat is not installed locally.
    """
    from .cluster import LocalCluster

    try:
        cluster = LocalCluster(settings=dict(settings or {}))
    except RuntimeError as exc:
        raise ImgfeatTestSetupError(f"no local PostgreSQL for the local backend: {exc}") from exc
    try:
        try:
            cluster.start()
        except RuntimeError as exc:
            raise ImgfeatTestSetupError(f"the local PostgreSQL cluster did not start: {exc}") from exc
        where = f"the local PostgreSQL ({cluster.bindir})"
        dsn = create_imgfeat_database(cluster.dsn(), LOCAL_DBNAME, where=where)
        yield ImgfeatServer(backend="local", dsn=dsn, reason="local", cluster=cluster)
    finally:
        cluster.stop()


@contextmanager
def docker_server(
    image: str = DEFAULT_IMAGE,
    settings: Mapping[str, str] | None = None,
    *,
    pull: bool = False,
    network: str = "bridge",
) -> Iterator[ImgfeatServer]:
    """An :class:`ImgfeatContainer` of ``image``; ``dsn`` is its default database (extension created).

    ``settings`` are applied with ``ALTER SYSTEM`` (paths are the container's). ``network``:
    see :class:`ImgfeatContainer`. The container is removed on exit, also when starting it fails.
    """
    container = __getattr__("ImgfeatContainer")(image, pull=pull, network=network)
    try:
        container.start()
        dsn = container.dsn()
        apply_settings(dsn, settings or {})
        yield ImgfeatServer(backend="docker", dsn=dsn, reason="docker", container=container)
    finally:
        container.stop()


@contextmanager
def imgfeat_server(
    backend: str | None = None,
    *,
    image: str | None = None,
    settings: Mapping[str, str] | None = None,
    network: str | None = None,
) -> Iterator[ImgfeatServer]:
    """Start a server with imgfeat on the chosen backend, stop it on exit.

    Args:
        backend: ``auto`` | ``docker`` | ``local``; ``None`` reads ``IMGFEAT_TEST_BACKEND`` (default auto).
        image: the Docker image; ``None`` reads ``IMGFEAT_TEST_IMAGE`` (default :data:`DEFAULT_IMAGE`).
            An image other than the default may be pulled from its registry; the default never is.
        settings: server settings (``imgfeat.image_root`` etc.).
        network: the docker backend's network, ``bridge`` or ``host``; ``None`` reads
            ``IMGFEAT_TEST_NETWORK`` (default bridge). See :class:`ImgfeatContainer`.

    Raises:
        ImgfeatTestSetupError: see :func:`resolve_backend`, :func:`local_server`, ``ImgfeatContainer``;
            an unknown network.
    """
    chosen, reason = resolve_backend(backend)
    if chosen == "docker":
        image = image or os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE
        network = (network or os.environ.get(NETWORK_ENV, "") or "bridge").strip().lower()
        if network not in NETWORKS:
            raise ImgfeatTestSetupError(f"{NETWORK_ENV} must be one of {', '.join(NETWORKS)}, not {network!r}")
        cm = docker_server(image, settings, pull=image != DEFAULT_IMAGE, network=network)
    else:
        cm = local_server(settings)
    with cm as server:
        server.reason = reason
        yield server
