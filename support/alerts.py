"""Alerts to support: one per (order, reason), one follow-up if still open, never a storm.

Each alert is an outbox email to every address in SUPPORT_EMAILS, linking to the order in
admin and saying what to do.
"""

import logging
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from billing import emails
from billing.models import Order, OutboundEmail

from .models import Alert

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
    Alert.Reason.STALE_HEARTBEAT: "Reconciliation has stopped: check the q cluster (`manage.py qmonitor`), "
    "then run `manage.py reconcile` by hand.",
    Alert.Reason.WEBHOOK_FAILED: "A Stripe event keeps failing: read its traceback in the admin "
    "(dj-stripe → Webhook event triggers).",
    Alert.Reason.CUSTOMER_CASE: "Read the case's diagnosis and reply to the customer within SUPPORT_REPLY_HOURS "
    "(the page and the email promised it): fulfil, attach the payment or refund, then resolve the case.",
}


def raise_alert(reason: str, message: str, *, order: Order | None = None, key: str | None = None) -> Alert | None:
    """Open an alert and email support, unless one is already open for the same key.

    Returns the new alert, or None when it already existed.
    """
    key = key or f"{reason}:{order.pk if order else 'system'}"
    try:
        with transaction.atomic():
            alert = Alert.objects.create(key=key, reason=reason, order=order, message=message)
    except IntegrityError:
        return None
    _email_support(alert, follow_up=False)
    if order is not None:
        order.log("alert", f"Support alerted: {alert.get_reason_display()}.", actor="system:alerts")
    logger.warning("alert %s: %s", key, message)
    return alert


def send_followups(*, after: timedelta | None = None) -> int:
    """One more email for each alert still open after `after` (default ALERT_FOLLOWUP_HOURS)."""
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
    return Alert.objects.filter(key=key, resolved_at__isnull=True).update(resolved_at=timezone.now())


def _email_support(alert: Alert, *, follow_up: bool) -> None:
    admin_url = settings.SITE_URL + (
        reverse("admin:billing_order_change", args=[alert.order.pk]) if alert.order else reverse("admin:index")
    )
    context = {
        "alert": alert,
        "follow_up": follow_up,
        "admin_url": admin_url,
        "what_to_do": WHAT_TO_DO.get(alert.reason, "Open the admin and read the timeline."),
    }
    subject, text, html = emails.render_email("alert", context)
    for address in settings.SUPPORT_EMAILS:
        email = OutboundEmail.objects.create(
            kind=OutboundEmail.Kind.ALERT, to=address, subject=subject, body_text=text, body_html=html
        )
        transaction.on_commit(lambda pk=email.pk: emails.hand_off(pk))
