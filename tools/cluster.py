"""PaidUp's production topology on one machine (docs/deploy.md, "14. More than one node").

    localstripe ◄── web1, web2 (gunicorn -c gunicorn.conf.py) ◄── haproxy (deploy/haproxy/haproxy.cfg)
    worker1, worker2 (manage.py run_qcluster, one django-q2 cluster name) ── Redis (Q_REDIS_URL)
    every node ── one PostgreSQL database

Each node is its own process group, started with its own environment (what a separate machine's
EnvironmentFile would hold), with DEBUG off and the real settings. Both q clusters run django-q2's
scheduler: it claims a due schedule with SELECT ... FOR UPDATE and moves its next run in the same
transaction, so the second cluster finds it no longer due (tests/test_cluster.py counts the runs).

`python tools/cluster.py run` (what `make cluster` runs) starts it on the machine's PostgreSQL and
Redis and keeps it in the foreground until Ctrl-C. Importable: bench/chaos.py and
tests/test_cluster.py use `Cluster` (the API below is a contract between them).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import os
import secrets
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from cluster_services import Postgres, Redis, answers, wait_until  # noqa: E402

WEB_NODES = ("web1", "web2")
WORKER_NODES = ("worker1", "worker2")
STARTED = b"running."  # django-q2 logs "Q Cluster <name> [paidup] running." once its sentinel guards
STAFF_EMAIL = "chaos@paidup.test"
HAPROXY_CONFIG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"

STAFF_SCRIPT = """
import os
from django_otp.plugins.otp_totp.models import TOTPDevice
from accounts.models import User
user = User.objects.filter(email=os.environ["CLUSTER_STAFF_EMAIL"]).first()
if user is None:
    user = User.objects.create_superuser(os.environ["CLUSTER_STAFF_EMAIL"])
