"""What the email provider says happened to an email after we sent it, and what that means.

The ESP's tracking webhook (billing/email_webhooks.py, Postmark's format through anymail) sends
anymail's normalised `AnymailTrackingEvent` on the `anymail.signals.tracking` signal; the
receiver here, `on_tracking`, records it with `record_event()`:

- the email is found by the ESP's message id, which the outbox stored at send
  (`OutboundEmail.provider_message_id`, anymail's `message.anymail_status.message_id`);
- delivered, bounced, rejected, complained and deferred are stored on the row with their time
  (`OutboundEmail.record_delivery`: older news and a "deferred" after a final word are ignored);
  an order's email also gets a timeline row;
- an access email (confirmation, recovery, sign-in link) that bounced or was rejected, sent to
  the address the order still has, raises the alert "Access email bounced" (one per email), which
  puts the order in the console's queue; the order page then offers the customer one correction
  (billing/email_change.py).

Nothing is changed for an event that names no email of ours, contradicts the email it names
(another order's reference or another recipient in the event), or says nothing about delivery
(opens, clicks): `record_event` returns an Outcome saying so, and the webhook answers with it.

Races: the event locks the order row (then the email row) before it looks at the order's
address, as `email_change.change_email()` locks the order row before it changes the address. So
a bounce and a correction at the same moment end one of two ways, both right: the bounce first
(alert raised, then resolved by the correction), or the correction first (the bounce is about an
address the order no longer has: recorded on the email, no alert).
"""

import logging
from dataclasses import dataclass

from anymail.signals import EventType, tracking
from django.db import transaction
from django.dispatch import receiver
from django.utils import timezone

from accounts.addresses import normalize_email

from .alerts import raise_alert
from .models import Alert, Order, OutboundEmail

logger = logging.getLogger(__name__)

# anymail's event types → what the outbox row stores. Everything else (opened, clicked,
# queued, sent, unsubscribed...) says nothing about whether the mailbox got it.
TRACKED = {
    EventType.DELIVERED: OutboundEmail.Delivery.DELIVERED,
    EventType.BOUNCED: OutboundEmail.Delivery.BOUNCED,
    EventType.REJECTED: OutboundEmail.Delivery.REJECTED,
    EventType.COMPLAINED: OutboundEmail.Delivery.COMPLAINED,
    EventType.DEFERRED: OutboundEmail.Delivery.DEFERRED,
}
# Emails that carry a way in: a bounce of one of these leaves a paying customer locked out.
ACCESS_EMAIL_KINDS = (*OutboundEmail.ACCESS_KINDS, OutboundEmail.Kind.SIGNIN)

RECORDED, IGNORED, STALE, UNKNOWN, NOT_YET, MISMATCH = "recorded", "ignored", "stale", "unknown", "not_yet", "mismatch"


@dataclass(frozen=True)
class Outcome:
    """What `record_event` did: `code` (RECORDED, IGNORED, STALE, UNKNOWN, NOT_YET, MISMATCH)
    and a sentence for the ESP's webhook log. Only RECORDED changed anything."""

    code: str
    detail: str


@receiver(tracking, dispatch_uid="billing.delivery.on_tracking")
def on_tracking(sender, event, esp_name: str, **kwargs) -> Outcome:
    """anymail's tracking signal → `record_event`; the webhook view reads the returned Outcome."""
    return record_event(event)


def record_event(event) -> Outcome:
    """Record one anymail `AnymailTrackingEvent` (module docstring). Returns an Outcome; raises
    nothing of its own (a database error propagates, and the ESP retries on the 500)."""
    delivery = TRACKED.get(event.event_type)
    if delivery is None:
        return Outcome(IGNORED, f"{event.event_type} events are not tracked")
    message_id = str(event.message_id or "")
    if not message_id or len(message_id) > 255:
        return Outcome(UNKNOWN, "the event names no message id")
    email = OutboundEmail.objects.filter(provider_message_id=message_id).select_related("order").first()
    if email is None:
        return _unknown(event, message_id)
    if problem := _contradiction(event, email):
        logger.warning("tracking event for email %s refused: %s", email.pk, problem)
        return Outcome(MISMATCH, problem)
    at = event.timestamp or timezone.now()
    detail = " ".join(str(part) for part in (event.description, event.mta_response) if part)[:500]
    with transaction.atomic():
        order = _lock_order_of(email)
        email = OutboundEmail.objects.select_for_update().get(pk=email.pk)
        if not email.record_delivery(delivery, at, detail):
            return Outcome(
                STALE, f"older than what we know ({email.delivery} at {email.delivery_at:%Y-%m-%d %H:%M:%S})"
            )
        if order is not None:
            _tell_order(order, email, detail)
    return Outcome(RECORDED, f"email {email.pk}: {delivery}")


