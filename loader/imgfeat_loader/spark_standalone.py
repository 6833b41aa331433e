"""A throwaway Spark standalone cluster on 127.0.0.1 (a master and workers), for tests and benchmarks.

Each daemon is a child process of the caller (``spark-class`` of a Spark installation:
pyspark's own by default), listening on 127.0.0.1 only, logging into the cluster's
directory; :meth:`StandaloneCluster.stop` ends them and their executors (each daemon runs
in its own process group). With ``hide``, every worker runs in its own mount namespace
(``unshare --mount``, root only) where a tmpfs covers each hidden path, so its executors
see nothing there (the driver's checkout, its virtualenv): they can only run what the
driver ships them. The worker's Spark installation is bind-mounted at
``<base_dir>/spark`` before the paths are hidden, as a cluster has its own Spark.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .cluster import free_port


def pyspark_home() -> Path:
    """The Spark installation inside the pyspark package (``jars/``, ``bin/spark-class``, ``python/lib``)."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


@dataclass
class StandaloneCluster:
    """A Spark standalone master and ``workers`` workers on 127.0.0.1.

    Use as a context manager, or call :meth:`start` (returns the master URL) and :meth:`stop`.

    Attributes:
        workers: number of workers (each starts its own executor for an application).
        cores: cores each worker offers.
        memory: memory each worker offers (Spark's syntax, ``1g``).
        hide: paths the workers must not see (each covered by a tmpfs in the worker's own
            mount namespace; needs root and ``unshare``).
        spark_home: the Spark installation to run (default :func:`pyspark_home`).
        base_dir: logs, the workers' work directories and the bind mount (default: a new
            temporary directory, removed by :meth:`stop`).
    """

    workers: int = 1
    cores: int = 1
    memory: str = "1g"
    hide: list[Path] = field(default_factory=list)
    spark_home: Path | None = None
    base_dir: Path | None = None
    master_url: str = ""
    web_url: str = ""
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._temporary = self.base_dir is None
        self.base_dir = Path(self.base_dir or tempfile.mkdtemp(prefix="imgfeat-spark-"))
        self.spark_home = Path(self.spark_home or pyspark_home())

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_", "SPARK_"))}
        env.update(SPARK_LOCAL_IP="127.0.0.1", SPARK_NO_DAEMONIZE="1", PYTHONPATH="")
        return env

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        assert self.base_dir is not None
        log = open(self.base_dir / f"{name}.log", "wb")  # noqa: SIM115 - kept open by the child
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    env=self._env(), cwd=self.base_dir, start_new_session=True)
        finally:
            log.close()
        self._procs.append(proc)
        return proc

    def _worker_argv(self, index: int) -> list[str]:
        assert self.base_dir is not None and self.spark_home is not None
        work = self.base_dir / f"work-{index}"
        work.mkdir(exist_ok=True)
        args = ["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", str(self.cores),
                "--memory", self.memory, "--work-dir", str(work), "--webui-port", str(free_port()), self.master_url]
        if not self.hide:
            return [str(self.spark_home / "bin" / "spark-class"), *args]
        if os.geteuid() != 0 or shutil.which("unshare") is None:
            raise RuntimeError("hiding paths from the workers needs root and unshare (util-linux)")
        mounted = self.base_dir / "spark"
        mounted.mkdir(exist_ok=True)
        script = [f"mount --bind {shlex.quote(str(self.spark_home))} {shlex.quote(str(mounted))}"]
        script += [f"mount -t tmpfs -o size=1m,mode=0755 imgfeat-hidden {shlex.quote(str(p))}" for p in self.hide]
        script.append("exec " + shlex.join([str(mounted / "bin" / "spark-class"), *args]))
        return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-ec", "\n".join(script)]

    def status(self) -> dict[str, object]:
        """The master's JSON status (``aliveworkers``, ``workers``, ``activeapps``...)."""
        with urllib.request.urlopen(f"{self.web_url}/json/", timeout=5) as resp:  # 127.0.0.1 only
            return json.loads(resp.read())  # type: ignore[no-any-return]

    def start(self, timeout: float = 180.0) -> str:
        """Start the master and the workers; wait until every worker has registered.

        Returns:
            The master URL, ``spark://127.0.0.1:<port>``.

        Raises:
            RuntimeError: a daemon exited or the workers did not register within ``timeout`` s
                (the message ends with the last lines of its log).
        """
        assert self.base_dir is not None and self.spark_home is not None
        port, web = free_port(), free_port()
        self.master_url, self.web_url = f"spark://127.0.0.1:{port}", f"http://127.0.0.1:{web}"
        self._spawn("master", [str(self.spark_home / "bin" / "spark-class"), "org.apache.spark.deploy.master.Master",
                               "--host", "127.0.0.1", "--port", str(port), "--webui-port", str(web)])
        deadline = time.monotonic() + timeout
        started_workers = False
        while True:
            for i, proc in enumerate(self._procs):
                if proc.poll() is not None:
                    name = "master" if i == 0 else f"worker-{i}"
                    self.stop(remove=False)
                    raise RuntimeError(f"Spark {name} exited ({proc.returncode}): {self.log_tail(name)}")
            try:
                alive = int(self.status().get("aliveworkers", 0))  # type: ignore[call-overload]
            except OSError:
                alive = -1
            if alive >= 0 and not started_workers:
                for i in range(1, self.workers + 1):
                    self._spawn(f"worker-{i}", self._worker_argv(i))
                started_workers = True
            if alive >= self.workers:
                return self.master_url
            if time.monotonic() > deadline:
                self.stop(remove=False)
                raise RuntimeError(f"Spark workers did not register within {timeout:.0f} s: {self.log_tail('worker-1')}")
            time.sleep(0.5)

    def log_tail(self, name: str, lines: int = 15) -> str:
        """The last ``lines`` lines of a daemon's log (``master``, ``worker-1``, ...)."""
        assert self.base_dir is not None
        path = self.base_dir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, remove: bool = True) -> None:
        """End the daemons and their executors (SIGTERM to each daemon's process group, SIGKILL
        after 20 s), workers first; remove a temporary base directory (unless ``remove`` is False)."""
        for proc in reversed(self._procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in reversed(self._procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            try:  # executors and Python workers left in the group
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._procs.clear()
        if remove and self._temporary and self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> StandaloneCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
