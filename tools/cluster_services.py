"""PostgreSQL and Redis for tools/cluster.py: the machine's (started if down) or private ones.

A private server is started from Debian's binaries into a folder of its own, on a port of its
own, so that restarting it (the chaos run does) never disturbs anyone else on this machine.
PostgreSQL refuses to run as root, so as root its data folder is made in the system temp folder
(a pytest tmp_path under /tmp/pytest-of-root is closed to other users) and owned by `postgres`.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

MACHINE_DATABASE = "postgres://postgres@127.0.0.1:5432/paidup_cluster"
MACHINE_REDIS = "redis://127.0.0.1:6379/1"
# The machine's own start commands (.ci/run, the machine page).
REDIS_START = [
    "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379", "--save", "",
    "--appendonly", "no", "--dir", "/var/lib/redis", "--logfile", "/var/log/redis/ci.log",
]  # fmt: skip


def free_port() -> int:
    """A TCP port nothing listens on now (the kernel's choice)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def wait_until(predicate, timeout: float, what: str) -> None:
    """Poll `predicate` every 0.2 s; raise RuntimeError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"no {name} under /usr/lib/postgresql/*/bin (apt-get install postgresql)")
    return found[-1]


def _as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _run(command: list[str], **kwargs) -> None:
    subprocess.run(command, check=True, capture_output=True, text=True, timeout=120, **kwargs)


class Postgres:
    """One PostgreSQL server: private (own data folder and port) or the machine's."""

    def __init__(self, private: bool, database_url: str | None, workdir: Path):
        self.private = private
        self.datadir: Path | None = None
        self.log = workdir / "logs" / "postgres.log"
        if private:
            self.port = free_port()
            name = urlsplit(database_url).path.lstrip("/") if database_url else "paidup_cluster"
            self.url = f"postgres://postgres@127.0.0.1:{self.port}/{name}"
        else:
            self.url = database_url or MACHINE_DATABASE
            self.port = urlsplit(self.url).port or 5432

    def start(self) -> None:
        """Start the server (initdb first for a private one); wait until it answers."""
        if not self.private:
            if not answers("127.0.0.1", self.port):
                versions = os.listdir("/etc/postgresql")
                _run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[0], "main", "start"])
            wait_until(lambda: answers("127.0.0.1", self.port), 60, "PostgreSQL")
            return
        if self.datadir is None:
            self.datadir = Path(tempfile.mkdtemp(prefix="paidup-cluster-pg-"))
            self.log.touch()
            if os.geteuid() == 0:
                shutil.chown(self.datadir, "postgres", "postgres")
                shutil.chown(self.log, "postgres", "postgres")
            _run(_as_postgres([_pg_bin("initdb"), "-D", str(self.datadir / "data"), "-U", "postgres",
                               "-A", "trust", "--no-sync"]))  # fmt: skip
        options = f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1 -c max_connections=200"
        _run(_as_postgres([_pg_bin("pg_ctl"), "-D", str(self.datadir / "data"), "-l", str(self.log),
                           "-o", options, "-w", "start"]))  # fmt: skip

    def stop(self) -> None:
        """Stop a private server (fast shutdown: sessions are ended, data is flushed)."""
        if self.private and self.datadir is not None and (self.datadir / "data" / "postmaster.pid").exists():
            _run(_as_postgres([_pg_bin("pg_ctl"), "-D", str(self.datadir / "data"), "-m", "fast", "-w", "stop"]))

    def restart(self) -> None:
        """A real stop and start of the server (the machine's too, without `private`)."""
        if self.private:
            self.stop()
            self.start()
        else:
            versions = os.listdir("/etc/postgresql")
            _run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[0], "main", "restart"])
            wait_until(lambda: answers("127.0.0.1", self.port), 60, "PostgreSQL")

    def remove(self) -> None:
        self.stop()
        if self.datadir is not None:
            shutil.rmtree(self.datadir, ignore_errors=True)
            self.datadir = None

    def create_database(self) -> None:
        """Create the URL's database if it does not exist."""
        import psycopg

        parts = urlsplit(self.url)
        name = parts.path.lstrip("/")
        params = {"host": parts.hostname, "port": parts.port or 5432, "user": parts.username or "postgres"}
        with psycopg.connect(dbname="postgres", autocommit=True, **params) as admin:
            if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
                admin.execute(f'CREATE DATABASE "{name}"')

    def drop_database(self) -> None:
        import psycopg

        parts = urlsplit(self.url)
        params = {"host": parts.hostname, "port": parts.port or 5432, "user": parts.username or "postgres"}
        with psycopg.connect(dbname="postgres", autocommit=True, **params) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{parts.path.lstrip("/")}" WITH (FORCE)')


class Redis:
    """One Redis server without persistence: private (own port, a child process) or the machine's."""

    def __init__(self, private: bool, redis_url: str | None, workdir: Path):
        self.private = private
        self.process: subprocess.Popen | None = None
        self.log = workdir / "logs" / "redis.log"
        if private:
            self.port = free_port()
            self.url = f"redis://127.0.0.1:{self.port}/0"
        else:
            self.url = redis_url or MACHINE_REDIS
            self.port = urlsplit(self.url).port or 6379

    def start(self) -> None:
        if self.private:
            with self.log.open("ab") as out:
                self.process = subprocess.Popen(
                    ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no", "--dir", str(self.log.parent)],
                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
        elif not answers("127.0.0.1", self.port):
            _run(REDIS_START)
        wait_until(lambda: answers("127.0.0.1", self.port), 30, "Redis")

    def stop(self) -> None:
        if self.private and self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # no persistence: it stops at once, queue lost
            self.process.wait(timeout=30)

    def restart(self) -> None:
        """A real stop and start (the machine's too, without `private`): whatever was queued is gone."""
        if self.private:
            self.stop()
        else:
            subprocess.run(["redis-cli", "-p", str(self.port), "shutdown", "nosave"], capture_output=True, timeout=30)
            wait_until(lambda: not answers("127.0.0.1", self.port), 30, "Redis to stop")
        self.start()
