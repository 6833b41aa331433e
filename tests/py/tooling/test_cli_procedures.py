"""imgfeat featurize / train / evaluate: the CLI wrappers over the SQL procedures."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from imgfeat_loader.cli import main


def test_featurize_train_evaluate_from_the_cli(
    dsn: str, conn: psycopg.Connection[Any], faces_table: str, resnet18: str, capsys: pytest.CaptureFixture[str]
) -> None:
    conn.execute("CREATE VIEW public.faces_small AS SELECT id, image, label FROM public.faces WHERE id <= 32")
    assert main(["--dsn", dsn, "featurize", "public.faces_small", "public.cli_features", "--model", resnet18,
                 "--batch-size", "8", "--no-progress"]) == 0
    assert "featurized 32 rows" in capsys.readouterr().out
    conn.execute("CREATE VIEW public.cli_train AS SELECT f.id, f.features, s.label FROM public.cli_features f "
                 "JOIN public.faces_small s USING (id)")
    assert main(["--dsn", dsn, "train", "cli_clf", "public.cli_train", "--l2-weight", "2", "--replace"]) == 0
    out = capsys.readouterr().out
    assert "trained cli_clf: classes left, right" in out
    assert conn.execute("SELECT hyperparameters ->> 'l2_weight' FROM imgfeat.classifiers WHERE name = 'cli_clf'").fetchone() == ("2.0",)
    assert main(["--dsn", dsn, "evaluate", "cli_clf", "public.cli_train", "--json"]) == 0
    evaluation = json.loads(capsys.readouterr().out)
    assert evaluation["n"] == 32
    expected = conn.execute("SELECT imgfeat.evaluate('cli_clf', 'public.cli_train')").fetchone()[0]  # type: ignore[index]
    assert evaluation == expected
    assert main(["--dsn", dsn, "evaluate", "cli_clf", "public.cli_train"]) == 0
    assert "confusion matrix" in capsys.readouterr().out


def test_cli_reports_sql_errors(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dsn", dsn, "evaluate", "no_such_classifier", "public.faces"]) == 1
    assert "no_such_classifier" in capsys.readouterr().err
