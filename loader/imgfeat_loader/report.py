"""The main job's HTML report: metrics, ROC curve (inline SVG), confusion matrix and
thumbnails of the misclassified images. Self-contained: one file, no scripts, no network."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image


def thumbnail_data_uri(image: bytes, size: int = 96) -> str:
    """A PNG data URI of ``image`` scaled to fit ``size`` x ``size`` pixels."""
    with Image.open(io.BytesIO(image)) as img:
        img = img.convert("RGB")
        img.thumbnail((size, size))
        buf = io.BytesIO()
        img.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def roc_svg(fpr: Sequence[float], tpr: Sequence[float], auc: float | None, size: int = 320) -> str:
    """The ROC curve as an SVG polyline with the chance diagonal; axes 0..1."""
    pad = 40
    inner = size - 2 * pad

    def xy(x: float, y: float) -> str:
        return f"{pad + x * inner:.1f},{pad + (1 - y) * inner:.1f}"

    points = " ".join(xy(x, y) for x, y in zip(fpr, tpr))
    label = f"AUC = {auc:.3f}" if auc is not None else "AUC undefined"
    return f"""<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" role="img" aria-label="ROC curve">
<rect x="{pad}" y="{pad}" width="{inner}" height="{inner}" fill="none" stroke="#999"/>
<line x1="{pad}" y1="{pad + inner}" x2="{pad + inner}" y2="{pad}" stroke="#bbb" stroke-dasharray="4 4"/>
<polyline points="{points}" fill="none" stroke="#1f6feb" stroke-width="2"/>
<text x="{size / 2}" y="{size - 8}" text-anchor="middle" font-size="12">false positive rate</text>
<text x="12" y="{size / 2}" text-anchor="middle" font-size="12" transform="rotate(-90 12 {size / 2})">true positive rate</text>
<text x="{pad + inner - 4}" y="{pad + inner - 8}" text-anchor="end" font-size="13">{html.escape(label)}</text>
</svg>"""


def confusion_table(confusion: dict[str, Any]) -> str:
    """The confusion matrix (rows: true class, columns: predicted) as an HTML table."""
    labels = [html.escape(str(x)) for x in confusion["labels"]]
    head = "".join(f"<th>predicted {x}</th>" for x in labels)
    rows = "".join(
        f"<tr><th>true {labels[i]}</th>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>"
        for i, row in enumerate(confusion["matrix"])
    )
    return f"<table class='cm'><tr><th></th>{head}</tr>{rows}</table>"


def write_report(
    path: Path,
    *,
    title: str,
    summary: dict[str, Any],
    evaluation: dict[str, Any],
    misclassified: Sequence[dict[str, Any]],
    sql: Sequence[str],
    warning: str | None = None,
) -> Path:
    """Write the report to ``path`` and return it.

    ``misclassified``: dicts with ``id``, ``path``, ``label``, ``predicted``, ``probability``
    and ``image`` (bytes).
    """
    roc = evaluation.get("roc") or {}
    metrics_rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in summary.items())
    per_class = "".join(
        f"<tr><th>{html.escape(str(c))}</th><td>{m['precision']:.3f}</td><td>{m['recall']:.3f}</td>"
        f"<td>{m['f1']:.3f}</td><td>{m['support']}</td></tr>"
        for c, m in evaluation.get("per_class", {}).items()
    )
    thumbs = "".join(
        f"<figure><img src='{thumbnail_data_uri(m['image'])}' alt='{html.escape(str(m['path']))}'>"
        f"<figcaption>#{m['id']} {html.escape(str(m['path']))}<br>true {html.escape(str(m['label']))}, "
        f"predicted {html.escape(str(m['predicted']))} ({m['probability']:.2f})</figcaption></figure>"
        for m in misclassified
    ) or "<p>None: every test image was classified correctly.</p>"
    warn = f"<p class='warn'>{html.escape(warning)}</p>" if warning else ""
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 70em; }}
table {{ border-collapse: collapse; margin: 1em 0; }} th, td {{ border: 1px solid #ccc; padding: .3em .7em; text-align: right; }}
th {{ background: #f6f8fa; }} .warn {{ background: #fff3cd; border: 1px solid #e0c36c; padding: 1em; }}
figure {{ display: inline-block; margin: .5em; text-align: center; font-size: 12px; width: 130px; }}
pre {{ background: #f6f8fa; padding: 1em; overflow-x: auto; }} .row {{ display: flex; gap: 3em; align-items: flex-start; flex-wrap: wrap; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
{warn}
<div class="row"><div><h2>Summary</h2><table>{metrics_rows}</table>
<h2>Per class</h2><table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>{per_class}</table>
<h2>Confusion matrix</h2>{confusion_table(evaluation["confusion_matrix"])}</div>
<div><h2>ROC curve</h2>{roc_svg(roc.get("fpr", []), roc.get("tpr", []), evaluation.get("auc"))}</div></div>
<h2>Misclassified test images ({len(misclassified)})</h2>{thumbs}
<h2>The SQL that ran</h2><pre>{html.escape(chr(10).join(sql))}</pre>
</body></html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc, encoding="utf-8")
    return path
