"""The production topology (tools/cluster.py, docs/deploy.md "14. More than one node"): two web
nodes behind haproxy, two q clusters on one Redis broker, one PostgreSQL database.

One Cluster serves the module (starting it costs a dozen Django start-ups). Its database is a
copy of the migrated test database (pg_dump, seconds, instead of a fresh `migrate`, minutes);
its broker is the machine's Redis, database 13, emptied first.
"""

from __future__ import annotations

import os
import re
import runpy
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest
import requests

from tests.fixtures.crash import database_url
from tests.fixtures.localstripe import StripeSite

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from cluster import Cluster, totp, tree  # noqa: E402

VISA = "4242424242424242"
BASE_PORT = int(os.environ.get("CLUSTER_TEST_PORT", "8650"))
REDIS_URL = os.environ.get("CLUSTER_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


def _pg_bin(name: str) -> str:
    from cluster_services import _pg_bin as find

    return find(name)


@pytest.fixture(scope="module")
def cluster(django_db_setup, django_db_blocker, tmp_path_factory):
    """A running Cluster on a copy of the test database; stopped and dropped afterwards."""
    import redis
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("the topology runs on PostgreSQL")
    with django_db_blocker.unblock():
        source = database_url()
    copy = source.rsplit("/", 1)[0] + f"/paidup_cluster_test_{os.getpid()}"
    workdir = tmp_path_factory.mktemp("cluster")
    redis.Redis.from_url(REDIS_URL).flushdb()
    cluster = Cluster(workdir, base_port=BASE_PORT, database_url=copy, redis_url=REDIS_URL)
    started = time.monotonic()
    try:
        cluster.postgres.drop_database()
        cluster.postgres.create_database()
        dump = subprocess.Popen([_pg_bin("pg_dump"), "--no-owner", source], stdout=subprocess.PIPE)
        subprocess.run([_pg_bin("psql"), "-q", "-v", "ON_ERROR_STOP=1", copy], stdin=dump.stdout, check=True,
                       capture_output=True, timeout=120)  # fmt: skip
        assert dump.wait(timeout=60) == 0
        cluster.start()
        print(f"\ncluster: database copied and every node ready in {time.monotonic() - started:.0f} s")
        yield cluster
    finally:
        cluster.stop()
        cluster.postgres.drop_database()


def sql(cluster: Cluster, query: str, *params):
    with psycopg.connect(cluster.database_url, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.3)
    return value


def node_of(cluster: Cluster, pid: int) -> str:
    """Which node a process belongs to."""
    for name, process in cluster.processes.items():
        if pid in tree(process.pid):
            return name
    return f"unknown pid {pid}"


def site(cluster: Cluster) -> StripeSite:
    return StripeSite(cluster.site_url, cluster.stripe_base, None, secret_key=cluster.secret_key,
                      publishable_key=cluster.publishable_key)  # fmt: skip


# --- gunicorn.conf.py (no cluster needed) ----------------------------------------------


def load_gunicorn_conf(monkeypatch, **env: str) -> dict:
    for name in ("GUNICORN_BIND", "PORT", "WEB_CONCURRENCY", "GUNICORN_THREADS", "PROMETHEUS_MULTIPROC_DIR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(ROOT / "gunicorn.conf.py"))


def test_it_marks_an_exited_gunicorn_worker_dead_for_prometheus(monkeypatch, tmp_path):
    conf = load_gunicorn_conf(monkeypatch, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    dead, alive = tmp_path / "gauge_livesum_4242.db", tmp_path / "gauge_livesum_4343.db"
    counter = tmp_path / "counter_4242.db"
    for path in (dead, alive, counter):
        path.write_bytes(b"")
    conf["child_exit"](None, SimpleNamespace(pid=4242))
    assert not dead.exists(), "the exited worker's live gauge still counts"
    assert alive.exists() and counter.exists(), "another worker's gauge, or a total, was removed"


def test_without_a_multiprocess_folder_child_exit_touches_nothing(monkeypatch, tmp_path):
    conf = load_gunicorn_conf(monkeypatch)
    gauge = tmp_path / "gauge_livesum_4242.db"
    gauge.write_bytes(b"")
    conf["child_exit"](None, SimpleNamespace(pid=4242))
    assert gauge.exists()


def test_gunicorn_settings_come_from_the_environment(monkeypatch):
    conf = load_gunicorn_conf(monkeypatch, GUNICORN_BIND="127.0.0.1:8601", WEB_CONCURRENCY="3", GUNICORN_THREADS="8")
    assert (conf["bind"], conf["workers"], conf["threads"]) == ("127.0.0.1:8601", 3, 8)
    assert load_gunicorn_conf(monkeypatch, PORT="5000")["bind"] == "0.0.0.0:5000"  # a platform's $PORT
    assert load_gunicorn_conf(monkeypatch)["bind"] == "127.0.0.1:8000"
    with pytest.raises(ValueError):
        load_gunicorn_conf(monkeypatch, WEB_CONCURRENCY="two")


def test_the_committed_haproxy_config_is_valid(monkeypatch):
    env = {**os.environ, "PAIDUP_PROXY_BIND": "127.0.0.1:8600", "PAIDUP_STATS_BIND": "127.0.0.1:8604",
           "PAIDUP_WEB1": "127.0.0.1:8601", "PAIDUP_WEB2": "127.0.0.1:8602",
           "PAIDUP_CHECK_HOST": "paidup.example"}  # fmt: skip
    haproxy = "/usr/sbin/haproxy"
    if not Path(haproxy).exists():
        pytest.skip("haproxy is not installed (make cluster installs it)")
    checked = subprocess.run([haproxy, "-c", "-f", "deploy/haproxy/haproxy.cfg"], cwd=ROOT, env=env,
                             capture_output=True, text=True)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    del env["PAIDUP_WEB2"]  # a missing address is refused, not silently empty
    assert subprocess.run([haproxy, "-c", "-f", "deploy/haproxy/haproxy.cfg"], cwd=ROOT, env=env,
                          capture_output=True).returncode != 0  # fmt: skip


def test_the_staff_code_is_rfc_6238_as_django_otp_checks_it():
    from django_otp.oath import TOTP

    key = "3132333435363738393031323334353637383930"  # RFC 6238's test key, "12345678901234567890"
    assert totp(key, 59, digits=8) == "94287082"  # the RFC's own vector
    for at in (1_111_111_109, 1_700_000_000, 2_000_000_000):
        device = TOTP(bytes.fromhex(key), step=30, t0=0, digits=6)
        device.time = at
        assert totp(key, at) == f"{device.token():06d}"


def test_the_code_tool_takes_the_key_as_an_authenticator_app_shows_it():
    import base64

    key = "3132333435363738393031323334353637383930"
    shown = base64.b32encode(bytes.fromhex(key)).decode()  # what `make cluster` prints for an app
    spaced = " ".join(shown[i : i + 4] for i in range(0, len(shown), 4)).lower()
    assert totp(shown, 59, digits=8) == totp(spaced, 59, digits=8) == "94287082"
    for bad in ("", "not a key!", "12345"):
        with pytest.raises(ValueError, match="neither a hex nor a base32"):
            totp(bad, 59)
    refused = subprocess.run([sys.executable, "tools/cluster.py", "code", "not a key!"], cwd=ROOT,
                             capture_output=True, text=True)  # fmt: skip
    assert refused.returncode == 2 and "neither a hex nor a base32" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_the_proxy_checks_liveness_with_a_host_the_site_allows(settings, client):
    """haproxy's check carries PAIDUP_CHECK_HOST: with production's ALLOWED_HOSTS a check sent as
    Host 127.0.0.1 gets 400 from every node, and haproxy would take them all out."""
    config = (ROOT / "deploy" / "haproxy" / "haproxy.cfg").read_text()
    assert 'hdr Host "${PAIDUP_CHECK_HOST}"' in config
    assert "on-marked-down shutdown-sessions" in config  # a hung node's requests do not wait a minute
    settings.ALLOWED_HOSTS = ["paidup.example"]
    assert client.get("/livez", HTTP_HOST="127.0.0.1").status_code == 400
    assert client.get("/livez", HTTP_HOST="paidup.example").status_code == 200


# --- the running topology ----------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db  # so that pytest-django sets up the test database the cluster copies
def test_static_files_are_served_through_the_proxy_as_in_production(cluster):
    page = requests.get(f"{cluster.site_url}/checkout/", timeout=30)
    assert page.status_code == 200
    stylesheet = re.search(r'href="(/static/[^"]+\.css)"', page.text).group(1)
    response = requests.get(f"{cluster.site_url}{stylesheet}", headers={"Accept-Encoding": "gzip"}, timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/css")
    assert response.headers.get("Content-Encoding") == "gzip", "whitenoise serves collectstatic's compressed copy"
    assert requests.get(f"{cluster.site_url}/static/nothing-here.css", timeout=30).status_code == 404


@pytest.mark.postgres
@pytest.mark.django_db  # so that pytest-django sets up the test database the cluster copies
def test_a_checkout_through_the_proxy_succeeds_while_a_web_node_is_dead_and_mails_once(cluster):
    cluster.kill("web1")  # haproxy has not noticed yet: its next check is up to a second away
    try:
        shop = site(cluster)
        pages = [requests.get(f"{cluster.site_url}/checkout/", timeout=30).status_code for _ in range(4)]
        checkout = shop.open_checkout()
        response = checkout.pay("two.nodes@example.org", VISA)
        assert pages == [200] * 4
        assert response.status_code == 200, response.text
        assert sql(cluster, "SELECT state FROM billing_order WHERE reference = %s", checkout.reference) == [
            ("fulfilled",)
        ]
        stats = requests.get(cluster.stats_url + ";csv", timeout=5).text.splitlines()
        header = stats[0].lstrip("# ").split(",")
        web1 = next(dict(zip(header, row.split(","), strict=False)) for row in stats if row.startswith("web,web1,"))
        assert int(web1["wredis"] or 0) >= 1, "no request was redispatched from the dead node"
        wait_for(lambda: cluster.proxy_states()["web1"].startswith("DOWN"), 10, "haproxy's check to mark web1 down")
        # The confirmation email leaves once, though two clusters watch the outbox.
        wait_for(
            lambda: (
                sql(cluster, 'SELECT status FROM billing_outboundemail WHERE "to" = %s', "two.nodes@example.org")
                == [("sent",)]
            ),
            60,
            "the confirmation email",
        )
        time.sleep(2)
        sent = [p for p in cluster.mail.iterdir() if "two.nodes@example.org" in p.read_text()]
        assert len(sent) == 1
    finally:
        cluster.start_node("web1")
    assert cluster.proxy_states() == {"web1": "UP", "web2": "UP"}


@pytest.mark.postgres
@pytest.mark.django_db  # so that pytest-django sets up the test database the cluster copies
def test_a_task_queued_once_runs_once_across_both_clusters(cluster, tmp_path):
    runs = tmp_path / "runs.txt"
    queued = cluster.manage(
        "shell",
        "-c",
        "from django_q.tasks import async_task\n"
        f"for i in range(40): async_task('tests.cluster_tasks.record', {str(runs)!r}, f'task-{{i}}', group='once')",
    )
    assert queued.returncode == 0, queued.stderr
    wait_for(lambda: runs.exists() and len(runs.read_text().splitlines()) >= 40, 60, "40 tasks to run")
    time.sleep(2)  # a second run of any of them would show by now
    lines = [line.split() for line in runs.read_text().splitlines()]
    assert sorted(tag for tag, _, _ in lines) == sorted(f"task-{i}" for i in range(40))
    nodes = {node_of(cluster, int(pid)) for _, _, pid in lines}
    assert nodes == {"worker1", "worker2"}, f"only {nodes} took tasks: the test would prove nothing"


@pytest.mark.postgres
@pytest.mark.django_db  # so that pytest-django sets up the test database the cluster copies
def test_a_due_schedule_is_queued_once_though_both_clusters_claim_it_at_once(cluster, tmp_path):
    """Both schedulers are made to wait on the same due rows (this test holds their row locks),
    then released together: the first claims each row and moves its next run; the second, woken
    on the committed row, finds it no longer due (PostgreSQL re-checks the WHERE clause)."""
    runs = tmp_path / "scheduled.txt"
    names = [f"cluster-test-{i}" for i in range(5)]
    with psycopg.connect(cluster.database_url) as conn:
        with conn.transaction():
            for name in names:
                conn.execute(
                    "INSERT INTO django_q_schedule (name, func, args, schedule_type, minutes, repeats, next_run,"
                    " intended_date_kwarg) VALUES (%s, 'tests.cluster_tasks.record', %s, 'I', 1, -1,"
                    " now() - interval '1 second', 'intended')",
                    (name, repr((str(runs), name))),
                )
        with conn.transaction():
            conn.execute("SELECT id FROM django_q_schedule WHERE name = ANY(%s) FOR UPDATE", (names,))

            def waiting() -> int:
                with psycopg.connect(cluster.database_url, autocommit=True) as other:
                    return other.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND query LIKE '%%django_q_schedule%%FOR UPDATE%%' AND datname = current_database()"
                    ).fetchone()[0]

            # django-q2 runs each cluster's scheduler every 30 s of its guard loop.
            wait_for(lambda: waiting() >= 2, 75, "both clusters' schedulers to wait on the due schedules")
        wait_for(lambda: runs.exists() and len(runs.read_text().splitlines()) >= len(names), 30, "the scheduled runs")
        time.sleep(2)
        lines = [line.split() for line in runs.read_text().splitlines()]
        assert sorted(tag for tag, _, _ in lines) == names, "a due schedule ran twice, or not at all"
        assert len({(tag, intended) for tag, intended, _ in lines}) == len(names)
        next_runs = conn.execute(
            "SELECT count(*) FROM django_q_schedule WHERE name = ANY(%s) AND next_run > now() + interval '30 seconds'",
            (names,),
        ).fetchone()[0]
        assert next_runs == len(names), "each schedule's next run is one interval on"
        conn.execute("DELETE FROM django_q_schedule WHERE name = ANY(%s)", (names,))
        conn.commit()
