"""The ``imgfeat`` command-line tool.

The connection comes from ``--dsn`` (before the subcommand), else ``IMGFEAT_DSN``, else the
libpq environment variables (PGHOST, PGPORT, PGUSER, PGDATABASE, ...).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg

from . import __version__, db, models


def _models_add(conn: psycopg.Connection[Any], args: argparse.Namespace) -> None:
    if args.synthetic:
        row = models.add_synthetic(conn, args.name, args.synthetic, seed=args.seed, replace=args.replace)
    elif args.onnx:
        spec = json.loads(args.preprocessing) if args.preprocessing else None
        row = models.add_onnx(
            conn, args.name, Path(args.onnx).read_bytes(), architecture=args.arch, weights_origin=args.origin or "custom",
            output=args.output, preprocessing=spec, replace=args.replace,
        )
    else:
        if not args.arch:
            raise SystemExit("imgfeat: --weights needs --arch (resnet18, resnet50, resnet101 or alexnet)")
        row = models.add_weights(conn, args.name, Path(args.weights), args.arch,
                                 weights_origin=args.origin or "imagenet", replace=args.replace)
    print(f"registered {row['name']}: {row['architecture']}, {row['feature_dim']} features, sha256 {row['sha256'][:12]}")


def _models_list(conn: psycopg.Connection[Any], args: argparse.Namespace) -> None:
    rows = models.list_models(conn)
    if not rows:
        print("no models registered")
    for r in rows:
        print(f"{r['name']:<20} {r['architecture']:<10} {r['input_width']}x{r['input_height']} "
              f"{r['feature_dim']:>5} features  {r['weights_origin']:<9} {r['size_bytes'] / 1e6:8.1f} MB  {r['sha256'][:12]}")


def _models_remove(conn: psycopg.Connection[Any], args: argparse.Namespace) -> None:
    if not models.remove(conn, args.name):
        raise SystemExit(f"imgfeat: no model named {args.name!r}")
    print(f"removed {args.name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imgfeat", description="In-database image featurization for PostgreSQL.")
    parser.add_argument("--dsn", help="libpq connection string or URL (default: $IMGFEAT_DSN, then the PG* variables)")
    parser.add_argument("--version", action="version", version=f"imgfeat {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    m = sub.add_parser("models", help="the featurizer model registry").add_subparsers(dest="models_command", required=True)
    add = m.add_parser("add", help="register a model")
    add.add_argument("name")
    src = add.add_mutually_exclusive_group(required=True)
    src.add_argument("--synthetic", metavar="ARCH", help="seeded synthetic weights (tests, offline demos)")
    src.add_argument("--onnx", metavar="FILE", help="any ONNX image model")
    src.add_argument("--weights", metavar="FILE", help="a torchvision/timm state dict (.safetensors, or .pth with torch)")
    add.add_argument("--arch", help="resnet18 | resnet50 | resnet101 | alexnet")
    add.add_argument("--output", metavar="NODE", help="the tensor to cut the graph at (default: automatic)")
    add.add_argument("--preprocessing", metavar="SPEC", help="preprocessing spec as JSON")
    add.add_argument("--origin", choices=("imagenet", "synthetic", "custom"), help="weights origin to record")
    add.add_argument("--seed", type=int, default=0, help="seed for --synthetic (default 0)")
    add.add_argument("--replace", action="store_true", help="overwrite a model of the same name")
    add.set_defaults(func=_models_add)
    ls = m.add_parser("list", help="list registered models")
    ls.set_defaults(func=_models_list)
    rm = m.add_parser("remove", help="drop a model")
    rm.add_argument("name")
    rm.set_defaults(func=_models_remove)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with db.connect(args.dsn) as conn:
            args.func(conn, args)
    except psycopg.Error as exc:
        diag = getattr(exc, "diag", None)
        msg = (diag.message_primary if diag and diag.message_primary else str(exc)).strip()
        print(f"imgfeat: {msg}", file=sys.stderr)
        for extra in (getattr(diag, "message_detail", None), getattr(diag, "message_hint", None)):
            if extra:
                print(f"  {extra}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
