"""Second red-team round (findings on images and feature vectors), copied from
``tests/py/db/test_security_round2.py`` on branch ``redteam2``: attacks by non-superusers
(``imgfeat_user`` roles on a real cluster) that succeeded on imgfeat 0.3.0.

Findings here (numbered as in the red team's file; each test's docstring has the repro, the
impact and the suggested fix):

1. ICO frames decoded inside ``Image.open`` before the pixel limit, and Pillow's bomb limit
   lifted on a retry.
4. A lowered ``imgfeat.max_image_pixels`` ceiling did not bind backends already running.
5. A progressive-JPEG scan bomb kept libjpeg busy past ``statement_timeout``.
9. Feature arrays of any length converted to Python lists before their length was checked.
10. AVIF: the container's size held to the limit, not the AV1 frame's.
"""

from __future__ import annotations

import io
import os
import struct
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from PIL import Image

from fix_roles import connect_as


def _png(width: int, height: int, mode: str = "RGB", color: Any = 0) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (width, height), color).save(buf, format="PNG", compress_level=9)
    return buf.getvalue()


def _ico_around(png: bytes, declared: int = 16) -> bytes:
    """A Windows icon whose directory declares one ``declared`` x ``declared`` frame, holding ``png``
    (of whatever size): Pillow's ICO plugin decodes the frame inside ``Image.open``."""
    directory = struct.pack("<HHH", 0, 1, 1)
    entry = struct.pack("<BBBBHHII", declared % 256, declared % 256, 0, 0, 1, 32, len(png), 6 + 16)
    return directory + entry + png


def _backend_peak_mb(c: psycopg.Connection[Any]) -> int:
    pid = c.execute("SELECT pg_backend_pid()").fetchone()[0]  # type: ignore[index]
    if not os.path.exists(f"/proc/{pid}/status"):
        pytest.skip("reads the backend's peak memory from /proc: needs the server on this machine")
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


# --------------------------------------------------------------------------- 1. ICO: decoded before the pixel limit


