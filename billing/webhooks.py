"""Stripe webhook: a guarded front door for dj-stripe, and PaidUp's receivers.

The front door refuses, before anything is stored, an oversized body, a missing or bad
signature, a stale timestamp (over 300 s) and malformed JSON. A valid event goes to the inbox
(billing.webhook_inbox: dj-stripe's rows in fewer statements, and dj-stripe's own
`from_request` for what it does not cover), which stores it (WebhookEventTrigger, the durable
inbox), de-duplicates by event id and calls the receivers below inside one transaction: a 2xx
means all of it committed; an exception rolls the processing back, keeps the trigger row with
its traceback for replay, and answers 500 so that Stripe retries.

The receivers trust the event body: its signature was verified against our endpoint secret,
and a PaymentIntent that succeeded stays succeeded. fulfil() still checks amount and
currency against the order (invariant I1).
"""

import json
import logging

import stripe
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.http import HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from djstripe.event_handlers import (
    djstripe_receiver,
    handle_charge_dispute_event,
    handle_charge_event,
    handle_other_event,
)
from djstripe.models import Event, WebhookEndpoint, WebhookEventTrigger
from djstripe.signals import WEBHOOK_SIGNALS

from . import disputes, fraud_warnings, refunds, webhook_inbox
from .fulfilment import NotFulfillable, PaymentMismatch, find_order, fulfil_from_payment_intent
from .models import Order
from .models.orders import format_money
from .stripe_events import (
    DISPUTE_EVENTS,
    FRAUD_WARNING_EVENTS,
    PAYMENT_INTENT_EVENTS,
    REFUND_EVENTS,
    WEBHOOK_EVENTS,
)

__all__ = [
    "DISPUTE_EVENTS",
    "FRAUD_WARNING_EVENTS",
    "PAYMENT_INTENT_EVENTS",
    "REFUND_EVENTS",
    "WEBHOOK_EVENTS",
    "receiver",
    "stripe_webhook",
]

logger = logging.getLogger(__name__)

# dj-stripe's stock receiver mirrors each PaymentIntent by calling Stripe back (customer,
# PaymentIntent, payment method) inside the webhook's transaction, before ours runs: an API
# hiccup would then block fulfilment, and a backlog would cost three calls per event.
# PaidUp reads PaymentIntents live where it needs them, so the mirror is switched off here.
for _name in PAYMENT_INTENT_EVENTS:
    WEBHOOK_SIGNALS[_name].disconnect(handle_other_event, sender=Event)
# The same for charges: dj-stripe 2.11's handle_charge_event answers charge.refunded and
# charge.refund.updated by retrieving the Charge from Stripe (api_retrieve) and syncing it, its
# customer and payment method, inside the webhook's transaction. The refund's own fields are
# in the signed body; PaidUp records refunds from them (billing.refunds), no Stripe call. It has
# no stock receiver for refund.* events.
for _name in ("charge.refunded", "charge.refund.updated"):
    WEBHOOK_SIGNALS[_name].disconnect(handle_charge_event, sender=Event)

# The same for disputes: dj-stripe's stock receiver retrieves each dispute from Stripe (and its
# charge and balance transactions) inside the webhook's transaction. PaidUp records what the
# event says (billing/disputes.py) and lists disputes in reconciliation as the net.
for _name in DISPUTE_EVENTS:
    WEBHOOK_SIGNALS[_name].disconnect(handle_charge_dispute_event, sender=Event)


def receiver(*event_types: str):
    """Connect the decorated function to dj-stripe's signals for `event_types` (Stripe event type
    names, e.g. "charge.dispute.created"), as `djstripe_receiver` does.

    Raises ImproperlyConfigured, at import, for a type that `billing.stripe_events.WEBHOOK_EVENTS`
    does not list: `stripe_setup` subscribes the endpoint to that list only, so Stripe would never
    deliver the type and the receiver would never run. Every PaidUp receiver is connected here.
    """
    if not event_types:
        raise ImproperlyConfigured("receiver() needs at least one Stripe event type.")
    unlisted = [name for name in event_types if name not in WEBHOOK_EVENTS]
    if unlisted:
        raise ImproperlyConfigured(
            f"Stripe event types {unlisted} have a receiver but are not in "
            "billing.stripe_events.WEBHOOK_EVENTS, so the webhook endpoint is not subscribed to them. "
            "List them there, then run `manage.py stripe_setup`."
        )
    return djstripe_receiver(list(event_types))


class HttpResponsePayloadTooLarge(HttpResponse):
    status_code = 413


