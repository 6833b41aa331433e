"""The structure holds: the pure library never reaches for the database, nothing goes round in
circles, and the one cache behaves as an LRU cache with versions."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from imgfeat.core.cache import LruCache

ROOT = Path(__file__).resolve().parents[3]


def _import_graph() -> object:
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_pure_layer_imports_nothing_from_the_database_layer() -> None:
    ig: object = _import_graph()
    graph = ig.graph()  # type: ignore[attr-defined]
    assert any(m.startswith("imgfeat.core.") for m in graph) and any(m.startswith("imgfeat.db.") for m in graph)
    assert ig.upward(graph) == []  # type: ignore[attr-defined]
    # ... and the check would see one: a module of the pure layer that imported the database layer
    assert ig.upward({"imgfeat.core.image": {"imgfeat.db.state"}, "imgfeat.db.state": set()}) == [  # type: ignore[attr-defined]
        ("imgfeat.core.image", "imgfeat.db.state")]


def test_no_import_cycles() -> None:
    ig: object = _import_graph()
    assert ig.cycles(ig.graph()) == []  # type: ignore[attr-defined]
    assert ig.cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]  # type: ignore[attr-defined]


def test_every_module_belongs_to_a_layer() -> None:
    modules = [p.relative_to(ROOT / "plpython" / "imgfeat") for p in (ROOT / "plpython" / "imgfeat").rglob("*.py")]
    assert sorted(str(m) for m in modules if len(m.parts) == 1) == ["__init__.py"]


def test_lru_cache_versions_and_eviction() -> None:
    cache: LruCache[str] = LruCache(2)
    loads: list[str] = []

    def load(value: str) -> object:
        return lambda: loads.append(value) or value

    assert cache.get("a", 1, load("a1")) == "a1"
    assert cache.get("a", 1, load("never")) == "a1"  # same version: cached
    assert cache.get("a", 2, load("a2")) == "a2"  # another version: loaded again
    cache.get("b", 1, load("b1"))
    assert cache.peek("a", 2) == "a2"  # now a is the most recently used
    cache.get("c", 1, load("c1"))  # evicts b
    assert cache.peek("b", 1) is None and cache.peek("a", 2) == "a2"
    assert loads == ["a1", "a2", "b1", "c1"]
    assert cache.info() == {"capacity": 2, "loads": {"a": 2, "b": 1, "c": 1}, "evictions": 1}
    cache.shrink(1)  # a was looked at last: it stays
    assert len(cache) == 1 and cache.values() == ["a2"]
    cache.pop("a")
    cache.pop("missing")
    assert len(cache) == 0


@pytest.mark.parametrize("capacity", [0, -3])
def test_lru_cache_keeps_at_least_one(capacity: int) -> None:
    cache: LruCache[int] = LruCache(capacity)
    cache.put("x", 1, 10)
    cache.put("y", 1, 20)
    assert cache.values() == [20]