def test_ico_frame_is_not_decoded_before_the_pixel_limit_is_checked(analyst: psycopg.Connection[Any], resnet18: str) -> None:
    """Repro (as an imgfeat_user)::

        SET imgfeat.max_image_pixels = 1000;
        SELECT imgfeat.featurize_image(<ICO: directory 16x16, a 3000x3000 PNG frame>, 'resnet18');

    The same PNG alone is refused from its header (54000, "nothing was decoded"). Wrapped in an
    ICO, Pillow's IcoImagePlugin._open calls load(), so the 9-megapixel frame is decoded inside
    Image.open, before imgfeat.core.image._open compares the size with the limit. Here the frame's
    pixel data is cut short, so the decode that should never have started fails as truncated
    (22P02) instead of the limit's error.

    Fix (imgfeat/core/image.py: _open/decode): never let Pillow decode past the limit: drop ICO
    from FORMATS, or check the sizes of an ICO's frames (their PNG IHDR / BMP headers) before
    Image.open; and enforce max_pixels through Pillow's own check while opening (under the lock:
    Image.MAX_IMAGE_PIXELS = max_pixels with DecompressionBombWarning turned into an error)
    instead of lifting it.
    """
    frame = _png(3000, 3000, "L")
    damaged = frame[: len(frame) // 2]
    analyst.execute("SET imgfeat.max_image_pixels = 1000")
    with pytest.raises(psycopg.errors.ProgramLimitExceeded):  # the control: a bare PNG
        analyst.execute("SELECT imgfeat.featurize_image(%s, %s)", (damaged, resnet18))
    with pytest.raises(psycopg.Error) as exc:
        analyst.execute("SELECT imgfeat.featurize_image(%s, %s)", (_ico_around(damaged), resnet18))
    assert isinstance(exc.value, psycopg.errors.ProgramLimitExceeded), (
        f"the ICO's frame was decoded before the pixel limit was checked: {exc.value.sqlstate} {exc.value.diag.message_primary}"
    )


def test_ico_decompression_bomb_does_not_blow_up_the_backend(analyst: psycopg.Connection[Any], resnet18: str) -> None:
    """Repro: a 190 KB ICO (directory 16x16, a 14000x14000 gray PNG frame: 196 megapixels, over
    Pillow's own bomb limit of 179 MP) passed to imgfeat.featurize_image by an imgfeat_user.
    Pillow raises DecompressionBombError; imgfeat.core.image._open then opens it again with
    Image.MAX_IMAGE_PIXELS = None, and ICO's _open decodes the whole frame (about 200 MB) before
    the header check refuses it ("...; nothing was decoded"). Nothing bounds the frame: PNG
    compresses a blank image about 1000:1, so an ICO of a few MB (RGBA: 4 bytes a pixel) makes the
    backend allocate gigabytes; the OOM killer's SIGKILL of a backend makes the postmaster
    restart the whole cluster. Also uncancellable while it decodes.

    Fix: as the test above; in particular never retry Image.open with Pillow's limit lifted
    (re-read only the header, e.g. with the size check of each plugin, or refuse outright).
    """
    bomb = _ico_around(_png(14000, 14000, "L"))
    assert len(bomb) < 300_000
    analyst.execute("SET imgfeat.max_image_pixels = 1000")
    analyst.execute("SELECT imgfeat.featurize_image(%s, %s)", (_png(8, 8), resnet18))  # model loaded: the baseline
    before = _backend_peak_mb(analyst)
    with pytest.raises(psycopg.errors.ProgramLimitExceeded):
        analyst.execute("SELECT imgfeat.featurize_image(%s, %s)", (bomb, resnet18))
    grown = _backend_peak_mb(analyst) - before
    assert grown < 50, f"a {len(bomb)}-byte ICO made the backend's peak memory grow by {grown} MB"


# --------------------------------------------------------------------------- 4. a lowered ceiling in a warm backend


def test_a_lowered_pixel_ceiling_binds_sessions_already_running(conn: psycopg.Connection[Any], analyst: psycopg.Connection[Any], resnet18: str) -> None:
    """Repro: an imgfeat_user's long-lived (pooled) connection runs

        SET imgfeat.max_image_pixels = 50000000;
        SELECT imgfeat.featurize_image(<any image>, 'resnet18');   -- the backend caches the ceiling

    then the DBA lowers the ceiling (ALTER SYSTEM SET imgfeat.max_image_pixels = '1000';
    SELECT pg_reload_conf()), e.g. while images are being used to exhaust memory. That
    connection keeps featurizing 1600-pixel (or 50-megapixel) images: the ceiling is cached per
    process on first use (imgfeat/db/state.py: remember_pixel_ceiling, _PIXEL_CEILING; the SQL
    wrapper asks imgfeat_internal.cached_pixel_ceiling() first), and the session's SET value is
    only capped by that stale ceiling. New connections and parallel workers are bound.

    Fix: key the cached ceiling by pg_catalog.pg_conf_load_time() (pass it from the SQL wrapper,
    re-read config_settings() when it changed), so a reload reaches every backend.
    """
    conn.execute("SET imgfeat.max_image_pixels = ''")  # makes the placeholder known to ALTER SYSTEM
    conn.execute("ALTER SYSTEM RESET imgfeat.max_image_pixels")
    conn.execute("SELECT pg_reload_conf()")
    small = _png(40, 40, "RGB", (9, 9, 9))  # 1600 pixels
    analyst.execute("SET imgfeat.max_image_pixels = 50000000")  # no more than the ceiling in force
    analyst.execute("SELECT imgfeat.featurize_image(%s, %s)", (small, resnet18))
    conn.execute("ALTER SYSTEM SET imgfeat.max_image_pixels = '1000'")
    conn.execute("SELECT pg_reload_conf()")
    try:
        time.sleep(0.5)  # the reload reaches the backends
        with connect_as(conn.info.dsn, analyst.info.user) as fresh:  # the control: a new backend is bound
            with pytest.raises(psycopg.errors.ProgramLimitExceeded):
                fresh.execute("SELECT imgfeat.featurize_image(%s, %s)", (small, resnet18))
        try:
            analyst.execute("SELECT imgfeat.featurize_image(%s, %s)", (small, resnet18))
        except psycopg.errors.ProgramLimitExceeded:
            pass
        else:
            pytest.fail("a backend that was running before the ceiling was lowered to 1000 pixels featurized 1600")
    finally:
        conn.execute("ALTER SYSTEM RESET imgfeat.max_image_pixels")
        conn.execute("SELECT pg_reload_conf()")


# --------------------------------------------------------------------------- 5. a JPEG scan bomb


def _jpeg_scan_bomb(side: int, scans: int) -> bytes:
    """A progressive gray JPEG of ``side`` x ``side`` whose first (DC) scan header is repeated
    ``scans`` times with no data after it: libjpeg walks every block of the image for each scan."""
    buf = io.BytesIO()
    Image.new("L", (side, side), 128).save(buf, format="JPEG", progressive=True, quality=90)
    data = buf.getvalue()
    i, head, first_scan = 2, b"", b""
    while i < len(data):
        marker = data[i + 1]
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        end = i + 2 + length
        if marker == 0xDA:  # start of scan: entropy-coded data up to the next marker
            k = end
            while not (data[k] == 0xFF and data[k + 1] != 0 and not 0xD0 <= data[k + 1] <= 0xD7):
                k += 1
            first_scan = data[i:k]
            scan_header = data[i:end]
            break
        head += data[i:end]
        i = end
    return data[:2] + head + first_scan + scan_header * scans + b"\xff\xd9"


def test_a_jpeg_scan_bomb_answers_statement_timeout(analyst: psycopg.Connection[Any], resnet18: str) -> None:
    """Repro (as an imgfeat_user): a 7000x7000 progressive JPEG (49 megapixels, under the default
    ceiling) of about 126 KB whose DC scan header is repeated 3000 times, then

        SET statement_timeout = '1s';
        SELECT imgfeat.featurize_image(<it>, 'resnet18');

    runs for about 10-20 s on this machine before the timeout is honoured (libjpeg decodes every
    scan over every block inside Image.load(), in C, with no interrupt check); the time grows
    with the number of scans (a 2 MB file: about 20 minutes), pg_terminate_backend waits as long,
    and a clean shutdown (pg_ctl stop -m fast) waits for it too. Parallel workers multiply it.

    Fix (imgfeat/core/image.py: decode/_open): count the JPEG's SOS markers before decoding and
    refuse more than a few hundred (libjpeg-turbo's own advice: TJPARAM_SCANLIMIT, djpeg -maxscans),
    for JPEG and MPO frames and JPEG-compressed TIFFs alike.
    """
    bomb = _jpeg_scan_bomb(7000, 3000)
    assert len(bomb) < 300_000
    analyst.execute("SET statement_timeout = '1s'")
    started = time.monotonic()
    with pytest.raises(psycopg.Error):
        analyst.execute("SELECT imgfeat.featurize_image(%s, %s)", (bomb, resnet18))
    elapsed = time.monotonic() - started
    analyst.execute("RESET statement_timeout")
    assert elapsed < 3, f"a {len(bomb)}-byte JPEG held the backend {elapsed:.1f} s past a 1 s statement_timeout"


# --------------------------------------------------------------------------- 9. feature arrays of any length


def test_predict_refuses_a_huge_vector_before_converting_it(
    analyst: psycopg.Connection[Any], conn: psycopg.Connection[Any]
) -> None:
    """Repro (as an imgfeat_user, any classifier)::

        SELECT imgfeat.predict('some_classifier', array_fill(0::real, ARRAY[250000000]));

    The 1 GB array is converted by PL/Python into a list of 250 million Python floats (about
    8 GB more) before classifiers._vector finds that its length is not the classifier's
    feature_dim. A few such calls at once exhaust the server's memory; the OOM killer's SIGKILL
    of a backend restarts the cluster. Measured here with 20 million elements: 80 MB of array,
    840 MB of backend peak memory.

    Fix (sql/src/50_classifiers.sql: imgfeat.predict, imgfeat.predict_proba): compare
    pg_catalog.cardinality(features) with (v.classifier).feature_dim in the SQL wrapper and raise
    there (no PL/Python call) when they differ; in predict_table/evaluate/training, select
    cardinality(features) first and refuse rows longer than the classifier's (or than a cap,
    e.g. 1,000,000 elements) before fetching the arrays.
    """
    analyst.execute("DROP TABLE IF EXISTS r2_small")
    analyst.execute(
        "CREATE TEMP TABLE r2_small AS SELECT i AS id, ARRAY[i % 2, (i % 5) / 5.0]::real[] AS features, "
        "CASE WHEN i % 2 = 0 THEN 'even' ELSE 'odd' END AS label FROM generate_series(1, 40) i"
    )
    name = "r2-small-" + str(os.getpid())
    analyst.execute("SELECT imgfeat.drop_classifier(%s)", (name,))
    analyst.execute("CALL imgfeat.train_logistic_regression(%s, 'r2_small')", (name,))
    try:
        analyst.execute("SELECT imgfeat.predict(%s, '{1, 0.5}')", (name,))  # the classifier is loaded: the baseline
        before = _backend_peak_mb(analyst)
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            analyst.execute("SELECT imgfeat.predict(%s, array_fill(0::real, ARRAY[20000000]))", (name,))
        grown = _backend_peak_mb(analyst) - before
        assert grown < 300, f"an 80 MB feature array cost the backend {grown} MB before it was refused"
    finally:
        conn.execute("DELETE FROM imgfeat.classifiers WHERE name = %s", (name,))


# --------------------------------------------------------------------------- 10. AVIF: the container's size is not the frame's


def _avif_declaring(side: int, declared: int) -> bytes:
    """An AVIF whose AV1 frame is ``side`` x ``side`` and whose ``ispe`` box says ``declared`` x ``declared``."""
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (10, 200, 30)).save(buf, format="AVIF", quality=10, speed=10)
    data = bytearray(buf.getvalue())
    at = data.find(b"ispe")
    assert at > 0 and int.from_bytes(data[at + 8 : at + 12], "big") == side
    data[at + 8 : at + 16] = declared.to_bytes(4, "big") + declared.to_bytes(4, "big")
    return bytes(data)


