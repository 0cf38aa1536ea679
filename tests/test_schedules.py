"""The q cluster's schedules follow the settings (billing/schedules.py), and health agrees."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_q.models import Schedule

from billing import health, schedules
from billing.models import ReconciliationRun

pytestmark = pytest.mark.django_db


def reconcile_row() -> Schedule:
    return Schedule.objects.get(name="reconcile")


def test_migrate_leaves_reconciliation_every_minute_by_default():
    row = reconcile_row()
    assert (row.func, row.schedule_type, row.minutes, row.repeats) == ("billing.tasks.reconcile", "I", 1, -1)
    assert Schedule.objects.get(name="send due emails").minutes == 1


def test_migrate_makes_the_schedule_follow_the_interval_setting(settings):
    settings.RECONCILE_INTERVAL_MINUTES = 7
    call_command("migrate", verbosity=0)
    assert reconcile_row().minutes == 7


def test_a_sync_changes_only_what_differs_and_says_so(settings):
    settings.RECONCILE_INTERVAL_MINUTES = 5
    assert schedules.sync() == ["schedule 'reconcile': every 1 -> 5 min"]
    assert reconcile_row().minutes == 5
    assert schedules.sync() == []  # idempotent


def test_a_shorter_interval_does_not_wait_out_the_old_one(settings):
    Schedule.objects.filter(name="reconcile").update(minutes=60, next_run=timezone.now() + timedelta(minutes=59))
    settings.RECONCILE_INTERVAL_MINUTES = 2
    schedules.sync()
    assert reconcile_row().next_run <= timezone.now() + timedelta(minutes=2)


def test_a_longer_interval_keeps_the_next_run_already_planned(settings):
    soon = timezone.now() + timedelta(seconds=30)
    Schedule.objects.filter(name="reconcile").update(next_run=soon)
    settings.RECONCILE_INTERVAL_MINUTES = 30
    schedules.sync()
    assert reconcile_row().next_run == soon


def test_a_deleted_or_disabled_schedule_comes_back():
    Schedule.objects.filter(name="send due emails").update(repeats=0)
    reconcile_row().delete()
    changes = schedules.sync()
    assert "created schedule 'reconcile': every 1 min" in changes
    assert reconcile_row().repeats == -1
    assert Schedule.objects.get(name="send due emails").repeats == -1


class FakeCluster:
    def start(self):
        pass

    def stop(self):
        pass


def test_the_q_cluster_syncs_the_schedules_when_it_starts(settings, monkeypatch):
    monkeypatch.setattr("django_q.management.commands.qcluster.Cluster", FakeCluster)
    monkeypatch.delenv("DJANGO_ALLOW_ASYNC_UNSAFE", raising=False)  # set for Playwright; refused in deploy
    settings.DEBUG = True  # the start-up checks pass; tests/test_start_refusal.py covers their refusals
    settings.RECONCILE_INTERVAL_MINUTES = 10
    out = StringIO()
    call_command("qcluster", "--run-once", stdout=out)
    assert reconcile_row().minutes == 10
    assert "every 1 -> 10 min" in out.getvalue()


def heartbeat(minutes_ago: float) -> None:
    at = timezone.now() - timedelta(minutes=minutes_ago)
    ReconciliationRun.objects.create(started_at=at, finished_at=at, ok=True)


def test_health_allows_three_of_the_configured_intervals(settings):
    settings.RECONCILE_INTERVAL_MINUTES = 10
    heartbeat(minutes_ago=29)
    report = health.report()
    assert report["healthy"] and report["reconcile_interval_minutes"] == 10


def test_health_is_stale_after_three_of_the_configured_intervals(settings):
    settings.RECONCILE_INTERVAL_MINUTES = 10
    heartbeat(minutes_ago=31)
    report = health.report()
    assert not report["healthy"]
    assert report["problems"] == ["last reconciliation run finished 1860 s ago"]
