"""The first production deploy, as documented, on a fresh PostgreSQL database with DEBUG off,
against localstripe: migrate, stripe_setup, a plan, a staff login, collectstatic, gunicorn, the q
cluster. One purchase through the real form; then the q cluster stops and the stale-heartbeat
alert reaches support *while it is down*; then it is started again and "recovered" arrives.

Every step is its own process, started with the environment an operator's EnvironmentFile would
hold (plus a shortened heartbeat limit). Emails go to Django's file-based backend, so that the
test reads what the processes sent.

The commands are the ones docs/deploy.md gives: `create_plan`, `create_support_login`, and
`stripe_setup` with the system checks on (the endpoint check is a deployment check, so it does not
block the command that creates the endpoint). The file-based email backend may start with DEBUG
off only because `ALLOW_CONSOLE_EMAIL=1` says so, as docs/deploy.md tells a drill to do.
"""

from __future__ import annotations

import email
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
import requests

from tests.fixtures.localstripe import NOWHERE, REFERENCE_RE, _free_port
from tests.test_supervision import STARTED, descendants_alive, kill_session, tree

ROOT = Path(__file__).resolve().parents[1]
HEARTBEAT_LIMIT = 20  # seconds (HEALTH_MAX_RECONCILE_AGE_SECONDS); production: three intervals
CUSTOMER = "first.customer@example.org"
SUPPORT = "ops@paidup.example"
VISA = "4242424242424242"
# With DEBUG off a console or file email backend is refused (paidup.E006) unless overridden.
UNSAFE_BACKEND_OVERRIDE: dict[str, str] = {"ALLOW_CONSOLE_EMAIL": "1"}

pytestmark = [pytest.mark.postgres, pytest.mark.localstripe, pytest.mark.timeout(1800)]


