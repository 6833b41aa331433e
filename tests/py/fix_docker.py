"""Docker fixtures: the images :mod:`dockerimages` builds, and containers of them.

The Docker tests need an engine (``DOCKER_HOST``, else the default socket; ``.ci/run``
starts its own). Without one they are skipped with the reason, except under ``CI=true``,
where they fail: CI must run them. Containers always run on the host's network
(``ImgfeatContainer(network="host")``: the server listens on 127.0.0.1 only), never on a
bridge network; testcontainers' reaper is off (it needs a bridge and Docker Hub), and every
fixture removes its own containers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import dockerimages
from imgfeat_loader import testing


def require_docker() -> None:
    """Skip (fail under ``CI=true``) when no Docker engine answers."""
    reason = testing.docker_unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true: the Docker tests must run, but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[None]:
    """A Docker engine answers; testcontainers' reaper is off for this session and its subprocesses."""
    require_docker()
    from testcontainers.core.config import testcontainers_config

    saved = (os.environ.get("TESTCONTAINERS_RYUK_DISABLED"), testcontainers_config.ryuk_disabled)
    os.environ["TESTCONTAINERS_RYUK_DISABLED"] = "true"
    testcontainers_config.ryuk_disabled = True
    try:
        yield
    finally:
        if saved[0] is None:
            os.environ.pop("TESTCONTAINERS_RYUK_DISABLED", None)
        else:
            os.environ["TESTCONTAINERS_RYUK_DISABLED"] = saved[0]
        testcontainers_config.ryuk_disabled = saved[1]


@pytest.fixture(scope="session")
def imgfeat_image(docker_engine: None) -> Callable[[str], dockerimages.BuiltImage]:
    """``imgfeat_image("15")``: docker/Dockerfile built on the stand-in for that major (once a session)."""
    built: dict[str, dockerimages.BuiltImage | str] = {}

    def get(major: str) -> dockerimages.BuiltImage:
        if major not in built:
            try:
                built[major] = dockerimages.build_image(major)
            except dockerimages.BuildError as exc:
                built[major] = str(exc)
        result = built[major]
        if isinstance(result, str):
            pytest.fail(f"building the PostgreSQL {major} image failed: {result}", pytrace=False)
        return result

    return get


def host_container(image: str, **kwargs: Any) -> Any:
    """An :class:`~imgfeat_loader.testing.ImgfeatContainer` of ``image`` on the host's network."""
    return testing.ImgfeatContainer(image, network="host", startup_timeout=300, **kwargs)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The figures of the images built in this session (also in build/docker-images.json)."""
    figures = dockerimages.session_figures()
    if not figures:
        return
    terminalreporter.section("imgfeat Docker images")
    for line in figures:
        terminalreporter.write_line(line)