@csrf_exempt
@require_POST
@transaction.non_atomic_requests
def stripe_webhook(request, uuid):
    """POST /stripe/webhook/<uuid>/: the guarded front door (module docstring). Answers 400, 404,
    405 or 413 before anything is stored; else dj-stripe's answer: 200 with the trigger id once
    the event and its receivers committed, 500 when a receiver raised (invariant I6)."""
    try:
        length = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        return HttpResponseBadRequest("bad Content-Length")
    if length > settings.WEBHOOK_MAX_BODY_BYTES:
        return HttpResponsePayloadTooLarge("body too large")
    signature = request.headers.get("Stripe-Signature")
    if not signature:
        return HttpResponseBadRequest("missing Stripe-Signature")
    # Only the columns the front door and the inbox read (the owner account by its id): the
    # whole endpoint and account rows cost a first delivery ~5 % of its CPU. dj-stripe's own
    # path (webhook_inbox.covers() false) loads what else it reads when it reads it.
    endpoint = get_object_or_404(WebhookEndpoint.objects.only(*webhook_inbox.ENDPOINT_FIELDS), djstripe_uuid=uuid)
    body = request.body
    if len(body) > settings.WEBHOOK_MAX_BODY_BYTES:
        return HttpResponsePayloadTooLarge("body too large")
    try:
        payload = body.decode("utf-8")
        stripe.WebhookSignature.verify_header(payload, signature, endpoint.secret, endpoint.djstripe_tolerance)
    except (UnicodeDecodeError, stripe.SignatureVerificationError, ValueError):
        logger.warning("webhook refused: bad signature or stale timestamp")
        return HttpResponseBadRequest("bad signature")
    try:
        event = json.loads(payload)
    except ValueError:
        return HttpResponseBadRequest("malformed JSON")
    if not _is_event(event):
        return HttpResponseBadRequest("not a Stripe event")
    if webhook_inbox.covers(endpoint, event):
        trigger = webhook_inbox.receive(request, endpoint, payload, event)
        return HttpResponse(str(trigger.id))
    trigger = WebhookEventTrigger.from_request(request, webhook_endpoint=endpoint)
    if not trigger.valid:
        return HttpResponseBadRequest("not valid")
    return HttpResponse(str(trigger.id))


def _is_event(event) -> bool:
    """The shape dj-stripe needs. Anything less would be stored as a trigger, then refused
    or failed (500, retried by Stripe forever): refuse it here, before anything is stored."""
    return (
        isinstance(event, dict)
        and isinstance(event.get("id"), str)
        and event.get("object") == "event"
        and isinstance(event.get("type"), str)
        and isinstance(event.get("livemode"), bool)
        and isinstance(event.get("data"), dict)
        and isinstance(event["data"].get("object"), dict)
    )


@receiver("payment_intent.succeeded")
def on_payment_intent_succeeded(sender, event, **kwargs) -> None:
    """Fulfil the PaymentIntent's order via WEBHOOK (DESIGN.md "The paid path", step 5), with the
    event's `created` (Unix seconds) as the charge time. An order that cannot be fulfilled or
    does not match the payment (invariant I1) is logged and left for a person; the event still
    commits, as a retry could not fix it. Other exceptions propagate: dj-stripe rolls back and
    answers 500, and Stripe retries (invariant I6)."""
    payment_intent = event.data["object"]
    try:
        # The event's `created` is when the payment succeeded, by Stripe's clock: it decides
        # between the confirmation and the recovery email (fulfilment.is_late).
        fulfil_from_payment_intent(payment_intent, via=Order.Via.WEBHOOK, charged_at=event.created)
    except (NotFulfillable, PaymentMismatch) as problem:
        # Committing the event is right: retrying cannot fix this. A human must look.
        logger.error("payment %s needs attention: %s", payment_intent["id"], problem)
        order = find_order(payment_intent)
        if order is not None:
            order.log(
                "needs_attention",
                f"Stripe says {payment_intent['id']} succeeded, but: {problem}",
                actor="stripe:webhook",
                data={"event": event.id},
            )


@receiver("payment_intent.payment_failed")
def on_payment_intent_failed(sender, event, **kwargs) -> None:
    """A failed attempt is not a failed order: the customer may retry with another card.
    Never moves an order backwards."""
    payment_intent = event.data["object"]
    order = find_order(payment_intent)
    if order is None:
        return
    error = payment_intent.get("last_payment_error") or {}
    updated = Order.objects.filter(
        pk=order.pk, state=Order.State.PENDING, stripe_payment_intent_id=payment_intent["id"]
    ).update(stripe_payment_status="requires_payment_method")
    order.log(
        "payment:failed",
        f"Stripe reports the payment attempt failed: {error.get('message') or 'declined'}.",
        actor="stripe:webhook",
        data={"payment_intent": payment_intent["id"], "event": event.id, "applied": bool(updated)},
    )


