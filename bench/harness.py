"""Helpers shared by the benchmarks (bench/webhook_backlog.py, bench/reconcile.py,
bench/refund_events.py): processes, a run's scratch database, work folder, time bound and
clean-up (Scratch), migrate, localstripe, gunicorn, the q cluster, Django in this process, a
bounded webhook sender, percentiles.

Nothing here knows PaidUp's rules; the scenarios live in the benchmark scripts.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import math
import os
import queue
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class Abort(Exception):
    """The run's time bound passed, or a signal asked us to stop."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- processes ------------------------------------------------------------------------


class Processes:
    """Every process the benchmark starts, each in its own process group, stopped by id."""

    def __init__(self) -> None:
        self.running: list[subprocess.Popen] = []

    def start(self, args: Sequence[str], *, log: Path, env: dict, cwd: Path) -> subprocess.Popen:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                list(args), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.running.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, grace: float = 10.0) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
            except ProcessLookupError:
                pass
        # A gunicorn worker that outlived its master would still be in the group.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if proc in self.running:
            self.running.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(list(self.running)):
            self.stop(proc)


def log(message: str) -> None:
    """One timestamped progress line on stderr (the report itself goes to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load() -> str:
    """The machine's 1/5/15-minute load averages, e.g. "1.2/0.8/0.5": numbers are read against it."""
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


# --- the scratch database, localstripe and Django ------------------------------------------


def admin_sql(pg: str, sql: str) -> None:
    """Run `sql` on the server `pg` (postgres://user@host:port, no database) in autocommit,
    as CREATE/DROP DATABASE need."""
    import psycopg

    with psycopg.connect(f"{pg}/postgres", autocommit=True) as conn:
        conn.execute(sql)