@pytest.fixture
def fresh_database(django_db_blocker):
    """A new, empty PostgreSQL database on the test server; dropped afterwards."""
    from django.db import connection

    db = connection.settings_dict
    name = f"paidup_deploy_{uuid.uuid4().hex[:8]}"
    params = {"host": db.get("HOST") or "localhost", "port": db.get("PORT") or 5432, "user": db.get("USER")}
    if db.get("PASSWORD"):
        params["password"] = db["PASSWORD"]
    with psycopg.connect(dbname="postgres", autocommit=True, **params) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    password = f":{quote(db['PASSWORD'])}" if db.get("PASSWORD") else ""
    url = f"postgres://{quote(params['user'] or '')}{password}@{params['host']}:{params['port']}/{name}"
    try:
        yield url, lambda: psycopg.connect(dbname=name, autocommit=True, **params)
    finally:
        with psycopg.connect(dbname="postgres", autocommit=True, **params) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Deploy:
    def __init__(self, url: str, connect, stripe_base: str, tmp_path: Path):
        self.port = _free_port()
        self.site = f"http://127.0.0.1:{self.port}"
        self.connect = connect
        self.stripe = stripe_base
        self.mail = tmp_path / "mail"
        self.logs = tmp_path / "logs"
        self.mail.mkdir()
        self.logs.mkdir()
        self.secret_key = "sk_test_" + "deployDrill0123456789abcdef"
        self.env = {
            # What an EnvironmentFile holds, and nothing of the test's own environment
            # (pytest sets DJANGO_ALLOW_ASYNC_UNSAFE, which `check --deploy` rightly refuses).
            **{k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ},
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DATABASE_URL": url,
            "DEBUG": "0",
            "SECRET_KEY": "deploy-drill-" + uuid.uuid4().hex * 2,
            "ALLOWED_HOSTS": "127.0.0.1",
            "SITE_URL": self.site,
            "STRIPE_API_BASE": stripe_base,
            "STRIPE_SECRET_KEY": self.secret_key,
            "STRIPE_PUBLISHABLE_KEY": "pk_test_" + "deployDrill0123456789abcdef",
            "SUPPORT_EMAILS": SUPPORT,
            "EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend",
            "EMAIL_FILE_PATH": str(self.mail),
            "HEALTH_MAX_RECONCILE_AGE_SECONDS": str(HEARTBEAT_LIMIT),
            "CONN_MAX_AGE": "60",
            "PYTHONUNBUFFERED": "1",
            **UNSAFE_BACKEND_OVERRIDE,
        }
        self.processes: list[subprocess.Popen] = []

    # --- the documented steps -----------------------------------------------------------

    def manage(self, *args: str, timeout: float = 900) -> str:
        log = self.logs / f"{len(list(self.logs.iterdir())):02d}-{args[0]}.log"
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        log.write_text(done.stdout + done.stderr)
        assert done.returncode == 0, f"manage.py {' '.join(args)} exited {done.returncode}:\n{log.read_text()[-3000:]}"
        return done.stdout

    def create_plan(self) -> None:
        self.manage(
            "create_plan", "pro-year", "--name", "PaidUp Pro, one year", "--price", "249.00", "--currency", "usd"
        )

    def create_staff(self) -> None:
        self.manage("create_support_login", "staff@paidup.example", "--refunds")

    def start(self, name: str, command: list[str], ready) -> subprocess.Popen:
        log = self.logs / f"{name}-{len(self.processes)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        process.log = log
        self.processes.append(process)
        deadline = time.monotonic() + 120
        while not ready(log):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{name} did not start (exit {process.poll()}):\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        return process

    def start_web(self) -> subprocess.Popen:
        command = [sys.executable, "-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{self.port}"]
        return self.start("gunicorn", command + ["--workers", "1", "--threads", "4"], lambda log: self.answers())

    def start_cluster(self) -> subprocess.Popen:
        return self.start(
            "qcluster", [sys.executable, "manage.py", "run_qcluster"], lambda log: STARTED in log.read_bytes()
        )

    def answers(self) -> bool:
        try:
            requests.get(f"{self.site}/", timeout=2, allow_redirects=False)
        except requests.RequestException:
            return False
        return True

    # --- what the test looks at ---------------------------------------------------------

    def sql(self, query: str, *params):
        with self.connect() as conn:
            return conn.execute(query, params).fetchall()

    def emails(self) -> list[email.message.Message]:
        """Every email the processes sent, oldest first (the file backend writes one file per
        connection, messages separated by a line of dashes)."""
        found = []
        for path in sorted(self.mail.iterdir(), key=lambda p: p.stat().st_mtime):
            for chunk in path.read_text().split("-" * 79 + "\n"):
                if chunk.strip():
                    found.append(email.message_from_string(chunk))
        return found

    def subjects(self) -> list[tuple[str, str]]:
        return [(m["To"], " ".join(str(m["Subject"]).split())) for m in self.emails()]

    def wait_for(self, predicate, timeout: float, message: str):
        deadline = time.monotonic() + timeout
        while not (value := predicate()):
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout} s waiting for {message}\n{self.tails()}")
            time.sleep(0.5)
        return value

    def tails(self) -> str:
        return "\n".join(f"--- {p.log} ---\n{p.log.read_text()[-2000:]}" for p in self.processes)

    def all_logs(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in sorted(self.logs.iterdir()))

    def stop_all(self) -> None:
        for process in self.processes:
            kill_session(process.pid)


