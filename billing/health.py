"""Health: is the money path healthy, and is the watcher still watching?

Read by `GET /healthz` (uptime monitors) and `manage.py health` (cron, the systemd timer).
Both call `watch()`, which raises the watchdog's alerts (reconciliation stopped, emails not
going out) and *sends them itself*, synchronously, because the q cluster that sends every other
email is exactly what these alerts are about (DESIGN.md: "their alert reaches people by a path
that does not need the worker that died"). When the trouble is over it sends a "recovered" email.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

from outbox import sending

from .schedules import reconcile_interval_minutes

logger = logging.getLogger(__name__)


def _age(then, now) -> int | None:
    return round((now - then).total_seconds()) if then else None


def report() -> dict:
    """The health of the money path now, as `/healthz` and `manage.py health` show it.

    Returns a dict: "healthy" (bool), "problems" (list of sentences for a person), "database"
    ("ok"/"unreachable") and, when the database answers, the figures the problems come from:
    ages in whole seconds (None when there is nothing to age), counts of stuck paid orders,
    failed webhook events, failed and overdue emails, and "reconcile_interval_minutes".
    Unhealthy when reconciliation has never finished or finished longer ago than
    HEALTH_MAX_RECONCILE_AGE_SECONDS (default three schedule intervals), a paid order has waited
    over HEALTH_MAX_STUCK_SECONDS (invariant I2), or emails are overdue (`outbox_stuck`).
    Never raises for a database error: it reports it (DESIGN.md "watching the watcher").
    """
    from djstripe.models import WebhookEventTrigger

    from .models import Order, OutboundEmail, ReconciliationRun

    now = timezone.now()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        last_run = ReconciliationRun.objects.filter(ok=True, dry_run=False).order_by("-started_at").first()
        stuck = Order.objects.filter(state=Order.State.PAID)
        oldest_stuck = stuck.order_by("paid_at").values_list("paid_at", flat=True).first()
        waiting = OutboundEmail.objects.filter(status__in=[OutboundEmail.Status.QUEUED, OutboundEmail.Status.RETRY])
        oldest_email = waiting.order_by("created_at").values_list("created_at", flat=True).first()
        # Due (its next attempt time has come) and still unsent: nobody is sending. A retry
        # waiting out its backoff is not overdue.
        overdue = waiting.filter(next_attempt_at__lte=now)
        oldest_due = overdue.order_by("next_attempt_at").values_list("next_attempt_at", flat=True).first()
        data = {
            "database": "ok",
            "last_reconciliation_age_seconds": _age(last_run.finished_at if last_run else None, now),
            "last_reconciliation_run": last_run.pk if last_run else None,
            "paid_orders_stuck": stuck.count(),
            "oldest_stuck_age_seconds": _age(oldest_stuck, now),
            "failed_webhook_events": WebhookEventTrigger.objects.filter(valid=True, processed=False).count(),
            "emails_failed": OutboundEmail.objects.filter(status=OutboundEmail.Status.FAILED).count(),
            "oldest_queued_email_age_seconds": _age(oldest_email, now),
            "emails_overdue": overdue.count() if oldest_due else 0,
            "oldest_overdue_email_seconds": _age(oldest_due, now),
        }
    except DatabaseError as error:
        logger.error("health: database unreachable: %s", error)
        return {"healthy": False, "problems": ["database unreachable"], "database": "unreachable"}

    problems = []
    interval = reconcile_interval_minutes()
    data["reconcile_interval_minutes"] = interval
    # Three intervals of the schedule unless HEALTH_MAX_RECONCILE_AGE_SECONDS says otherwise.
    max_age = settings.HEALTH_MAX_RECONCILE_AGE_SECONDS or 3 * 60 * interval
    if data["last_reconciliation_age_seconds"] is None:
        problems.append("reconciliation has never completed a run")
    elif data["last_reconciliation_age_seconds"] > max_age:
        problems.append(f"last reconciliation run finished {data['last_reconciliation_age_seconds']} s ago")
    if (data["oldest_stuck_age_seconds"] or 0) > settings.HEALTH_MAX_STUCK_SECONDS:
        problems.append(f"a paid order has waited {data['oldest_stuck_age_seconds']} s for fulfilment")
    if outbox_stuck(data):
        waited = data["oldest_overdue_email_seconds"]
        problems.append(f"{data['emails_overdue']} emails due but unsent, the oldest for {waited} s")
    return {"healthy": not problems, "problems": problems, **data}


def outbox_stuck(data: dict) -> bool:
    """Emails have been due for longer than HEALTH_MAX_EMAIL_DELAY_SECONDS: the q cluster that
    sends them (or the email provider) is down."""
    return (data.get("oldest_overdue_email_seconds") or 0) > settings.HEALTH_MAX_EMAIL_DELAY_SECONDS


def watch(data: dict) -> None:
    """Raise or resolve the watchdog's alerts for this `report()` and send their emails now.

    Safe under concurrent probes: an alert is one row per key (unique), a recovery is a
    conditional UPDATE, and every email row is claimed before it is sent, so each alert and each
    "recovered" notice reaches each SUPPORT_EMAILS address once. Costs three or four queries
    when there is nothing to do; sends at most one batch of watchdog emails when there is.
    Never raises for a failed send (the row records the error and the next probe retries it).
    """
    from .models import OutboundEmail

    if data.get("database") != "ok":
        return
    watch_heartbeat(data)
    watch_outbox(data)
    # Retries of watchdog emails whose first send failed (the ESP was down): nobody else will.
    sending.send_due_now(OutboundEmail.Kind.WATCHDOG)


def watch_heartbeat(data: dict) -> None:
    """Alert support once per outage when reconciliation has stopped; say so when it is back."""
    from .alerts import announce_recovery, raise_alert
    from .models import Alert

    if data.get("database") != "ok":
        return
    stale = any("reconciliation" in problem for problem in data["problems"])
    if stale and data["last_reconciliation_run"] is None and not _taking_orders_for(3 * reconcile_interval_minutes()):
        # A fresh deploy probed before its first run is unhealthy (503), but pages nobody:
        # there is nothing to reconcile until the site has been taking orders for a while.
        return
    key = f"stale_heartbeat:{data['last_reconciliation_run'] or 'never'}"
    if stale:
        raise_alert(
            Alert.Reason.STALE_HEARTBEAT,
            "Reconciliation has not completed a run for "
            + (f"{data['last_reconciliation_age_seconds']} s." if data["last_reconciliation_run"] else "ever."),
            key=key,
            inline=True,
        )
    else:
        for open_key in _open_alerts(Alert.Reason.STALE_HEARTBEAT):
            announce_recovery(
                open_key,
                f"Reconciliation is running again: its last run finished {data['last_reconciliation_age_seconds']} s "
                "ago. Payments made while it was stopped have been checked by that run.",
            )


def watch_outbox(data: dict) -> None:
    """Alert support once per outage when due emails wait unsent; say so when they go out again."""
    from .alerts import announce_recovery, raise_alert
    from .models import Alert, OutboundEmail

    open_keys = _open_alerts(Alert.Reason.OUTBOX_STUCK)
    if outbox_stuck(data):
        if open_keys:
            return
        oldest = (
            OutboundEmail.objects.filter(status__in=[OutboundEmail.Status.QUEUED, OutboundEmail.Status.RETRY])
            .filter(next_attempt_at__lte=timezone.now())
            .order_by("next_attempt_at", "pk")
            .values_list("pk", flat=True)
            .first()
        )
        raise_alert(
            Alert.Reason.OUTBOX_STUCK,
            f"{data['emails_overdue']} emails are due but unsent; the oldest has waited "
            f"{data['oldest_overdue_email_seconds']} s. The q cluster sends them: it looks stopped.",
            key=f"outbox_stuck:{oldest}",
            inline=True,
        )
    else:
        for open_key in open_keys:
            announce_recovery(open_key, "Emails are going out again: none has been waiting past its time.")


def _open_alerts(reason: str) -> list[str]:
    from .models import Alert

    return list(Alert.objects.filter(reason=reason, resolved_at__isnull=True).values_list("key", flat=True))


def _taking_orders_for(minutes: int) -> bool:
    from .models import Order

    return Order.objects.filter(created_at__lt=timezone.now() - timedelta(minutes=minutes)).exists()
