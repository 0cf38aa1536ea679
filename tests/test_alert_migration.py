"""Alerts moved from support to the core without losing a row (billing/migrations/0013 and
support/migrations/0009): the table and its rows stay, the permissions follow the model."""

import pytest
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType

from billing.models import Alert
from tests.factories import OrderFactory
from tests.fixtures.migrations import MIGRATION_TEST_TIMEOUT, latest

pytestmark = pytest.mark.timeout(MIGRATION_TEST_TIMEOUT)

BEFORE = [("support", "0008_outbox_stuck_alert"), ("billing", "0012_watchdog_email_kind")]
# Just past the move. Every later migration is walked once, at the end: going to the latest and
# back twice walked them three times (over three minutes on PostgreSQL with the apps added since).
AFTER = [("support", "0009_alert_moves_to_core"), ("billing", "0013_alert_moves_to_core")]


def test_it_keeps_every_alert_and_who_may_see_them_across_the_move(migrator):
    migrate = migrator
    order = OrderFactory()  # the orders table is the same before and after: make it with today's model
    old_apps = migrate(BEFORE)
    OldAlert = old_apps.get_model("support", "Alert")
    OldAlert.objects.create(key=f"fulfil_failed:{order.pk}", reason="fulfil_failed", order_id=order.pk, message="m1")
    OldAlert.objects.create(key="stale_heartbeat:1", reason="stale_heartbeat", message="m2")
    OldPermission = old_apps.get_model("auth", "Permission")
    readers = old_apps.get_model("auth", "Group").objects.create(name="Alert readers")
    readers.permissions.add(OldPermission.objects.get(content_type__app_label="support", codename="view_alert"))

    new_apps = migrate(AFTER)
    NewAlert = new_apps.get_model("billing", "Alert")

    assert [(a.key, a.order_id, a.message) for a in NewAlert.objects.order_by("pk")] == [
        (f"fulfil_failed:{order.pk}", order.pk, "m1"),
        ("stale_heartbeat:1", None, "m2"),
    ]
    assert list(NewAlert.objects.filter(order_id=order.pk).values_list("reason", flat=True)) == ["fulfil_failed"]
    assert not ContentType.objects.filter(app_label="support", model="alert").exists()
    readers = Group.objects.get(name="Alert readers")
    assert readers.permissions.filter(content_type__app_label="billing", codename="view_alert").exists()

    back_apps = migrate(BEFORE)
    assert sorted(back_apps.get_model("support", "Alert").objects.values_list("message", flat=True)) == ["m1", "m2"]
    assert readers.permissions.filter(content_type__app_label="support", codename="view_alert").exists()

    migrate(latest())  # leave the database as every other test expects it
    assert list(Alert.objects.order_by("pk").values_list("message", flat=True)) == ["m1", "m2"]
    assert list(order.alerts.values_list("reason", flat=True)) == ["fulfil_failed"]
