"""Alerts to support: one per (order, reason), one follow-up if still open, never a storm.

The core raises them (reconciliation, adoption, health) and owns them; the console (support/)
shows them and self-service raises one per customer case.

Each alert is an outbox email to every address in SUPPORT_EMAILS, linking to the order in
admin and saying what to do. The q cluster sends them, except the watchdog's (`inline=True`:
a stopped reconciler, a stuck outbox), which the health check sends itself, because the q cluster
is what they are about.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from outbox import emails

from .models import Alert, Order

logger = logging.getLogger(__name__)

WHAT_TO_DO = {
    Alert.Reason.UNKNOWN_PAYMENT: "Check the customer got their access email; reply if they wrote in. "
    "No action is needed if the order is fulfilled.",
    Alert.Reason.NO_EMAIL: "Find the customer (Stripe dashboard: card, name, receipt), set their email on "
    "the order and fulfil it from the admin.",
    Alert.Reason.PAYMENT_MISMATCH: "Compare the payment with the order in Stripe; fulfil or refund by hand.",
    Alert.Reason.FULFIL_FAILED: "Open the order, read the timeline and fulfil it from the admin.",
    Alert.Reason.PAID_AFTER_FAILED: "The customer paid for an order we had closed: fulfil it, or refund them.",
    Alert.Reason.DUPLICATE_PAYMENT: "The customer was charged twice for one order: refund the second payment "
    "in Stripe (reconciliation records it) and tell them.",
    Alert.Reason.UNMATCHED_PAYMENT: "Nobody got access for this payment. Find it in the Stripe dashboard and what "
    "it paid for (a Payment Link, an invoice). If it was meant for PaidUp, refund it there and write to the "
    "customer; then mark the alert resolved (Alerts in the admin).",
    Alert.Reason.STALE_HEARTBEAT: "Reconciliation has stopped: check the q cluster (`systemctl status "
    "paidup-qcluster`, `journalctl -u paidup-qcluster`, `manage.py qmonitor`), restart it, then run "
    "`manage.py reconcile` by hand. You get an email when runs resume.",
    Alert.Reason.OUTBOX_STUCK: "Emails are due but nobody sends them, so customers are waiting for their access "
    "emails: check the q cluster (`systemctl status paidup-qcluster`) and restart it; if it runs, read the "
    "emails' last error in the admin (Outbound emails) for a problem with the email provider. "
    "You get an email when they go out again.",
    Alert.Reason.WEBHOOK_FAILED: "A Stripe event keeps failing: read its traceback in the admin "
    "(dj-stripe → Webhook event triggers).",
    Alert.Reason.ACCESS_BOUNCED: "The customer paid, but their mailbox refused the access email: the address is "
    "probably mistyped. Find the right one (a reply from them, the Stripe receipt, a support case) and use "
    "\u201cChange email\u201d on the order: it moves the access and sends a fresh sign-in link. The order page also "
    "lets the customer correct it once.",
    Alert.Reason.DOUBLE_PURCHASE: "One email paid for two orders within 24 hours, most likely a second purchase by "
    "accident. Open the support queue's \u201cPossible double purchase\u201d row: refund the later order there "
    "(one click, then confirm), or mark it resolved if they meant to buy twice (see docs/support.md, "
    "\u201cThey bought twice\u201d).",
    Alert.Reason.REFUND_FAILED: "The customer was told money is on its way and it is not: the refund failed or was "
    "cancelled in Stripe (often an expired or closed card). Write to them today (reply template "
    "'Your refund didn't go through'), agree another way to pay them back, and note it on the order.",
    Alert.Reason.REFUND_PROBLEM: "Stripe reported a refund PaidUp could not record (no order for its payment, "
    "another currency, more than the charge, or a status PaidUp does not know). Look the refund up in the "
    "Stripe dashboard; if it belongs to an order here, tell a developer. Nothing was counted.",
    Alert.Reason.CUSTOMER_CASE: "Read the case's diagnosis and reply to the customer within SUPPORT_REPLY_HOURS "
    "(the page and the email promised it): fulfil, attach the payment or refund, then resolve the case.",
}


def raise_alert(
    reason: str, message: str, *, order: Order | None = None, key: str | None = None, inline: bool = False
) -> Alert | None:
    """Open an alert and email support, unless one is already open for the same key.

    Returns the new alert, or None when it already existed (the unique key decides, so two
    concurrent callers raise one alert and one email per address). With `inline=True` (the
    watchdog) the emails are of kind WATCHDOG and sent by this process right after the commit,
    through `outbox.sending.send_due_now`, instead of being handed to the q cluster.
    """
    key = key or f"{reason}:{order.pk if order else 'system'}"
    try:
        with transaction.atomic():
            alert = Alert.objects.create(key=key, reason=reason, order=order, message=message)
    except IntegrityError:
        return None
    _email_support(alert, follow_up=False, inline=inline)
    if order is not None:
        order.log("alert", f"Support alerted: {alert.get_reason_display()}.", actor="system:alerts")
    logger.warning("alert %s: %s", key, message)
    return alert


def send_followups(*, after: timedelta | None = None) -> int:
    """One more email for each alert still open after `after` (default ALERT_FOLLOWUP_HOURS).

    Returns how many follow-ups were queued; each alert gets at most one, claimed by a
    conditional UPDATE so that two concurrent runs never send it twice. Raises nothing of its own."""
    after = after or timedelta(hours=settings.ALERT_FOLLOWUP_HOURS)
    now = timezone.now()
    due = Alert.objects.filter(resolved_at__isnull=True, followup_sent_at__isnull=True, created_at__lt=now - after)
    sent = 0
    for alert in due.select_related("order"):
        if Alert.objects.filter(pk=alert.pk, followup_sent_at__isnull=True).update(followup_sent_at=now):
            _email_support(alert, follow_up=True)
            sent += 1
    return sent


def resolve(key: str) -> int:
    """Mark the open alert `key` resolved now; returns how many rows that changed (0 or 1: the
    key is unique, and the conditional UPDATE lets only one concurrent caller win)."""
    return Alert.objects.filter(key=key, resolved_at__isnull=True).update(resolved_at=timezone.now())


def announce_recovery(key: str, message: str) -> bool:
    """Resolve the open alert `key` and email support that it is over ("RECOVERED"), sent inline
    like the watchdog's alerts. Returns whether this call resolved it: the conditional UPDATE in
    `resolve()` lets exactly one of several concurrent callers do it, so one email per address."""
    if not resolve(key):
        return False
    alert = Alert.objects.get(key=key)
    logger.info("alert %s resolved: %s", key, message)
    _email_support(alert, follow_up=False, inline=True, template="alert_recovered", extra={"recovery": message})
    return True


def _email_support(
    alert: Alert, *, follow_up: bool, inline: bool = False, template: str = "alert", extra: dict | None = None
) -> None:
    admin_url = settings.SITE_URL + (
        reverse("admin:billing_order_change", args=[alert.order.pk]) if alert.order else reverse("admin:index")
    )
    what_to_do = WHAT_TO_DO.get(alert.reason, "Open the admin and read the timeline.")
    if template == "alert_recovered":
        emails.send_watchdog_recovered(alert, admin_url=admin_url, what_to_do=what_to_do, **(extra or {}))
    else:
        send = emails.send_watchdog if inline else emails.send_followup if follow_up else emails.send_alert
        send(alert, admin_url=admin_url, what_to_do=what_to_do)
