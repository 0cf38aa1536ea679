"""What a support person can do to an order. Each action is one function: it checks, acts,
writes the order's timeline with the staff user as actor, and returns a sentence to show.

The admin calls these; so do tests. Permissions and CSRF are the admin's job (support/admin.py).
"""

import uuid
from dataclasses import dataclass
from datetime import timedelta

import stripe
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from billing import emails, gateway
from billing.fulfilment import NotFulfillable, PaymentMismatch, check_payment, fulfil
from billing.models import Order, Plan
from billing.models.orders import format_money
from billing.reconciliation import record_refund

from .models import RefundRequest, SupportCase

CLAIM_MINUTES = 30


class ActionRefused(Exception):
    """The action cannot be done; the message says why, for the support person."""


@dataclass
class Done:
    message: str
    order: Order | None = None


def actor(user) -> str:
    return f"support:{user.get_username()}"


def fulfil_verified(order: Order, user) -> Done:
    """Fulfil after asking Stripe: refuses unless the payment succeeded for this amount."""
    if order.state == Order.State.FULFILLED:
        return Done(f"{order.reference} was already fulfilled; nothing done.", order)
    if not order.stripe_payment_intent_id:
        raise ActionRefused("This order has no Stripe payment to verify. Attach the payment first.")
    try:
        payment_intent = gateway.retrieve_payment_intent(order.stripe_payment_intent_id)
    except stripe.StripeError as error:
        raise ActionRefused(f"Could not reach Stripe to verify the payment ({error.user_message or error}).") from error
    if payment_intent["status"] != "succeeded":
        raise ActionRefused(f"Stripe says the payment is {payment_intent['status']}, not succeeded. Not fulfilled.")
    if not order.email:
        raise ActionRefused("Set the customer's email on the order first.")
    try:
        result = fulfil(order, via=Order.Via.SUPPORT, payment_intent=payment_intent, actor=actor(user))
    except (NotFulfillable, PaymentMismatch) as problem:
        raise ActionRefused(str(problem)) from problem
    if result.order.state == Order.State.REFUNDED:  # refunded in full before anyone fulfilled it
        return Done(f"{order.reference} was refunded in full before it was fulfilled; no access given.", result.order)
    _clear_attention(result.order, user)
    if not result.fulfilled_now:  # the webhook, the return page or reconciliation got there first
        return Done(f"{order.reference} was already fulfilled; nothing done.", result.order)
    return Done(f"{order.reference} fulfilled; the customer gets the recovery email.", result.order)


def resend_access(order: Order, user) -> Done:
    """A fresh sign-in link by email (the old one may have expired or been used)."""
    if order.state != Order.State.FULFILLED:
        raise ActionRefused("Only a fulfilled order has access to resend. Fulfil it first.")
    customer = order.subscription.user
    with transaction.atomic():
        emails.send_signin_link(customer)
        order.log("support:resend", f"Sent a fresh sign-in link to {customer.email}.", actor=actor(user))
    return Done(f"A fresh sign-in link is on its way to {customer.email}.", order)


