"""One sentence on what happened to an order, and the action that fixes it."""

from dataclasses import dataclass

from django.utils import timezone
from django.utils.timesince import timesince

from billing.models import Order, OutboundEmail


@dataclass
class Diagnosis:
    code: str
    sentence: str
    action: str
    ok: bool = False


def diagnose(order: Order, stripe_status: str | None = None) -> Diagnosis:
    """`stripe_status` is the live PaymentIntent status when the caller has it (None: unknown)."""
    others = (
        Order.objects.filter(email__iexact=order.email, state__in=[Order.State.PAID, Order.State.FULFILLED])
        .exclude(pk=order.pk)
        .count()
        if order.email
        else 0
    )
    access_email = order.emails.filter(kind__in=OutboundEmail.ACCESS_KINDS).first()

    if order.state == Order.State.REFUNDED:
        return Diagnosis(
            "refunded",
            f"Refunded {order.refunded_cents / 100:.2f} {order.currency.upper()} "
            f"{timesince(order.refunded_at)} ago; access ended then.",
            "Nothing to do; reply with the refunded template if asked.",
        )
    if order.state == Order.State.PAID:
        return Diagnosis(
            "paid_not_fulfilled",
            f"Paid {timesince(order.paid_at)} ago but not fulfilled: the customer has no access.",
            "Fulfil (it checks with Stripe first).",
        )
    # Our own record of the charge counts too: with Stripe unreachable (stripe_status None), a
    # pending order whose confirm came back "succeeded" was charged, not "not charged".
    if order.state == Order.State.PENDING and "succeeded" in (stripe_status, order.stripe_payment_status):
        return Diagnosis(
            "missed_webhook",
            "Pending here, but Stripe says the payment succeeded: the webhook and the return page were both missed.",
            "Fulfil (it checks with Stripe first).",
        )
    if order.state in (Order.State.PENDING, Order.State.FAILED) and order.was_charged is False:
        detail = {
            "declined": "the card was declined",
            "requires_payment_method": "the card was declined",
            "requires_action": "3-D Secure was never completed",
            "canceled": "the payment was cancelled",
        }.get(stripe_status or order.stripe_payment_status, "no payment was completed")
        return Diagnosis(
            "not_charged",
            f"Not charged: {detail}.",
            "Reply with the 'we can't find the payment yet' template; ask for the bank-statement line.",
        )
    if (
        order.state == Order.State.FULFILLED
        and access_email
        and access_email.status in (OutboundEmail.Status.FAILED, OutboundEmail.Status.RETRY)
    ):
        return Diagnosis(
            "email_not_delivered",
            f"Fulfilled, but the access email was not delivered "
            f"({access_email.get_status_display().lower()}: {access_email.last_error[:120]}).",
            "Resend access email.",
        )
    if others:
        return Diagnosis(
            "two_payments",
            f"This email has {others + 1} paid orders: possibly a double purchase.",
            "Ask if they meant to buy twice; refund the extra one if not.",
        )
    if order.retroactive:
        return Diagnosis(
            "unknown_payment",
            "Found in Stripe with no order here; reconciliation created this order and fulfilled it.",
            "Check the recovery email went out; nothing else to do.",
            ok=order.state == Order.State.FULFILLED,
        )
    sub = getattr(order, "subscription", None)
    until = f" until {sub.ends_at:%d %b %Y}" if sub else ""
    sent = f", access email {access_email.get_status_display().lower()}" if access_email else ""
    return Diagnosis(
        "healthy",
        f"Healthy: paid and fulfilled via {order.get_fulfilled_via_display().lower()}, access active{until}{sent}.",
        "Nothing to fix. If they can't sign in, resend the access email.",
        ok=True,
    )


def age(when) -> str:
    return timesince(when, timezone.now()) if when else ""
