"""The benchmark's result rows and their Markdown table."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import TextIO


@dataclass
class Row:
    """One line of the table: a target (``P1``..``P6``), what was compared, the figures,
    the ratio (None when the row is informative only), the goal as text and whether it
    was met (None when there is no goal)."""

    target: str
    what: str
    figures: str
    ratio: float | None = None
    goal: str = ""
    ok: bool | None = None

    @property
    def verdict(self) -> str:
        return "" if self.ok is None else ("met" if self.ok else "MISSED")


def ratio_row(target: str, what: str, figures: str, ratio: float, minimum: float) -> Row:
    """A row whose goal is ``ratio >= minimum``."""
    return Row(target, what, figures, ratio, f">= {minimum:g}x", ratio >= minimum)


def ratio_text(ratio: float) -> str:
    """``0.947`` -> ``0.94x``: truncated, not rounded, so that a miss never prints as its goal."""
    return f"{math.floor(ratio * 100 + 1e-9) / 100:.2f}x"


def print_table(rows: list[Row], out: TextIO = sys.stdout) -> None:
    """The rows as a Markdown table (the README's Performance section pastes it)."""
    header = ("target", "what", "measured", "ratio", "goal", "verdict")
    cells = [header] + [
        (r.target, r.what, r.figures, "" if r.ratio is None else ratio_text(r.ratio), r.goal, r.verdict) for r in rows
    ]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header))]

    def line(c: tuple[str, ...]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(c, widths)) + " |"

    print(line(cells[0]), file=out)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|", file=out)
    for c in cells[1:]:
        print(line(c), file=out)
    out.flush()
