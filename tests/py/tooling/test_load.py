"""Loading image files into tables (imgfeat_loader.load) and the ``imgfeat load`` command."""

from __future__ import annotations

import hashlib
import io
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from PIL import Image

from imgfeat_loader.cli import main
from imgfeat_loader.load import LoadError, image_header_error, load_directory


def png(seed: int, size: tuple[int, int] = (16, 12)) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def image_dir(tmp_path: Path, face_files: list[Path]) -> Path:
    """3 PNGs, 2 CMU faces (PGM), a text file, an empty file, and a subdirectory with one more PNG."""
    d = tmp_path / "images"
    d.mkdir()
    for i in range(3):
        (d / f"img{i}.png").write_bytes(png(i))
    for f in face_files[:2]:
        shutil.copy(f, d / f.name)
    (d / "notes.txt").write_text("not an image\n")
    (d / "empty.png").write_bytes(b"")
    (d / "sub").mkdir()
    (d / "sub" / "deep.png").write_bytes(png(99))
    return d


def rows(conn: psycopg.Connection[Any], table: str) -> dict[str, tuple[Any, ...]]:
    cur = conn.execute(f"SELECT path, image, bytes, sha256, id FROM {table} ORDER BY path")
    return {r[0]: r[1:] for r in cur.fetchall()}


def test_header_check() -> None:
    assert image_header_error(png(0)) is None
    assert image_header_error(b"") == "empty file"
    assert image_header_error(b"hello world\n" * 10) == "not an image: Pillow does not recognise its header"
    assert image_header_error(b"P5\n").startswith("bad image header")  # a PGM header cut short


def test_load_directory_loads_reports_and_is_idempotent(conn: psycopg.Connection[Any], image_dir: Path) -> None:
    report = load_directory(conn, image_dir, "load_basic", progress=False)
    assert (report.files, report.loaded, report.updated, report.skipped_existing) == (7, 5, 0, 0)
    assert sorted(Path(r.path).name for r in report.not_images) == ["empty.png", "notes.txt"]
    assert report.too_large == [] and report.unreadable == []
    assert report.seconds > 0 and report.images_per_second == pytest.approx(5 / report.seconds)
    got = rows(conn, "load_basic")
    assert len(got) == 5
    assert conn.execute("SELECT attstorage FROM pg_attribute WHERE attrelid = 'load_basic'::regclass "
                        "AND attname = 'image'").fetchone() == ("e",)  # external: uncompressed
    for path, (image, size, sha, _id) in got.items():
        data = Path(path).read_bytes()
        assert Path(path).is_absolute() and Path(path).parent == image_dir.resolve()
        assert (bytes(image), size, sha) == (data, len(data), hashlib.sha256(data).hexdigest())

    again = load_directory(conn, image_dir, "load_basic", progress=False)
    assert (again.loaded, again.updated, again.skipped_existing) == (0, 0, 5)
    assert rows(conn, "load_basic") == got

    # a changed file at a known path updates its row in place (same id)
    changed = image_dir / "img1.png"
    changed.write_bytes(png(1234))
    third = load_directory(conn, image_dir, "load_basic", progress=False)
    assert (third.loaded, third.updated, third.skipped_existing) == (0, 1, 4)
    after = rows(conn, "load_basic")
    key = str(changed.resolve())
    assert bytes(after[key][0]) == changed.read_bytes() and after[key][3] == got[key][3]
    assert {k: v for k, v in after.items() if k != key} == {k: v for k, v in got.items() if k != key}


def test_pattern_and_recursive(conn: psycopg.Connection[Any], image_dir: Path) -> None:
    report = load_directory(conn, image_dir, "load_pattern", pattern="*.png", recursive=True, progress=False)
    assert (report.files, report.loaded) == (5, 4)  # empty.png is not an image
    names = sorted(Path(p).name for p in rows(conn, "load_pattern"))
    assert names == ["deep.png", "img0.png", "img1.png", "img2.png"]


def test_scan_symlinks_and_slash_patterns(image_dir: Path) -> None:
    from imgfeat_loader.load import scan

    (image_dir / "alias.png").symlink_to(image_dir / "img0.png")  # the same file twice: once
    (image_dir / "linkdir").symlink_to(image_dir / "sub", target_is_directory=True)  # not descended into
    root = image_dir.resolve()
    assert scan(image_dir, "*.png") == [root / "empty.png", root / "img0.png", root / "img1.png", root / "img2.png"]
    assert scan(image_dir, "*.png", recursive=True) == [
        root / "empty.png", root / "img0.png", root / "img1.png", root / "img2.png", root / "sub" / "deep.png"]
    assert scan(image_dir, "sub/*.png") == [root / "sub" / "deep.png"]
    assert scan(image_dir, "nothing*") == []