def refund(order: Order, user, *, amount_cents: int, reason: str, token: uuid.UUID) -> Done:
    """Refund in Stripe, then record it here, in one go. Needs billing.refund_order.

    The order row is locked for the whole call, so two people refunding at once cannot both
    pass the amount check; the request token is Stripe's idempotency key and unique here, so
    a double submit of the same form refunds once.
    """
    if not user.has_perm("billing.refund_order"):
        raise ActionRefused("You do not have permission to refund.")
    reason = (reason or "").strip()
    if not reason:
        raise ActionRefused("A reason is required for a refund.")
    if amount_cents <= 0:
        raise ActionRefused("The refund amount must be more than zero.")
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order.pk)
        # Before the state checks: a double submit of a full refund finds the order refunded.
        if RefundRequest.objects.filter(token=token).exists():
            return Done("This refund was already made (the form was submitted twice); nothing more done.", order)
        if order.state not in (Order.State.PAID, Order.State.FULFILLED) or not order.stripe_payment_intent_id:
            raise ActionRefused(f"{order.reference} is {order.state}: there is no payment to refund.")
        refundable = order.amount_cents - order.refunded_cents
        if amount_cents > refundable:
            raise ActionRefused(
                f"At most {format_money(refundable, order.currency)} can be refunded "
                f"({order.price} charged, {format_money(order.refunded_cents, order.currency)} already refunded)."
            )
        try:
            with transaction.atomic():
                request = RefundRequest.objects.create(
                    token=token, order=order, amount_cents=amount_cents, reason=reason, requested_by=actor(user)
                )
        except IntegrityError:
            return Done("This refund was already made (the form was submitted twice); nothing more done.", order)
        try:
            stripe_refund = gateway.create_refund(
                order.stripe_payment_intent_id,
                amount_cents,
                idempotency_key=f"order-{order.id}-refund-{token}",
                metadata={"order_id": str(order.id), "reference": order.reference, "by": actor(user)},
            )
        except stripe.StripeError as error:  # the request row rolls back with the rest
            raise ActionRefused(f"Stripe refused the refund: {error.user_message or error}") from error
        request.stripe_refund_id = stripe_refund.id
        request.save(update_fields=["stripe_refund_id"])
        record_refund(order, stripe_refund, actor=actor(user), reason=reason)
    order.refresh_from_db()
    return Done(f"Refunded {format_money(amount_cents, order.currency)} on {order.reference}.", order)


def extend(order: Order, user, *, days: int, reason: str = "") -> Done:
    """Goodwill: push the subscription's end date out by `days`."""
    if not 1 <= days <= 366:
        raise ActionRefused("Extend by 1 to 366 days.")
    if order.state != Order.State.FULFILLED:
        raise ActionRefused("Only a fulfilled order has a subscription to extend.")
    with transaction.atomic():
        subscription = order.subscription.__class__.objects.select_for_update().get(pk=order.subscription.pk)
        before = subscription.ends_at
        subscription.ends_at = max(before, timezone.now()) + timedelta(days=days)
        subscription.save(update_fields=["ends_at"])
        order.log(
            "support:extend",
            f"Extended by {days} days: {before:%Y-%m-%d} → {subscription.ends_at:%Y-%m-%d}. {reason}".strip(),
            actor=actor(user),
            data={"days": days, "from": before.isoformat(), "to": subscription.ends_at.isoformat()},
        )
    return Done(f"Access now ends on {subscription.ends_at:%d %B %Y}.", order)


