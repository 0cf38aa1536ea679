"""Entry points for django-q2 schedules (kept import-light and explicit)."""

from . import emails, reconciliation


def reconcile() -> str:
    record = reconciliation.run()
    if record is None:
        return "skipped: another run in progress"
    from .management.commands.reconcile import summary

    return summary(record)


def send_due_emails() -> int:
    return emails.send_due_emails()
