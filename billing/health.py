"""Health: is the money path healthy, and is the watcher still watching?

Read by `GET /healthz` (uptime monitors) and `manage.py health` (cron). Both raise the
stale-heartbeat alert themselves, so that alert does not depend on the reconciler being alive.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

logger = logging.getLogger(__name__)


def _age(then, now) -> int | None:
    return round((now - then).total_seconds()) if then else None


def report() -> dict:
    from djstripe.models import WebhookEventTrigger

    from .models import Order, OutboundEmail, ReconciliationRun

    now = timezone.now()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        last_run = ReconciliationRun.objects.filter(ok=True, dry_run=False).order_by("-started_at").first()
        stuck = Order.objects.filter(state=Order.State.PAID)
        oldest_stuck = stuck.order_by("paid_at").values_list("paid_at", flat=True).first()
        oldest_email = (
            OutboundEmail.objects.filter(status__in=[OutboundEmail.Status.QUEUED, OutboundEmail.Status.RETRY])
            .order_by("created_at")
            .values_list("created_at", flat=True)
            .first()
        )
        data = {
            "database": "ok",
            "last_reconciliation_age_seconds": _age(last_run.finished_at if last_run else None, now),
            "last_reconciliation_run": last_run.pk if last_run else None,
            "paid_orders_stuck": stuck.count(),
            "oldest_stuck_age_seconds": _age(oldest_stuck, now),
            "failed_webhook_events": WebhookEventTrigger.objects.filter(valid=True, processed=False).count(),
            "emails_failed": OutboundEmail.objects.filter(status=OutboundEmail.Status.FAILED).count(),
            "oldest_queued_email_age_seconds": _age(oldest_email, now),
        }
    except DatabaseError as error:
        logger.error("health: database unreachable: %s", error)
        return {"healthy": False, "problems": ["database unreachable"], "database": "unreachable"}

    problems = []
    max_age = timedelta(minutes=3 * settings.RECONCILE_INTERVAL_MINUTES).total_seconds()
    if data["last_reconciliation_age_seconds"] is None:
        problems.append("reconciliation has never completed a run")
    elif data["last_reconciliation_age_seconds"] > max_age:
        problems.append(f"last reconciliation run finished {data['last_reconciliation_age_seconds']} s ago")
    if (data["oldest_stuck_age_seconds"] or 0) > settings.HEALTH_MAX_STUCK_SECONDS:
        problems.append(f"a paid order has waited {data['oldest_stuck_age_seconds']} s for fulfilment")
    return {"healthy": not problems, "problems": problems, **data}


def watch_heartbeat(data: dict) -> None:
    """Alert support once per outage when reconciliation has stopped; resolve when it is back."""
    from support.alerts import raise_alert, resolve
    from support.models import Alert

    if data.get("database") != "ok":
        return
    stale = any("reconciliation" in problem for problem in data["problems"])
    if (
        stale
        and data["last_reconciliation_run"] is None
        and not _taking_orders_for(3 * settings.RECONCILE_INTERVAL_MINUTES)
    ):
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
        )
    else:
        for open_key in Alert.objects.filter(reason=Alert.Reason.STALE_HEARTBEAT, resolved_at__isnull=True).values_list(
            "key", flat=True
        ):
            resolve(open_key)


def _taking_orders_for(minutes: int) -> bool:
    from .models import Order

    return Order.objects.filter(created_at__lt=timezone.now() - timedelta(minutes=minutes)).exists()
