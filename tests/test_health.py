"""Watching the watcher: /healthz, manage.py health, and the stale-heartbeat alert."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from billing.alerts import raise_alert, send_followups
from billing.models import Alert, Order, ReconciliationRun
from tests.factories import OrderFactory

pytestmark = pytest.mark.django_db


def heartbeat(seconds_ago: int = 10, ok: bool = True) -> ReconciliationRun:
    at = timezone.now() - timedelta(seconds=seconds_ago)
    return ReconciliationRun.objects.create(started_at=at, finished_at=at, ok=ok)


def test_it_is_healthy_with_a_fresh_heartbeat_and_nothing_stuck(client):
    heartbeat()
    response = client.get("/healthz")
    assert response.status_code == 200
    data = response.json()
    assert data["healthy"] and data["database"] == "ok"
    assert data["paid_orders_stuck"] == 0 and data["last_reconciliation_age_seconds"] == 10
    assert response["Cache-Control"].startswith("max-age=0")


def test_it_is_unhealthy_when_reconciliation_never_ran(client):
    response = client.get("/healthz")
    assert response.status_code == 503
    assert "never completed" in response.json()["problems"][0]


def test_it_is_unhealthy_when_the_last_good_run_is_older_than_three_intervals(
    client, mailoutbox, django_capture_on_commit_callbacks
):
    heartbeat(seconds_ago=181)
    heartbeat(seconds_ago=5, ok=False)  # a failing run is not a heartbeat
    with django_capture_on_commit_callbacks(execute=True):
        response = client.get("/healthz")
    assert response.status_code == 503
    alert = Alert.objects.get(reason="stale_heartbeat")
    assert "181 s" in alert.message
    # Polled again and again: still one alert, one email per support address.
    with django_capture_on_commit_callbacks(execute=True):
        client.get("/healthz")
    assert Alert.objects.filter(reason="stale_heartbeat").count() == 1
    assert [m.to for m in mailoutbox] == [["support@paidup.example"]]


def test_the_stale_alert_resolves_when_runs_come_back(client):
    heartbeat(seconds_ago=400)
    client.get("/healthz")
    heartbeat(seconds_ago=1)
    assert client.get("/healthz").status_code == 200
    assert Alert.objects.get(reason="stale_heartbeat").resolved_at is not None


def test_it_is_unhealthy_when_a_paid_order_is_stuck_for_15_minutes(client):
    heartbeat()
    order = OrderFactory()
    order.transition(Order.State.PAID, actor="test")
    Order.objects.filter(pk=order.pk).update(paid_at=timezone.now() - timedelta(minutes=16))
    data = client.get("/healthz").json()
    assert not data["healthy"]
    assert data["paid_orders_stuck"] == 1 and data["oldest_stuck_age_seconds"] >= 960


def test_healthz_refuses_post(client):
    assert client.post("/healthz").status_code == 405


def test_the_command_gives_the_same_verdict_as_its_exit_code(capsys):
    with pytest.raises(SystemExit) as exit_info:
        call_command("health")
    assert exit_info.value.code == 1
    assert "UNHEALTHY" in capsys.readouterr().out
    heartbeat()
    call_command("health")
    assert capsys.readouterr().out.strip() == "healthy"


def test_the_command_prints_json(capsys):
    heartbeat()
    call_command("health", "--json")
    assert '"healthy": true' in capsys.readouterr().out


def test_one_alert_per_order_and_reason_and_one_followup(
    mailoutbox, settings, time_machine, plan, django_capture_on_commit_callbacks
):
    settings.SUPPORT_EMAILS = ["a@paidup.example", "b@paidup.example"]
    order = OrderFactory()
    with django_capture_on_commit_callbacks(execute=True):
        assert raise_alert(Alert.Reason.FULFIL_FAILED, "broken", order=order)
        assert raise_alert(Alert.Reason.FULFIL_FAILED, "broken again", order=order) is None
    assert Alert.objects.count() == 1
    assert sorted(m.to[0] for m in mailoutbox) == ["a@paidup.example", "b@paidup.example"]
    assert f"/admin/billing/order/{order.pk}/change/" in mailoutbox[0].body
    assert send_followups() == 0
    time_machine.move_to(timezone.now() + timedelta(hours=4, minutes=1))
    with django_capture_on_commit_callbacks(execute=True):
        assert send_followups() == 1
        assert send_followups() == 0
    assert "STILL OPEN" in mailoutbox[-1].subject


def test_a_fresh_deploy_without_orders_is_unhealthy_but_pages_nobody(client, mailoutbox):
    assert client.get("/healthz").status_code == 503
    assert not Alert.objects.exists()


def test_a_site_taking_orders_with_no_reconciliation_ever_alerts(client, plan):
    order = OrderFactory()
    Order.objects.filter(pk=order.pk).update(created_at=timezone.now() - timedelta(minutes=5))
    assert client.get("/healthz").status_code == 503
    assert Alert.objects.get().reason == "stale_heartbeat"


def test_livez_answers_ok_while_healthz_reports_a_stale_reconciliation(client, django_assert_num_queries):
    """The load balancer's check (docs/deploy.md, 14): a stale heartbeat is every node's problem
    and must not take the nodes out of rotation; /livez reads nothing, the database included."""
    heartbeat(seconds_ago=3600)
    assert client.get("/healthz").status_code == 503
    with django_assert_num_queries(0):
        response = client.get("/livez")
    assert (response.status_code, response.content) == (200, b"ok\n")
    assert response["Cache-Control"].startswith("max-age=0")
    assert client.head("/livez").status_code == 200


@pytest.mark.parametrize("method", ["post", "put", "delete"])
def test_livez_refuses_anything_but_get_and_head(client, method):
    assert getattr(client, method)("/livez").status_code == 405
