"""Entry points for django-q2 schedules (kept import-light and explicit)."""

import logging

from outbox import sending

from . import ratelimit, reconciliation

logger = logging.getLogger("billing.reconciliation")


def reconcile() -> str:
    ratelimit.sweep()  # the order page's limiter rows, whether or not anyone used self-service
    record = reconciliation.run()
    if record is None:
        return "skipped: another run in progress"
    from .management.commands.reconcile import summary

    line = summary(record)
    # The heartbeat, one line a run: what an operator greps for first.
    logger.log(logging.INFO if record.ok else logging.ERROR, "reconciliation run %s: %s", record.pk, line)
    return line


def send_due_emails() -> int:
    return sending.send_due_emails()
