"""The main job's HTML report: what ran (date, versions, weights and their origin, the data,
the split), pooled and spatial features side by side (accuracy, ROC AUC, how the features were
computed), confusion matrices, ROC curves (inline SVG, with axis ticks and the positive class),
thumbnails of the misclassified test images, and the SQL that ran. Self-contained: one file,
no scripts, no network; fits a 1300-pixel-wide window without scrolling sideways."""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .demo import Run

COLORS = {"pooled": "#1f6feb", "spatial": "#d1480f"}
"""A run's colour in the ROC chart, by feature layer."""

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: .2em; } .meta { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: .6em 0 1.2em; }
th, td { border: 1px solid #ccc; padding: .3em .7em; text-align: right; vertical-align: top; }
th { background: #f6f8fa; }
table.facts th { text-align: left; white-space: nowrap; } table.facts td { text-align: left; }
table.results td { text-align: left; max-width: 26em; }
.warn { background: #fff3cd; border: 1px solid #e0c36c; padding: 1em; }
.row { display: flex; gap: 2.5em; align-items: flex-start; flex-wrap: wrap; }
.row > div { min-width: 0; }
.thumbs { display: grid; grid-template-columns: repeat(auto-fill, minmax(9em, 1fr)); gap: .8em; }
figure { margin: 0; text-align: center; font-size: 12px; min-width: 0; }
figure img { display: block; margin: 0 auto .3em; }
figcaption .name { display: block; overflow-wrap: anywhere; }
pre { background: #f6f8fa; padding: 1em; white-space: pre-wrap; overflow-wrap: anywhere; }
"""


def thumbnail_data_uri(image: bytes, size: int = 96) -> str:
    """A PNG data URI of ``image`` scaled to fit ``size`` x ``size`` pixels."""
    from PIL import Image

    with Image.open(io.BytesIO(image)) as img:
        img = img.convert("RGB")
        img.thumbnail((size, size))
        buf = io.BytesIO()
        img.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def roc_svg(curves: Sequence[tuple[str, Sequence[float], Sequence[float], float | None]], positive: str,
            negative: str, size: int = 380) -> str:
    """ROC curves (``(name, fpr, tpr, auc)`` each) on one chart with the chance diagonal, ticks
    and grid lines at 0, 0.2, ..., 1 on both axes, axis titles that say which class is positive,
    and a legend with each curve's AUC."""
    left, right, top, bottom = 52, 14, 14, 58
    w, h = size - left - right, size - top - bottom

    def x(v: float) -> float:
        return left + v * w

    def y(v: float) -> float:
        return top + (1 - v) * h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" role="img" '
             f'aria-label="ROC curves, positive class {html.escape(positive)}">']
    for i in range(6):
        t = i / 5
        parts.append(f'<line x1="{x(t):.1f}" y1="{top}" x2="{x(t):.1f}" y2="{top + h}" stroke="#eee"/>')
        parts.append(f'<line x1="{left}" y1="{y(t):.1f}" x2="{left + w}" y2="{y(t):.1f}" stroke="#eee"/>')
        parts.append(f'<line x1="{x(t):.1f}" y1="{top + h}" x2="{x(t):.1f}" y2="{top + h + 5}" stroke="#555"/>')
        parts.append(f'<text x="{x(t):.1f}" y="{top + h + 18}" text-anchor="middle" font-size="11">{t:.1f}</text>')
        parts.append(f'<line x1="{left - 5}" y1="{y(t):.1f}" x2="{left}" y2="{y(t):.1f}" stroke="#555"/>')
        parts.append(f'<text x="{left - 8}" y="{y(t) + 4:.1f}" text-anchor="end" font-size="11">{t:.1f}</text>')
    parts.append(f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="none" stroke="#555"/>')
    parts.append(f'<line x1="{x(0)}" y1="{y(0)}" x2="{x(1)}" y2="{y(1)}" stroke="#bbb" stroke-dasharray="4 4"/>')
    for n, (name, fpr, tpr, auc) in enumerate(curves):
        points = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in zip(fpr, tpr))
        color = COLORS.get(name, "#444")
        parts.append(f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2"/>')
        label = f"{name}: AUC {auc:.3f}" if auc is not None else f"{name}: AUC undefined"
        ly = top + h - 12 - 16 * (len(curves) - 1 - n)
        parts.append(f'<line x1="{left + w - 150}" y1="{ly - 4}" x2="{left + w - 132}" y2="{ly - 4}" '
                     f'stroke="{color}" stroke-width="2"/>')
        parts.append(f'<text x="{left + w - 128}" y="{ly}" font-size="12">{html.escape(label)}</text>')
    pos, neg = html.escape(positive), html.escape(negative)
    parts.append(f'<text x="{left + w / 2}" y="{size - 20}" text-anchor="middle" font-size="12">'
                 f'false positive rate ({neg} faces called {pos})</text>')
    parts.append(f'<text x="{left + w / 2}" y="{size - 5}" text-anchor="middle" font-size="11" fill="#555">'
                 f'positive class: {pos}</text>')
    parts.append(f'<text x="14" y="{top + h / 2}" text-anchor="middle" font-size="12" '
                 f'transform="rotate(-90 14 {top + h / 2})">true positive rate ({pos} faces called {pos})</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def confusion_table(confusion: dict[str, Any]) -> str:
    """The confusion matrix (rows: true class, columns: predicted) as an HTML table."""
    labels = [html.escape(str(x)) for x in confusion["labels"]]
    head = "".join(f"<th>predicted {x}</th>" for x in labels)
    rows = "".join(
        f"<tr><th>true {labels[i]}</th>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>"
        for i, row in enumerate(confusion["matrix"])
    )
    return f"<table class='cm'><tr><th></th>{head}</tr>{rows}</table>"


def per_class_table(evaluation: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><th>{html.escape(str(c))}</th><td>{m['precision']:.3f}</td><td>{m['recall']:.3f}</td>"
        f"<td>{m['f1']:.3f}</td><td>{m['support']}</td></tr>"
        for c, m in evaluation.get("per_class", {}).items()
    )
    return ("<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>"
            f"{rows}</table>")


def _facts(data: dict[str, Any], runs: Sequence[Run]) -> str:
    e = html.escape
    models = "<br>".join(
        f"{e(m['name'])}: {e(str(m['architecture']))}, {m['feature_dim']} {e(m['feature_layer'])} features, "
        f"<b>{e(m['weights_origin'])}</b> weights (sha256 {e(m['sha256'][:12])})"
        for m in data.get("models", [])
    )
    counts = data.get("counts", {})

    def split(name: str) -> str:
        c = counts.get(name, {})
        total = sum(c.values())
        balance = ", ".join(f"{n} {e(label)} ({100 * n / total:.0f} %)" for label, n in sorted(c.items())) if total else ""
        return f"{total} images: {balance}"

    rows = [
        ("date", e(data.get("date", ""))),
        ("software", e(data.get("versions", ""))),
        ("weights", f"{models}<br>from {e(data.get('weights', ''))}"),
        ("images", f"CMU faces from {e(data.get('faces', ''))}<br>{e(data.get('loaded', ''))}"),
        ("training set", split("train")),
        ("test set", split("test")),
        ("split", e(data.get("split", ""))),
        ("classifier", "logistic regression (CALL imgfeat.train_logistic_regression: L2 weight 1, features "
                       "standardised), one per feature layer"),
    ]
    return "<table class='facts'>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def _results(runs: Sequence[Run]) -> str:
    from .demo import featurized_text

    e = html.escape
    head = "".join(f"<th>{e(r.feature_layer)} ({r.feature_dim} features)</th>" for r in runs)

    def row(label: str, cells: Sequence[str]) -> str:
        return f"<tr><th>{label}</th>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"

    body = [
        row("model", [e(r.model) for r in runs]),
        row("rows featurized", [e(featurized_text(r, long=True)) for r in runs]),
        row("training", [f"{r.train_seconds:.2f} s" for r in runs]),
        row("test accuracy", [f"<b>{r.evaluation['accuracy']:.4f}</b> of {r.evaluation['n']}" for r in runs]),
        row("test ROC AUC", [f"{r.evaluation['auc']:.4f}" if r.evaluation.get("auc") is not None else "-" for r in runs]),
        row("test log loss", [f"{r.evaluation['log_loss']:.4f}" for r in runs]),
    ]
    return f"<table class='results'><tr><th></th>{head}</tr>{''.join(body)}</table>"


def _breakable(name: str) -> str:
    """``name`` escaped, with a line-break opportunity after each ``/`` and ``_``, so that a long
    file name wraps at its parts inside a thumbnail's caption (and anywhere else if it must)."""
    return re.sub(r"([/_])", r"\1<wbr>", html.escape(name))


def _thumbs(misclassified: Sequence[dict[str, Any]]) -> str:
    e = html.escape
    if not misclassified:
        return "<p>None: every test image was classified correctly.</p>"
    figures = "".join(
        f"<figure><img src='{thumbnail_data_uri(m['image'])}' alt='{e(str(m['path']))}' title='{e(str(m['path']))}'>"
        f"<figcaption><span class='name' title='{e(str(m['path']))}'>#{m['id']} {_breakable(str(m['path']))}</span>"
        f"true {e(str(m['label']))}, predicted {e(str(m['predicted']))} ({float(m['probability']):.2f})</figcaption>"
        "</figure>"
        for m in misclassified
    )
    return f"<div class='thumbs'>{figures}</div>"


def write_report(
    path: Path,
    *,
    title: str,
    data: dict[str, Any],
    runs: Sequence[Run],
    misclassified: dict[str, Sequence[dict[str, Any]]],
    sql: Sequence[str],
    warning: str | None = None,
    why: str | None = None,
) -> Path:
    """Write the report to ``path`` and return it.

    ``data``: ``date``, ``versions``, ``faces``, ``loaded``, ``counts`` (split -> label ->
    images), ``split`` (how it was made), ``models`` (their ``imgfeat.models`` rows), ``weights``
    (where they came from). ``runs``: :class:`imgfeat_loader.demo.Run` (pooled, then spatial).
    ``misclassified``: per feature layer, the test images its classifier got wrong: dicts with
    ``id``, ``path``, ``label``, ``predicted``, ``probability`` and ``image`` (bytes).
    """
    e = html.escape
    labels = [str(x) for x in runs[0].evaluation["confusion_matrix"]["labels"]]
    positive, negative = labels[1], labels[0]  # imgfeat.evaluate: ROC with classes[2] positive
    curves = [(r.feature_layer, (r.evaluation.get("roc") or {}).get("fpr", []),
               (r.evaluation.get("roc") or {}).get("tpr", []), r.evaluation.get("auc")) for r in runs]
    per_run = "".join(
        f"<div><h3>{e(r.feature_layer)} features</h3>{confusion_table(r.evaluation['confusion_matrix'])}"
        f"{per_class_table(r.evaluation)}</div>"
        for r in runs
    )
    layers = " and ".join(r.feature_layer for r in runs)
    mistakes = "".join(
        f"<h3>{e(r.feature_layer)} features: {len(misclassified.get(r.feature_layer, []))} of {r.evaluation['n']}</h3>"
        f"{_thumbs(misclassified.get(r.feature_layer, []))}"
        for r in runs
    )
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>{CSS}</style></head><body>
<h1>{e(title)}</h1>
<p class="meta">{e(data.get('date', ''))} · {e(data.get('versions', ''))} · {e(layers)} features of the same images, side by side</p>
{f"<p class='warn'>{e(warning)}</p>" if warning else ""}
<h2>What ran</h2>
{_facts(data, runs)}
<h2>Results on the test set</h2>
{_results(runs)}
{f"<p><b>Why they differ.</b> {e(why)}</p>" if why else ""}
<div class="row">{per_run}
<div><h3>ROC curves (positive class: {e(positive)})</h3>{roc_svg(curves, positive, negative)}</div></div>
<h2>Misclassified test images</h2>
{mistakes}
<h2>The SQL that ran</h2><pre>{e(chr(10).join(sql))}</pre>
</body></html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc, encoding="utf-8")
    return path
