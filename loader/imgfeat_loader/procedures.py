"""Thin client wrappers over the SQL procedures, for people at a terminal:
``imgfeat featurize``, ``imgfeat train``, ``imgfeat evaluate``. SQL stays the primary
interface; these only call it and show progress (polling ``imgfeat.featurize_progress``
from a second connection while the procedure runs)."""

from __future__ import annotations

import json
import sys
import threading
from typing import Any

import psycopg
from tqdm import tqdm

from .db import resolve_dsn


def featurize(
    dsn: Any,
    source: str,
    target: str,
    *,
    model_name: str = "resnet18",
    id_column: str = "id",
    image_column: str = "image",
    batch_size: int = 32,
    on_error: str = "raise",
    progress: bool = True,
    poll_seconds: float = 1.0,
) -> dict[str, Any]:
    """``CALL imgfeat.featurize(...)`` with a progress bar; returns the job's row of
    ``imgfeat.featurize_progress``. Raises psycopg.Error as the procedure does."""
    conninfo = resolve_dsn(dsn)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
        done = threading.Event()
        failure: list[BaseException] = []

        def call() -> None:
            try:
                conn.execute(
                    "CALL imgfeat.featurize(%s::regclass, %s, %s, %s, %s, %s, %s)",
                    (source, target, model_name, id_column, image_column, batch_size, on_error),
                )
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                failure.append(exc)
            finally:
                done.set()

        worker = threading.Thread(target=call, daemon=True)
        worker.start()
        bar = tqdm(total=None, unit="img", desc=f"featurize {source}", disable=not progress or not sys.stderr.isatty())
        with psycopg.connect(conninfo, autocommit=True) as watcher:
            while not done.wait(poll_seconds):
                row = watcher.execute(
                    "SELECT rows_total, rows_done + rows_failed FROM imgfeat.featurize_progress "
                    "WHERE pid = %s AND status = 'running' ORDER BY job_id DESC LIMIT 1", (pid,)
                ).fetchone()
                if row:
                    bar.total = row[0]
                    bar.n = row[1]
                    bar.refresh()
            worker.join()
            bar.close()
            if failure:
                raise failure[0]
            cur = watcher.execute(
                "SELECT * FROM imgfeat.featurize_progress WHERE pid = %s ORDER BY job_id DESC LIMIT 1", (pid,)
            )
            row = cur.fetchone()
            return dict(zip([c.name for c in cur.description or []], row or ()))


def train(dsn: Any, classifier_name: str, source: str, **options: Any) -> dict[str, Any]:
    """``CALL imgfeat.train_logistic_regression(...)`` with named options (l1_weight, l2_weight,
    max_iterations, normalize, class_weight, replace, features_column, label_column); returns the
    stored classifier's summary."""
    allowed = {"features_column", "label_column", "l1_weight", "l2_weight", "max_iterations",
               "normalize", "class_weight", "replace"}
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(f"unknown options: {', '.join(sorted(unknown))}")
    named = [(k, v) for k, v in options.items() if v is not None]
    args = "".join(f', "{k}" => %s' for k, _ in named)
    with psycopg.connect(resolve_dsn(dsn), autocommit=True) as conn:
        conn.add_notice_handler(lambda d: print(f"NOTICE: {d.message_primary}", file=sys.stderr))
        conn.execute(f"CALL imgfeat.train_logistic_regression(%s, %s::regclass{args})",
                     (classifier_name, source, *[v for _, v in named]))
        cur = conn.execute(
            "SELECT name, classes, feature_dim, training_rows, training_metrics, hyperparameters "
            "FROM imgfeat.classifiers WHERE name = %s", (classifier_name,)
        )
        return dict(zip([c.name for c in cur.description or []], cur.fetchone() or ()))


def evaluate(dsn: Any, classifier_name: str, source: str, *, features_column: str = "features",
             label_column: str = "label") -> dict[str, Any]:
    """``SELECT imgfeat.evaluate(...)``: the metrics as a dict."""
    with psycopg.connect(resolve_dsn(dsn), autocommit=True) as conn:
        row = conn.execute("SELECT imgfeat.evaluate(%s, %s::regclass, %s, %s)",
                           (classifier_name, source, features_column, label_column)).fetchone()
    assert row is not None
    return dict(row[0])


def format_evaluation(ev: dict[str, Any]) -> str:
    """A terminal rendering: accuracy, AUC, per-class metrics, confusion matrix (rows: true)."""
    from .tables import format_table

    head = f"n {ev['n']}  accuracy {ev['accuracy']:.4f}" + (f"  AUC {ev['auc']:.4f}" if ev.get("auc") is not None else "")
    per_class = format_table(
        ("class", "precision", "recall", "f1", "support"),
        [(label, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", m["support"])
         for label, m in ev.get("per_class", {}).items()],
        right=("precision", "recall", "f1", "support"),
    )
    cm = ev["confusion_matrix"]
    labels = [str(x) for x in cm["labels"]]
    matrix = format_table(["true \\ predicted", *labels], [(label, *row) for label, row in zip(labels, cm["matrix"])],
                          right=labels)
    return "\n".join([head, "", per_class, "", "confusion matrix (rows: true class, columns: predicted)", matrix])


def format_job(job: dict[str, Any]) -> str:
    """One line about a finished featurize job (a row of ``imgfeat.featurize_progress``)."""
    if job.get("rows_total") == 0 and job.get("status") == "done":
        return (f"nothing to do: every row of {job.get('source')} already has {job.get('model_name')} features "
                f"in {job.get('target')} (100 %)")
    return (f"featurized {job.get('rows_done', 0)} rows into {job.get('target')} ({job.get('rows_failed', 0)} failed, "
            f"{job.get('images_per_second') or 0} images/s)")


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)
