"""Stripe webhook: a guarded front door for dj-stripe, and PaidUp's receivers.

The front door refuses, before anything is stored, an oversized body, a missing or bad
signature, a stale timestamp (over 300 s) and malformed JSON. A valid event goes to
dj-stripe, which stores it (WebhookEventTrigger, the durable inbox), de-duplicates by event
id and calls the receivers below inside one transaction: a 2xx means all of it committed; an
exception rolls the processing back, keeps the trigger row with its traceback for replay,
and answers 500 so that Stripe retries.

The receivers trust the event body: its signature was verified against our endpoint secret,
and a PaymentIntent that succeeded stays succeeded. fulfil() still checks amount and
currency against the order (invariant I1).
"""

import json
import logging

import stripe
from django.conf import settings
from django.db import transaction
from django.http import HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from djstripe.event_handlers import djstripe_receiver, handle_other_event
from djstripe.models import Event, WebhookEndpoint, WebhookEventTrigger
from djstripe.signals import WEBHOOK_SIGNALS

from .fulfilment import NotFulfillable, PaymentMismatch, find_order, fulfil_from_payment_intent
from .models import Order

logger = logging.getLogger(__name__)

PAYMENT_INTENT_EVENTS = ["payment_intent.succeeded", "payment_intent.payment_failed", "payment_intent.canceled"]

# dj-stripe's stock receiver mirrors each PaymentIntent by calling Stripe back (customer,
# PaymentIntent, payment method) inside the webhook's transaction, before ours runs: an API
# hiccup would then block fulfilment, and a backlog would cost three calls per event.
# PaidUp reads PaymentIntents live where it needs them, so the mirror is switched off here.
for _name in PAYMENT_INTENT_EVENTS:
    WEBHOOK_SIGNALS[_name].disconnect(handle_other_event, sender=Event)


class HttpResponsePayloadTooLarge(HttpResponse):
    status_code = 413


@csrf_exempt
@require_POST
@transaction.non_atomic_requests
def stripe_webhook(request, uuid):
    try:
        length = int(request.headers.get("Content-Length") or 0)
    except ValueError:
        return HttpResponseBadRequest("bad Content-Length")
    if length > settings.WEBHOOK_MAX_BODY_BYTES:
        return HttpResponsePayloadTooLarge("body too large")
    signature = request.headers.get("Stripe-Signature")
    if not signature:
        return HttpResponseBadRequest("missing Stripe-Signature")
    endpoint = get_object_or_404(WebhookEndpoint, djstripe_uuid=uuid)
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


@djstripe_receiver("payment_intent.succeeded")
def on_payment_intent_succeeded(sender, event, **kwargs) -> None:
    payment_intent = event.data["object"]
    try:
        fulfil_from_payment_intent(payment_intent, via=Order.Via.WEBHOOK)
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


@djstripe_receiver("payment_intent.payment_failed")
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


@djstripe_receiver("payment_intent.canceled")
def on_payment_intent_canceled(sender, event, **kwargs) -> None:
    payment_intent = event.data["object"]
    order = find_order(payment_intent)
    if order is None:
        return
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order.pk)
        if order.state == Order.State.PENDING and order.stripe_payment_intent_id == payment_intent["id"]:
            order.stripe_payment_status = "canceled"
            order.save(update_fields=["stripe_payment_status", "updated_at"])
            order.transition(
                Order.State.FAILED,
                actor="stripe:webhook",
                message="The payment was cancelled in Stripe; nothing was charged.",
                data={"payment_intent": payment_intent["id"], "event": event.id},
            )
        else:
            order.log(
                "payment:canceled",
                f"Stripe cancelled {payment_intent['id']}; the order was {order.state}, left as it is.",
                actor="stripe:webhook",
            )