def test_an_avif_is_held_to_the_pixel_limit_by_its_frame_not_its_container(
    analyst: psycopg.Connection[Any], resnet18: str
) -> None:
    """Repro (as an imgfeat_user)::

        SET imgfeat.max_image_pixels = 1000;
        SELECT imgfeat.featurize_image(<AVIF: ispe 16x16, AV1 frame 3000x3000>, 'resnet18');

    returns features: Pillow's AvifImagePlugin takes the size from the ispe box (16x16), imgfeat
    checks that, and libavif then decodes the 9-megapixel frame (Pillow keeps a 16x16 corner of
    it). libavif accepts frames up to 16384x16384 (268 megapixels, over 1 GB decoded) from a
    couple of KB of file, whatever imgfeat.max_image_pixels (or its configured ceiling) says.

    Fix (imgfeat/core/image.py: FORMATS, _open): drop AVIF from the formats opened by default, or
    read the AV1 sequence header's max_frame_width/height (and the grid's) before decoding and
    hold those to the limit; refuse an image whose decoded size differs from its header's.
    """
    avif = _avif_declaring(3000, 16)
    analyst.execute("SET imgfeat.max_image_pixels = 1000")
    with pytest.raises(psycopg.Error) as exc:
        analyst.execute("SELECT imgfeat.featurize_image(%s, %s)", (_png(100, 100), resnet18))
    assert isinstance(exc.value, psycopg.errors.ProgramLimitExceeded)  # the control
    try:
        analyst.execute("SELECT imgfeat.featurize_image(%s, %s)", (avif, resnet18))
    except psycopg.Error:
        return  # refused: fine
    pytest.fail(f"a {len(avif)}-byte AVIF with a 3000x3000 frame was decoded and featurized under a 1000-pixel limit")