def _unknown(event, message_id: str) -> Outcome:
    """No row has this message id. If the event's metadata names one of our rows that has no id
    yet, the send's answer is still being stored: NOT_YET (the ESP should try again later)."""
    metadata = event.metadata if isinstance(event.metadata, dict) else {}
    row = str(metadata.get("outbound_email_id", ""))
    if row.isdigit() and OutboundEmail.objects.filter(pk=int(row), provider_message_id="").exists():
        return Outcome(NOT_YET, "that email is still being sent; try again later")
    logger.info("tracking event for unknown message id %s ignored", message_id[:80])
    return Outcome(UNKNOWN, "no email of ours has that message id")


def _contradiction(event, email: OutboundEmail) -> str:
    """Why the event cannot be about `email` ("" when it can): the metadata anymail sent with
    it (outbox.sending sets order_reference and outbound_email_id) or its recipient differ."""
    metadata = event.metadata if isinstance(event.metadata, dict) else {}
    reference = metadata.get("order_reference")
    if reference is not None and reference != (email.order.reference if email.order_id else None):
        return "the event names another order than the email it is about"
    row = metadata.get("outbound_email_id")
    if row is not None and str(row) != str(email.pk):
        return "the event names another email than the one with its message id"
    if event.recipient and normalize_email(event.recipient) != normalize_email(email.to):
        return "the event's recipient is not the email's"
    return ""


def order_of(email: OutboundEmail) -> Order | None:
    """The order an email is about: its own, or for a sign-in link (which belongs to a person,
    not an order) the newest fulfilled order with that address. None when there is none."""
    if email.order_id:
        return email.order
    if email.kind == OutboundEmail.Kind.SIGNIN:
        return Order.objects.filter(email=email.to, state=Order.State.FULFILLED).order_by("-created_at").first()
    return None


def _lock_order_of(email: OutboundEmail) -> Order | None:
    order = order_of(email)
    return Order.objects.select_for_update().get(pk=order.pk) if order is not None else None


def _tell_order(order: Order, email: OutboundEmail, detail: str) -> None:
    """The order's timeline row, and for an access email its address could not reach, the
    alert (only while the order still has that address: a corrected order is not locked out)."""
    what = email.get_delivery_display().lower()
    order.log(
        f"email:{email.delivery}",
        f"{email.get_kind_display()} email to {email.to}: {what} at {email.delivery_at:%Y-%m-%d %H:%M:%S} UTC"
        + (f" ({detail})" if detail else "")
        + ".",
        actor="esp:tracking",
        data={"email": email.pk, "delivery": email.delivery},
    )
    if email.delivery in OutboundEmail.UNREACHABLE and email.kind in ACCESS_EMAIL_KINDS and order.email == email.to:
        raise_alert(
            Alert.Reason.ACCESS_BOUNCED,
            f"The {email.get_kind_display().lower()} email to {email.to} for {order.reference} {what}"
            + (f": {detail.rstrip('.')}" if detail else "")
            + ". The customer paid and cannot get in; the address is probably mistyped.",
            order=order,
            key=bounce_alert_key(email),
        )


def bounce_alert_key(email: OutboundEmail) -> str:
    """One "Access email bounced" alert per email row."""
    return f"{Alert.Reason.ACCESS_BOUNCED}:{email.pk}"


def unreachable_access_email(order: Order) -> OutboundEmail | None:
    """The access email that shows the order's address cannot be reached: of the access emails
    to the order's current address (its confirmation or recovery, sign-in links sent there since
    the order was created), the newest one the ESP gave a final word on, when that word is
    bounced or rejected. None when it was delivered (or complained about: that is delivered),
    when no final word came yet, or when there is no email. A link to a corrected address is to
    another address, so a corrected order is not unreachable until that one bounces too."""
    if not order.email:
        return None
    final = [OutboundEmail.Delivery.DELIVERED, OutboundEmail.Delivery.COMPLAINED, *OutboundEmail.UNREACHABLE]
    own = OutboundEmail.objects.filter(order=order, kind__in=OutboundEmail.ACCESS_KINDS)
    links = OutboundEmail.objects.filter(kind=OutboundEmail.Kind.SIGNIN, created_at__gte=order.created_at)
    newest = [
        emails.filter(to=order.email, delivery__in=final).order_by("-created_at", "-id").first()
        for emails in (own, links)
    ]
    newest = max((e for e in newest if e), key=lambda e: (e.created_at, e.pk), default=None)
    return newest if newest is not None and newest.delivery in OutboundEmail.UNREACHABLE else None
