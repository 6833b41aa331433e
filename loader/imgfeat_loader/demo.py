"""The main job (``make demo`` / ``imgfeat demo``): the MicrosoftML featurizeImage walkthrough
on PostgreSQL — CMU faces, left- vs right-facing, 157 training and 155 test images.

1. load the CMU face images into ``imgfeat_demo.cmu_faces`` (with the seed's balanced split);
2. register resnet18: ImageNet weights when they are in the download cache or can be
   downloaded, otherwise synthetic (seeded) weights, with a loud warning;
3. ``CALL imgfeat.featurize`` the 312 labelled faces; ``CALL imgfeat.train_logistic_regression``
   on the training split; ``imgfeat.evaluate`` on the test split;
4. print the figures and the SQL it ran; write an HTML report.

Idempotent: a second run reuses what the first loaded, featurized and registered, and
retrains the classifier.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

SCHEMA = "imgfeat_demo"
CLASSIFIER = "cmu_faces_left_right"
SYNTHETIC_WARNING = (
    "SYNTHETIC WEIGHTS: resnet18 runs with seeded random weights, because pre-trained ImageNet "
    "weights were neither in the download cache nor downloadable. Expect a test accuracy of roughly "
    "0.85-0.95 on this task instead of what pre-trained features give. For real weights: "
    "`imgfeat models download torchvision/resnet18 --replace` on a machine with internet access, or "
    "`imgfeat models add resnet18 --weights resnet18-f37072fd.pth --arch resnet18 --replace`, then run the demo again."
)


@dataclass
class DemoResult:
    """What the main job measured."""

    weights_origin: str
    rows_featurized: int
    featurize_seconds: float
    images_per_second: float
    train_seconds: float
    evaluation: dict[str, Any]
    report: Path
    sql: list[str] = field(default_factory=list)


class _Session:
    """Runs SQL and keeps the statements for the printout and the report."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.sql: list[str] = []

    def run(self, statement: str, params: tuple[Any, ...] | None = None, *, record: bool = True) -> psycopg.Cursor[Any]:
        if record:
            shown = statement
            for p in params or ():
                shown = shown.replace("%s", psycopg.sql.Literal(p).as_string(self.conn), 1)
            self.sql.append(shown.strip() + ";")
        return self.conn.execute(statement, params)