@receiver("payment_intent.canceled")
def on_payment_intent_canceled(sender, event, **kwargs) -> None:
    """Close the order (pending → failed, Order.close_unpaid) when the cancelled PaymentIntent is
    its current one; otherwise only note it on the timeline: a late cancel never moves a paid
    order backwards, nor closes an order whose checkout replaced the PaymentIntent (invariant
    I5). Raises what the database raises (dj-stripe then answers 500 and Stripe retries)."""
    payment_intent = event.data["object"]
    order = find_order(payment_intent)
    if order is None:
        return
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order.pk)
        # "" or "creating": the checkout itself cancelled this PaymentIntent to replace it with a
        # new attempt (billing.checkout), so the order is not over.
        replaced = order.stripe_payment_status in ("", "creating")
        current = order.stripe_payment_intent_id == payment_intent["id"] and not replaced
        closed = current and order.close_unpaid(
            actor="stripe:webhook",
            message="The payment was cancelled in Stripe; nothing was charged.",
            payment_status="canceled",
            data={"payment_intent": payment_intent["id"], "event": event.id},
        )
        if not closed:
            order.log(
                "payment:canceled",
                f"Stripe cancelled {payment_intent['id']}; the order was {order.state}, left as it is.",
                actor="stripe:webhook",
            )


@receiver("refund.created", "refund.updated", "refund.failed", "charge.refund.updated")
def on_refund(sender, event, **kwargs) -> None:
    """A refund was made or changed, wherever (console, dashboard, API): the body is the Refund.
    Recorded once per refund id, its status moved on, or refused with a log line and an alert
    (billing.refunds.record_stripe_refund); never an exception, which Stripe would retry."""
    refund = event.data["object"]
    if refund.get("object") != "refund":
        message = f"{event.type} {event.id} carries a {refund.get('object')!r}, not a refund."
        refunds.refuse(None, message, key=f"refund_problem:{event.id}", source=f"event {event.id}")
        return
    outcome = refunds.record_stripe_refund(refund, actor="stripe:webhook", source=f"event {event.id}")
    logger.info("%s %s: refund %s %s", event.type, event.id, refund.get("id"), outcome)


@receiver("charge.refunded")
def on_charge_refunded(sender, event, **kwargs) -> None:
    """The body is the Charge. At the pinned API version it no longer lists its refunds (each
    comes as its own refund.created), so this records the card's last four digits for the
    refund emails, records any refunds it does list (older API versions), and notes on the
    timeline when Stripe's refunded total is ahead of ours until those events (or the minute's
    reconciliation scan) arrive."""
    charge = event.data["object"]
    order = refunds.order_for_payment(refunds.id_of(charge.get("payment_intent")))
    if order is None:
        logger.warning("charge.refunded %s: charge %s has no order here; left alone", event.id, charge.get("id"))
        return
    details = charge.get("payment_method_details")
    card = details.get("card") if isinstance(details, dict) else None
    refunds.note_card(order, card.get("last4") if isinstance(card, dict) else None)
    listed = charge.get("refunds")
    for refund in (listed.get("data") if isinstance(listed, dict) else None) or []:
        refunds.record_refund(order, refund, actor="stripe:webhook")
    order.refresh_from_db()
    stripe_total = charge.get("amount_refunded")
    if isinstance(stripe_total, int) and stripe_total != order.refunded_cents:
        order.log(
            "refund:pending_event",
            f"Stripe says {format_money(stripe_total, order.currency)} of charge {charge.get('id')} is refunded; "
            f"{order.refunded} recorded here so far. Each refund is recorded when its own event "
            "arrives, or by reconciliation within minutes.",
            actor="stripe:webhook",
            data={"event": event.id, "stripe_refunded": stripe_total, "recorded": order.refunded_cents},
        )


@receiver(*DISPUTE_EVENTS)
def on_dispute(sender, event, **kwargs) -> None:
    """Record the dispute as the event shows it (billing.disputes.record_dispute: idempotent,
    order-independent, alerted once). A body without a dispute id is logged and alerted there,
    never a 500 that Stripe would retry for days."""
    disputes.record_dispute(
        event.data["object"], event_created=_created(event), actor="stripe:webhook", event_type=event.type
    )


@receiver(*FRAUD_WARNING_EVENTS)
def on_early_fraud_warning(sender, event, **kwargs) -> None:
    """Record the warning (billing.fraud_warnings.record_warning), which alerts and applies EFW_AUTO_REFUND."""
    fraud_warnings.record_warning(event.data["object"], event_created=_created(event), actor="stripe:webhook")


def _created(event) -> int:
    """The event's `created` in Unix seconds (dj-stripe stores it as a datetime)."""
    created = event.created
    return int(created.timestamp()) if hasattr(created, "timestamp") else int(created or 0)