def attach_payment(stripe_id: str, user, *, email: str = "") -> Done:
    """A bare Stripe payment (pi_… or ch_…) becomes an order, fulfilled with the recovery email."""
    stripe_id = (stripe_id or "").strip()
    if not stripe_id.startswith(("pi_", "ch_")) or len(stripe_id) > 255:
        raise ActionRefused("Paste a Stripe PaymentIntent (pi_…) or charge (ch_…) id.")
    try:
        if stripe_id.startswith("ch_"):
            charge = gateway.retrieve_charge(stripe_id)
            if not charge.payment_intent:
                raise ActionRefused(f"Charge {stripe_id} has no PaymentIntent; attach it from the Stripe dashboard.")
            stripe_id = charge.payment_intent if isinstance(charge.payment_intent, str) else charge.payment_intent.id
        payment_intent = gateway.retrieve_payment_intent(stripe_id)
    except stripe.InvalidRequestError as error:
        raise ActionRefused(f"Stripe has no payment {stripe_id}.") from error
    except stripe.StripeError as error:
        raise ActionRefused(f"Could not reach Stripe ({error.user_message or error}).") from error
    if payment_intent.status != "succeeded":
        raise ActionRefused(f"That payment is {payment_intent.status}, not succeeded. Nothing created.")
    existing = Order.objects.filter(stripe_payment_intent_id=payment_intent.id).first()
    if existing is not None:
        raise ActionRefused(f"That payment already belongs to order {existing.reference}.")
    email = (email or (payment_intent.metadata or {}).get("email") or "").strip().lower()
    if not email and payment_intent.customer:
        customer_id = (
            payment_intent.customer if isinstance(payment_intent.customer, str) else payment_intent.customer.id
        )
        email = (gateway.retrieve_customer(customer_id).email or "").lower()
    if not email:
        raise ActionRefused("Stripe has no email for that payment: type the customer's email and attach again.")
    plan = Plan.objects.filter(amount_cents=payment_intent.amount, currency=payment_intent.currency).first()
    if plan is None:
        raise ActionRefused(f"No plan costs {format_money(payment_intent.amount, payment_intent.currency)}.")
    try:
        with transaction.atomic():
            order = _attach(payment_intent, plan, email, user)
    except IntegrityError as error:  # someone attached it at the same moment
        other = Order.objects.filter(stripe_payment_intent_id=payment_intent.id).first()
        raise ActionRefused(f"That payment already belongs to order {other.reference if other else '?'}.") from error
    order.refresh_from_db()
    return Done(f"Created {order.reference} from {payment_intent.id} and fulfilled it.", order)


def _attach(payment_intent, plan, email: str, user) -> Order:
    order = Order.objects.create(
        email=email,
        plan=plan,
        amount_cents=payment_intent.amount,
        currency=payment_intent.currency,
        stripe_payment_intent_id=payment_intent.id,
        stripe_payment_status="succeeded",
        retroactive=True,
    )
    order.log("order:attached", f"Created from Stripe payment {payment_intent.id}.", actor=actor(user))
    check_payment(order, payment_intent)
    fulfil(order, via=Order.Via.SUPPORT, payment_intent=payment_intent, actor=actor(user))
    return order


def note(order: Order, user, text: str) -> Done:
    text = (text or "").strip()
    if not text:
        raise ActionRefused("The note is empty.")
    order.log("support:note", text[:5000], actor=actor(user))
    return Done("Note added.", order)


def claim(order: Order, user) -> Done:
    """ "I'm on it" for CLAIM_MINUTES; refused while someone else holds it.

    One conditional UPDATE: of two people claiming at the same moment, exactly one wins.
    """
    now = timezone.now()
    until = now + timedelta(minutes=CLAIM_MINUTES)
    free = Q(claimed_until__isnull=True) | Q(claimed_until__lte=now) | Q(claimed_by=user)
    if not Order.objects.filter(free, pk=order.pk).update(claimed_by=user, claimed_until=until):
        taken = Order.objects.select_related("claimed_by").get(pk=order.pk)
        raise ActionRefused(f"{taken.claimed_by} is on it until {timezone.localtime(taken.claimed_until):%H:%M}.")
    order.log("support:claim", f"{user.get_username()} is on it.", actor=actor(user))
    return Done(f"You're on it until {timezone.localtime(until):%H:%M}.", order)


def resolve(order: Order, user, *, note_text: str = "") -> Done:
    from support.alerts import resolve as resolve_alert

    Order.objects.filter(pk=order.pk).update(needs_attention=False, attention_reason="", claimed_until=None)
    for alert in order.alerts.filter(resolved_at__isnull=True):
        resolve_alert(alert.key)
    order.cases.filter(status=SupportCase.Status.OPEN).update(
        status=SupportCase.Status.RESOLVED, resolved_at=timezone.now(), resolved_by=actor(user)
    )
    order.log("support:resolved", note_text or "Marked resolved.", actor=actor(user))
    return Done(f"{order.reference} marked resolved.", order)


def _clear_attention(order: Order, user) -> None:
    if order.needs_attention:
        Order.objects.filter(pk=order.pk).update(needs_attention=False, attention_reason="")
