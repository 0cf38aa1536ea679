"""Deprecated: the outbox lives in the outbox app (outbox.emails, outbox.sending).

Kept only because django-q2 stores a task's function as a dotted path. Send tasks already
waiting in the broker when a deployment upgrades were queued as
"billing.emails.send_outbound_email", and until `migrate` (or the cluster's start) runs
billing.schedules.sync(), the sweep's schedule row still says "billing.emails.send_due_emails".
Both must keep working for those few minutes, so they forward to the new functions. Nothing
in PaidUp calls them; remove this module a release after the move.
"""

from outbox import sending


def send_outbound_email(email_id: int) -> str:
    """Deprecated alias of outbox.sending.send_outbound_email (for tasks queued before the move)."""
    return sending.send_outbound_email(email_id)


def send_due_emails() -> int:
    """Deprecated alias of outbox.sending.send_due_emails (for a schedule row not yet synced)."""
    return sending.send_due_emails()
