"""Attacks on imgfeat by hostile roles, run for real against the real cluster.

Each test plays an attack a non-superuser could try (an analyst holding only
``imgfeat_user``, or a role with no imgfeat rights at all), with payloads the test builds
itself, and asserts that the attack fails and that the victims' results are unchanged.
The threat model these attacks probe is in the README's Security section.
"""

from __future__ import annotations

import ctypes
import io
import os
import shutil
import subprocess
import tempfile
import threading
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import psycopg
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from psycopg import sql

from fix_roles import connect_as, ensure_role, parallel_forcing_setting

ROOT = Path(__file__).resolve().parents[3]
REFUSED = (psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedFunction, psycopg.errors.InvalidSchemaName)
"""How a call to a function the caller must not reach fails: no EXECUTE or USAGE, or no such function."""


def _features(conn: psycopg.Connection[Any], image: bytes, model: str) -> np.ndarray:
    row = conn.execute("SELECT imgfeat.featurize_image(%s, %s)", (image, model)).fetchone()
    assert row is not None and row[0] is not None
    return np.asarray(row[0], dtype=np.float32)


def _png(width: int, height: int, color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------- 1. code from the library directory


def _zip_payload(version: str, marker: str) -> bytes:
    """A zip archive that, imported as ``<version>/imgfeat``, writes ``marker``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{version}/imgfeat/__init__.py", f"open({marker!r}, 'w').write('pwned')\n__version__ = {version!r}\n")
        for sub in ("server", "db/__init__", "db/server"):
            z.writestr(f"{version}/imgfeat/{sub}.py", f"open({marker!r}, 'w').write('pwned')\n")
    return buf.getvalue()


def _plant_zip_in_temp_heap(conn: psycopg.Connection[Any], payload: bytes) -> str:
    """Store ``payload`` in a temporary table and force its page to disk; returns the heap file's
    path relative to the data directory (the backends' working directory)."""
    conn.execute("SET temp_buffers = 100")  # the minimum: a little filler evicts the payload's page to disk
    conn.execute("CREATE TEMP TABLE payload (b bytea)")
    conn.execute("ALTER TABLE payload ALTER COLUMN b SET STORAGE EXTERNAL")
    conn.execute("INSERT INTO payload VALUES (%s)", (payload,))
    path = conn.execute("SELECT pg_relation_filepath('payload')").fetchone()[0]  # type: ignore[index]
    conn.execute("CREATE TEMP TABLE filler AS SELECT g, repeat('x', 500) AS pad FROM generate_series(1, 4000) g")
    return str(path)


@pytest.mark.parametrize("workers", [2, 0], ids=["parallel-workers", "leader-in-parallel-mode"])
def test_library_directory_cannot_be_chosen_by_a_session(
    analyst_dsn: str, conn: psycopg.Connection[Any], resnet18: str, face_bytes: bytes, workers: int
) -> None:
    if os.environ.get("IMGFEAT_TEST_DSN"):
        pytest.skip("plants a file in the server's data directory and looks for its marker: needs the server on this machine")
    version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'imgfeat'").fetchone()[0]  # type: ignore[index]
    with connect_as(analyst_dsn, "imgfeat_test_analyst") as clean:
        expected = _features(clean, face_bytes, resnet18)
    marker = f"/tmp/imgfeat-attack-{uuid.uuid4().hex}"
    force = parallel_forcing_setting(conn)
    with connect_as(analyst_dsn, "imgfeat_test_analyst") as attacker:
        heap = _plant_zip_in_temp_heap(attacker, _zip_payload(version, marker))
        data_dir = conn.execute("SHOW data_directory").fetchone()[0]  # type: ignore[index]
        assert (Path(data_dir) / heap).stat().st_size >= 8192, "the payload page did not reach the disk"
        attacker.execute(f"SET {force} = on")
        attacker.execute(f"SET max_parallel_workers = {workers}")
        attacker.execute("SET parallel_setup_cost = 0")
        # the library directory as a session setting ...
        try:
            attacker.execute("SET imgfeat.python_lib_dir = %s" % sql.quote(heap))  # noqa: UP031 - a quoted literal
        except psycopg.Error:
            pass  # a setting the server refuses outright is fine too
        try:
            got = _features(attacker, face_bytes, resnet18)
        except psycopg.Error as exc:  # refusing the session's setting is fine; running its code is not
            got = None
            assert not os.path.exists(marker), f"the server ran code from {heap}: {exc}"
        if got is not None:
            assert np.array_equal(got, expected)
        # ... and as an argument of an internal function, whatever it is called
        for call in (
            "SELECT imgfeat._featurize_image(%s, NULL, 'x', NULL, %s, NULL, NULL, NULL, NULL)",
            "SELECT imgfeat._classify(NULL, 'x', NULL, NULL, 'label', %s)",
        ):
            params = (face_bytes, heap) if "featurize" in call else (heap,)
            with pytest.raises(REFUSED):
                attacker.execute(call, params)
    assert not os.path.exists(marker), f"the server ran code planted in {heap}"


def test_no_library_directory_setting_is_honoured(conn: psycopg.Connection[Any]) -> None:
    """The library location is fixed at install: nothing in the SQL reads imgfeat.python_lib_dir."""
    bodies = conn.execute(
        "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid "
        "AND d.classid = 'pg_proc'::regclass AND d.deptype = 'e' "
        "JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'imgfeat' "
        "WHERE p.prosrc LIKE '%python_lib_dir%' OR pg_get_function_arguments(p.oid) LIKE '%lib_dir%'"
    ).fetchall()
    assert bodies == []


# --------------------------------------------------------------------------- 2. forged rows and shared caches


def _internal_row_functions(conn: psycopg.Connection[Any]) -> list[tuple[str, bool]]:
    """Functions of the extension that take a model or classifier row, and whether analysts may call them."""
    return [
        (r[0], r[1])
        for r in conn.execute(
            "SELECT p.oid::regprocedure::text, has_function_privilege('imgfeat_user', p.oid, 'EXECUTE') "
            "AND has_schema_privilege('imgfeat_user', p.pronamespace, 'USAGE') "
            "FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.classid = 'pg_proc'::regclass AND d.deptype = 'e' "
            "JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'imgfeat' "
            "WHERE p.proargtypes::oid[] && ARRAY['imgfeat.models'::regtype, 'imgfeat.classifiers'::regtype]::oid[]"
        )
    ]


def test_no_function_taking_a_catalog_row_is_callable_by_analysts(conn: psycopg.Connection[Any]) -> None:
    functions = _internal_row_functions(conn)
    assert functions, "the parallel-safe bodies take the catalog's rows: there must be such functions"
    assert [f for f, callable_ in functions if callable_] == []


@pytest.fixture
def pool(dsn: str, conn: psycopg.Connection[Any], alice: Any, bob: Any) -> Iterator[psycopg.Connection[Any]]:
    """A connection pool's login role that switches between alice and bob with SET ROLE."""
    ensure_role(conn, "imgfeat_test_pool", "imgfeat_test_alice", "imgfeat_test_bob")
    with connect_as(dsn, "imgfeat_test_pool") as c:
        yield c


@pytest.fixture
def victim_classifier(conn: psycopg.Connection[Any], bob: psycopg.Connection[Any]) -> str:
    conn.execute("DROP TABLE IF EXISTS public.victim_features")
    conn.execute("CREATE TABLE public.victim_features (id int PRIMARY KEY, features real[], label text)")
    conn.execute("INSERT INTO public.victim_features SELECT i, ARRAY[i % 2 + (i % 7) / 10.0, (i % 5) / 5.0]::real[], "
                 "CASE WHEN i % 2 = 0 THEN 'even' ELSE 'odd' END FROM generate_series(1, 40) i")
    conn.execute("GRANT SELECT ON public.victim_features TO imgfeat_user")
    bob.execute("SELECT imgfeat.drop_classifier('bobs_clf')")
    bob.execute("CALL imgfeat.train_logistic_regression('bobs_clf', 'public.victim_features')")
    return "bobs_clf"


FORGE_CLASSIFIER = [
    # 0.2.0's internal function, with a forged row under the real row's version
    "SELECT imgfeat._classify(ARRAY[1, 0.4]::real[], c.name, "
    "jsonb_populate_record(NULL::imgfeat.classifiers, to_jsonb(c) || '{\"intercepts\": [50]}'), "
    "c.trained_at::text || ' ' || c.xmin::text || ' ' || c.ctid::text, 'proba', NULL) "
    "FROM imgfeat.classifiers c WHERE c.name = 'bobs_clf'",
    # 0.3.0's internal function, likewise
    "SELECT imgfeat_internal.classify(ARRAY[1, 0.4]::real[], c.name, "
    "jsonb_populate_record(NULL::imgfeat.classifiers, to_jsonb(c) || '{\"intercepts\": [50]}'), "
    "c.trained_at::text || ' ' || c.xmin::text || ' ' || c.ctid::text, 'proba') "
    "FROM imgfeat.classifiers c WHERE c.name = 'bobs_clf'",
]


def test_forged_classifier_row_cannot_change_what_others_get(
    pool: psycopg.Connection[Any], bob: psycopg.Connection[Any], victim_classifier: str
) -> None:
    query = "SELECT imgfeat.predict_proba(%s, ARRAY[1, 0.4]::real[])"
    expected = bob.execute(query, (victim_classifier,)).fetchone()
    pool.execute("SET ROLE imgfeat_test_alice")
    for attack in FORGE_CLASSIFIER:
        with pytest.raises(REFUSED):
            pool.execute(attack)
    assert pool.execute(query, (victim_classifier,)).fetchone() == expected  # alice gets the catalog's classifier
    pool.execute("SET ROLE imgfeat_test_bob")
    assert pool.execute(query, (victim_classifier,)).fetchone() == expected  # and so does bob, next in the pool


FORGE_MODEL = [
    "SELECT imgfeat._featurize_image(%s, jsonb_populate_record(NULL::imgfeat.models, "
    "to_jsonb(m) || jsonb_build_object('preprocessing', jsonb_set(m.preprocessing, '{mean}', '[0, 0, 0]'))), "
    "m.name, NULL, NULL, NULL, NULL, NULL, NULL) FROM imgfeat.models m WHERE m.name = %s",
    "SELECT imgfeat_internal.featurize_image(%s, jsonb_populate_record(NULL::imgfeat.models, "
    "to_jsonb(m) || jsonb_build_object('preprocessing', jsonb_set(m.preprocessing, '{mean}', '[0, 0, 0]'))), "
    "m.name, NULL, NULL, NULL, NULL, NULL, NULL) FROM imgfeat.models m WHERE m.name = %s",
]


def test_forged_model_row_cannot_change_what_others_get(
    pool: psycopg.Connection[Any], bob: psycopg.Connection[Any], resnet18: str, face_bytes: bytes
) -> None:
    expected = _features(bob, face_bytes, resnet18)
    pool.execute("SET ROLE imgfeat_test_alice")
    for attack in FORGE_MODEL:
        with pytest.raises(REFUSED):
            pool.execute(attack, (face_bytes, resnet18))
    assert np.array_equal(_features(pool, face_bytes, resnet18), expected)
    pool.execute("SET ROLE imgfeat_test_bob")
    assert np.array_equal(_features(pool, face_bytes, resnet18), expected)


def test_updated_preprocessing_takes_effect_in_a_warm_backend(
    conn: psycopg.Connection[Any], analyst: psycopg.Connection[Any], face_bytes: bytes
) -> None:
    """The cached session is keyed by the model's bytes; what the catalog says about the model
    (here its preprocessing) is read from the catalog on every call, never from the cache."""
    conn.execute("SELECT imgfeat.register_synthetic_model('resnet18', 'prep_probe', 3, replace => true)")
    before = _features(analyst, face_bytes, "prep_probe")  # the backend now caches prep_probe
    conn.execute("UPDATE imgfeat.models SET preprocessing = jsonb_set(preprocessing, '{mean}', '[0, 0, 0]') "
                 "WHERE name = 'prep_probe'")
    after = _features(analyst, face_bytes, "prep_probe")
    with connect_as(conn.info.dsn, "imgfeat_test_analyst") as fresh:
        assert np.array_equal(after, _features(fresh, face_bytes, "prep_probe"))
    assert not np.array_equal(before, after)
    conn.execute("SELECT imgfeat.drop_model('prep_probe')")


# --------------------------------------------------------------------------- 3. the pixel ceiling in parallel mode


@pytest.fixture
def configured_ceiling(conn: psycopg.Connection[Any]) -> Iterator[int]:
    """imgfeat.max_image_pixels = 2,000,000 in the server configuration for the test."""
    conn.execute("SET imgfeat.max_image_pixels = ''")  # makes the placeholder known to ALTER SYSTEM
    conn.execute("ALTER SYSTEM SET imgfeat.max_image_pixels = '2000000'")
    conn.execute("SELECT pg_reload_conf()")
    yield 2_000_000
    conn.execute("ALTER SYSTEM RESET imgfeat.max_image_pixels")
    conn.execute("SELECT pg_reload_conf()")


@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "parallel"])
def test_session_cannot_raise_the_configured_pixel_ceiling(
    analyst_dsn: str, conn: psycopg.Connection[Any], resnet18: str, configured_ceiling: int, parallel: bool
) -> None:
    big = _png(2000, 1500, (200, 30, 30))  # 3,000,000 pixels
    with connect_as(analyst_dsn, "imgfeat_test_analyst") as attacker:
        attacker.execute("SET imgfeat.max_image_pixels = '100000000'")
        if parallel:
            attacker.execute(f"SET {parallel_forcing_setting(conn)} = on")
            attacker.execute("SET parallel_setup_cost = 0")
        with pytest.raises(psycopg.errors.ProgramLimitExceeded) as exc:
            attacker.execute("SELECT imgfeat.featurize_image(%s, %s)", (big, resnet18))
        assert "limit of 2.0 megapixels" in (exc.value.diag.message_primary or "")
        # lowering it stays allowed
        attacker.execute("SET imgfeat.max_image_pixels = '1000'")
        with pytest.raises(psycopg.errors.ProgramLimitExceeded):
            attacker.execute("SELECT imgfeat.featurize_image(%s, %s)", (_png(40, 40, (1, 2, 3)), resnet18))


