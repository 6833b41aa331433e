"""Builds the Docker images imgfeat's tests run, with the docker CLI.

No container registry is reachable where the tests run, so the official ``postgres`` image
cannot be pulled. Per PostgreSQL major version (:data:`DISTROS`) the chain is:

1. ``imgfeat-test/debian:<suite>``: ``debootstrap --variant=minbase <suite>`` from the Debian
   mirror this machine's apt uses, ``docker import``-ed (needs root and debootstrap);
2. ``imgfeat-test/postgres-standin:<major>``: ``tests/docker/standin/Dockerfile`` on 1, a
   test-only stand-in for ``postgres:<major>-bookworm`` (its header says what it omits);
3. ``imgfeat-test/imgfeat:<major>``: the real ``docker/Dockerfile`` with ``BASE_IMAGE`` = 2,
   ``IMGFEAT_MODELS=resnet18``, and this machine's extra CA certificates
   (``/usr/local/share/ca-certificates/*.crt``) as the ``extra-ca-certs`` build secret, so
   that pip reaches PyPI through a TLS-inspecting proxy.

Step 1 is skipped when the engine already has the image: the engine's storage is the cache
between runs on one machine (``docker rmi imgfeat-test/debian:<suite>`` refreshes it). Steps
2 and 3 always run ``docker build``, whose layer cache makes an unchanged rebuild quick; pip's
downloads persist in the Dockerfile's BuildKit cache mount.

Images are built with BuildKit (``RUN --mount``): the first docker CLI found that can
(``IMGFEAT_DOCKER_CLI``, ``docker`` on PATH, ``/usr/bin/docker``): one with the buildx plugin,
or a client older than 23 (which has BuildKit built in, enabled by ``DOCKER_BUILDKIT=1``).
Builds use the host's network (``--network host``): no bridge network is needed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STANDIN_DIR = ROOT / "tests" / "docker" / "standin"
RECORD = ROOT / "build" / "docker-images.json"
"""Figures of the images built in this checkout (sizes, build seconds), for the README."""

DISTROS = {"15": "bookworm", "17": "trixie"}
"""PostgreSQL major -> the Debian release whose own packages give it (and its Python:
bookworm 3.11, trixie 3.13)."""

BASE = "imgfeat-test/debian:{suite}"
STANDIN = "imgfeat-test/postgres-standin:{major}"
IMAGE = "imgfeat-test/imgfeat:{major}"
BAKED_MODELS = "resnet18"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
CA_DIR = Path("/usr/local/share/ca-certificates")


class BuildError(RuntimeError):
    """A step of the chain failed; the message ends with the tail of its output."""


@dataclass
class BuiltImage:
    """An image the chain produced (or found) and what it cost."""

    tag: str
    major: str
    suite: str
    size_bytes: int
    added_bytes: int
    """What docker/Dockerfile adds to its base (the image's size less the stand-in's)."""
    build_seconds: float
    """Seconds of this run's ``docker build`` of docker/Dockerfile (small when cached)."""
    chain_seconds: float
    """Seconds of the whole chain in this run: debootstrap, import, stand-in and image."""
    debootstrapped: bool
    """Whether this run made the Debian root file system (else the engine had it)."""


def docker_cli() -> tuple[list[str], dict[str, str]]:
    """``(build command prefix, extra environment)`` of the first docker CLI that builds with BuildKit."""
    candidates = [os.environ.get("IMGFEAT_DOCKER_CLI"), shutil.which("docker"), "/usr/bin/docker"]
    seen: set[str] = set()
    for cli in candidates:
        if not cli or cli in seen or not Path(cli).exists():
            continue
        seen.add(cli)
        if subprocess.run([cli, "buildx", "version"], capture_output=True).returncode == 0:
            return [cli, "buildx", "build", "--load"], {}
        out = subprocess.run([cli, "version", "--format", "{{.Client.Version}}"], capture_output=True, text=True)
        match = re.match(r"(\d+)\.", out.stdout.strip())
        if match and int(match.group(1)) < 23:
            return [cli, "build"], {"DOCKER_BUILDKIT": "1"}
    raise BuildError(
        f"no docker CLI that builds with BuildKit among {sorted(seen) or 'none found'}: install the buildx "
        "plugin, or Debian's docker.io (/usr/bin/docker), or set IMGFEAT_DOCKER_CLI"
    )


