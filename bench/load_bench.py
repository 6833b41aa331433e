"""Benchmark: images per second that ``imgfeat load`` writes into a fresh table.

Usage::

    python bench/load_bench.py [--dsn DSN] [--n 2000] [--size 64] [--source DIR] [--repeat 3]

Generates ``--n`` small RGB PNGs (``--size`` x ``--size``, seeded noise over a gradient:
about 12 KB each at 64x64) in a temporary directory, or uses the files of ``--source``
(e.g. ``../shared/data/cmu-faces/faces/an2i``, with ``--recursive`` for the whole set), then
times :func:`imgfeat_loader.load.load_directory` into a new table, ``--repeat`` times (a new
table each time), and prints the figures. The database is ``--dsn`` / ``IMGFEAT_DSN`` if given,
else a throwaway local cluster (:class:`imgfeat_loader.cluster.LocalCluster`; the extension
is not needed for loading). The idempotent re-run (every file skipped) is timed too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

from imgfeat_loader import db
from imgfeat_loader.load import load_directory


def make_pngs(directory: Path, n: int, size: int, seed: int = 0) -> int:
    """Write ``n`` PNGs of ``size`` x ``size`` RGB; returns their total size in bytes."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, size, dtype=np.float32)
    total = 0
    for i in range(n):
        noise = rng.integers(0, 56, (size, size, 3), dtype=np.uint8)
        img = (ramp[None, :, None] + noise).astype(np.uint8)
        path = directory / f"img{i:05d}.png"
        Image.fromarray(img).save(path, format="PNG")
        total += path.stat().st_size
    return total


def run(dsn: str, directory: Path, pattern: str, recursive: bool, repeat: int) -> None:
    speeds = []
    for r in range(repeat):
        table = f"load_bench_{uuid.uuid4().hex[:8]}"
        try:
            report = load_directory(dsn, directory, table, pattern=pattern, recursive=recursive, progress=False)
            rerun = load_directory(dsn, directory, table, pattern=pattern, recursive=recursive, progress=False)
        finally:
            with db.connect(dsn) as conn:
                conn.execute(f"DROP TABLE IF EXISTS {table}")
        speeds.append(report.images_per_second)
        print(f"run {r + 1}: {report.loaded} images in {report.seconds:.3f} s = {report.images_per_second:,.0f} images/s; "
              f"idempotent re-run: {rerun.skipped_existing} skipped in {rerun.seconds:.3f} s "
              f"({rerun.skipped_existing / rerun.seconds:,.0f} files/s)")
        if report.not_images or report.too_large or report.unreadable:
            print(f"  ({len(report.not_images)} not images, {len(report.too_large)} too large, "
                  f"{len(report.unreadable)} unreadable)")
    print(f"load: median {statistics.median(speeds):,.0f} images/s over {repeat} runs (best {max(speeds):,.0f})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dsn", default=os.environ.get("IMGFEAT_DSN"), help="database (default $IMGFEAT_DSN, else a local cluster)")
    p.add_argument("--n", type=int, default=2000, help="images to generate (default 2000)")
    p.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    p.add_argument("--source", type=Path, help="load these files instead of generated PNGs")
    p.add_argument("--pattern", default="*", help="glob for --source (default *)")
    p.add_argument("--recursive", action="store_true", help="descend into --source's subdirectories")
    p.add_argument("--repeat", type=int, default=3, help="runs, each into a fresh table (default 3)")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="imgfeat-load-bench-") as tmp:
        if args.source:
            directory, pattern, recursive = args.source, args.pattern, args.recursive
            print(f"source: {directory} ({pattern}{', recursive' if recursive else ''})")
        else:
            directory, pattern, recursive = Path(tmp), "*.png", False
            total = make_pngs(directory, args.n, args.size)
            print(f"source: {args.n} generated {args.size}x{args.size} PNGs, {total / args.n / 1024:.1f} KiB each")
        if args.dsn:
            run(args.dsn, directory, pattern, recursive, args.repeat)
        else:
            from imgfeat_loader.cluster import LocalCluster

            with LocalCluster() as cluster:
                print("database: a throwaway local cluster (fsync off)")
                run(cluster.dsn(), directory, pattern, recursive, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
