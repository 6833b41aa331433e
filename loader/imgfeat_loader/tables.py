"""Plain-text tables for the terminal (the CLI, the demo): a header row, a rule, aligned columns.
Standard library only: the CLI imports it at start-up."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, right: Sequence[str] = (),
                 indent: str = "") -> str:
    """``headers`` over a rule of dashes over ``rows``, each column as wide as its widest cell,
    two spaces apart; the columns named in ``right`` (numbers) are right-aligned, the others
    left-aligned. ``None`` prints as an empty cell."""
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        text = "  ".join(v.rjust(w) if h in right else v.ljust(w) for v, w, h in zip(row, widths, headers))
        return indent + text.rstrip()

    return "\n".join([line(cells[0]), indent + "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])
