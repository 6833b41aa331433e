"""Bake featurizer models into the imgfeat Docker image at build time.

Run by docker/Dockerfile with the Python that PL/Python embeds (``/usr/bin/python3``) and
``PYTHONPATH=/usr/local/lib/imgfeat/<version>`` (the library and pinned dependencies that
``make install`` put there), so the models are built and checked by the same code the server
runs. Writes into ``--out`` (``/usr/share/imgfeat/models`` in the image):

* ``<name>.onnx`` for each architecture in ``--synthetic`` (resnet18 | resnet50 | resnet101 |
  alexnet), built by :func:`imgfeat.zoo.build_feature_extractor` with
  :func:`imgfeat.zoo.synthetic_state_dict` (seed 0: the same weights as
  ``imgfeat.register_synthetic_model(arch)``; NOT pre-trained);
* a copy of each user-supplied ONNX file from ``--user-dir`` (``docker/models`` in the build
  context), described by ``models.json`` there (see docker/README.md), validated now with
  :func:`imgfeat.onnx_import.prepare_feature_extractor` so a bad file fails the build, not
  the container's first start;
* ``manifest.json``: a JSON array with one object per model (``name``, ``path`` absolute,
  ``architecture``, ``weights_origin``, ``preprocessing``, ``output_name``, ``feature_dim``,
  ``sha256``, ``size_bytes``). docker/initdb/20-imgfeat-models.sql registers every entry
  with ``imgfeat.register_model`` at the first start; nothing is downloaded then.

Exit status 0 on success; 2 with a one-line ``bake_models: ...`` message on bad input.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
"""Model names imgfeat.models accepts (its CHECK constraint, sql/src/20_models.sql)."""

WEIGHTS_ORIGINS = ("imagenet", "synthetic", "custom")
"""imgfeat.models.weights_origin values (its CHECK constraint)."""

USER_KEYS = {"file", "name", "architecture", "weights_origin", "preprocessing", "output_name", "feature_dim"}
"""Keys allowed in an entry of docker/models/models.json."""


class BakeError(Exception):
    """Bad build input (unknown architecture, missing file, invalid entry): fails the build."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _entry(out: Path, name: str, **fields: Any) -> dict[str, Any]:
    path = out / f"{name}.onnx"
    return {
        "name": name,
        "path": str(path.resolve()),
        "architecture": fields.get("architecture"),
        "weights_origin": fields.get("weights_origin") or "custom",
        "preprocessing": fields.get("preprocessing"),
        "output_name": fields.get("output_name"),
        "feature_dim": fields.get("feature_dim"),
        "sha256": _sha256(path),
        "size_bytes": path.stat().st_size,
    }


def bake_synthetic(architectures: list[str], out: Path) -> list[dict[str, Any]]:
    """Build each architecture with seeded synthetic weights into ``out/<arch>.onnx``.

    Raises:
        BakeError: an unknown architecture (the message lists the known ones).
    """
    import onnx

    from imgfeat.core import zoo

    entries = []
    for arch in architectures:
        if arch not in zoo.ARCHITECTURES:
            raise BakeError(
                f"IMGFEAT_MODELS names unknown architecture {arch!r}; choose from {', '.join(sorted(zoo.ARCHITECTURES))}"
            )
        proto = zoo.build_feature_extractor(arch, zoo.synthetic_state_dict(arch, seed=0))
        onnx.save(proto, str(out / f"{arch}.onnx"))
        del proto
        entries.append(_entry(out, arch, architecture=arch, weights_origin="synthetic", output_name="features"))
    return entries


