"""The CMU faces data set loader (imgfeat_loader.datasets) and ``imgfeat datasets cmu-faces``."""

from __future__ import annotations

import functools
import http.server
import io
import shutil
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from imgfeat_loader.cli import main
from imgfeat_loader.datasets import cmu_split, find_faces_dir, load_cmu_faces, parse_cmu_name


def test_parse_cmu_name() -> None:
    assert parse_cmu_name("an2i_left_angry_open_2.pgm") == {
        "userid": "an2i", "pose": "left", "expression": "angry", "eyes": "open", "scale": 2, "is_bad": False}
    assert parse_cmu_name("sz24_left_neutral_sunglasses.bad") == {
        "userid": "sz24", "pose": "left", "expression": "neutral", "eyes": "sunglasses", "scale": 1, "is_bad": True}
    assert parse_cmu_name("at33_up_sad_open_4.pgm")["scale"] == 4  # type: ignore[index]
    for bad in ("an2i_left_angry_open_3.pgm", "an2i_sideways_angry_open.pgm", "README", "an2i_left_angry_open.png"):
        assert parse_cmu_name(bad) is None


def test_cmu_split_rule() -> None:
    keys = [f"u{i}/u{i}_{pose}_happy_open.pgm" for i in range(5) for pose in ("left", "right", "up")]
    keys += ["u0/u0_left_sad_open_2.pgm", "u1/u1_right_sad_open.bad"]  # not full resolution / bad: no split
    split = cmu_split(keys)
    assert split == {
        "u0/u0_left_happy_open.pgm": "train", "u1/u1_left_happy_open.pgm": "test",
        "u2/u2_left_happy_open.pgm": "train", "u3/u3_left_happy_open.pgm": "test",
        "u4/u4_left_happy_open.pgm": "train",
        "u0/u0_right_happy_open.pgm": "train", "u1/u1_right_happy_open.pgm": "test",
        "u2/u2_right_happy_open.pgm": "train", "u3/u3_right_happy_open.pgm": "test",
        "u4/u4_right_happy_open.pgm": "train",
    }


def test_load_full_cmu_faces(dsn: str, conn: psycopg.Connection[Any], cmu_faces: Path, face_files: list[Path]) -> None:
    report = load_cmu_faces(dsn, "cmu_full", source=cmu_faces, progress=False)
    assert (report.files, report.loaded, report.skipped_existing) == (1888, 1888, 0)
    assert report.not_images == [] and report.too_large == [] and report.ignored == []
    q = conn.execute
    assert q("SELECT count(*) FILTER (WHERE NOT is_bad), count(*) FILTER (WHERE is_bad) FROM cmu_full").fetchone() == (1872, 16)
    assert q("SELECT scale, count(*) FROM cmu_full GROUP BY 1 ORDER BY 1").fetchall() == [(1, 640), (2, 624), (4, 624)]
    assert q("SELECT count(DISTINCT userid) FROM cmu_full").fetchone() == (20,)
    assert q("SELECT count(*) FROM cmu_full WHERE label <> pose").fetchone() == (0,)
    assert q("SELECT split, label, count(*) FROM cmu_full WHERE split IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2").fetchall() == [
        ("test", "left", 78), ("test", "right", 77), ("train", "left", 79), ("train", "right", 78)]
    # the split covers exactly the 312 full-resolution left/right faces of the fixture
    split_paths = [r[0] for r in q("SELECT path FROM cmu_full WHERE split IS NOT NULL ORDER BY path").fetchall()]
    assert split_paths == sorted(f"{f.parent.name}/{f.name}" for f in face_files)
    # metadata and bytes of one file
    f = face_files[0]
    row = q("SELECT image, userid, pose, expression, eyes, scale, is_bad, split FROM cmu_full WHERE path = %s",
            (f"{f.parent.name}/{f.name}",)).fetchone()
    user, pose, expr, eyes = f.stem.split("_")
    assert row is not None and bytes(row[0]) == f.read_bytes()
    assert row[1:] == (user, pose, expr, eyes, 1, False, "train")  # the first left face in path order
    bad = q("SELECT scale, pose, split FROM cmu_full WHERE path = 'sz24/sz24_left_neutral_sunglasses.bad'").fetchone()
    assert bad == (1, "left", None)
    # idempotent
    again = load_cmu_faces(dsn, "cmu_full", source=cmu_faces.parent, progress=False)  # the parent works too
    assert (again.loaded, again.updated, again.skipped_existing) == (0, 0, 1888)
    assert q("SELECT count(*) FROM cmu_full").fetchone() == (1888,)