user.is_staff = user.is_superuser = True
user.set_password(os.environ["CLUSTER_STAFF_PASSWORD"])
user.save()
TOTPDevice.objects.filter(user=user).delete()
TOTPDevice.objects.create(user=user, name="Authenticator app", key=os.environ["CLUSTER_STAFF_TOTP_KEY"], confirmed=True)
"""


def key_bytes(key: str) -> bytes:
    """A TOTP key as django-otp stores it (hex) or as an authenticator app shows it (base32,
    spaces and case ignored). Raises ValueError for anything else."""
    text = key.replace(" ", "").strip()
    for decode in (bytes.fromhex, lambda s: base64.b32decode(s.upper() + "=" * (-len(s) % 8))):
        try:
            if value := decode(text):
                return value
        except (ValueError, binascii.Error):
            continue
    raise ValueError(f"{key!r} is neither a hex nor a base32 TOTP key")


def totp(key_hex: str, at: float | None = None, step: int = 30, digits: int = 6) -> str:
    """The RFC 6238 code (6 digits, a string) for a key (hex, or base32 as an authenticator app
    shows it) at time `at` (seconds since the epoch, default now), as django-otp's TOTPDevice
    checks it. Raises ValueError for a key that is neither."""
    counter = int((time.time() if at is None else at) // step)
    digest = hmac.new(key_bytes(key_hex), struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


def tree(root: int) -> list[int]:
    """`root` and every process below it (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def _pgids(pids: list[int]) -> set[int]:
    groups = set()
    for pid in pids:
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            pass
    return groups


class Cluster:
    """PaidUp's production topology on one machine: localstripe, 2 gunicorn web nodes
    (web1, web2) behind haproxy (proxy), 2 django-q2 clusters (worker1, worker2) on a Redis
    broker, one PostgreSQL database. Each node is its own process group with its own env."""

    def __init__(
        self,
        workdir: Path,
        *,
        base_port: int = 8600,
        private_services: bool = False,
        database_url: str | None = None,
        redis_url: str | None = None,
        extra_env: dict[str, str] | None = None,
    ):
        self.workdir = Path(workdir).resolve()
        self.logs = self.workdir / "logs"
        self.mail = self.workdir / "mail"
        for folder in (self.logs, self.mail):
            folder.mkdir(parents=True, exist_ok=True)
        self.ports = {
            "proxy": base_port,
            "web1": base_port + 1,
            "web2": base_port + 2,
            "localstripe": base_port + 3,
            "stats": base_port + 4,
        }
        self.site_url = f"http://127.0.0.1:{base_port}"
        self.stripe_base = f"http://127.0.0.1:{self.ports['localstripe']}"
        self.stats_url = f"http://127.0.0.1:{self.ports['stats']}/"
        self.postgres = Postgres(private_services, database_url, self.workdir)
        self.redis = Redis(private_services, redis_url, self.workdir)
        self.database_url = self.postgres.url
        self.redis_url = self.redis.url
        self.node_names = [*WEB_NODES, *WORKER_NODES]
        # Both clusters run the scheduler (see the module docstring); worker1 is the one named as
        # "the scheduler's node" for a chaos run that wants to kill a scheduler in particular.
        self.scheduler_node = "worker1"
        self.staff_email = STAFF_EMAIL
        self.staff_password = secrets.token_urlsafe(12)
        self.staff_totp_key = secrets.token_hex(20)
        self.metrics_token = secrets.token_hex(16)
        self.publishable_key = "pk_test_" + "clusterNode0123456789abcdef"
        self.secret_key = "sk_test_" + "clusterNode0123456789abcdef"
        self.env = {
            **{k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ},
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "PYTHONUNBUFFERED": "1",
            "DATABASE_URL": self.database_url,
            "CONN_MAX_AGE": "60",
            "DEBUG": "0",
            "SECRET_KEY": secrets.token_urlsafe(48),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SITE_URL": self.site_url,
            "STRIPE_API_BASE": self.stripe_base,
            "STRIPE_SECRET_KEY": self.secret_key,
            "STRIPE_PUBLISHABLE_KEY": self.publishable_key,
            "SUPPORT_EMAILS": "support@paidup.test",
            # Emails as files (one per connection), so that a checker can count what was sent; with
            # DEBUG off a file backend is refused unless a drill says so (paidup.E006).
            "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
            "EMAIL_FILE_PATH": str(self.mail),
            "ALLOW_CONSOLE_EMAIL": "1",
            "NUM_PROXIES": "1",
            "Q_REDIS_URL": self.redis_url,
            "METRICS_TOKEN": self.metrics_token,
            **(extra_env or {}),
        }
        self.processes: dict[str, subprocess.Popen] = {}
        self._log_offsets: dict[str, int] = {}

    # --- the documented steps -----------------------------------------------------------

    def start(self) -> None:
        """Create the database, migrate, stripe_setup, the demo plan, the staff login,
        collectstatic; start every node; return once each answers or is ready."""
        self.postgres.start()
        self.redis.start()
        self.postgres.create_database()
        self._start_process("localstripe", self._localstripe_command())
        wait_until(lambda: answers("127.0.0.1", self.ports["localstripe"]), 60, "localstripe")
        self._manage_ok("migrate", "--no-input", "-v0")
        self._manage_ok("stripe_setup")
        self._manage_ok("create_plan", "pro-year", "--name", "PaidUp Pro, one year", "--price", "249.00",
                        "--currency", "usd")  # fmt: skip
        self._create_staff()
        self._manage_ok("collectstatic", "--no-input", "-v0")
        for name in self.node_names:
            self._launch(name)
        self._launch("proxy")
        for name in [*self.node_names, "proxy"]:
            self._wait_ready(name)

    def kill(self, name: str) -> None:
        """SIGKILL the node's whole process tree, every process group in it included (a q cluster
        runs in a session of its own under run_qcluster), with no grace: a machine dying."""
        process = self.processes[name]
        groups = _pgids(tree(process.pid))
        for group in groups:
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
        process.wait(timeout=30)

    def start_node(self, name: str) -> None:
        """Start a killed (or stopped) node again and wait until it is ready."""
        if name in self.processes and self.processes[name].poll() is None:
            raise RuntimeError(f"{name} is running")
        self._launch(name)
        self._wait_ready(name)

    def restart_postgres(self) -> None:
        """A real stop and start of the PostgreSQL server this cluster uses."""
        self.postgres.restart()

    def restart_redis(self) -> None:
        """A real stop and start of the Redis server this cluster uses (its queue is lost)."""
        self.redis.restart()

    def stop(self) -> None:
        """Stop everything started (SIGTERM, then SIGKILL after 10 s); remove private data dirs."""
        running = {name: p for name, p in self.processes.items() if p.poll() is None}
        for process in running.values():
            try:
                os.killpg(process.pid, signal.SIGTERM)  # gunicorn and run_qcluster stop cleanly on it
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        for name, process in running.items():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill(name)
        self.redis.stop()
        self.postgres.remove()

    def manage(self, *args: str) -> subprocess.CompletedProcess:
        """`manage.py <args>` with the cluster's environment; output captured as text, not checked."""
        return subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=600
        )

    # --- conveniences for clients -------------------------------------------------------

    def totp_code(self, at: float | None = None) -> str:
        """A current code of the staff login's authenticator app."""
        return totp(self.staff_totp_key, at)

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def proxy_states(self) -> dict[str, str]:
        """haproxy's view of each web node ("UP", "DOWN", ...), from its statistics CSV."""
        rows = requests.get(self.stats_url + ";csv", timeout=5).text.splitlines()
        header = rows[0].lstrip("# ").split(",")
        states = {}
        for row in rows[1:]:
            fields = dict(zip(header, row.split(","), strict=False))
            if fields.get("pxname") == "web" and fields.get("svname") in WEB_NODES:
                states[fields["svname"]] = fields["status"]
        return states

    # --- internals ----------------------------------------------------------------------

    def _manage_ok(self, *args: str) -> str:
        done = self.manage(*args)
        with (self.logs / "manage.log").open("a") as out:
            out.write(f"$ manage.py {' '.join(args)}\n{done.stdout}{done.stderr}\n")
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}")
        return done.stdout

    def _create_staff(self) -> None:
        env = {
            "CLUSTER_STAFF_EMAIL": self.staff_email,
            "CLUSTER_STAFF_PASSWORD": self.staff_password,
            "CLUSTER_STAFF_TOTP_KEY": self.staff_totp_key,
        }
        done = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", STAFF_SCRIPT],
            cwd=ROOT, env={**self.env, **env}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"creating the staff login failed:\n{done.stderr[-3000:]}")

    def _localstripe_command(self) -> list[str]:
        return [sys.executable, "tools/localstripe_server.py", "--host", "127.0.0.1", "--port",
                str(self.ports["localstripe"]), "--state-dir", str(self.workdir / "localstripe")]  # fmt: skip

    def _launch(self, name: str) -> None:
        if name in WEB_NODES:
            prom = self.workdir / "prometheus" / name
            shutil.rmtree(prom, ignore_errors=True)  # emptied at every start (docs/deploy.md, Metrics)
            prom.mkdir(parents=True)
            env = {
                "GUNICORN_BIND": f"127.0.0.1:{self.ports[name]}",
                "WEB_CONCURRENCY": "2",
                "GUNICORN_THREADS": "4",
                "PROMETHEUS_MULTIPROC_DIR": str(prom),
            }
            command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "config.wsgi"]
        elif name in WORKER_NODES:
            env = {"Q_WORKERS": "2"}
            command = [sys.executable, "manage.py", "run_qcluster", "--grace", "5"]
        elif name == "proxy":
            env = {
                "PAIDUP_PROXY_BIND": f"127.0.0.1:{self.ports['proxy']}",
                "PAIDUP_STATS_BIND": f"127.0.0.1:{self.ports['stats']}",
                "PAIDUP_WEB1": f"127.0.0.1:{self.ports['web1']}",
                "PAIDUP_WEB2": f"127.0.0.1:{self.ports['web2']}",
                "PAIDUP_CHECK_HOST": "127.0.0.1",  # one of ALLOWED_HOSTS (set above)
            }
            command = [shutil.which("haproxy") or "/usr/sbin/haproxy", "-db", "-f", str(HAPROXY_CONFIG)]
        else:
            raise KeyError(name)
        self._start_process(name, command, env)

    def _start_process(self, name: str, command: list[str], env: dict[str, str] | None = None) -> None:
        log = self.log(name)
        self._log_offsets[name] = log.stat().st_size if log.exists() else 0
        with log.open("ab") as out:
            self.processes[name] = subprocess.Popen(
                command, cwd=ROOT, env={**self.env, **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def _wait_ready(self, name: str, timeout: float = 120) -> None:
        process = self.processes[name]

        def check() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited {process.returncode}:\n{self._new_log(name)[-3000:].decode()}")
            return self._ready(name)

        wait_until(check, timeout, f"{name} (log: {self.log(name)})")

    def _ready(self, name: str) -> bool:
        if name in WEB_NODES:
            # It answers, and once the proxy runs, the proxy sends it requests again.
            return self._answers(f"http://127.0.0.1:{self.ports[name]}/livez") and (
                not self._running("proxy") or self.proxy_states().get(name) == "UP"
            )
        if name in WORKER_NODES:
            return STARTED in self._new_log(name)
        return self._answers(f"{self.site_url}/livez") and set(self.proxy_states().values()) == {"UP"}

    def _running(self, name: str) -> bool:
        return name in self.processes and self.processes[name].poll() is None

    def _new_log(self, name: str) -> bytes:
        with self.log(name).open("rb") as log:
            log.seek(self._log_offsets.get(name, 0))
            return log.read()

    @staticmethod
    def _answers(url: str) -> bool:
        try:
            return requests.get(url, timeout=2).status_code == 200
        except requests.RequestException:
            return False


def run(workdir: Path, base_port: int) -> None:
    """`make cluster`: start on the machine's PostgreSQL and Redis, print the addresses, wait for
    Ctrl-C (or SIGTERM), stop everything."""
    cluster = Cluster(workdir, base_port=base_port)
    # Ctrl-C even when started in the background (a shell then starts it with SIGINT ignored), and
    # SIGTERM (a supervisor, `kill`) stop it the same way.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        print(f"Starting PaidUp's topology (logs in {cluster.logs}) ...", flush=True)
        started = time.monotonic()
        cluster.start()
        code = cluster.totp_code()
        app_key = base64.b32encode(bytes.fromhex(cluster.staff_totp_key)).decode()
        print(
            f"\nReady in {time.monotonic() - started:.0f} s: haproxy -> web1, web2; worker1, worker2 on "
            f"{cluster.redis_url}; {cluster.database_url}\n"
            f"  Checkout:     {cluster.site_url}/checkout/   (card 4242 4242 4242 4242, any future date, any CVC)\n"
            f"  Admin:        {cluster.site_url}/admin/      {cluster.staff_email} / {cluster.staff_password}\n"
            f"                code now: {code}; authenticator app key {app_key}\n"
            f"                (a fresh code: .venv/bin/python tools/cluster.py code {cluster.staff_totp_key})\n"
            f"  Fake Stripe:  {cluster.stripe_base}/\n"
            f"  haproxy:      {cluster.stats_url} (statistics: each node's health checks, retries)\n"
            f"  Metrics:      curl -H 'Authorization: Bearer {cluster.metrics_token}' {cluster.site_url}/metrics\n"
            f"  Emails sent:  {cluster.mail}/\n"
            "  Ctrl-C stops everything.\n",
            flush=True,
        )
        reported: set[str] = set()
        while True:
            for name, process in cluster.processes.items():
                if process.poll() is not None and name not in reported:
                    reported.add(name)
                    print(f"{name} exited with {process.returncode}; see {cluster.log(name)}", flush=True)
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nStopping ...", flush=True)
    finally:
        cluster.stop()
        print("Stopped.", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="run the topology in the foreground until Ctrl-C")
    run_parser.add_argument("--workdir", type=Path, default=ROOT / "var" / "cluster")
    run_parser.add_argument("--base-port", type=int, default=int(os.environ.get("CLUSTER_PORT", "8600")))
    code_parser = sub.add_parser("code", help="print the current code for a TOTP key (hex or base32)")
    code_parser.add_argument("key")
    args = parser.parse_args()
    if args.command == "run":
        run(args.workdir, args.base_port)
    else:
        try:
            print(totp(args.key))
        except ValueError as error:
            parser.exit(2, f"{error}\n")


if __name__ == "__main__":
    main()
