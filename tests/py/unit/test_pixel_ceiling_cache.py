"""The backend's copy of the configured pixel ceiling is keyed by when the configuration was
loaded (``pg_conf_load_time()``): a reload makes every backend read the ceiling again."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from imgfeat.core.image import DEFAULT_MAX_PIXELS
from imgfeat.db import state


class FakePlpy:
    """Answers the two queries :func:`state.pixel_ceiling` runs: the load time and the configuration."""

    def __init__(self) -> None:
        self.load_time = "100.5"
        self.configured: str | None = None
        self.config_reads = 0

    def prepare(self, query: str, types: list[str] | None = None) -> str:
        return query

    def execute(self, plan: str, args: list[Any] | None = None) -> list[dict[str, Any]]:
        if "pg_conf_load_time" in plan:
            return [{"key": self.load_time}]
        self.config_reads += 1
        return [] if self.configured is None else [{"name": "imgfeat.max_image_pixels", "setting": self.configured}]


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    saved = dict(state._PIXEL_CEILING)
    state._PIXEL_CEILING.clear()
    state._SPI.pop("load_time", None)
    yield
    state._PIXEL_CEILING.clear()
    state._PIXEL_CEILING.update(saved)


def test_the_wrappers_value_stands_until_the_configuration_is_reloaded() -> None:
    assert state.cached_pixel_ceiling() is None
    assert state.remember_pixel_ceiling("100.5:") == DEFAULT_MAX_PIXELS
    assert state.cached_pixel_ceiling() == f"100.5:{DEFAULT_MAX_PIXELS}"
    assert state.remember_pixel_ceiling("100.5:1000") == DEFAULT_MAX_PIXELS  # same load: the copy stands
    assert state.remember_pixel_ceiling("200.25:1000") == 1000  # reloaded: read again
    assert state.cached_pixel_ceiling() == "200.25:1000"  # one entry, the newest
    assert state.remember_pixel_ceiling("") == DEFAULT_MAX_PIXELS  # no key: this call only
    assert state.cached_pixel_ceiling() == "200.25:1000"


def test_the_spi_path_reads_the_configuration_again_after_a_reload() -> None:
    plpy = FakePlpy()
    assert state.pixel_ceiling(plpy) == DEFAULT_MAX_PIXELS
    plpy.configured = "1000"
    assert state.pixel_ceiling(plpy) == DEFAULT_MAX_PIXELS  # not reloaded yet
    assert plpy.config_reads == 1
    plpy.load_time = "300.75"
    assert state.pixel_ceiling(plpy) == 1000
    assert plpy.config_reads == 2
    assert state.cached_pixel_ceiling() == "300.75:1000"
