"""The watchdog's alerts reach support with the q cluster dead, once, and say when it is over.

"The q cluster is dead" is modelled by making any hand-off to it fail the test: every email
these tests see was sent by the probe's own process, through anymail's test backend.
"""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from billing.models import Alert, OutboundEmail, ReconciliationRun
from outbox import sending
from tests.factories import OrderFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def dead_cluster(monkeypatch):
    def hand_off(email_id):
        pytest.fail(f"email {email_id} was handed to the q cluster, which is dead")

    monkeypatch.setattr(sending, "hand_off", hand_off)


@pytest.fixture
def probe(client, django_capture_on_commit_callbacks, dead_cluster):
    """GET /healthz as an uptime monitor does, running what the response's commit triggers."""

    def get():
        with django_capture_on_commit_callbacks(execute=True):
            return client.get("/healthz")

    return get


def heartbeat(seconds_ago: int) -> ReconciliationRun:
    at = timezone.now() - timedelta(seconds=seconds_ago)
    return ReconciliationRun.objects.create(started_at=at, finished_at=at, ok=True)


def watchdog_emails():
    return OutboundEmail.objects.filter(kind=OutboundEmail.Kind.WATCHDOG).order_by("pk")


def test_it_sends_the_stale_heartbeat_alert_itself_while_the_cluster_is_dead(probe, mailoutbox, settings):
    settings.SUPPORT_EMAILS = ["a@paidup.example", "b@paidup.example"]
    heartbeat(seconds_ago=200)
    response = probe()
    assert response.status_code == 503
    assert sorted(m.to[0] for m in mailoutbox) == ["a@paidup.example", "b@paidup.example"]
    assert "Reconciliation has stopped running" in mailoutbox[0].subject
    assert "200 s" in mailoutbox[0].body and "systemctl status paidup-qcluster" in mailoutbox[0].body
    # Recorded once in the outbox, as sent, so the q cluster's sweep never sends it again.
    assert [(e.to, e.status, e.attempts) for e in watchdog_emails()] == [
        ("a@paidup.example", "sent", 1),
        ("b@paidup.example", "sent", 1),
    ]
    assert sending.send_due_emails() == 0
    # Polled again and again while it is down: nothing more.
    probe()
    probe()
    assert len(mailoutbox) == 2 and watchdog_emails().count() == 2


def test_it_says_recovered_once_when_runs_resume(probe, mailoutbox):
    heartbeat(seconds_ago=400)
    probe()
    heartbeat(seconds_ago=2)
    assert probe().status_code == 200
    probe()
    assert [m.subject for m in mailoutbox] == [
        "[PaidUp support] Reconciliation has stopped running",
        "[PaidUp support] RECOVERED: Reconciliation has stopped running",
    ]
    assert "its last run finished 2 s ago" in mailoutbox[1].body
    assert Alert.objects.get().resolved_at is not None


def test_the_manage_py_health_cron_path_sends_it_too(mailoutbox, dead_cluster, django_capture_on_commit_callbacks):
    heartbeat(seconds_ago=200)
    with pytest.raises(SystemExit), django_capture_on_commit_callbacks(execute=True):
        call_command("health")
    assert len(mailoutbox) == 1 and watchdog_emails().get().status == "sent"


def test_a_failed_send_is_retried_by_a_later_probe_after_its_backoff(probe, mailoutbox, settings, time_machine):
    heartbeat(seconds_ago=200)
    settings.FAILPOINTS = "email_send=raise"  # the email provider is down too
    probe()
    email = watchdog_emails().get()
    assert (email.status, email.attempts, mailoutbox) == ("retry", 1, [])
    settings.FAILPOINTS = ""
    probe()  # too early: its backoff (30 s) has not passed
    assert mailoutbox == []
    time_machine.move_to(timezone.now() + timedelta(seconds=31))
    probe()
    email.refresh_from_db()
    assert (email.status, email.attempts, len(mailoutbox)) == ("sent", 2, 1)


def overdue_customer_email(minutes: int) -> OutboundEmail:
    order = OrderFactory()
    at = timezone.now() - timedelta(minutes=minutes)
    return OutboundEmail.objects.create(
        order=order, kind="confirmation", to=order.email, subject="s", body_text="t", body_html="h", next_attempt_at=at
    )


