"""/metrics: the business gauges match the database, request metrics count, and the token rules."""

import hmac
import math
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from unittest import mock

import pytest
from django.db import DatabaseError
from django.utils import timezone
from djstripe.models import WebhookEventTrigger
from prometheus_client.parser import text_string_to_metric_families

from billing.models import Alert, Dispute, Order, OutboundEmail, ReconciliationRun
from tests.factories import OrderFactory

pytestmark = pytest.mark.django_db

TOKEN = "metrics-token-0123456789abcdefghij"
NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def frozen(time_machine):
    time_machine.move_to(NOW, tick=False)
    return NOW


@pytest.fixture
def token(settings):
    settings.METRICS_TOKEN = TOKEN
    return TOKEN


def scrape(client, token: str = TOKEN) -> dict:
    """GET /metrics with `token`; {(sample name, frozenset of label pairs): value}."""
    response = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def ago(seconds: float) -> datetime:
    return timezone.now() - timedelta(seconds=seconds)


def email(status: str, created_seconds_ago: float = 0) -> OutboundEmail:
    return OutboundEmail.objects.create(
        kind="signin", to="x@example.com", status=status, subject="s", body_text="t", body_html="h",
        created_at=ago(created_seconds_ago),
    )  # fmt: skip


def test_it_counts_orders_in_each_state_and_how_long_paid_ones_wait(client, token, frozen, plan):
    for state, n in {"pending": 3, "fulfilled": 4, "refunded": 1, "failed": 2}.items():
        OrderFactory.create_batch(n, state=state, plan=plan)
    OrderFactory(state="paid", paid_at=ago(100), plan=plan)
    OrderFactory(state="paid", paid_at=ago(700), plan=plan)

    samples = scrape(client)

    for state in Order.State.values:
        assert value(samples, "paidup_orders", state=state) == Order.objects.filter(state=state).count()
    assert value(samples, "paidup_orders", state="pending") == 3
    assert value(samples, "paidup_orders_paid_not_fulfilled") == 2
    assert value(samples, "paidup_orders_paid_not_fulfilled_oldest_age_seconds") == 700
    assert value(samples, "paidup_database_up") == 1


def test_nothing_waiting_reads_zero_and_a_reconciliation_that_never_succeeded_reads_infinity(client, token, frozen):
    ReconciliationRun.objects.create(started_at=ago(30), finished_at=ago(20), ok=False)

    samples = scrape(client)

    assert value(samples, "paidup_orders_paid_not_fulfilled") == 0
    assert value(samples, "paidup_orders_paid_not_fulfilled_oldest_age_seconds") == 0
    assert value(samples, "paidup_outbox_oldest_queued_age_seconds") == 0
    assert value(samples, "paidup_reconciliation_last_success_age_seconds") == math.inf
    assert value(samples, "paidup_reconciliation_last_success_duration_seconds") is None
    assert value(samples, "paidup_reconciliation_last_run_duration_seconds") == 10
    assert value(samples, "paidup_reconciliation_last_run_ok") == 0
    assert value(samples, "paidup_disputes_evidence_due_in_seconds") is None


def test_it_reads_the_last_successful_reconciliation_as_health_does(client, token, frozen):
    ReconciliationRun.objects.create(started_at=ago(300), finished_at=ago(290), ok=True)
    ReconciliationRun.objects.create(started_at=ago(102), finished_at=ago(90), ok=True)
    ReconciliationRun.objects.create(started_at=ago(40), finished_at=ago(35), ok=False)  # failed: not a heartbeat
    ReconciliationRun.objects.create(started_at=ago(10), finished_at=ago(9), ok=True, dry_run=True)
    ReconciliationRun.objects.create(started_at=ago(3))  # still running: not finished, not counted

    samples = scrape(client)

    assert value(samples, "paidup_reconciliation_last_success_age_seconds") == 90
    assert value(samples, "paidup_reconciliation_last_success_duration_seconds") == 12
    # The newest finished run failed after 5 s: it is the last run, not the last success.
    assert value(samples, "paidup_reconciliation_last_run_duration_seconds") == 5
    assert value(samples, "paidup_reconciliation_last_run_ok") == 0
    assert client.get("/healthz").json()["last_reconciliation_age_seconds"] == 90