def default_faces_guess() -> Path:
    """``../shared/data/cmu-faces/faces`` beside the project directory."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cmu-faces" / "faces"


def default_faces_dir() -> Path | None:
    """``IMGFEAT_CMU_FACES``, else ``../shared/data/cmu-faces/faces`` beside the project, if present."""
    env = os.environ.get("IMGFEAT_CMU_FACES")
    if env:
        return Path(env)
    guess = default_faces_guess()
    return guess if guess.is_dir() else None


def ensure_resnet18(conn: psycopg.Connection[Any], *, allow_download: bool = True) -> str:
    """Register resnet18 (ImageNet weights if obtainable, else synthetic); returns its weights origin."""
    from imgfeat.core.zoo import catalog

    from .download import DownloadError, cache_dir, download_model

    row = conn.execute("SELECT weights_origin FROM imgfeat.models WHERE name = 'resnet18'").fetchone()
    if row and row[0] == "imagenet":
        return "imagenet"
    entry = catalog.get("torchvision/resnet18")
    cached = cache_dir() / entry.url.rsplit("/", 1)[-1]
    if cached.exists() or allow_download:
        try:
            download_model(conn, entry, model_name="resnet18", replace=True, progress=False, timeout=20)
            return "imagenet"
        except (DownloadError, OSError) as exc:
            print(f"demo: pre-trained resnet18 not available ({exc})")
    if row is None:
        conn.execute("SELECT imgfeat.register_synthetic_model('resnet18')")
    return "synthetic"


def run_demo(
    dsn: Any = None,
    *,
    faces_dir: Path | None = None,
    report: Path = Path(".imgfeat/demo-report.html"),
    allow_download: bool | None = None,
    threads: int | None = None,
) -> DemoResult:
    """Run the main job against ``dsn`` (a superuser or imgfeat_admin connection). See the module docstring."""
    from .datasets import load_cmu_faces
    from .db import connect
    from .report import write_report

    if allow_download is None:
        allow_download = os.environ.get("IMGFEAT_OFFLINE", "") in ("", "0")
    faces_dir = faces_dir or default_faces_dir()
    with connect(dsn) as conn:
        s = _Session(conn)
        s.run("CREATE EXTENSION IF NOT EXISTS imgfeat CASCADE")
        s.run(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        started = time.perf_counter()
        report_load = load_cmu_faces(conn, f"{SCHEMA}.cmu_faces", source=faces_dir, download=faces_dir is None, progress=False)
        s.sql.append(f"-- loaded by: imgfeat datasets cmu-faces --table {SCHEMA}.cmu_faces "
                     f"{'--source ' + str(faces_dir) if faces_dir else '--download'}")
        print(f"demo: {report_load.summary()} ({time.perf_counter() - started:.1f} s)")

        origin = ensure_resnet18(conn, allow_download=allow_download)
        warning = SYNTHETIC_WARNING if origin == "synthetic" else None
        if warning:
            print("\n" + "!" * 100 + f"\n{warning}\n" + "!" * 100 + "\n")

        s.run(f"SET imgfeat.intra_op_num_threads = {int(threads or os.cpu_count() or 1)}")
        s.run(f"CREATE OR REPLACE VIEW {SCHEMA}.labelled AS SELECT id, image, label, split "
              f"FROM {SCHEMA}.cmu_faces WHERE split IS NOT NULL")
        before = conn.execute(f"SELECT count(*) FROM {SCHEMA}.labelled").fetchone()[0]  # type: ignore[index]
        started = time.perf_counter()
        s.run(f"CALL imgfeat.featurize('{SCHEMA}.labelled', '{SCHEMA}.features', 'resnet18', batch_size => 32)")
        featurize_seconds = time.perf_counter() - started
        job = conn.execute(
            "SELECT rows_done, images_per_second FROM imgfeat.featurize_jobs ORDER BY job_id DESC LIMIT 1"
        ).fetchone()
        rows_done, rate = (job[0], job[1] or 0.0) if job else (0, 0.0)

        for split in ("train", "test"):
            s.run(f"CREATE OR REPLACE VIEW {SCHEMA}.{split} AS SELECT f.id, f.features, c.label "
                  f"FROM {SCHEMA}.features f JOIN {SCHEMA}.cmu_faces c USING (id) "
                  f"WHERE c.split = '{split}' AND f.model_name = 'resnet18'")
        started = time.perf_counter()
        s.run(f"CALL imgfeat.train_logistic_regression('{CLASSIFIER}', '{SCHEMA}.train', replace => true)")
        train_seconds = time.perf_counter() - started
        evaluation = s.run(f"SELECT imgfeat.evaluate('{CLASSIFIER}', '{SCHEMA}.test')").fetchone()[0]  # type: ignore[index]
        wrong = s.run(
            f"SELECT t.id, c.path, c.image, t.label, p.label AS predicted, p.probability "
            f"FROM {SCHEMA}.test t JOIN {SCHEMA}.cmu_faces c USING (id) "
            f"CROSS JOIN LATERAL (SELECT imgfeat.predict('{CLASSIFIER}', t.features) AS label, "
            f"(imgfeat.predict_proba('{CLASSIFIER}', t.features) ->> imgfeat.predict('{CLASSIFIER}', t.features))::float8 AS probability) p "
            f"WHERE p.label <> t.label ORDER BY t.id"
        ).fetchall()
    misclassified = [dict(zip(("id", "path", "image", "label", "predicted", "probability"), r)) for r in wrong]
    summary = {
        "weights": f"resnet18, {origin}",
        "rows featurized (this run)": rows_done,
        "labelled images": before,
        "featurize seconds": round(featurize_seconds, 2),
        "images per second": round(rate, 1),
        "training seconds": round(train_seconds, 2),
        "test images": evaluation["n"],
        "test accuracy": round(evaluation["accuracy"], 4),
        "test AUC": round(evaluation["auc"], 4) if evaluation.get("auc") is not None else None,
    }
    path = write_report(report.resolve(), title="imgfeat: CMU faces, left vs right (resnet18 features, logistic regression)",
                        summary=summary, evaluation=evaluation, misclassified=misclassified, sql=s.sql, warning=warning)
    return DemoResult(origin, rows_done, featurize_seconds, rate, train_seconds, evaluation, path, s.sql)


def print_result(result: DemoResult) -> None:
    """The figures, the confusion matrix and the SQL, for a person at a terminal."""
    ev = result.evaluation
    print("\nThe SQL that ran (copy it into psql):\n")
    print("\n".join(result.sql))
    print("\nResults")
    print(f"  weights            resnet18, {result.weights_origin}")
    print(f"  rows featurized    {result.rows_featurized} in {result.featurize_seconds:.1f} s "
          f"({result.images_per_second:.1f} images/s)")
    print(f"  training           {result.train_seconds:.2f} s")
    print(f"  test accuracy      {ev['accuracy']:.4f} on {ev['n']} images" +
          (f", AUC {ev['auc']:.4f}" if ev.get("auc") is not None else ""))
    labels = ev["confusion_matrix"]["labels"]
    print("  confusion matrix   (rows: true, columns: predicted)")
    print("                     " + " " * 8 + "".join(f"{x:>8}" for x in labels))
    for label, row in zip(labels, ev["confusion_matrix"]["matrix"]):
        print(f"                     {label:<8}" + "".join(f"{v:>8}" for v in row))
    print(f"\nReport: {result.report}")
    if result.weights_origin == "synthetic":
        print("\n" + SYNTHETIC_WARNING)


def main(argv: list[str] | None = None) -> int:
    """``python -m imgfeat_loader.demo [--dsn DSN] [--faces DIR] [--report FILE] [--offline]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="imgfeat demo", description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="connection (default: $IMGFEAT_DSN, then the PG* variables)")
    parser.add_argument("--faces", type=Path, help="the CMU faces directory (default: $IMGFEAT_CMU_FACES, ../shared, else download)")
    parser.add_argument("--report", type=Path, default=Path(".imgfeat/demo-report.html"), help="HTML report path")
    parser.add_argument("--offline", action="store_true", help="do not try to download pre-trained weights")
    args = parser.parse_args(argv)
    from .download import DownloadError

    try:
        result = run_demo(args.dsn, faces_dir=args.faces, report=args.report,
                          allow_download=False if args.offline else None)
    except DownloadError as exc:
        print(f"imgfeat demo: the CMU faces are not beside the project ({default_faces_guess()}) and could not be "
              f"downloaded: {exc}\n  Point at a copy: IMGFEAT_CMU_FACES=/path/to/faces make demo (or --faces DIR).",
              file=sys.stderr)
        return 1
    print_result(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
