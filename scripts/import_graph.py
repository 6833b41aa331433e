#!/usr/bin/env python3
"""The import graph of the server-side library (plpython/imgfeat), from the code's own imports.

Prints the modules of each layer (imgfeat.core: the pure library; imgfeat.db: the database
layer), every import that runs from the pure layer up into the database layer (there must be
none: tests/py/unit/test_layers.py fails otherwise), and the import cycles between modules.

    python3 scripts/import_graph.py [--json]
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "plpython" / "imgfeat"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The imgfeat modules ``path`` imports (at any depth of the file, lazy imports included)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] in ("imgfeat", "plpy"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] not in ("imgfeat", "plpy"):
                continue
            modules = {f"{target}.{a.name}" for a in node.names}
            known = {m for m in modules if (PACKAGE.parent / m.replace(".", "/")).with_suffix(".py").exists()
                     or (PACKAGE.parent / m.replace(".", "/") / "__init__.py").exists()}
            found.update(known or {target})
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in g:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in g:
        if v not in index:
            visit(v)
    return out


def upward(g: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Imports from the pure layer (imgfeat.core) into the database layer or plpy."""
    return sorted(
        (m, t) for m, ts in g.items() if m.startswith("imgfeat.core") for t in ts
        if t.startswith("imgfeat.db") or t.split(".")[0] == "plpy"
    )


def main() -> int:
    g = graph()
    layers = {layer: sorted(m for m in g if m == layer or m.startswith(layer + ".")) for layer in ("imgfeat.core", "imgfeat.db")}
    report = {"layers": layers, "other": sorted(m for m in g if not any(m in ms for ms in layers.values())),
              "upward_imports": upward(g), "cycles": cycles(g)}
    if "--json" in sys.argv:
        print(json.dumps(report, indent=2))
    else:
        for layer, mods in layers.items():
            print(f"{layer}: {len(mods)} modules: {', '.join(m.removeprefix(layer + '.') for m in mods)}")
        print(f"other: {', '.join(report['other'])}")
        print(f"imports from the pure layer up: {len(report['upward_imports'])} {report['upward_imports']}")
        print(f"cycles: {len(report['cycles'])} {report['cycles']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