# --------------------------------------------------------------------------- 9. (cont.) sources read by training, evaluate, predict_table


def test_sources_refuse_huge_vectors_before_converting_them(analyst: psycopg.Connection[Any], conn: psycopg.Connection[Any]) -> None:
    """The same attack through a table: a row holding a 20-million-element array is refused by
    training (more than MAX_FEATURE_VALUES elements a row), by imgfeat.evaluate and
    imgfeat.predict_table (not the classifier's feature_dim), naming the row, from its
    cardinality: the backend's memory does not grow by the Python list it would have made."""
    analyst.execute("DROP TABLE IF EXISTS r2_huge")
    analyst.execute(
        "CREATE TEMP TABLE r2_huge AS SELECT i AS id, ARRAY[i % 2, (i % 5) / 5.0]::real[] AS features, "
        "CASE WHEN i % 2 = 0 THEN 'even' ELSE 'odd' END AS label FROM generate_series(1, 40) i"
    )
    name = "r2-huge-" + str(os.getpid())
    analyst.execute("SELECT imgfeat.drop_classifier(%s)", (name,))
    analyst.execute("CALL imgfeat.train_logistic_regression(%s, 'r2_huge')", (name,))
    try:
        analyst.execute("SELECT * FROM imgfeat.predict_table(%s, 'r2_huge')", (name,)).fetchall()
        analyst.execute("SELECT imgfeat.evaluate(%s, 'r2_huge')", (name,)).fetchall()
        analyst.execute("UPDATE r2_huge SET features = array_fill(0::real, ARRAY[20000000]) WHERE id = 7")
        before = _backend_peak_mb(analyst)
        with pytest.raises(psycopg.errors.InvalidParameterValue) as exc:
            analyst.execute("CALL imgfeat.train_logistic_regression(%s, 'r2_huge', replace => true)", (name,))
        assert "features of id 7 of pg_temp" in str(exc.value) and "r2_huge have 20,000,000 values; at most 1,000,000 a row are read" in str(exc.value)
        with pytest.raises(psycopg.errors.InvalidParameterValue) as exc:
            analyst.execute("SELECT imgfeat.evaluate(%s, 'r2_huge')", (name,))
        assert "features of ids 7 of pg_temp" in str(exc.value)
        assert f"r2_huge do not have the 2 values classifier '{name}' expects" in str(exc.value)
        with pytest.raises(psycopg.errors.InvalidParameterValue) as exc:
            analyst.execute("SELECT * FROM imgfeat.predict_table(%s, 'r2_huge')", (name,))
        assert "features of ids 7 do not have the 2 values" in str(exc.value)
        grown = _backend_peak_mb(analyst) - before
        assert grown < 300, f"an 80 MB feature array in a source cost the backend {grown} MB before it was refused"
    finally:
        conn.execute("DELETE FROM imgfeat.classifiers WHERE name = %s", (name,))