# --------------------------------------------------------------------------- 4. escaping the image root by a race


def _renameat2_exchange() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    fn = libc.renameat2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2

    def exchange(a: str, b: str) -> None:
        if fn(at_fdcwd, a.encode(), at_fdcwd, b.encode(), rename_exchange) != 0:
            raise OSError(ctypes.get_errno(), "renameat2")

    return exchange


@pytest.fixture
def file_reader(dsn: str, conn: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """A role that may read image files under the root: imgfeat_file_reader."""
    ensure_role(conn, "imgfeat_test_reader", "imgfeat_file_reader")
    with connect_as(dsn, "imgfeat_test_reader") as c:
        yield c


def test_directory_swapped_for_a_symlink_never_leaves_the_root(
    file_reader: psycopg.Connection[Any], image_root: Path, resnet18: str
) -> None:
    inside, outside = _png(10, 10, (250, 250, 250)), _png(20, 20, (5, 5, 5))  # 100 vs 400 pixels
    outside_dir = Path(tempfile.mkdtemp(prefix="imgfeat-outside-"))
    race_dir, swap_link = image_root / "race", image_root / "race_swap"
    try:
        outside_dir.chmod(0o755)
        (outside_dir / "face.png").write_bytes(outside)
        (outside_dir / "face.png").chmod(0o644)
        race_dir.mkdir()
        race_dir.chmod(0o755)
        (race_dir / "face.png").write_bytes(inside)
        (race_dir / "face.png").chmod(0o644)
        swap_link.symlink_to(outside_dir)
        exchange = _renameat2_exchange()
        stop = threading.Event()

        def swapper() -> None:
            while not stop.is_set():
                exchange(str(race_dir), str(swap_link))

        # the outside image has more pixels than the session's limit: reading it shows as that error
        file_reader.execute("SET imgfeat.max_image_pixels = '200'")
        thread = threading.Thread(target=swapper, daemon=True)
        thread.start()
        outcomes: dict[str, int] = {}
        try:
            for _ in range(600):
                try:
                    file_reader.execute("SELECT imgfeat.featurize_image_file('race/face.png', %s)", (resnet18,))
                    outcome = "inside"
                except psycopg.errors.ProgramLimitExceeded:
                    outcome = "OUTSIDE"
                except (psycopg.errors.InsufficientPrivilege, psycopg.errors.InvalidTextRepresentation):
                    outcome = "refused"
                except psycopg.Error as exc:  # anything else (a traceback) is a defect too
                    outcome = f"{type(exc).__name__}: {exc.diag.message_primary}"
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
        finally:
            stop.set()
            thread.join()
        assert set(outcomes) <= {"inside", "refused"}, outcomes
        assert outcomes.get("inside", 0) > 0 and outcomes.get("refused", 0) > 0, outcomes  # the race really ran
    finally:
        for p in (race_dir, swap_link):
            if p.is_symlink():
                p.unlink()
            elif p.exists():
                shutil.rmtree(p)
        shutil.rmtree(outside_dir, ignore_errors=True)


# --------------------------------------------------------------------------- 5. blocking someone else's job


@pytest.fixture
def job_source(conn: psycopg.Connection[Any], face_bytes: bytes) -> Iterator[str]:
    conn.execute("DROP TABLE IF EXISTS public.lock_images, public.lock_images_out")
    conn.execute("CREATE TABLE public.lock_images (id int PRIMARY KEY, image bytea)")
    conn.execute("INSERT INTO public.lock_images VALUES (1, %s)", (face_bytes,))
    conn.execute("GRANT SELECT ON public.lock_images TO imgfeat_test_alice")
    conn.execute("GRANT CREATE ON SCHEMA public TO imgfeat_test_alice")
    yield "public.lock_images"
    conn.execute("DROP TABLE IF EXISTS public.lock_images, public.lock_images_out")


def test_role_without_rights_on_the_source_cannot_block_its_job(
    alice: psycopg.Connection[Any], bob: psycopg.Connection[Any], stranger: psycopg.Connection[Any],
    conn: psycopg.Connection[Any], job_source: str, resnet18: str, face_bytes: bytes,
) -> None:
    call = "CALL imgfeat.featurize('public.lock_images', 'public.lock_images_out', %s)"
    alice.execute(call, (resnet18,))
    conn.execute("INSERT INTO public.lock_images VALUES (2, %s)", (face_bytes,))
    src, tgt = (conn.execute("SELECT %s::regclass::oid", (t,)).fetchone()[0] for t in (job_source, "public.lock_images_out"))  # type: ignore[index]
    # every key 0.2.0 used: the job's and the target's creation lock, taken by a role with no imgfeat rights
    for key in (f"imgfeat.featurize {src} {tgt} {resnet18}", "public.lock_images_out", '"public"."lock_images_out"'):
        stranger.execute("SELECT pg_advisory_lock(hashtext(%s))", (key,))
    # and by an analyst without rights on the source, who tries the job's own lock table too
    for attack in (
        "SELECT pg_advisory_lock(lock_key) FROM imgfeat_internal.job_locks",
        "INSERT INTO imgfeat_internal.job_locks (source, target, model_name, lock_key) "
        "VALUES ('public.lock_images', 'public.lock_images_out', 'resnet18', 1)",
    ):
        try:
            bob.execute(attack)
        except (psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
            pass
    for table in ("imgfeat_internal.job_locks",):
        with pytest.raises((psycopg.errors.InsufficientPrivilege, psycopg.errors.UndefinedTable)):
            stranger.execute(f"SELECT * FROM {table}")
    alice.execute("SET lock_timeout = '5s'")
    alice.execute(call, (resnet18,))
    assert conn.execute("SELECT array_agg(id ORDER BY id) FROM public.lock_images_out").fetchone() == ([1, 2],)
    stranger.execute("SELECT pg_advisory_unlock_all()")


# --------------------------------------------------------------------------- 6. external data hidden in tensors


def _model_with_external(where: str, location: str) -> bytes:
    """A small image model whose graph carries one tensor with ``data_location = EXTERNAL``:
    in a ``Constant`` node (``where='constant'``) or a sparse initializer (``'sparse'``)."""
    ext = TensorProto(name="ext", data_type=TensorProto.FLOAT, dims=[1, 3, 1, 1])
    ext.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "12")):
        entry = ext.external_data.add()
        entry.key, entry.value = k, v
    x = helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, 8, 8])
    nodes = [helper.make_node("Add", ["data", "bias"], ["biased"]),
             helper.make_node("GlobalAveragePool", ["biased"], ["pool"]),
             helper.make_node("Flatten", ["pool"], ["features"], axis=1)]
    graph = helper.make_graph(nodes, "ext", [x], [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 3])])
    if where == "constant":
        ext.name = "bias_value"
        graph.node.insert(0, helper.make_node("Constant", [], ["bias"], value=ext))
    else:
        indices = numpy_helper.from_array(np.array([0], dtype=np.int64), "bias_indices")
        sparse = helper.make_sparse_tensor(ext, indices, [1, 3, 1, 1])
        sparse.values.name = "bias"
        graph.sparse_initializer.append(sparse)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    return model.SerializeToString()