def test_it_counts_failed_webhook_events_and_the_outbox(client, token, frozen):
    for valid, processed in [(True, False), (True, False), (True, True), (False, False)]:
        WebhookEventTrigger.objects.create(
            body="{}", headers={}, remote_ip="127.0.0.1", valid=valid, processed=processed
        )
    email("queued", 300)
    email("queued", 10)
    email("retry", 500)
    email("sending", 900)  # being sent: not "waiting", so not the oldest queued
    email("failed", 5000)
    for _ in range(3):
        email("sent", 9000)

    samples = scrape(client)

    assert value(samples, "paidup_webhook_events_failed") == 2
    expected = {"queued": 2, "retry": 1, "sending": 1, "failed": 1}
    for status, n in expected.items():
        assert value(samples, "paidup_outbox_emails", status=status) == n
        assert OutboundEmail.objects.filter(status=status).count() == n
    assert value(samples, "paidup_outbox_emails", status="sent") is None
    assert value(samples, "paidup_outbox_oldest_queued_age_seconds") == 500


def test_it_counts_open_alerts_by_reason(client, token):
    for key in ("d1", "d2"):
        Alert.objects.create(key=key, reason=Alert.Reason.DISPUTE, message="m")
    Alert.objects.create(key="d3", reason=Alert.Reason.DISPUTE, message="m", resolved_at=timezone.now())
    Alert.objects.create(key="h", reason=Alert.Reason.STALE_HEARTBEAT, message="m")

    samples = scrape(client)

    assert value(samples, "paidup_alerts_open", reason="dispute") == 2
    assert value(samples, "paidup_alerts_open", reason="stale_heartbeat") == 1
    others = [r for r in Alert.Reason.values if r not in ("dispute", "stale_heartbeat")]
    assert all(value(samples, "paidup_alerts_open", reason=r) == 0 for r in others)


def test_it_counts_open_disputes_and_the_nearest_evidence_still_to_send(client, token, frozen):
    def dispute(n: int, status: str, due_days: float, **fields) -> None:
        due = timezone.now() + timedelta(days=due_days)
        Dispute.objects.create(stripe_dispute_id=f"du_{n}", status=status, evidence_due_by=due, **fields)

    dispute(1, "needs_response", 3)
    dispute(2, "needs_response", 1, evidence_submitted_at=timezone.now())  # sent: nothing due
    dispute(3, "under_review", 0.5)
    dispute(4, "won", -2)
    dispute(5, "lost", 0.1)

    samples = scrape(client)

    assert value(samples, "paidup_disputes_open") == 3
    assert value(samples, "paidup_disputes_evidence_due_in_seconds") == 3 * 86400
    assert value(samples, "paidup_disputes_evidence_due_timestamp_seconds") == (NOW + timedelta(days=3)).timestamp()


def test_a_scrape_costs_one_query_per_gauge_family_and_two_for_reconciliation(
    client, token, django_assert_num_queries, plan
):
    OrderFactory.create_batch(3, state="paid", paid_at=timezone.now(), plan=plan)
    with django_assert_num_queries(8):
        scrape(client)


def test_a_database_that_does_not_answer_still_gives_a_scrape_that_says_so(client, token):
    with mock.patch("billing.metrics.orders_by_state", side_effect=DatabaseError("connection refused")):
        samples = scrape(client)
    assert value(samples, "paidup_database_up") == 0
    assert not any(name.startswith("paidup_orders") for name, _ in samples)