# --------------------------------------------------------------------------- a cancelled training in a pooled connection


@pytest.fixture
def noise_for_pool(conn: psycopg.Connection[Any]) -> Iterator[str]:
    """2000 rows of 64 features scaled from 1 to 100000, labels linearly separable: L-BFGS
    without a penalty and without normalisation runs for tens of seconds (about 14,000 iterations)."""
    conn.execute("DROP TABLE IF EXISTS public.r2_noise")
    conn.execute("CREATE TABLE public.r2_noise (id int PRIMARY KEY, features real[], label text)")
    conn.execute("SELECT setseed(0.5)")
    conn.execute("WITH z AS (SELECT i, j, random() - 0.5 AS v FROM generate_series(1, 2000) i, generate_series(1, 64) j) "
                 "INSERT INTO public.r2_noise SELECT i, array_agg((v * 10 ^ (j % 6))::real ORDER BY j), "
                 "CASE WHEN sum(v * sin(j)) < 0 THEN 'a' ELSE 'b' END FROM z GROUP BY i")
    conn.execute("GRANT SELECT ON public.r2_noise TO PUBLIC")
    yield "public.r2_noise"
    conn.execute("DROP TABLE IF EXISTS public.r2_noise")
    conn.execute("DELETE FROM imgfeat.classifiers WHERE name IN ('r2_pool_alice', 'r2_pool_bob')")


def test_a_cancelled_lbfgs_training_stops_and_does_not_block_the_pooled_connection(
    conn: psycopg.Connection[Any], alice: psycopg.Connection[Any], bob: psycopg.Connection[Any], noise_for_pool: str
) -> None:
    """Repro: a pool's connection (logged in as a role that may SET ROLE to its users) runs
    alice's training, which statement_timeout cancels; the training went on in the backend's
    background for as long as its iteration limit allowed, and every later training in that
    connection (bob's too) was refused ("a cancelled training of this connection is still
    finishing"). Now the cancelled training's thread is stopped at its next Python bytecode:
    L-BFGS (the solver without an L1 penalty) ends within an iteration, and bob trains."""
    conn.execute("DROP ROLE IF EXISTS imgfeat_test_pool")
    conn.execute("CREATE ROLE imgfeat_test_pool LOGIN IN ROLE imgfeat_test_alice, imgfeat_test_bob")
    conn.execute("GRANT CREATE ON SCHEMA public TO imgfeat_test_pool")
    try:
        with connect_as(conn.info.dsn, "imgfeat_test_pool") as pool:
            pool.execute("SET ROLE imgfeat_test_alice")
            pool.execute("SET statement_timeout = '1s'")
            with pytest.raises(psycopg.errors.QueryCanceled):
                pool.execute(f"CALL imgfeat.train_logistic_regression('r2_pool_alice', '{noise_for_pool}', l1_weight => 0, "
                             "l2_weight => 0, max_iterations => 100000, \"normalize\" => false, replace => true)")
            pool.execute("RESET statement_timeout")
            pool.execute("RESET ROLE")
            pool.execute("SET ROLE imgfeat_test_bob")
            time.sleep(1)
            pool.execute(f"CALL imgfeat.train_logistic_regression('r2_pool_bob', '{noise_for_pool}', max_iterations => 5, replace => true)")
            pool.execute("RESET ROLE")
    finally:
        conn.execute("DROP OWNED BY imgfeat_test_pool")
        conn.execute("DROP ROLE IF EXISTS imgfeat_test_pool")