def docker(*args: str, check: bool = True, input_bytes: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run ``docker ARGS`` with the CLI :func:`docker_cli` chose."""
    cli = docker_cli()[0][0]
    proc = subprocess.run([cli, *args], capture_output=True, input=input_bytes)
    if check and proc.returncode != 0:
        raise BuildError(f"docker {' '.join(args)} failed ({proc.returncode}): {tail(proc)}")
    return proc


def tail(proc: subprocess.CompletedProcess[bytes], lines: int = 40) -> str:
    text = (proc.stdout or b"").decode(errors="replace") + (proc.stderr or b"").decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def has_image(tag: str) -> bool:
    return docker("image", "inspect", tag, check=False).returncode == 0


def image_size(tag: str) -> int:
    return int(docker("image", "inspect", "--format", "{{.Size}}", tag).stdout.decode().strip())


def debian_mirror() -> str:
    """The Debian archive apt uses on this machine (``IMGFEAT_DEBIAN_MIRROR`` overrides).

    The first ``URIs:`` (deb822 ``*.sources``) or ``deb URI`` (``*.list``) entry ending in
    ``/debian``, else :data:`DEFAULT_MIRROR`.
    """
    if os.environ.get("IMGFEAT_DEBIAN_MIRROR"):
        return os.environ["IMGFEAT_DEBIAN_MIRROR"].rstrip("/")
    apt = Path("/etc/apt")
    files = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*"))]
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        uris = re.findall(r"^\s*URIs:\s*(.+)$", text, re.M) + re.findall(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)", text, re.M)
        for line in uris:
            for uri in line.split():
                if uri.rstrip("/").endswith("/debian"):
                    return uri.rstrip("/")
    return DEFAULT_MIRROR


def extra_ca_bundle(directory: Path = CA_DIR) -> Path | None:
    """This machine's extra CA certificates (``*.crt`` in ``directory``) in one PEM file, or None."""
    certs = sorted(directory.glob("*.crt")) if directory.is_dir() else []
    if not certs:
        return None
    fd, name = tempfile.mkstemp(prefix="imgfeat-extra-ca-", suffix=".pem")
    with os.fdopen(fd, "wb") as out:
        for cert in certs:
            out.write(cert.read_bytes().rstrip(b"\n") + b"\n")
    return Path(name)


def ensure_base(suite: str) -> bool:
    """``imgfeat-test/debian:<suite>`` on the engine; True when this call made it (debootstrap)."""
    tag = BASE.format(suite=suite)
    if has_image(tag):
        return False
    if os.geteuid() != 0:
        raise BuildError(f"{tag} is missing and debootstrap needs root (run the tests as root, or build it yourself)")
    debootstrap = shutil.which("debootstrap")
    if not debootstrap:
        raise BuildError(f"{tag} is missing and debootstrap is not installed (apt-get install debootstrap)")
    work = Path(tempfile.mkdtemp(prefix=f"imgfeat-rootfs-{suite}-"))
    try:
        rootfs = work / "rootfs"
        proc = subprocess.run(
            [debootstrap, "--variant=minbase", suite, str(rootfs), debian_mirror()], capture_output=True
        )
        if proc.returncode != 0:
            raise BuildError(f"debootstrap {suite} failed ({proc.returncode}): {tail(proc)}")
        tar = subprocess.Popen(
            ["tar", "-C", str(rootfs), "--exclude=./var/cache/apt/archives/*.deb",
             "--exclude=./var/lib/apt/lists/*", "-c", "."],
            stdout=subprocess.PIPE,
        )
        imported = subprocess.run([docker_cli()[0][0], "import", "-", tag], stdin=tar.stdout, capture_output=True)
        assert tar.stdout is not None
        tar.stdout.close()
        if tar.wait() != 0 or imported.returncode != 0:
            raise BuildError(f"docker import of the {suite} root file system failed: {tail(imported)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return True


def build(args: list[str], context: Path, *, secrets: tuple[str, ...] = ()) -> float:
    """``docker build --network host ARGS CONTEXT``; returns the seconds it took."""
    prefix, env = docker_cli()
    cmd = [*prefix, "--network", "host", *[f"--secret={s}" for s in secrets], *args, str(context)]
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, env={**os.environ, **env})
    if proc.returncode != 0:
        raise BuildError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{tail(proc, 80)}")
    return time.monotonic() - started


_lock = threading.Lock()


def build_image(major: str) -> BuiltImage:
    """Run the chain for PostgreSQL ``major`` (a key of :data:`DISTROS`) and record its figures."""
    suite = DISTROS[major]
    with _lock:
        started = time.monotonic()
        made_base = ensure_base(suite)
        standin = STANDIN.format(major=major)
        build(["--build-arg", f"BASE={BASE.format(suite=suite)}", "--build-arg", f"PG_MAJOR={major}",
               "-t", standin], STANDIN_DIR)
        tag = IMAGE.format(major=major)
        bundle = extra_ca_bundle()
        try:
            seconds = build(
                ["-f", str(ROOT / "docker" / "Dockerfile"), "--build-arg", f"BASE_IMAGE={standin}",
                 "--build-arg", f"PG_MAJOR={major}", "--build-arg", f"IMGFEAT_MODELS={BAKED_MODELS}", "-t", tag],
                ROOT, secrets=(f"id=extra-ca-certs,src={bundle}",) if bundle else (),
            )
        finally:
            if bundle:
                bundle.unlink()
        built = BuiltImage(
            tag=tag, major=major, suite=suite, size_bytes=image_size(tag),
            added_bytes=image_size(tag) - image_size(standin), build_seconds=round(seconds, 1),
            chain_seconds=round(time.monotonic() - started, 1), debootstrapped=made_base,
        )
        record(built)
        # Earlier builds of these tags, now untagged, only take space in the engine's cache.
        for label in ("org.opencontainers.image.title=imgfeat/postgres", "org.imgfeat.test-standin"):
            docker("image", "prune", "--force", "--filter", f"label={label}")
        return built


_session_lines: list[str] = []


def session_figures() -> list[str]:
    """What this test session built and measured, one line each (the terminal summary prints them)."""
    return list(_session_lines)


def note(line: str) -> None:
    """One more line for the session's summary of Docker figures."""
    _session_lines.append(line)


def record(built: BuiltImage) -> None:
    """Keep the figures of ``built`` in :data:`RECORD` (one entry per tag) and for the summary."""
    origin = "debootstrap included" if built.debootstrapped else "Debian root file system from the engine's cache"
    _session_lines.append(
        f"{built.tag}: {built.size_bytes / 1e9:.2f} GB ({built.added_bytes / 1e6:.0f} MB over its base), "
        f"PostgreSQL {built.major} on Debian {built.suite}; "
        f"docker build of docker/Dockerfile {built.build_seconds:.0f} s, whole chain {built.chain_seconds:.0f} s ({origin})"
    )
    update_record(built.tag, asdict(built))


def record_measure(tag: str, key: str, seconds: float, what: str) -> None:
    """Keep one more measured figure of the image ``tag`` (e.g. start to first featurized image)."""
    _session_lines.append(f"{tag}: {what} {seconds:.1f} s")
    update_record(tag, {key: round(seconds, 2)})


def update_record(tag: str, values: dict[str, object]) -> None:
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(RECORD.read_text())
    except (OSError, ValueError):
        data = {}
    data.setdefault(tag, {}).update(values)
    RECORD.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