def test_requests_are_counted_by_method_and_status_class_and_timed(client, token):
    before = scrape(client)
    client.get("/no-such-page/")
    client.get("/healthz")
    client.generic("BREW", "/healthz")
    after = scrape(client)

    def delta(name, **labels):
        return (value(after, name, **labels) or 0) - (value(before, name, **labels) or 0)

    assert delta("paidup_http_requests_total", method="GET", status="4xx") == 1
    # /healthz (503 with no heartbeat) and the first scrape itself, counted once it had answered.
    assert delta("paidup_http_requests_total", method="GET", status="5xx") == 1
    assert delta("paidup_http_requests_total", method="GET", status="2xx") == 1
    assert delta("paidup_http_requests_total", method="other", status="4xx") == 1
    assert delta("paidup_http_request_duration_seconds_count", method="GET") == 3


# --- Who may read it -------------------------------------------------------------------


def test_with_no_token_configured_the_endpoint_does_not_exist(client, settings, django_assert_num_queries):
    settings.METRICS_TOKEN = ""
    settings.DEBUG = False
    response = client.get("/metrics", headers={"Authorization": "Bearer anything"})
    assert response.status_code == 404
    assert b"paidup_" not in response.content


def test_with_no_token_configured_development_reads_it_openly(client, settings):
    settings.METRICS_TOKEN = ""
    settings.DEBUG = True
    response = client.get("/metrics")
    assert response.status_code == 200 and b"paidup_orders" in response.content


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", f"Basic {TOKEN}", TOKEN, f"Token {TOKEN}"],
    ids=["none", "empty", "scheme-only", "scheme-space", "basic", "bare", "other-scheme"],
)
def test_a_request_without_a_bearer_token_is_asked_for_one(client, token, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert response.content == b"Unauthorized\n"


@pytest.mark.parametrize(
    "given",
    ["wrong", TOKEN[:-1], TOKEN + "x", TOKEN.upper(), "tökén-ünïcode", "x" * 10_000],
    ids=["wrong", "prefix", "longer", "case", "non-ascii", "huge"],
)
def test_a_wrong_token_is_refused_before_any_query_and_learns_nothing(client, token, given, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/metrics", headers={"Authorization": f"Bearer {given}"})
    assert response.status_code == 403
    assert response.content == b"Forbidden\n"


def test_the_right_token_is_compared_in_constant_time(client, token):
    with mock.patch("config.metrics.hmac.compare_digest", wraps=hmac.compare_digest) as compare:
        samples = scrape(client)
    compare.assert_called_once_with(TOKEN.encode(), TOKEN.encode())
    assert value(samples, "paidup_database_up") == 1


def test_the_scheme_is_case_insensitive_and_the_answer_is_not_cached(client, token):
    response = client.get("/metrics", headers={"Authorization": f"bearer {TOKEN}"})
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"


def test_only_get_reads_it(client, token):
    response = client.post("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 405
    assert client.post("/metrics").status_code == 401  # the token first, whatever the method


# --- Several gunicorn workers (PROMETHEUS_MULTIPROC_DIR) -----------------------------------

# One process: counts `n` requests (argv[1]) through the middleware's counters, or (n = 0)
# prints the scrape as /metrics would build it, in a process with no migrated database.
WORKER = """
import sys, django
django.setup()
from prometheus_client import generate_latest
from config import metrics
n = int(sys.argv[1])
for _ in range(n):
    metrics.REQUESTS.labels("GET", "2xx").inc()
    metrics.LATENCY.labels("GET").observe(0.01)
if not n:
    print(generate_latest(metrics.scrape_registry()).decode())
"""


def test_with_several_workers_a_scrape_adds_up_every_worker(tmp_path):
    root = Path(__file__).resolve().parent.parent
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(root),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'empty.sqlite3'}",  # no tables: the gauges cannot be read
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "LOG_LEVEL": "CRITICAL",
    }

    def worker(n: int) -> str:
        done = subprocess.run(
            [sys.executable, "-c", WORKER, str(n)], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    worker(2)
    worker(3)
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(worker(0))
        for s in family.samples
    }
    assert value(samples, "paidup_http_requests_total", method="GET", status="2xx") == 5
    assert value(samples, "paidup_http_request_duration_seconds_count", method="GET") == 5
    assert value(samples, "paidup_database_up") == 0
