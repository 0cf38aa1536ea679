"""Checkout as a service: the order is committed before any money moves."""

import logging
from dataclasses import dataclass

import stripe
from django.db import transaction
from django.utils import timezone

from . import gateway
from .failpoints import failpoint
from .fulfilment import fulfil
from .models import Order, Plan

logger = logging.getLogger(__name__)

# PaymentIntent statuses after which a new attempt may be made (nothing can still succeed).
RETRYABLE = {"", "declined", "requires_payment_method", "canceled"}


@dataclass
class Outcome:
    order: Order
    # "done" (go to the order page), "action" (3-D Secure in the page), "declined"
    kind: str
    client_secret: str = ""
    message: str = ""


def open_order(reference: str, email: str, plan: Plan) -> Order:
    """The pending order for this checkout, created and committed if new."""
    with transaction.atomic():
        order, created = Order.objects.select_for_update().get_or_create(
            reference=reference,
            defaults={
                "email": email,
                "plan": plan,
                "amount_cents": plan.amount_cents,
                "currency": plan.currency,
            },
        )
        if created:
            order.log("order:created", f"Checkout started for {email}: {plan.name}, {order.price}.", actor="customer")
        elif order.state == Order.State.PENDING and order.stripe_payment_status in RETRYABLE:
            _change_details(order, email, plan)
    failpoint("after_order_commit")
    return order


def _change_details(order: Order, email: str, plan: Plan) -> None:
    """Nothing charged yet: the customer may correct their email or choose another plan.
    Caller holds the row lock."""
    changes = {"email": email, "plan": plan, "amount_cents": plan.amount_cents, "currency": plan.currency}
    if any(getattr(order, field) != value for field, value in changes.items()):
        for field, value in changes.items():
            setattr(order, field, value)
        order.save(update_fields=[*changes, "updated_at"])
        order.log("order:updated", f"Customer changed the order details before paying ({email}).", actor="customer")


def pay(order: Order, payment_method: str, *, email: str | None = None, plan: Plan | None = None) -> Outcome:
    """Charge the order once. A resubmit while a charge is in flight or done gets that
    charge's outcome, never a second charge.

    Two steps, each under the order's row lock: create the PaymentIntent and commit its id
    (no money moves), then confirm it (money moves). Whatever crashes after the first step,
    the order knows its PaymentIntent.

    `email` and `plan` are what the customer submitted: a new attempt charges those.
    """
    with transaction.atomic():
        order = Order.objects.select_for_update().select_related("plan").get(pk=order.pk)
        if order.state != Order.State.PENDING:
            return Outcome(order, "done")
        if order.stripe_payment_status not in RETRYABLE:
            payment_intent = gateway.retrieve_payment_intent(order.stripe_payment_intent_id)
            order.stripe_payment_status = payment_intent["status"]
            order.save(update_fields=["stripe_payment_status", "updated_at"])
            if payment_intent["status"] not in RETRYABLE | {"requires_confirmation"}:
                return outcome_of(order, payment_intent)
        # requires_confirmation: an earlier request created it and never confirmed it.
        if order.stripe_payment_status != "requires_confirmation":
            if email is not None and plan is not None:
                # open_order() left the details alone while the last attempt looked in flight;
                # Stripe now says it is over (3-D Secure failed, cancelled), so this attempt
                # charges what the customer chose on this submit.
                _change_details(order, email, plan)
            declined = _create_payment_intent(order, payment_method)
            if declined:
                return Outcome(order, "declined", message=declined)

    with transaction.atomic():
        order = Order.objects.select_for_update().select_related("plan").get(pk=order.pk)
        if order.state != Order.State.PENDING or order.stripe_payment_status != "requires_confirmation":
            return Outcome(order, "done")  # another request got here first
        charge = gateway.confirm(order, order.stripe_payment_intent_id)
        order.stripe_payment_status = charge.status
        order.save(update_fields=["stripe_payment_status", "updated_at"])
        order.log(
            f"payment:{charge.status}",
            _describe(charge),
            actor="customer",
            data={"payment_intent": charge.payment_intent_id, "attempt": order.payment_attempts},
        )
    failpoint("after_charge")
    if charge.status == "declined":
        return Outcome(order, "declined", message=charge.decline_message)
    return outcome_of(order, charge.payment_intent)