def pay(site: str, stripe_base: str, publishable_key: str) -> str:
    """What the checkout page and the fake Stripe.js do (tests/fixtures/localstripe.py's `pay()`)."""
    import re

    session = requests.Session()
    page = session.get(f"{site}/checkout/", timeout=30)
    page.raise_for_status()
    fields = {
        name: re.search(rf'name="{name}" value="([^"]*)"', page.text).group(1)
        for name in ("csrfmiddlewaretoken", "checkout_ref", "plan")
    }
    token = requests.post(
        f"{stripe_base}/v1/tokens",
        data={
            "key": publishable_key,
            "card[number]": VISA,
            "card[exp_month]": "12",
            "card[exp_year]": "34",
            "card[cvc]": "123",
        },
        timeout=10,
    )
    token.raise_for_status()
    response = session.post(
        f"{site}/checkout/",
        data={**fields, "email": CUSTOMER, "payment_method": token.json()["id"]},
        headers={"Accept": "application/json", "Referer": f"{site}/checkout/"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return REFERENCE_RE.search(page.text).group(1)


def test_the_documented_deploy_sells_once_and_its_watchdog_shouts_while_the_cluster_is_down(
    fresh_database, localstripe, tmp_path
):
    url, connect = fresh_database
    requests.delete(f"{localstripe}/_config/data", timeout=10).raise_for_status()  # this test's payments only
    deploy = Deploy(url, connect, localstripe, tmp_path)
    timings = {}
    try:
        started = time.monotonic()
        deploy.manage("migrate", "--no-input")
        timings["migrate"] = time.monotonic() - started
        print(f"deploy drill: migrate took {timings['migrate']:.0f} s")
        deploy.manage("stripe_setup")
        deploy.create_plan()
        deploy.create_staff()
        deploy.manage("collectstatic", "--no-input")
        deploy.manage("check", "--deploy", "--fail-level", "ERROR")
        deploy.start_web()
        cluster = deploy.start_cluster()

        # One purchase through the real form: fulfilled, one confirmation email, sent by the cluster.
        reference = pay(deploy.site, localstripe, deploy.env["STRIPE_PUBLISHABLE_KEY"])
        assert deploy.sql("SELECT state FROM billing_order WHERE reference = %s", reference) == [("fulfilled",)]
        deploy.wait_for(lambda: any(m["To"] == CUSTOMER for m in deploy.emails()), 60, "the confirmation email")
        assert deploy.sql("SELECT kind, status FROM billing_outboundemail WHERE kind = 'confirmation'") == [
            ("confirmation", "sent")
        ]

        # The schedule's reconciliation runs (django-q2 looks at schedules every 30 s).
        deploy.wait_for(
            lambda: deploy.sql("SELECT count(*) FROM billing_reconciliationrun WHERE ok")[0][0], 120, "a reconciliation"
        )
        assert deploy.answers() and requests.get(f"{deploy.site}/healthz", timeout=10).status_code == 200

        # Stop the cluster as systemd/honcho do: SIGTERM to its whole process group. Clean, in seconds.
        members = tree(cluster.pid)
        os.killpg(cluster.pid, signal.SIGTERM)
        assert cluster.wait(timeout=30) == 0
        assert descendants_alive(members) == []

        # The watchdog: once the heartbeat is older than the limit, a probe answers 503 and the
        # alert is delivered now, with the cluster still down.
        time.sleep(HEARTBEAT_LIMIT + 1)
        response = requests.get(f"{deploy.site}/healthz", timeout=30)
        assert response.status_code == 503, response.text
        alert = ("ops@paidup.example", "[PaidUp support] Reconciliation has stopped running")
        deploy.wait_for(lambda: alert in deploy.subjects(), 10, "the stale-heartbeat alert")
        requests.get(f"{deploy.site}/healthz", timeout=30)  # probed again: no second alert
        assert deploy.subjects().count(alert) == 1
        assert all(p.poll() is not None for p in deploy.processes if p is cluster)

        # Restart the cluster: the next run resumes the heartbeat and support hears it is over.
        deploy.start_cluster()
        deploy.wait_for(
            lambda: requests.get(f"{deploy.site}/healthz", timeout=30).status_code == 200, 150, "a fresh heartbeat"
        )
        recovered = ("ops@paidup.example", "[PaidUp support] RECOVERED: Reconciliation has stopped running")
        deploy.wait_for(lambda: recovered in deploy.subjects(), 10, "the recovery email")
        time.sleep(2)  # anything the restarted cluster might send twice would show by now
        subjects = deploy.subjects()
        assert subjects.count(alert) == 1 and subjects.count(recovered) == 1, subjects
        assert deploy.sql(
            "SELECT status, count(*) FROM billing_outboundemail WHERE kind = 'watchdog' GROUP BY status"
        ) == [("sent", 2)]

        # No personal data or secrets in anything the processes logged.
        endpoint_secret = deploy.sql("SELECT secret FROM djstripe_webhookendpoint")[0][0]
        logs = deploy.all_logs()
        for what, value in {"email": CUSTOMER, "key": deploy.secret_key, "webhook secret": endpoint_secret}.items():
            assert value not in logs, f"the {what} is in the logs"
        assert f"order {reference} fulfilled via return" in logs
        print(f"deploy drill: migrate {timings['migrate']:.0f} s, whole test {time.monotonic() - started:.0f} s")
    finally:
        deploy.stop_all()
        rows = []
        try:
            rows = deploy.sql("SELECT id, secret FROM djstripe_webhookendpoint")
        except psycopg.Error:
            pass
        for endpoint_id, secret in rows:  # later tests' localstripe must not post to a dead site
            requests.post(f"{localstripe}/_config/webhooks/{endpoint_id}", json={"url": NOWHERE, "secret": secret})
