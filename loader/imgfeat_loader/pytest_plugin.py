"""pytest plugin: a PostgreSQL database with imgfeat for your integration tests.

Fixtures:

* ``imgfeat_server`` (session): the running :class:`~imgfeat_loader.testing.ImgfeatServer`
  (``.backend``, ``.dsn``, ``.reason``, ``.container`` or ``.cluster``).
* ``imgfeat_dsn`` (session): superuser libpq connection string to a database where
  ``CREATE EXTENSION imgfeat CASCADE`` is done (in Docker: the image's default database,
  with the models baked into the image registered).
* ``imgfeat_db`` (function): a psycopg connection to that database, in a transaction that is
  rolled back after the test (use ``imgfeat_db.autocommit = True`` first for statements that
  cannot run in a transaction block, such as ``CALL imgfeat.featurize``, and clean up yourself).
* ``imgfeat_settings`` (session): server settings, ``{}`` by default; override it in your
  conftest.py, e.g. to return ``{"imgfeat.image_root": "/srv/images"}``.

Backend: ``docker`` (testcontainers, image ``imgfeat/postgres:15`` by default) or ``local``
(a throwaway cluster on this machine; needs PostgreSQL and ``make install`` of imgfeat).
Chosen by ``--imgfeat-backend``, else the ``IMGFEAT_TEST_BACKEND`` environment variable, else
the ``imgfeat_backend`` ini option, else ``auto`` (Docker when an engine answers, else local).
The image: ``--imgfeat-image``, ``IMGFEAT_TEST_IMAGE``, ini ``imgfeat_image``. The container's
network: ``--imgfeat-network``, ``IMGFEAT_TEST_NETWORK``, ini ``imgfeat_network``: ``bridge``
(default, a mapped port) or ``host`` (engines without a bridge network; the server listens on
127.0.0.1 only; set ``TESTCONTAINERS_RYUK_DISABLED=true`` there, see ``ImgfeatContainer``).
When no server can be provided, tests using the fixtures error with the reason and what to do.

Loaded through the ``pytest11`` entry point of the imgfeat distribution, or with
``-p imgfeat_loader.pytest_plugin`` / ``pytest_plugins = ["imgfeat_loader.pytest_plugin"]``.
Importing it is cheap: nothing starts until a test asks for a fixture.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from . import testing


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("imgfeat", "imgfeat test database")
    group.addoption(
        "--imgfeat-backend", choices=testing.BACKENDS, default=None,
        help=f"where imgfeat_db runs: docker, local or auto (default: ${testing.BACKEND_ENV}, ini imgfeat_backend, auto)",
    )
    group.addoption(
        "--imgfeat-image", default=None,
        help=f"Docker image for the docker backend (default: ${testing.IMAGE_ENV}, ini imgfeat_image, {testing.DEFAULT_IMAGE})",
    )
    group.addoption(
        "--imgfeat-network", choices=testing.NETWORKS, default=None,
        help=f"the container's network: bridge or host (default: ${testing.NETWORK_ENV}, ini imgfeat_network, bridge)",
    )
    parser.addini("imgfeat_backend", "imgfeat test backend: auto | docker | local", default="auto")
    parser.addini("imgfeat_image", "Docker image with imgfeat for the docker backend", default=testing.DEFAULT_IMAGE)
    parser.addini("imgfeat_network", "the container's network for the docker backend: bridge | host", default="bridge")


def _choice(config: pytest.Config, option: str, env: str, ini: str) -> str:
    value = config.getoption(option)
    if value:
        return str(value)
    return os.environ.get(env) or str(config.getini(ini))


@pytest.fixture(scope="session")
def imgfeat_settings() -> dict[str, str]:
    """Server settings for the imgfeat test server (override in conftest.py); none by default."""
    return {}


@pytest.fixture(scope="session")
def imgfeat_server(
    pytestconfig: pytest.Config, imgfeat_settings: dict[str, str]
) -> Iterator[testing.ImgfeatServer]:
    """The session's server with imgfeat (Docker container or local cluster), stopped at the end."""
    backend = _choice(pytestconfig, "imgfeat_backend", testing.BACKEND_ENV, "imgfeat_backend")
    image = _choice(pytestconfig, "imgfeat_image", testing.IMAGE_ENV, "imgfeat_image")
    network = _choice(pytestconfig, "imgfeat_network", testing.NETWORK_ENV, "imgfeat_network")
    try:
        server_cm = testing.imgfeat_server(backend, image=image, settings=imgfeat_settings, network=network)
        server = server_cm.__enter__()
    except testing.ImgfeatTestSetupError as exc:
        pytest.fail(f"imgfeat test server: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server_cm.__exit__(None, None, None)


@pytest.fixture(scope="session")
def imgfeat_dsn(imgfeat_server: testing.ImgfeatServer) -> str:
    """Superuser connection string to a database with ``CREATE EXTENSION imgfeat CASCADE`` done."""
    return imgfeat_server.dsn


@pytest.fixture
def imgfeat_db(imgfeat_dsn: str) -> Iterator[Any]:
    """A psycopg connection to the imgfeat database; its transaction is rolled back after the test."""
    import psycopg

    conn = psycopg.connect(imgfeat_dsn)
    try:
        yield conn
    finally:
        if not conn.closed:
            conn.rollback()
        conn.close()