@pytest.mark.parametrize("where", ["constant", "sparse"])
def test_external_data_is_refused_wherever_it_hides(admin: psycopg.Connection[Any], where: str) -> None:
    messages = set()
    for location in ("PG_VERSION", "no_such_file_here"):  # one exists in the data directory, one does not
        with pytest.raises(psycopg.errors.InvalidParameterValue) as exc:
            admin.execute("SELECT imgfeat.register_model('ext_probe', %s, output_name => 'features')",
                          (_model_with_external(where, location),))
        message = exc.value.diag.message_primary or ""
        assert "external" in message, message
        messages.add(message.replace(location, "<file>"))
    assert len(messages) == 1, f"the error tells which files exist: {messages}"
    assert admin.execute("SELECT count(*) FROM imgfeat.models WHERE name = 'ext_probe'").fetchone() == (0,)


# --------------------------------------------------------------------------- 7. who may read files


@pytest.fixture
def one_file(image_root: Path, face_bytes: bytes) -> Iterator[str]:
    path = image_root / "one_face.pgm"
    path.write_bytes(face_bytes)
    path.chmod(0o644)
    yield path.name
    path.unlink()


def test_imgfeat_user_alone_reads_no_files(alice: psycopg.Connection[Any], conn: psycopg.Connection[Any], one_file: str, resnet18: str) -> None:
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as exc:
        alice.execute("SELECT imgfeat.featurize_image_file(%s, %s)", (one_file, resnet18))
    assert "imgfeat_file_reader" in (exc.value.diag.message_hint or "")
    conn.execute("DROP TABLE IF EXISTS public.alice_paths")
    conn.execute("CREATE TABLE public.alice_paths (id int PRIMARY KEY, image text)")
    conn.execute("INSERT INTO public.alice_paths VALUES (1, %s)", (one_file,))
    conn.execute("GRANT SELECT ON public.alice_paths TO imgfeat_test_alice")
    conn.execute("GRANT CREATE ON SCHEMA public TO imgfeat_test_alice")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        alice.execute("CALL imgfeat.featurize('public.alice_paths', 'public.alice_paths_out', %s)", (resnet18,))
    conn.execute("DROP TABLE IF EXISTS public.alice_paths, public.alice_paths_out")