class Scratch:
    """One benchmark run's surroundings: a work folder for logs (mkdtemp `prefix`), a scratch
    database named `<db_prefix>_<pid>` on the server `pg`, the processes it starts, and a bound
    on the whole run (SIGALRM after `timeout` seconds and SIGTERM both raise Abort).

        run = Scratch(args.pg, args.timeout, prefix="paidup-bench-", db_prefix="paidup_bench")
        try:
            run.create_database()
            ...                      # run.procs, run.workdir, run.db_url
        except Abort: ...
        finally:
            run.end(keep=args.keep)  # stops every process, drops the database, removes the logs
    """

    def __init__(self, pg: str, timeout: int, *, prefix: str, db_prefix: str) -> None:
        self.pg = pg
        self.procs = Processes()
        self.workdir = Path(tempfile.mkdtemp(prefix=prefix))
        self.db_name = f"{db_prefix}_{os.getpid()}"
        self.db_created = False

        def abort(signum, frame):
            raise Abort(f"stopped by {signal.Signals(signum).name}")

        signal.signal(signal.SIGALRM, abort)
        signal.signal(signal.SIGTERM, abort)
        signal.alarm(timeout)

    @property
    def db_url(self) -> str:
        return f"{self.pg}/{self.db_name}"

    def create_database(self) -> None:
        admin_sql(self.pg, f'CREATE DATABASE "{self.db_name}"')
        self.db_created = True

    def end(self, *, keep: bool) -> None:
        """Cancel the time bound, stop every process, close Django's connections, then drop the
        database and remove the work folder unless `keep` (then say where they are)."""
        signal.alarm(0)
        self.procs.stop_all()
        if "django.db" in sys.modules:
            from django.db import connections

            connections.close_all()
        if self.db_created and not keep:
            try:
                admin_sql(self.pg, f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            except Exception as error:  # noqa: BLE001 - report, never mask the run's own error
                log(f"could not drop {self.db_name}: {error}")
        if keep:
            log(f"kept database {self.db_name} and the logs in {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


def django_env(
    db_url: str,
    stripe_port: int,
    *,
    site_url: str,
    key_tag: str,
    log_level: str,
    drop_prefixes: tuple[str, ...] = (),
    **extra: str,
) -> dict:
    """The environment of a PaidUp process in a benchmark: this one's, less the variables whose
    names start with `drop_prefixes`, plus production settings (DEBUG off, a fresh SECRET_KEY)
    on the scratch database `db_url`, test Stripe keys tagged `key_tag` (dj-stripe wants
    sk_test_ and 24 or more letters/digits) aimed at localstripe on `stripe_port`, emails to the
    log, and `extra` (e.g. CONN_MAX_AGE)."""
    env = {k: v for k, v in os.environ.items() if not (drop_prefixes and k.startswith(drop_prefixes))}
    return {
        **env,
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SITE_URL": site_url,
        "DATABASE_URL": db_url,
        **extra,
        "STRIPE_SECRET_KEY": f"sk_test_{key_tag}" + secrets.token_hex(12),
        "STRIPE_PUBLISHABLE_KEY": f"pk_test_{key_tag}" + secrets.token_hex(12),
        "STRIPE_API_BASE": f"http://127.0.0.1:{stripe_port}",
        "LOG_LEVEL": log_level,
        # Emails go to the server logs here, on purpose (paidup.E006 would refuse it otherwise).
        "ALLOW_CONSOLE_EMAIL": "1",
        "PYTHONUNBUFFERED": "1",
    }


def start_migrate(procs: Processes, root: Path, env: dict, log_path: Path) -> subprocess.Popen:
    """`manage.py migrate` on env's DATABASE_URL, in the background (it overlaps other setup)."""
    python = root / ".venv" / "bin" / "python"
    return procs.start([str(python), "manage.py", "migrate", "--no-input", "-v0"], log=log_path, env=env, cwd=root)


def start_localstripe(procs: Processes, root: Path, env: dict, port: int, workdir: Path) -> subprocess.Popen:
    """A fresh localstripe on `port`, its state under `workdir` (bench/localstripe_memory.py), its
    log in workdir/localstripe.log; wait for it with wait_for_line(log, "Running on", proc)."""
    return procs.start(
        [
            str(root / ".venv" / "bin" / "python"),
            str(root / "bench" / "localstripe_memory.py"),
            "--host=127.0.0.1",
            f"--port={port}",
            f"--state-dir={workdir / 'localstripe'}",
            "--from-scratch",
        ],
        log=workdir / "localstripe.log",
        env=env,
        cwd=root,
    )


def start_gunicorn(
    procs: Processes,
    root: Path,
    env: dict,
    *,
    port: int,
    workers: int,
    threads: int,
    log_path: Path,
    app: str = "config.wsgi",
    graceful_timeout: int | None = None,
) -> subprocess.Popen:
    """gunicorn serving `app` on 127.0.0.1:`port`, `workers` processes of `threads` threads
    (gthread worker class when threads > 1, else sync), 60 s request timeout; wait for it with
    wait_for_http."""
    args = [
        str(root / ".venv" / "bin" / "gunicorn"),
        app,
        f"--bind=127.0.0.1:{port}",
        f"--workers={workers}",
        f"--threads={threads}",
        f"--worker-class={'gthread' if threads > 1 else 'sync'}",
        "--timeout=60",
    ]
    if graceful_timeout is not None:
        args.append(f"--graceful-timeout={graceful_timeout}")
    args.append("--no-control-socket")
    return procs.start(args, log=log_path, env=env, cwd=root)


def stop_qcluster(procs: Processes, proc: subprocess.Popen) -> None:
    """SIGTERM to the parent only: to its whole group, django-q2 hangs (see localstripe notes)."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(20)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            pass
    procs.stop(proc, grace=5)  # whatever is left in its group


def reset_localstripe(api_base: str) -> None:
    """Forget every object localstripe holds (DELETE /_config/data); webhook registrations stay."""
    urllib.request.urlopen(urllib.request.Request(f"{api_base}/_config/data", method="DELETE")).read()


def setup_django(env: dict) -> None:
    """Django in this process, on env's database (which may not be migrated yet)."""
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    import django

    django.setup()


def wait_for_http(port: int, path: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """Until the server answers any HTTP status on `path`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with {proc.returncode} while starting")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            conn.getresponse().read()
            conn.close()
            return
        except (OSError, http.client.HTTPException):
            time.sleep(0.1)
    raise RuntimeError(f"nothing answered on port {port} within {timeout:.0f} s")


def wait_for_line(log: Path, needle: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """Until `needle` appears in the file `log`. Raises RuntimeError when `proc` exits first or
    `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with {proc.returncode}; see {log}")
        if needle in log.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{needle!r} did not appear in {log} within {timeout:.0f} s")


def bounded(condition, seconds: float, proc: subprocess.Popen, log_path: Path) -> None:
    """Until `condition()` is true, asked every 0.5 s. Raises RuntimeError (naming `log_path`)
    when `proc` exits first or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while not condition():
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with {proc.returncode}; see {log_path}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"gave up after {seconds:.0f} s; see {log_path}")
        time.sleep(0.5)


# --- the webhook sender -----------------------------------------------------------------


def stripe_signature(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """Stripe's scheme: t=<unix time>,v1=HMAC-SHA256(secret, "<t>.<body>")."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


@dataclass
class Delivery:
    sent: float  # wall clock (time.time()), comparable with timestamps the server writes
    done: float
    status: int | None  # None: no HTTP answer (connection error or timeout)
    error: str = ""

    @property
    def latency(self) -> float:
        return self.done - self.sent


def deliver(
    bodies: Sequence[bytes],
    *,
    port: int,
    path: str,
    secret: str,
    concurrency: int,
    request_timeout: float,
    stop: threading.Event,
) -> list[Delivery | None]:
    """POST every body once, `concurrency` connections at a time, as Stripe would: signed at
    the moment of sending. Returns one Delivery per body (None if never sent)."""
    work: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in range(len(bodies)):
        work.put(i)
    results: list[Delivery | None] = [None] * len(bodies)

    def sender() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=request_timeout)
        try:
            while not stop.is_set():
                try:
                    i = work.get_nowait()
                except queue.Empty:
                    return
                headers = {
                    "Content-Type": "application/json; charset=utf-8",
                    "Stripe-Signature": stripe_signature(bodies[i], secret),
                    "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                }
                sent = time.time()
                try:
                    conn.request("POST", path, bodies[i], headers)
                    response = conn.getresponse()
                    response.read()
                    results[i] = Delivery(sent, time.time(), response.status)
                    if response.will_close:
                        conn.close()
                except (OSError, http.client.HTTPException) as error:
                    results[i] = Delivery(sent, time.time(), None, f"{type(error).__name__}: {error}")
                    conn.close()
        finally:
            conn.close()

    threads = [threading.Thread(target=sender, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        # Short joins keep the main thread responsive to the run's alarm and to Ctrl-C.
        while thread.is_alive():
            thread.join(0.2)
    return results


# --- where the CPU went -----------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _busy_seconds() -> float:
    """CPU time spent not idle, all cores together, since boot."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:9]]
    return (sum(values) - values[3] - values[4]) / CLOCK_TICKS  # minus idle and iowait


def _processes():
    """(pid, process group, command name, CPU seconds) of every process we can read."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        yield int(entry.name), int(fields[2]), comm, (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class CpuMeter:
    """CPU seconds over an interval, split by who used them: our process groups by label,
    PostgreSQL backends serving our database, this process, and everything else on the
    machine (other people's work skews a benchmark; this says by how much)."""

    def __init__(self, groups: dict[int, str], database: str) -> None:
        self.groups, self.database = groups, database
        self._postgres: dict[int, bool] = {}

    def _label(self, pid: int, pgid: int, comm: str) -> str | None:
        if pid == os.getpid():
            return "bench client"
        if pgid in self.groups:
            return self.groups[pgid]
        if comm.startswith("postgres"):
            if pid not in self._postgres:
                self._postgres[pid] = f" {self.database} " in _cmdline(pid)
            return "postgres" if self._postgres[pid] else None
        return None

    def sample(self) -> tuple[float, float, dict[int, tuple[str, float]]]:
        ours = {}
        for pid, pgid, comm, cpu in _processes():
            if (label := self._label(pid, pgid, comm)) is not None:
                ours[pid] = (label, cpu)
        return time.monotonic(), _busy_seconds(), ours

    @staticmethod
    def cores(start, end) -> dict[str, float]:
        """Average cores used between two samples, by label, plus "other processes"."""
        (t0, busy0, ours0), (t1, busy1, ours1) = start, end
        wall = max(t1 - t0, 1e-9)
        used: dict[str, float] = {}
        for pid, (label, cpu) in ours1.items():
            used[label] = used.get(label, 0.0) + cpu - ours0.get(pid, (label, 0.0))[1]
        used["other processes"] = max(0.0, (busy1 - busy0) - sum(used.values()))
        return {label: seconds / wall for label, seconds in used.items()}


# --- numbers ----------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def ms(seconds: float) -> str:
    return "—" if math.isnan(seconds) else f"{seconds * 1000:,.0f} ms"


def rate(count: int, start: float, end: float) -> float:
    return count / (end - start) if count and end > start else math.nan