def test_too_large_is_refused_with_a_clear_message(conn: psycopg.Connection[Any], tmp_path: Path) -> None:
    small, big = png(1, (8, 8)), png(2, (200, 200))
    (tmp_path / "small.png").write_bytes(small)
    (tmp_path / "big.png").write_bytes(big)
    limit = len(small) + 10
    report = load_directory(conn, tmp_path, "load_cap", max_bytes=limit, progress=False)
    assert report.loaded == 1
    assert [Path(r.path).name for r in report.too_large] == ["big.png"]
    assert report.too_large[0].reason.startswith(f"{len(big):,} bytes is over the {limit:,}-byte limit per file")
    assert [Path(p).name for p in rows(conn, "load_cap")] == ["small.png"]
    with pytest.raises(ValueError, match="1 GB|field limit"):
        load_directory(conn, tmp_path, "load_cap", max_bytes=2 << 30, progress=False)


def test_as_paths_stores_absolute_paths(conn: psycopg.Connection[Any], image_dir: Path) -> None:
    load_directory(conn, image_dir, "load_paths", as_="paths", progress=False)
    typ = conn.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                       "WHERE attrelid = 'load_paths'::regclass AND attname = 'image'").fetchone()
    assert typ == ("text",)
    got = rows(conn, "load_paths")
    assert len(got) == 5 and all(image == path for path, (image, *_rest) in got.items())
    # the same table cannot then take bytes
    with pytest.raises(LoadError, match="image bytea"):
        load_directory(conn, image_dir, "load_paths", progress=False)


def test_schema_qualified_and_quoted_names(conn: psycopg.Connection[Any], image_dir: Path) -> None:
    conn.execute('CREATE SCHEMA IF NOT EXISTS "Pics"')
    report = load_directory(conn, image_dir, '"Pics"."My Images"', pattern="img*.png", progress=False)
    assert report.table == '"Pics"."My Images"' and report.loaded == 3
    assert conn.execute('SELECT count(*) FROM "Pics"."My Images"').fetchone() == (3,)
    for bad in ("a.b.c.d", "x; DROP TABLE y", '"unterminated'):
        with pytest.raises(LoadError, match="invalid table name"):
            load_directory(conn, image_dir, bad, progress=False)
    with pytest.raises(LoadError, match="not a directory"):
        load_directory(conn, image_dir / "nope", "t", progress=False)


def test_accepts_sqlalchemy_engine_and_url(dsn: str, image_dir: Path) -> None:
    from sqlalchemy import create_engine

    from test_sqlalchemy import sqlalchemy_url

    url = sqlalchemy_url(dsn)
    engine = create_engine(url)
    try:
        assert load_directory(engine, image_dir, "load_sa", pattern="img*.png", progress=False).loaded == 3
    finally:
        engine.dispose()
    assert load_directory(url, image_dir, "load_sa", progress=False).loaded == 2
    assert load_directory(url.render_as_string(hide_password=False), image_dir, "load_sa",
                          progress=False).skipped_existing == 5


def test_cli_load(dsn: str, conn: psycopg.Connection[Any], image_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["--dsn", dsn, "load", str(image_dir), "--table", "load_cli", "--max-bytes", "1K", "--no-progress"])
    assert rc == 0
    out, err = capsys.readouterr()
    big = sorted(p.name for p in image_dir.iterdir() if p.is_file() and p.stat().st_size > 1024)
    small_images = sorted(p.name for p in image_dir.glob("img*.png") if p.stat().st_size <= 1024)
    assert big  # the CMU faces are 15 KB
    for name in big:
        assert f"too large: {image_dir.resolve() / name}: " in err
    assert f"not an image: {image_dir.resolve() / 'notes.txt'}: not an image" in err
    assert out.startswith(f"load_cli: {len(small_images)} loaded, 0 updated, 0 already there, 2 not images, "
                          f"{len(big)} too large")
    assert conn.execute("SELECT count(*) FROM load_cli").fetchone() == (len(small_images),)
    # the default cap; then a re-run adds nothing
    assert main(["--dsn", dsn, "load", str(image_dir), "--table", "load_cli", "--no-progress"]) == 0
    assert main(["--dsn", dsn, "load", str(image_dir), "--table", "load_cli", "--no-progress"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("load_cli: 0 loaded, 0 updated, 5 already there")
    assert conn.execute("SELECT count(*) FROM load_cli").fetchone() == (5,)
    # errors: exit 1 with a message
    assert main(["--dsn", dsn, "load", str(image_dir / "missing"), "--table", "load_cli"]) == 1
    assert "is not a directory" in capsys.readouterr().err