def test_file_readers_read_under_the_root_and_nowhere_else(
    file_reader: psycopg.Connection[Any], dsn: str, conn: psycopg.Connection[Any], one_file: str, resnet18: str, face_bytes: bytes
) -> None:
    expected = _features(file_reader, face_bytes, resnet18)
    ensure_role(conn, "imgfeat_test_server_files", "imgfeat_user", "pg_read_server_files")
    with connect_as(dsn, "imgfeat_test_server_files") as server_files:
        for reader in (file_reader, server_files):
            got = reader.execute("SELECT imgfeat.featurize_image_file(%s, %s)", (one_file, resnet18)).fetchone()[0]  # type: ignore[index]
            assert np.array_equal(np.asarray(got, dtype=np.float32), expected)
            for outside in ("/etc/passwd", "../../../../etc/passwd", "PG_VERSION"):
                with pytest.raises((psycopg.errors.InsufficientPrivilege, psycopg.errors.InvalidTextRepresentation)):
                    reader.execute("SELECT imgfeat.featurize_image_file(%s, %s)", (outside, resnet18))
    assert conn.execute("SELECT pg_has_role('imgfeat_file_reader', 'pg_read_server_files', 'MEMBER')").fetchone() == (False,)


# --------------------------------------------------------------------------- 8. upgrading under load