def _create_payment_intent(order: Order, payment_method: str) -> str:
    """Step one, under the caller's row lock; returns a decline message, or "".

    The attempt number is part of the idempotency key and is committed together with the
    PaymentIntent id, before any money moves: a crash replays the same key, so real Stripe
    hands back the same PaymentIntent instead of making a second one.
    """
    order.payment_attempts += 1
    try:
        payment_intent = gateway.create_payment_intent(order, payment_method)
    except stripe.CardError as error:  # the card was refused before any charge
        message = error.user_message or "Your card was declined."
        order.stripe_payment_status = "declined"
        order.save(update_fields=["payment_attempts", "stripe_payment_status", "updated_at"])
        order.log("payment:declined", f"Card refused: {message}", actor="customer")
        return message
    order.stripe_payment_intent_id = payment_intent.id
    order.stripe_customer_id = payment_intent.customer or ""
    order.stripe_payment_status = payment_intent.status
    order.save()
    order.log(
        "payment:created",
        f"PaymentIntent {payment_intent.id} created (attempt {order.payment_attempts}).",
        actor="customer",
        data={"payment_intent": payment_intent.id, "attempt": order.payment_attempts},
    )
    return ""


def outcome_of(order: Order, payment_intent) -> Outcome:
    status = payment_intent["status"]
    if status == "succeeded":
        order = fulfil(order, via=Order.Via.RETURN, payment_intent=payment_intent).order
        return Outcome(order, "done")
    if status == "requires_action":
        return Outcome(order, "action", client_secret=payment_intent["client_secret"])
    if status == "requires_payment_method":
        return Outcome(order, "declined", message="Your bank did not approve the payment.")
    return Outcome(order, "done")


def _describe(charge: gateway.Charge) -> str:
    return {
        "succeeded": "Card charged.",
        "requires_action": "The bank asked for 3-D Secure authentication.",
        "processing": "The payment is processing.",
        "declined": f"Card declined: {charge.decline_message}",
    }.get(charge.status, f"PaymentIntent is {charge.status}.")


def sync_with_stripe(order: Order, *, min_interval: float = 3.0) -> Order:
    """The return path: ask Stripe about an unsettled order and act on the answer.

    Called from the order page, at most once every `min_interval` seconds per order.
    """
    if order.is_settled or not order.stripe_payment_intent_id:
        return order
    if order.state == Order.State.PAID:
        return _fulfil_or_leave(order)
    now = timezone.now()
    claimed = (
        Order.objects.filter(pk=order.pk, state=Order.State.PENDING)
        .exclude(stripe_checked_at__gt=now - timezone.timedelta(seconds=min_interval))
        .update(stripe_checked_at=now)
    )
    if not claimed:
        return order
    try:
        payment_intent = gateway.retrieve_payment_intent(order.stripe_payment_intent_id)
    except stripe.StripeError:
        logger.warning("order %s: could not reach Stripe", order.reference, exc_info=True)
        return order
    status = payment_intent["status"]
    if status != order.stripe_payment_status:
        # Recorded before fulfilling: if fulfilment fails, every page still knows the money moved.
        Order.objects.filter(pk=order.pk).update(stripe_payment_status=status)
        order.stripe_payment_status = status
    if status == "succeeded":
        return _fulfil_or_leave(order, payment_intent=payment_intent)
    if status == "canceled":
        with transaction.atomic():
            order = Order.objects.select_for_update().get(pk=order.pk)
            if order.state == Order.State.PENDING:
                order.transition(
                    Order.State.FAILED, actor="system:return", message="The payment was cancelled; nothing was charged."
                )
    return order


def _fulfil_or_leave(order: Order, *, payment_intent=None) -> Order:
    """Fulfil from the order page; if that fails, show the order as it stands ("payment
    received, setting up") instead of an error page. Reconciliation retries it."""
    try:
        return fulfil(order, via=Order.Via.RETURN, payment_intent=payment_intent).order
    except Exception:
        logger.exception("order %s: fulfilment from the order page failed; reconciliation will retry", order.reference)
        return Order.objects.select_related("plan").get(pk=order.pk)
