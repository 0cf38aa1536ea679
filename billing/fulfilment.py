"""fulfil(): the only way an order becomes fulfilled.

Every path calls it — webhook, return page, reconciliation, support — and it is safe to
call any number of times, from any number of processes at once: it locks the order row,
returns early when the work is done, and the database refuses a second subscription or a
second access email even if the lock were somehow bypassed.
"""

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import User

from . import emails
from .failpoints import failpoint
from .models import Order, OutboundEmail, Subscription

logger = logging.getLogger(__name__)


class PaymentMismatch(Exception):
    """The PaymentIntent does not prove this order was paid (I1)."""


class NotFulfillable(Exception):
    pass


@dataclass
class FulfilResult:
    order: Order
    fulfilled_now: bool


ACTORS = {
    Order.Via.WEBHOOK: "stripe:webhook",
    Order.Via.RETURN: "system:return",
    Order.Via.RECONCILIATION: "system:reconciliation",
}


def actor_for(via: str, actor: str | None = None) -> str:
    return actor or ACTORS.get(via, f"system:{via}")


def check_payment(order: Order, payment_intent) -> None:
    """Refuse to call an order paid unless the PaymentIntent proves it (invariant I1)."""
    problems = []
    if payment_intent["status"] != "succeeded":
        problems.append(f"status is {payment_intent['status']}")
    if payment_intent["amount"] != order.amount_cents:
        problems.append(f"amount {payment_intent['amount']} != {order.amount_cents}")
    if str(payment_intent["currency"]).lower() != order.currency.lower():
        problems.append(f"currency {payment_intent['currency']} != {order.currency}")
    if order.stripe_payment_intent_id and payment_intent["id"] != order.stripe_payment_intent_id:
        metadata_order = (payment_intent.get("metadata") or {}).get("order_id")
        if metadata_order != str(order.id):
            problems.append(f"PaymentIntent {payment_intent['id']} belongs to another order")
    if problems:
        raise PaymentMismatch(f"{order.reference}: " + "; ".join(problems))


def record_payment(order: Order, payment_intent, *, via: str, actor: str | None = None) -> Order:
    """pending → paid, given a succeeded PaymentIntent. Caller holds the row lock."""
    if order.state != Order.State.PENDING:
        return order
    check_payment(order, payment_intent)
    order.stripe_payment_intent_id = payment_intent["id"]
    order.stripe_payment_status = payment_intent["status"]
    order.save(update_fields=["stripe_payment_intent_id", "stripe_payment_status", "updated_at"])
    order.transition(
        Order.State.PAID,
        actor=actor_for(via, actor),
        message=f"Stripe confirmed the payment of {order.price} ({payment_intent['id']}).",
        data={"payment_intent": payment_intent["id"], "via": via},
    )
    return order


def fulfil(order: Order, *, via: str, payment_intent=None, actor: str | None = None) -> FulfilResult:
    """Make a paid order fulfilled: user, subscription, access email. Idempotent.

    With `payment_intent` (a succeeded PaymentIntent, dict-like), a pending order is first
    recorded as paid in the same transaction.
    """
    via = Order.Via(via)
    with transaction.atomic():
        order = Order.objects.select_for_update().select_related("plan").get(pk=order.pk)
        if order.state == Order.State.FULFILLED:
            return FulfilResult(order, fulfilled_now=False)
        if order.state == Order.State.PENDING and payment_intent is not None:
            record_payment(order, payment_intent, via=via, actor=actor)
        if order.state == Order.State.PAID and order.refunded_cents >= order.amount_cents:
            # Stripe refunded all of it before any fulfilment got through (reconciliation
            # records refunds even while fulfilment keeps failing): no access for money returned.
            order.transition(
                Order.State.REFUNDED,
                actor=actor_for(via, actor),
                message="Refunded in full before it could be fulfilled; no access was given.",
                data={"via": via},
            )
            return FulfilResult(order, fulfilled_now=False)
        if order.state != Order.State.PAID:
            raise NotFulfillable(f"{order.reference} is {order.state}, not paid")

        user, _ = User.objects.get_or_create(email__iexact=order.email, defaults={"email": order.email.lower()})
        starts_at = timezone.now()
        Subscription.objects.create(
            order=order,
            user=user,
            starts_at=starts_at,
            ends_at=starts_at + timedelta(days=order.plan.duration_days),
        )
        late = order.paid_at and (timezone.now() - order.paid_at > timedelta(seconds=settings.LATE_FULFILMENT_SECONDS))
        is_recovery = via in (Order.Via.RECONCILIATION, Order.Via.SUPPORT) or bool(late)
        order.fulfilled_via = via
        order.transition(
            Order.State.FULFILLED,
            actor=actor_for(via, actor),
            message=f"Fulfilled via {via}" + (" (recovery)" if is_recovery else "") + ".",
            data={"via": via, "recovery": is_recovery},
        )
        failpoint("fulfil_before_commit")
        kind = OutboundEmail.Kind.RECOVERY if is_recovery else OutboundEmail.Kind.CONFIRMATION
        emails.queue_order_email(order, kind, user=user)
    logger.info("order %s fulfilled via %s", order.reference, via)
    return FulfilResult(order, fulfilled_now=True)


def find_order(payment_intent) -> Order | None:
    """The order a PaymentIntent pays for: by its id, else by the order id in its metadata."""
    metadata = payment_intent.get("metadata") or {}
    return (
        Order.objects.filter(stripe_payment_intent_id=payment_intent["id"]).first()
        or Order.objects.filter(pk=_uuid_or_none(metadata.get("order_id"))).first()
    )


def fulfil_from_payment_intent(payment_intent, *, via: str) -> FulfilResult | None:
    """Fulfil the order a succeeded PaymentIntent pays for.

    Returns None when no order matches (an unknown payment: reconciliation's job).
    """
    order = find_order(payment_intent)
    if order is None:
        logger.warning("succeeded PaymentIntent %s matches no order", payment_intent["id"])
        return None
    return fulfil(order, via=via, payment_intent=payment_intent)


def _uuid_or_none(value) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except (TypeError, ValueError):
        return None