def test_reinstalling_the_library_never_shows_a_half_installed_one(conn: psycopg.Connection[Any]) -> None:
    """`make install-lib` while backends start: every start finds a complete library."""
    info = conn.execute("SELECT imgfeat.python_info()").fetchone()[0]  # type: ignore[index]
    version = info["imgfeat"]
    lib_dir = os.environ.get("IMGFEAT_LIB_DIR", "/usr/local/lib/imgfeat")
    if os.geteuid() != 0:
        pytest.fail("this test reinstalls the library and needs root (CI runs as root)")
    probe = (
        "import os, sys, importlib\n"
        f"link = {lib_dir + '/' + version!r}\n"
        "ok = bad = 0\n"
        "errors = set()\n"
        "while not os.path.exists(sys.argv[1]):\n"
        "    for name in [m for m in sys.modules if m == 'imgfeat' or m.startswith('imgfeat.')]:\n"
        "        del sys.modules[name]\n"
        "    importlib.invalidate_caches()\n"
        "    path = os.path.realpath(link)\n"
        "    sys.path.insert(0, path)\n"
        "    try:\n"
        "        import imgfeat, imgfeat.db.server\n"
        f"        assert imgfeat.__version__ == {version!r}\n"
        "        ok += 1\n"
        "    except Exception as exc:\n"
        "        bad += 1\n"
        "        errors.add(repr(exc)[:200])\n"
        "    finally:\n"
        "        sys.path.remove(path)\n"
        "print(ok, bad, sorted(errors)[:3])\n"
    )
    done = Path(tempfile.mkdtemp()) / "done"
    starter = subprocess.Popen(["/usr/bin/python3", "-c", probe, str(done)], stdout=subprocess.PIPE, text=True)
    try:
        for _ in range(2):
            subprocess.run(["make", "-s", "install-lib", f"IMGFEAT_LIB_DIR={lib_dir}"], cwd=ROOT, check=True,
                           capture_output=True)
    finally:
        done.touch()
        out, _ = starter.communicate(timeout=60)
    ok, bad, errors = out.split(" ", 2)
    assert int(bad) == 0, f"{bad} of {int(ok) + int(bad)} starts failed during make install-lib: {errors}"
    assert int(ok) > 100
    # the installed library still serves this cluster
    with connect_as(conn.info.dsn, "imgfeat_test_analyst") as fresh:
        assert fresh.execute("SELECT (imgfeat.python_info())->>'imgfeat'").fetchone() == (version,)


# --------------------------------------------------------------------------- 9. the caller's search_path in procedures


@pytest.fixture
def trap_log(conn: psycopg.Connection[Any]) -> Iterator[str]:
    """A table every role may insert into: planted code writes who ran it there."""
    conn.execute("DROP TABLE IF EXISTS public.trap_log")
    conn.execute("CREATE TABLE public.trap_log (who name, what text)")
    conn.execute("GRANT INSERT, SELECT ON public.trap_log TO PUBLIC")
    yield "public.trap_log"
    conn.execute("DROP TABLE IF EXISTS public.trap_log")


@pytest.fixture
def victim_images(conn: psycopg.Connection[Any], face_bytes: bytes) -> Iterator[str]:
    conn.execute("DROP TABLE IF EXISTS public.victim_images, public.victim_out, public.victim_labelled CASCADE")
    conn.execute("CREATE TABLE public.victim_images (id int PRIMARY KEY, image bytea)")
    conn.execute("INSERT INTO public.victim_images VALUES (1, %s), (2, %s)", (face_bytes, face_bytes))
    conn.execute("CREATE TABLE public.victim_labelled (id int PRIMARY KEY, features real[], label text)")
    conn.execute("INSERT INTO public.victim_labelled SELECT i, ARRAY[i % 2, i % 3]::real[], "
                 "CASE WHEN i % 2 = 0 THEN 'a' ELSE 'b' END FROM generate_series(1, 20) i")
    conn.execute("GRANT SELECT ON public.victim_images, public.victim_labelled TO imgfeat_test_bob")
    conn.execute("GRANT CREATE ON SCHEMA public TO imgfeat_test_alice, imgfeat_test_bob")
    yield "public.victim_images"
    conn.execute("DROP TABLE IF EXISTS public.victim_images, public.victim_out, public.victim_labelled CASCADE")


