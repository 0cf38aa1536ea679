"""Entry points for django-q2 schedules (kept import-light and explicit)."""

import logging

from outbox import sending

from . import ratelimit, reconciliation

logger = logging.getLogger("billing.reconciliation")


def reconcile() -> str:
    """The scheduled reconciliation (every minute by default): sweep the rate-limit rows, run
    billing.reconciliation.run() and return its one-line summary for the q admin, or
    "skipped: another run in progress". Logs the heartbeat line (ERROR when the run was not ok).
    Raises what the run raises (it records its own errors; q2 shows anything else)."""
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
    """The outbox sweep: send the email rows whose next attempt is due; returns how many went
    sent (outbox.sending.send_due_emails: at most 200 a run)."""
    return sending.send_due_emails()
