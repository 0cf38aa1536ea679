"""The outbox row moved from billing to the outbox app: the table, its rows, its constraints and
the permissions granted on it survive a real migration (MigrationExecutor), on SQLite and
PostgreSQL, and work queued under the old task path still runs."""

import pytest
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone
from django_q.models import Schedule

from billing import schedules
from billing.models import Order
from outbox.models import OutboundEmail
from tests.fixtures.migrations import MIGRATION_TEST_TIMEOUT

pytestmark = pytest.mark.timeout(MIGRATION_TEST_TIMEOUT)

BEFORE_THE_MOVE = ("billing", "0012_watchdog_email_kind")


def migrate(targets) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)


@pytest.fixture
def rows_written_before_the_move(transactional_db):
    """Migrate back to before the outbox app, write rows with the models of that time, then
    migrate forward again (also when setting up fails, so the next test finds today's schema)."""
    migrate([("outbox", None)])
    try:
        yield from _write_old_rows()
    finally:
        migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
        ContentType.objects.clear_cache()


def _write_old_rows():
    old = MigrationExecutor(connection).loader.project_state(BEFORE_THE_MOVE).apps
    plan = old.get_model("billing", "Plan").objects.create(slug="year", name="One year", amount_cents=24900)
    order = old.get_model("billing", "Order").objects.create(
        email="ada@example.com", plan=plan, amount_cents=24900, currency="usd", state="fulfilled"
    )
    Email = old.get_model("billing", "OutboundEmail")
    confirmation = Email.objects.create(
        order=order, kind="confirmation", to="ada@example.com", subject="Your access", body_text="t", body_html="h"
    )
    signin = Email.objects.create(kind="signin", to="ada@example.com", subject="Sign in", body_text="t", body_html="h")
    # What a database before the move holds: the model's content type under billing, and the
    # Support group's permission on it (support/migrations/0003). A test database is flushed
    # between transactional tests, which recreates content types for today's models; undo that.
    ContentType.objects.filter(app_label="outbox", model="outboundemail").delete()
    old_type, _ = ContentType.objects.get_or_create(app_label="billing", model="outboundemail")
    can_view, _ = Permission.objects.get_or_create(
        content_type=old_type, codename="view_outboundemail", defaults={"name": "Can view outbound email"}
    )
    Group.objects.get_or_create(name="Support")[0].permissions.add(can_view)
    ContentType.objects.clear_cache()
    migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
    ContentType.objects.clear_cache()
    assert ("outbox", "0001_initial") in MigrationExecutor(connection).loader.applied_migrations
    yield {"order": order.pk, "confirmation": confirmation.pk, "signin": signin.pk}


def test_the_move_keeps_every_row_rule_permission_and_queued_task(rows_written_before_the_move, mailoutbox):
    """One walk back before the outbox app and forward again (minutes on a 2-core machine: once,
    not once per check), then each thing the move must keep. The order matters: the refusal
    check adds an email."""
    rows = rows_written_before_the_move
    _it_keeps_the_table_and_every_row(rows)
    _the_support_group_can_still_read_emails()
    _a_send_task_queued_before_the_move_still_sends(rows, mailoutbox)
    _the_database_still_refuses_a_second_access_email(rows)


def _it_keeps_the_table_and_every_row(rows):
    assert OutboundEmail._meta.db_table == "billing_outboundemail"
    confirmation = OutboundEmail.objects.get(pk=rows["confirmation"])
    assert (confirmation.order_id, confirmation.kind, confirmation.to, confirmation.subject) == (
        rows["order"],
        "confirmation",
        "ada@example.com",
        "Your access",
    )
    assert OutboundEmail.objects.get(pk=rows["signin"]).order_id is None
    assert list(Order.objects.get(pk=rows["order"]).emails.values_list("pk", flat=True)) == [rows["confirmation"]]


def _the_database_still_refuses_a_second_access_email(rows):
    order = Order.objects.get(pk=rows["order"])
    for kind in ("recovery", "confirmation"):
        with pytest.raises(IntegrityError), transaction.atomic():
            OutboundEmail.objects.create(
                order=order, kind=kind, to=order.email, subject="s", body_text="t", body_html="h"
            )
    OutboundEmail.objects.create(order=order, kind="refund", to=order.email, subject="s", body_text="t", body_html="h")
    assert order.emails.count() == 2


def _the_support_group_can_still_read_emails():
    group = Group.objects.get(name="Support")
    assert group.permissions.filter(content_type__app_label="outbox", codename="view_outboundemail").exists()
    assert not ContentType.objects.filter(app_label="billing", model="outboundemail").exists()


def _a_send_task_queued_before_the_move_still_sends(rows, mailoutbox):
    from billing import emails  # the old dotted path django-q2 stored in the broker

    assert emails.send_outbound_email(rows["signin"]) == "sent"
    assert [m.subject for m in mailoutbox] == ["Sign in"]
    assert OutboundEmail.objects.get(pk=rows["signin"]).status == "sent"


@pytest.mark.django_db
def test_migrate_moves_the_sweep_schedule_to_the_outbox():
    Schedule.objects.filter(name=schedules.SEND_EMAILS).update(func="billing.emails.send_due_emails")
    assert schedules.sync() == ["schedule 'send due emails': func -> outbox.sending.send_due_emails"]
    assert Schedule.objects.get(name=schedules.SEND_EMAILS).func == "outbox.sending.send_due_emails"


@pytest.mark.django_db
def test_the_old_sweep_path_still_sweeps(mailoutbox):
    from billing import emails

    OutboundEmail.objects.create(
        kind="signin",
        to="bo@example.com",
        subject="Sign in",
        body_text="t",
        body_html="h",
        next_attempt_at=timezone.now(),
    )
    assert emails.send_due_emails() == 1
    assert [m.to for m in mailoutbox] == [["bo@example.com"]]