def test_functions_planted_in_public_do_not_run_in_others_procedures(
    alice: psycopg.Connection[Any], bob: psycopg.Connection[Any], conn: psycopg.Connection[Any],
    trap_log: str, victim_images: str, resnet18: str,
) -> None:
    """An analyst with CREATE on public plants an exact-match array_agg(text) (and an = on
    text): the procedures must not pick them up when another role calls them."""
    alice.execute("DROP AGGREGATE IF EXISTS public.array_agg(text)")
    alice.execute(
        "CREATE OR REPLACE FUNCTION public.trap_sfunc(text[], text) RETURNS text[] LANGUAGE plpgsql AS "
        "$$BEGIN INSERT INTO public.trap_log VALUES (current_user, 'array_agg'); RETURN array_append($1, $2); END$$"
    )
    alice.execute("CREATE AGGREGATE public.array_agg(text) (SFUNC = public.trap_sfunc, STYPE = text[])")
    alice.execute(
        "CREATE OR REPLACE FUNCTION public.trap_eq(text, text) RETURNS boolean LANGUAGE plpgsql AS "
        "$$BEGIN INSERT INTO public.trap_log VALUES (current_user, '='); RETURN $1 OPERATOR(pg_catalog.=) $2; END$$"
    )
    alice.execute("DROP OPERATOR IF EXISTS public.= (text, text)")
    alice.execute("CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.trap_eq)")
    try:
        path = bob.execute("SHOW search_path").fetchone()
        bob.execute("CALL imgfeat.featurize('public.victim_images', 'victim_out', %s)", (resnet18,))
        bob.execute("CALL imgfeat.featurize('public.victim_images', 'victim_out', %s)", (resnet18,))  # resume
        bob.execute("CALL imgfeat.train_logistic_regression('victim_clf', 'public.victim_labelled', replace => true)")
        conn.execute("CALL imgfeat.featurize('public.victim_images', 'public.victim_out_su', %s)", (resnet18,))
        assert bob.execute("SHOW search_path").fetchone() == path  # the caller's own path is given back
        assert conn.execute("SELECT count(*) FROM public.victim_out").fetchone() == (2,)
        assert conn.execute("SELECT who, what FROM public.trap_log").fetchall() == []
    finally:
        conn.execute("DROP AGGREGATE IF EXISTS public.array_agg(text)")
        conn.execute("DROP OPERATOR IF EXISTS public.= (text, text)")
        conn.execute("DROP FUNCTION IF EXISTS public.trap_sfunc(text[], text), public.trap_eq(text, text)")
        conn.execute("DROP TABLE IF EXISTS public.victim_out_su")
        bob.execute("SELECT imgfeat.drop_classifier('victim_clf')")


def test_a_failing_procedure_gives_the_callers_search_path_back(
    bob: psycopg.Connection[Any], victim_images: str, resnet18: str, face_bytes: bytes, conn: psycopg.Connection[Any]
) -> None:
    conn.execute("INSERT INTO public.victim_images VALUES (3, 'not an image')")
    bob.execute("SET search_path = public, pg_catalog")
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):
        bob.execute("CALL imgfeat.featurize('victim_images', 'victim_out', %s, batch_size => 1)", (resnet18,))
    assert bob.execute("SHOW search_path").fetchone() == ("public, pg_catalog",)
    assert bob.execute("SELECT count(*) FROM victim_out").fetchone() == (2,)  # batches before the bad one kept
    assert bob.execute("SELECT status, error LIKE '%id=3%' FROM imgfeat.featurize_jobs WHERE target = 'public.victim_out' "
                       "ORDER BY job_id DESC LIMIT 1").fetchone() == ("failed", True)


def test_temporary_types_of_a_pooled_session_do_not_run_as_the_next_role(
    pool: psycopg.Connection[Any], conn: psycopg.Connection[Any], trap_log: str, victim_images: str, resnet18: str,
) -> None:
    """In a pool, one role SET ROLE'd in the session before another: its temporary domains named
    like built-in types (jsonb, text) must not be picked by the procedures the next role calls."""
    pool.execute("SET ROLE imgfeat_test_alice")
    pool.execute(
        "CREATE FUNCTION pg_temp.trap_check(anyelement) RETURNS boolean LANGUAGE plpgsql AS "
        "$$BEGIN INSERT INTO public.trap_log VALUES (current_user, 'domain'); RETURN true; END$$"
    )
    for builtin in ("jsonb", "text"):
        pool.execute(f"CREATE DOMAIN pg_temp.{builtin} AS pg_catalog.{builtin} CHECK (pg_temp.trap_check(VALUE))")
    pool.execute("RESET ROLE")
    pool.execute("SET ROLE imgfeat_test_bob")
    pool.execute("CALL imgfeat.featurize('public.victim_images', 'victim_out', %s)", (resnet18,))
    pool.execute("CALL imgfeat.train_logistic_regression('victim_clf2', 'public.victim_labelled', replace => true)")
    pool.execute("SELECT imgfeat.drop_classifier('victim_clf2')")
    assert conn.execute("SELECT who, what FROM public.trap_log").fetchall() == []


# --------------------------------------------------------------------------- 10. other roles' tables as targets


