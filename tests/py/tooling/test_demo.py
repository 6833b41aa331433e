"""The main job end to end (what `make demo` runs), against the test database."""

from __future__ import annotations

from pathlib import Path

from imgfeat_loader.demo import print_result, run_demo


def test_main_job(dsn: str, cmu_faces: Path, tmp_path: Path, capsys: object) -> None:
    report = tmp_path / "report.html"
    first = run_demo(dsn, faces_dir=cmu_faces, report=report, allow_download=False, threads=1)
    assert first.weights_origin == "synthetic"
    assert first.evaluation["n"] == 155
    assert first.evaluation["accuracy"] >= 0.85
    assert sum(map(sum, first.evaluation["confusion_matrix"]["matrix"])) == 155
    html = report.read_text()
    assert "<svg" in html and "ROC curve" in html and "SYNTHETIC WEIGHTS" in html
    wrong = sum(first.evaluation["confusion_matrix"]["matrix"][i][1 - i] for i in range(2))
    assert html.count("<figure>") == wrong
    # idempotent: a second run featurizes nothing new and gives the same evaluation
    second = run_demo(dsn, faces_dir=cmu_faces, report=report, allow_download=False, threads=1)
    assert second.rows_featurized == 0
    assert second.evaluation["accuracy"] == first.evaluation["accuracy"]
    print_result(second)
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert "CALL imgfeat.featurize(" in out and "test accuracy" in out
