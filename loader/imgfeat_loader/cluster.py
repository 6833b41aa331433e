"""A throwaway local PostgreSQL cluster, for tests, ``make demo`` and users' test suites.

``initdb`` and ``pg_ctl`` refuse to run as root, so when the current user is root the
cluster is created and run as the ``postgres`` OS user (``runuser -u postgres --``), with
its data directory and Unix socket in a directory that user owns. The server listens only
on its Unix socket and on 127.0.0.1 at a free port; authentication is ``trust`` for local
connections (it is a throwaway cluster — never expose it).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


def pg_bindir() -> Path:
    """The server binaries' directory: ``pg_config --bindir``, else the newest /usr/lib/postgresql/*/bin."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True).stdout.strip()
        if (Path(out) / "pg_ctl").exists():
            return Path(out)
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    if not candidates:
        raise RuntimeError("PostgreSQL server binaries not found (install postgresql-15 or set PATH to pg_config)")
    return candidates[-1].parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalCluster:
    """A PostgreSQL cluster in ``base_dir`` (a new temporary directory by default).

    Use as a context manager, or call :meth:`start` and :meth:`stop`. ``settings`` are
    written to postgresql.conf before the first start (e.g. ``{"imgfeat.image_root": "/data"}``).
    """

    base_dir: Path | None = None
    port: int = 0
    settings: dict[str, str] = field(default_factory=dict)
    superuser: str = "postgres"
    keep: bool = False

    def __post_init__(self) -> None:
        self._temporary = self.base_dir is None
        self.base_dir = Path(self.base_dir or tempfile.mkdtemp(prefix="imgfeat-pg-"))
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "socket"
        self.log_file = self.base_dir / "server.log"
        self.bindir = pg_bindir()
        self._as_postgres = os.geteuid() == 0

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, check=False)

    def _check(self, proc: subprocess.CompletedProcess[str], what: str) -> None:
        if proc.returncode != 0:
            log = self.log_file.read_text(errors="replace")[-3000:] if self.log_file.exists() else ""
            raise RuntimeError(f"{what} failed ({proc.returncode}): {proc.stderr.strip()}\n{log}")

    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> None:
        """``initdb`` (once), and write ``settings`` into postgresql.conf."""
        assert self.base_dir is not None
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if self._as_postgres:
            pw = pwd.getpwnam("postgres")
            for p in (self.base_dir, self.socket_dir):
                os.chown(p, pw.pw_uid, pw.pw_gid)
            self.base_dir.chmod(0o755)
        if self.initialized:
            return
        proc = self._run(
            str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", self.superuser,
            "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync",
        )
        self._check(proc, "initdb")
        if self.settings:
            self.configure(self.settings)

    def configure(self, settings: dict[str, str]) -> None:
        """Append settings to postgresql.conf (takes effect on start or :meth:`reload`)."""
        lines = "".join(f"{k} = '{v}'\n" for k, v in settings.items())
        with open(self.data_dir / "postgresql.conf", "a", encoding="utf-8") as fh:
            fh.write(lines)

    @property
    def running(self) -> bool:
        """Whether a server runs on this data directory (``pg_ctl status``)."""
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        return self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "status").returncode == 0

    def start(self) -> "LocalCluster":
        """Initialise if needed and start the server; waits until it accepts connections.
        A server already running on the data directory is reused (its port read from postmaster.pid)."""
        self.init()
        if self.running:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            self.port = int(lines[3])
            return self
        if not self.port:
            self.port = free_port()
        opts = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off -c max_connections=40"
        )
        proc = self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file),
            "-o", opts, "-w", "-t", "60", "start",
        )
        self._check(proc, "pg_ctl start")
        return self

    def reload(self) -> None:
        self._check(self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "reload"), "pg_ctl reload")
        time.sleep(0.3)

    def stop(self) -> None:
        """Stop the server (fast mode) and remove a temporary base directory unless ``keep``."""
        if self.initialized and (self.data_dir / "postmaster.pid").exists():
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop")
        if self._temporary and not self.keep and self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def dsn(self, dbname: str = "postgres", user: str | None = None) -> str:
        """A libpq connection string over the Unix socket."""
        return f"host={self.socket_dir} port={self.port} dbname={dbname} user={user or self.superuser}"

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