def test_source_or_download_required(dsn: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        load_cmu_faces(dsn, "x")
    with pytest.raises(ValueError, match="exactly one"):
        load_cmu_faces(dsn, "x", source=tmp_path, download=True)


@pytest.fixture
def small_faces(tmp_path: Path, cmu_faces: Path) -> Path:
    """A copy of 2 users' full-resolution left/right faces (31 .pgm), one .bad file, and a stray file."""
    d = tmp_path / "src" / "faces"
    for user in ("an2i", "sz24"):
        (d / user).mkdir(parents=True)
        for f in sorted((cmu_faces / user).glob(f"{user}_*_*_*.pgm")):
            if f.stem.split("_")[1] in ("left", "right") and len(f.stem.split("_")) == 4:
                shutil.copy(f, d / user / f.name)
    shutil.copy(cmu_faces / "sz24" / "sz24_left_neutral_sunglasses.bad", d / "sz24")
    (d / "an2i" / "an2i_notes.pgm").write_text("P2 oops")
    return d


def archive(faces: Path, out: Path) -> bytes:
    """The UCI layout: a zip holding faces.tar.gz (with faces/<user>/...) and a stray html page."""
    tgz = io.BytesIO()
    with tarfile.open(fileobj=tgz, mode="w:gz") as t:
        t.add(faces, arcname="faces")
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("faces.tar.gz", tgz.getvalue())
        z.writestr("faces.html", "<html>CMU faces</html>")
    return out.read_bytes()


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory served on 127.0.0.1 by http.server, and its base URL."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_download_and_load(dsn: str, conn: psycopg.Connection[Any], small_faces: Path, tmp_path: Path,
                           http_dir: tuple[Path, str]) -> None:
    root, base = http_dir
    archive(small_faces, root / "cmu+face+images.zip")
    cache = tmp_path / "cache"
    report = load_cmu_faces(dsn, "cmu_small", download=True, url=base + "cmu+face+images.zip", cache=cache,
                            progress=False)
    n_files = sum(1 for _ in small_faces.glob("*/*_*_*_*.*"))
    assert n_files == 32  # an2i: 16 faces; sz24: 15 faces and 1 .bad
    assert (report.loaded, len(report.not_images)) == (n_files, 0)
    assert [Path(r.path).name for r in report.ignored] == ["an2i_notes.pgm"]
    extracted = find_faces_dir(cache / "cmu+face+images.zip.d")
    assert sorted(p.name for p in extracted.iterdir()) == ["an2i", "sz24"]
    assert not (cache / "cmu+face+images.zip.d" / "faces.tar.gz").exists()
    assert conn.execute("SELECT split, count(*) FROM cmu_small GROUP BY 1 ORDER BY 1").fetchall() == [
        ("test", 15), ("train", 16), (None, 1)]  # left 15 -> 8 + 7, right 16 -> 8 + 8
    # a second run: cached archive, already extracted, nothing added
    (root / "cmu+face+images.zip").unlink()
    again = load_cmu_faces(dsn, "cmu_small", download=True, url=base + "cmu+face+images.zip", cache=cache,
                           progress=False)
    assert (again.loaded, again.skipped_existing) == (0, n_files)


def test_cli_datasets(dsn: str, conn: psycopg.Connection[Any], small_faces: Path, tmp_path: Path,
                      http_dir: tuple[Path, str], capsys: pytest.CaptureFixture[str]) -> None:
    root, base = http_dir
    # a tar.gz straight away is fine too
    with tarfile.open(root / "faces.tar.gz", "w:gz") as t:
        t.add(small_faces, arcname="faces")
    rc = main(["--dsn", dsn, "datasets", "cmu-faces", "--table", "public.cmu_cli", "--download",
               "--url", base + "faces.tar.gz", "--cache", str(tmp_path / "c"), "--no-progress"])
    assert rc == 0
    out, err = capsys.readouterr()
    assert out.startswith("cmu_cli: 32 loaded, 0 updated, 0 already there, 0 not images")
    assert "ignored: " in err and "an2i_notes.pgm" in err
    rc = main(["--dsn", dsn, "datasets", "cmu-faces", "--table", "cmu_cli", "--source", str(small_faces)])
    assert rc == 0
    assert capsys.readouterr().out.startswith("cmu_cli: 0 loaded, 0 updated, 32 already there")
    assert conn.execute("SELECT count(*) FROM cmu_cli").fetchone() == (32,)
    rc = main(["--dsn", dsn, "datasets", "cmu-faces", "--download", "--url", base + "missing.zip",
               "--cache", str(tmp_path / "c")])
    assert rc == 1
    assert "404" in capsys.readouterr().err


def test_faces_fall_back_to_the_download(small_faces: Path, tmp_path: Path, http_dir: tuple[Path, str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither IMGFEAT_CMU_FACES nor ../shared: the demo, tests and benchmark download the
    archive (once: then from the cache); a failed download says where else it looked."""
    from imgfeat_loader import datasets
    from imgfeat_loader.download import DownloadError

    root, base = http_dir
    archive(small_faces, root / "cmu+face+images.zip")
    monkeypatch.delenv("IMGFEAT_CMU_FACES", raising=False)
    monkeypatch.setattr(datasets, "faces_beside_project", lambda: tmp_path / "no-shared")
    cache = tmp_path / "cache"
    got = datasets.cmu_faces_dir(url=base + "cmu+face+images.zip", cache=cache)
    assert got.parent.parent == cache / "cmu+face+images.zip.d" or cache in got.parents
    assert sorted(p.name for p in got.iterdir()) == ["an2i", "sz24"]
    (root / "cmu+face+images.zip").unlink()
    assert datasets.cmu_faces_dir(url=base + "cmu+face+images.zip", cache=cache) == got  # from the cache
    with pytest.raises(DownloadError) as exc:
        datasets.cmu_faces_dir(url=base + "missing.zip", cache=tmp_path / "other")
    assert "IMGFEAT_CMU_FACES is not set" in str(exc.value) and "no-shared" in str(exc.value)
