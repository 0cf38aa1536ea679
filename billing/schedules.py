"""The django-q2 schedules PaidUp needs, kept in step with the settings.

The migrations 0002 and 0004 first created them with fixed intervals. `sync()` makes the rows
say what the settings say (reconciliation every RECONCILE_INTERVAL_MINUTES; the email sweep's
function moved from billing.emails to outbox.sending, and an old row is rewritten). It runs:

- after every `migrate` (a `post_migrate` receiver, see `apps.py`), and
- when the q cluster starts (`manage.py qcluster`, billing's override of django-q2's command),

so changing the variable and restarting the cluster is enough. Health (`billing.health`) reads
the same `reconcile_interval_minutes()`, so its staleness threshold moves with the schedule.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.utils import timezone

logger = logging.getLogger(__name__)

RECONCILE = "reconcile"
SEND_EMAILS = "send due emails"
# The self-service page's kept requests, queued again when the broker lost them (support/selfservice_retry.py).
SELF_SERVICE = "self-service retries"


def reconcile_interval_minutes() -> int:
    """Minutes between reconciliation runs (settings.RECONCILE_INTERVAL_MINUTES, at least 1;
    a value below 1 is refused at start-up by the check paidup.E007)."""
    return max(1, settings.RECONCILE_INTERVAL_MINUTES)


def wanted() -> dict[str, dict]:
    """Schedule name -> the fields its row must have."""
    every = {"schedule_type": "I", "repeats": -1}
    return {
        RECONCILE: {"func": "billing.tasks.reconcile", "minutes": reconcile_interval_minutes(), **every},
        SEND_EMAILS: {"func": "outbox.sending.send_due_emails", "minutes": 1, **every},
        SELF_SERVICE: {"func": "support.selfservice_retry.sweep", "minutes": 1, **every},
    }


def sync(using: str = DEFAULT_DB_ALIAS) -> list[str]:
    """Create or correct PaidUp's schedule rows; return one line per row changed ([] if none).

    A row whose interval shrinks gets its next run moved forward, so a schedule going from
    hourly to every minute does not wait out the old hour. A disabled row (repeats=0) is
    re-enabled: reconciliation is the safety net and must keep running.
    """
    from django_q.models import Schedule

    now = timezone.now()
    changes = []
    with transaction.atomic(using=using):
        for name, fields in wanted().items():
            row = Schedule.objects.using(using).select_for_update().filter(name=name).first()
            if row is None:
                Schedule.objects.using(using).create(name=name, next_run=now, **fields)
                changes.append(f"created schedule {name!r}: every {fields['minutes']} min")
                continue
            stale = {k: v for k, v in fields.items() if getattr(row, k) != v}
            if not stale:
                continue
            before = row.minutes
            for key, value in stale.items():
                setattr(row, key, value)
            soonest = now + timedelta(minutes=fields["minutes"])
            if row.next_run is None or row.next_run > soonest:
                row.next_run = soonest
            row.save(using=using)
            if "minutes" in stale:
                changes.append(f"schedule {name!r}: every {before} -> {fields['minutes']} min")
            else:  # e.g. the sweep's func, moved from billing.emails to outbox.sending
                changes.append(f"schedule {name!r}: " + ", ".join(f"{k} -> {v}" for k, v in stale.items()))
    for line in changes:
        logger.info(line)
    return changes


def sync_after_migrate(sender, using: str = DEFAULT_DB_ALIAS, **kwargs) -> None:
    """post_migrate receiver: sync once django-q2's table exists (it may not, when migrating
    backwards or only part of the way)."""
    from django_q.models import Schedule

    if Schedule._meta.db_table in connections[using].introspection.table_names():
        sync(using)