def test_a_target_planted_by_another_role_is_refused(
    alice: psycopg.Connection[Any], bob: psycopg.Connection[Any], conn: psycopg.Connection[Any],
    trap_log: str, victim_images: str, resnet18: str,
) -> None:
    alice.execute("DROP TABLE IF EXISTS public.squatted")
    alice.execute("CREATE TABLE public.squatted (id int NOT NULL, model_name text NOT NULL, features real[] NOT NULL, "
                  "featurized_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (id, model_name))")
    alice.execute("GRANT ALL ON public.squatted TO PUBLIC")
    alice.execute(
        "CREATE FUNCTION public.trap_trigger() RETURNS trigger LANGUAGE plpgsql AS "
        "$$BEGIN INSERT INTO public.trap_log VALUES (current_user, 'trigger'); RETURN NEW; END$$"
    )
    alice.execute("CREATE TRIGGER trap BEFORE INSERT ON public.squatted FOR EACH ROW EXECUTE FUNCTION public.trap_trigger()")
    try:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as exc:
            bob.execute("CALL imgfeat.featurize('public.victim_images', 'squatted', %s)", (resnet18,))
        assert "belongs to imgfeat_test_alice" in (exc.value.diag.message_primary or "")
        assert conn.execute("SELECT count(*) FROM public.squatted").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM public.trap_log").fetchone() == (0,)
    finally:
        conn.execute("DROP TABLE IF EXISTS public.squatted")
        conn.execute("DROP FUNCTION IF EXISTS public.trap_trigger()")


# --------------------------------------------------------------------------- 11. locking the shared tables


SHARED_TABLES = ("imgfeat.featurize_jobs", "imgfeat.classifiers", "imgfeat.featurize_errors", "imgfeat.models",
                 "imgfeat.model_chunks", "imgfeat_internal.job_locks")


@pytest.mark.parametrize("mode", ["ROW EXCLUSIVE", "SHARE", "EXCLUSIVE", "ACCESS EXCLUSIVE"])
def test_analysts_cannot_lock_the_shared_tables(dsn: str, alice: psycopg.Connection[Any], mode: str) -> None:
    with connect_as(dsn, "imgfeat_test_alice") as attacker:
        for table in SHARED_TABLES:
            with pytest.raises((psycopg.errors.InsufficientPrivilege, psycopg.errors.InvalidSchemaName)), attacker.transaction():
                attacker.execute(f"LOCK TABLE {table} IN {mode} MODE")


def test_what_analysts_can_lock_blocks_no_one(
    dsn: str, bob: psycopg.Connection[Any], victim_images: str, resnet18: str, face_bytes: bytes,
) -> None:
    """The strongest lock an analyst can take on the shared tables (ACCESS SHARE, from SELECT)
    leaves every other role's featurize, train, predict and progress running."""
    with connect_as(dsn, "imgfeat_test_alice") as attacker:
        attacker.execute("BEGIN")
        for table in SHARED_TABLES:
            try:
                attacker.execute(f"LOCK TABLE {table} IN ACCESS SHARE MODE")
            except psycopg.errors.InsufficientPrivilege:
                attacker.execute("ROLLBACK")
                attacker.execute("BEGIN")
        bob.execute("SET lock_timeout = '5s'")
        bob.execute("CALL imgfeat.featurize('public.victim_images', 'victim_out', %s)", (resnet18,))
        bob.execute("CALL imgfeat.train_logistic_regression('victim_clf3', 'public.victim_labelled', replace => true)")
        assert bob.execute("SELECT imgfeat.predict('victim_clf3', ARRAY[1, 2]::real[])").fetchone() is not None
        assert bob.execute("SELECT count(*) FROM imgfeat.featurize_progress WHERE target = 'public.victim_out'").fetchone()[0] >= 1  # type: ignore[index]
        bob.execute("SELECT imgfeat.drop_classifier('victim_clf3')")
        attacker.execute("ROLLBACK")


# --------------------------------------------------------------------------- 12. the lock key of another role's job