def test_emails_waiting_past_their_time_mean_the_worker_is_dead_and_support_hears_it(probe, mailoutbox, plan):
    heartbeat(seconds_ago=5)
    customer_email = overdue_customer_email(minutes=11)
    response = probe()
    assert response.status_code == 503
    data = response.json()
    assert data["emails_overdue"] == 1 and data["oldest_overdue_email_seconds"] >= 660
    assert "1 emails due but unsent" in data["problems"][0]
    assert [m.subject for m in mailoutbox] == ["[PaidUp support] Emails are not being sent"]
    assert "the oldest has waited 66" in mailoutbox[0].body
    # The probe alerts about the customer's email; sending it stays the q cluster's job.
    customer_email.refresh_from_db()
    assert customer_email.status == "queued"
    probe()
    assert len(mailoutbox) == 1

    OutboundEmail.objects.filter(pk=customer_email.pk).update(status="sent", sent_at=timezone.now())
    assert probe().status_code == 200
    probe()
    assert [m.subject for m in mailoutbox][1:] == ["[PaidUp support] RECOVERED: Emails are not being sent"]


@pytest.mark.parametrize(
    "status, due_minutes_ago",
    [
        ("queued", 9),  # due, but not for long: the sweep runs every minute
        ("retry", -30),  # created long ago, waiting out its backoff
        ("sent", 60),
        ("failed", 60),  # given up on: the support queue shows it, it is not a dead worker
    ],
)
def test_emails_that_are_not_overdue_page_nobody(probe, mailoutbox, plan, status, due_minutes_ago):
    heartbeat(seconds_ago=5)
    email = overdue_customer_email(minutes=due_minutes_ago)
    OutboundEmail.objects.filter(pk=email.pk).update(status=status, created_at=timezone.now() - timedelta(hours=2))
    response = probe()
    assert response.status_code == 200, response.json()["problems"]
    assert response.json()["emails_overdue"] == (1 if status == "queued" else 0)
    assert mailoutbox == [] and not Alert.objects.exists()


def test_the_delay_is_a_setting(probe, mailoutbox, plan, settings):
    settings.HEALTH_MAX_EMAIL_DELAY_SECONDS = 60
    heartbeat(seconds_ago=5)
    overdue_customer_email(minutes=2)
    assert probe().status_code == 503
    assert Alert.objects.get().reason == "outbox_stuck"


def test_healthz_answers_fast_when_all_is_well(client, django_assert_max_num_queries, dead_cluster):
    heartbeat(seconds_ago=5)
    with django_assert_max_num_queries(12):
        assert client.get("/healthz").status_code == 200


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("rounds", [5])
def test_concurrent_probes_alert_once_and_announce_the_recovery_once(mailoutbox, dead_cluster, settings, rounds):
    """Four monitors probing at the same instant, each on its own connection: one alert and one
    "recovered" email per address, in the outbox and in the mail provider."""
    from billing import health
    from tests.test_races import run_together

    settings.SUPPORT_EMAILS = ["a@paidup.example", "b@paidup.example"]

    def probe():
        health.watch(health.report())

    for round_ in range(rounds):
        ReconciliationRun.objects.all().delete()
        heartbeat(seconds_ago=200)
        run_together(*[probe] * 4)
        heartbeat(seconds_ago=1)
        run_together(*[probe] * 4)
        sent = (round_ + 1) * 4  # alert + recovered, to each of two addresses, per round
        assert watchdog_emails().count() == sent and len(mailoutbox) == sent
        assert all(e.status == "sent" and e.attempts == 1 for e in watchdog_emails())
    assert Alert.objects.count() == rounds and not Alert.objects.filter(resolved_at__isnull=True).exists()


def test_how_old_a_heartbeat_may_get_is_a_setting(probe, mailoutbox, settings):
    assert settings.HEALTH_MAX_RECONCILE_AGE_SECONDS is None  # unset: three intervals of the schedule
    heartbeat(seconds_ago=170)
    assert probe().status_code == 200  # within three one-minute intervals
    settings.HEALTH_MAX_RECONCILE_AGE_SECONDS = 20
    heartbeat(seconds_ago=25)
    assert probe().status_code == 503
    assert "25 s" in mailoutbox[0].body