def _user_specs(user_dir: Path) -> list[dict[str, Any]]:
    listing = user_dir / "models.json"
    if listing.exists():
        try:
            specs = json.loads(listing.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise BakeError(f"{listing}: not valid JSON: {exc}") from None
        if not isinstance(specs, list) or not all(isinstance(s, dict) for s in specs):
            raise BakeError(f"{listing}: expected a JSON array of objects")
        return specs
    # No models.json: every *.onnx file, named after its file, imgfeat's defaults otherwise.
    return [{"file": p.name, "name": p.stem} for p in sorted(user_dir.glob("*.onnx"))]


def bake_user(user_dir: Path, out: Path) -> list[dict[str, Any]]:
    """Validate and copy the user-supplied ONNX files described by ``user_dir/models.json``.

    Raises:
        BakeError: a malformed entry, a missing file, an invalid name, preprocessing spec or
            ONNX model (imgfeat's own checks, as ``imgfeat.register_model`` will run them).
    """
    from imgfeat.core.errors import ImgfeatError
    from imgfeat.core.onnx_import import prepare_feature_extractor
    from imgfeat.core.spec import Preprocessing

    entries = []
    for spec in _user_specs(user_dir):
        unknown = set(spec) - USER_KEYS
        if unknown:
            raise BakeError(f"models.json entry {spec!r}: unknown keys {sorted(unknown)}; allowed: {sorted(USER_KEYS)}")
        if "file" not in spec:
            raise BakeError(f"models.json entry {spec!r}: 'file' is required")
        src = user_dir / str(spec["file"])
        name = str(spec.get("name") or Path(str(spec["file"])).stem)
        if not NAME_RE.match(name):
            raise BakeError(f"model name {name!r} (from {src.name}) must match {NAME_RE.pattern}")
        if not src.is_file():
            raise BakeError(f"{src}: no such file")
        origin = spec.get("weights_origin") or "custom"
        if origin not in WEIGHTS_ORIGINS:
            raise BakeError(f"{name}: weights_origin must be one of {', '.join(WEIGHTS_ORIGINS)}, not {origin!r}")
        try:
            if spec.get("preprocessing") is not None:
                Preprocessing.from_json(spec["preprocessing"])
            prepare_feature_extractor(
                src.read_bytes(), output=spec.get("output_name"), feature_dim=spec.get("feature_dim")
            )
        except ImgfeatError as exc:
            raise BakeError(f"{src.name}: {exc}") from None
        shutil.copyfile(src, out / f"{name}.onnx")
        entries.append(
            _entry(
                out, name, architecture=spec.get("architecture"), weights_origin=origin,
                preprocessing=spec.get("preprocessing"), output_name=spec.get("output_name"),
                feature_dim=spec.get("feature_dim"),
            )
        )
    return entries


def bake(out: Path, synthetic: list[str], user_dir: Path | None) -> list[dict[str, Any]]:
    """Bake all models into ``out`` and write ``out/manifest.json``; returns the manifest.

    Raises:
        BakeError: bad input (see :func:`bake_synthetic`, :func:`bake_user`), or two models
            with the same name.
    """
    out.mkdir(parents=True, exist_ok=True)
    entries = bake_synthetic(synthetic, out)
    if user_dir is not None and user_dir.is_dir():
        entries += bake_user(user_dir, out)
    names = [e["name"] for e in entries]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise BakeError(f"model names used twice: {', '.join(duplicates)}")
    (out / "manifest.json").write_text(json.dumps(entries, indent=2) + "\n", encoding="utf-8")
    for path in [out, *out.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for the ONNX files and manifest.json")
    parser.add_argument(
        "--synthetic", default="", help="space- or comma-separated architectures to build with synthetic weights"
    )
    parser.add_argument("--user-dir", type=Path, default=None, help="directory of user ONNX files and models.json")
    args = parser.parse_args(argv)
    synthetic = [a for a in re.split(r"[\s,]+", args.synthetic) if a]
    try:
        entries = bake(args.out, synthetic, args.user_dir)
    except BakeError as exc:
        print(f"bake_models: {exc}", file=sys.stderr)
        return 2
    for e in entries:
        print(f"bake_models: {e['name']} ({e['weights_origin']}, {e['size_bytes']} bytes) -> {e['path']}")
    if not entries:
        print("bake_models: no models baked (IMGFEAT_MODELS empty, no docker/models/*.onnx)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