def test_a_role_sharing_the_source_cannot_block_a_job_into_a_private_target(
    alice: psycopg.Connection[Any], bob: psycopg.Connection[Any], conn: psycopg.Connection[Any],
    victim_images: str, resnet18: str,
) -> None:
    conn.execute("GRANT SELECT ON public.victim_images TO imgfeat_test_alice")  # a shared source
    bob.execute("CALL imgfeat.featurize('public.victim_images', 'victim_out', %s)", (resnet18,))  # bob's own target
    for attack in (
        "SELECT lock_key FROM imgfeat_internal.job_locks",
        "INSERT INTO imgfeat_internal.job_locks VALUES ('public.victim_images', 'public.victim_out', 'resnet18', 1)",
        "SELECT pg_advisory_lock(imgfeat_internal.job_lock_key('public.victim_images', 'public.victim_out', 'resnet18'))",
        "SELECT imgfeat_internal.record_errors('public.victim_images', 'public.victim_out', 'resnet18', '{1}', '{x}', '{forged}')",
        "SELECT imgfeat_internal.clear_errors('public.victim_images', 'public.victim_out', 'resnet18', '{1}')",
        "SELECT imgfeat_internal.start_job('public.victim_images', 'public.victim_out', 'resnet18', 99)",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            alice.execute(attack)
    conn.execute("INSERT INTO public.victim_images VALUES (9, (SELECT image FROM public.victim_images WHERE id = 1))")
    bob.execute("SET lock_timeout = '5s'")
    bob.execute("CALL imgfeat.featurize('public.victim_images', 'victim_out', %s)", (resnet18,))
    assert conn.execute("SELECT array_agg(id ORDER BY id) FROM public.victim_out").fetchone() == ([1, 2, 9],)


# --------------------------------------------------------------------------- 13. resources


@pytest.mark.parametrize("setting", ["imgfeat.intra_op_num_threads", "imgfeat.inter_op_num_threads"])
def test_a_session_cannot_ask_for_more_threads_than_cpus(analyst: psycopg.Connection[Any], resnet18: str, face_bytes: bytes, setting: str) -> None:
    analyst.execute(f"SET {setting} = '100000'")
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as exc:
        analyst.execute("SELECT imgfeat.featurize_image(%s, %s)", (face_bytes, resnet18))
    assert f"{setting} must be between" in (exc.value.diag.message_primary or "")
    analyst.execute(f"SET {setting} = '{os.cpu_count()}'")
    assert analyst.execute("SELECT cardinality(imgfeat.featurize_image(%s, %s))", (face_bytes, resnet18)).fetchone() == (512,)


def test_session_cache_size_is_bounded(analyst: psycopg.Connection[Any], resnet18: str, face_bytes: bytes) -> None:
    analyst.execute("SET imgfeat.session_cache_size = '1000'")
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
        analyst.execute("SELECT imgfeat.featurize_image(%s, %s)", (face_bytes, resnet18))


@pytest.fixture
def noise_table(conn: psycopg.Connection[Any]) -> Iterator[str]:
    """1000 rows of 2048 random features with random labels: a problem that does not converge."""
    conn.execute("DROP TABLE IF EXISTS public.noise")
    conn.execute("CREATE TABLE public.noise (id int PRIMARY KEY, features real[], label text)")
    conn.execute("INSERT INTO public.noise SELECT i, (SELECT array_agg(random()::real) FROM generate_series(1, 2048) WHERE i > 0), "
                 "CASE WHEN random() < 0.5 THEN 'a' ELSE 'b' END FROM generate_series(1, 1000) i")
    conn.execute("GRANT SELECT ON public.noise TO imgfeat_test_analyst")
    yield "public.noise"
    conn.execute("DROP TABLE IF EXISTS public.noise")


SLOW_TRAINING = ("CALL imgfeat.train_logistic_regression('noise_clf', 'public.noise', l1_weight => 1e-12, "
                 "l2_weight => 0, max_iterations => 100000, replace => true)")


def test_training_answers_a_statement_timeout(analyst_dsn: str, noise_table: str) -> None:
    with connect_as(analyst_dsn, "imgfeat_test_analyst") as c:
        c.execute("SET statement_timeout = '2s'")
        with pytest.raises(psycopg.errors.QueryCanceled):
            c.execute(SLOW_TRAINING)
        # the cancelled training runs on in that backend, bounded; a new one is refused meanwhile
        c.execute("SET statement_timeout = 0")
        with pytest.raises(psycopg.errors.InternalError) as exc:
            c.execute(SLOW_TRAINING)
        assert "still finishing" in (exc.value.diag.message_primary or "")
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        with connect_as(analyst_dsn, "imgfeat_test_analyst") as c:
            c.execute(SLOW_TRAINING.replace("100000", "2000000000"))


def test_training_ends_when_its_backend_is_terminated(conn: psycopg.Connection[Any], analyst_dsn: str, noise_table: str) -> None:
    c = connect_as(analyst_dsn, "imgfeat_test_analyst")
    pid = c.info.backend_pid
    outcome: list[BaseException] = []

    def train() -> None:
        try:
            c.execute(SLOW_TRAINING)
        except BaseException as exc:  # noqa: BLE001 - inspected below
            outcome.append(exc)

    thread = threading.Thread(target=train)
    thread.start()
    for _ in range(100):  # wait until the training really runs
        if conn.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() == ("active",):
            break
        threading.Event().wait(0.1)
    threading.Event().wait(1.0)
    assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
    thread.join(60)
    assert not thread.is_alive() and outcome and isinstance(outcome[0], psycopg.OperationalError)
    gone = False
    for _ in range(300):
        if conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() == (0,):
            gone = True
            break
        threading.Event().wait(0.1)
    assert gone, "the backend outlived pg_terminate_backend"
    c.close()


def test_batch_size_is_bounded(analyst: psycopg.Connection[Any], faces_table: str, resnet18: str) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue) as exc:
        analyst.execute(f"CALL imgfeat.featurize('{faces_table}', 'big_batches', %s, batch_size => 4096)", (resnet18,))
    assert "between 1 and 512" in (exc.value.diag.message_primary or "")


def test_a_large_float_image_decodes_in_bounded_memory(conn: psycopg.Connection[Any], analyst_dsn: str, resnet18: str) -> None:
    """A 49-megapixel float32 TIFF (under the 50-megapixel limit; 300 KB compressed): decoding
    it must not take several GB of float64 temporaries."""
    if os.environ.get("IMGFEAT_TEST_DSN"):
        pytest.skip("reads the backend's /proc status: needs the server on this machine")
    rng = np.random.default_rng(5)
    pixels = np.tile(rng.random((7000, 1), dtype=np.float32), (1, 7000))
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="TIFF", compression="tiff_adobe_deflate")  # float32: mode F
    del pixels
    with connect_as(analyst_dsn, "imgfeat_test_analyst") as c:
        c.execute("SELECT imgfeat.featurize_image(%s, %s)", (_png(8, 8, (1, 2, 3)), resnet18))  # model loaded
        pid = c.info.backend_pid
        before = _vm_kb(pid, "VmRSS")
        assert c.execute("SELECT cardinality(imgfeat.featurize_image(%s, %s))", (buf.getvalue(), resnet18)).fetchone() == (512,)
        peak = _vm_kb(pid, "VmHWM")
    # the float image is 196 MB as float32; Pillow's and numpy's copies of it, and the uint8
    # result, fit well within 1 GB (whole-image float64 temporaries took 2.4 GB)
    assert peak - before < 1_000_000, f"decoding took {(peak - before) / 1024:.0f} MB"


def _vm_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")
