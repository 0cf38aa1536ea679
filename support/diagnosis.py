"""One sentence on what happened to an order, and the action that fixes it."""

from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone
from django.utils.timesince import timesince

from billing.access import open_double_purchases
from billing.delivery import unreachable_access_email
from billing.disputes import due_in_words
from billing.models import Alert, Dispute, Order, OutboundEmail
from billing.models.orders import format_money


@dataclass
class Diagnosis:
    code: str
    sentence: str
    action: str
    ok: bool = False


# size: one ordered list of cases, first match wins; split, the order of the cases would hide.
def diagnose(order: Order, stripe_status: str | None = None) -> Diagnosis:
    """`stripe_status` is the live PaymentIntent status when the caller has it (None: unknown)."""
    # Only an open "possible double purchase" (billing/access.py) says so: two orders a year
    # apart are a renewal, and a pair that was refunded or dismissed by support is settled.
    doubles = open_double_purchases(order).select_related("order")
    double = next(iter(doubles), None)
    access_email = order.emails.filter(kind__in=OutboundEmail.ACCESS_KINDS).first()

    if found := _dispute_or_warning(order):
        return found
    failed = order.alerts.filter(reason=Alert.Reason.REFUND_FAILED, resolved_at__isnull=True).first()
    if failed is not None:
        return Diagnosis(
            "refund_failed",
            f"A refund failed after the customer was told it was coming: {failed.message}",
            "Write to the customer today (reply 'Your refund didn't go through'), pay them back another way, "
            "note it, then Resolved.",
        )
    if order.state == Order.State.REFUNDED:
        return Diagnosis(
            "refunded",
            f"Refunded {format_money(order.refunded_cents, order.currency)} of {order.price}; "
            f"access ended {timesince(order.refunded_at)} ago.",
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
    bounced = unreachable_access_email(order) if order.state == Order.State.FULFILLED else None
    if bounced is not None:
        why = f": {bounced.delivery_detail[:160]}" if bounced.delivery_detail else ""
        return Diagnosis(
            "access_email_bounced",
            f"Fulfilled, but {order.email} could not be reached: the {bounced.get_kind_display().lower()} email "
            f"{bounced.delivery} {timesince(bounced.delivery_at)} ago{why}. The address is probably mistyped.",
            "Change email to the address the customer writes from: it moves the access and sends a fresh sign-in link.",
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
    if double is not None:
        later = double.order
        sentence = (
            f"This email paid for two orders within 24 hours: possibly a double purchase "
            f"({later.reference} is the later one)."
        )
        if later.pk != order.pk:  # the refund button belongs on the later order's page
            return Diagnosis(
                "two_payments_earlier",
                sentence,
                f"Open {later.reference}: refund it there if they did not mean to buy twice, or mark it resolved.",
            )
        return Diagnosis(
            "two_payments",
            sentence,
            "Ask if they meant to buy twice; refund this order if not, or mark it resolved if they did.",
        )
    if order.retroactive:
        return Diagnosis(
            "unknown_payment",
            "Found in Stripe with no order here; reconciliation created this order and fulfilled it.",
            "Check the access email went out; nothing else to do.",
            ok=order.state == Order.State.FULFILLED,
        )
    sub = getattr(order, "subscription", None)
    until = f" until {sub.ends_at:%d %b %Y}" if sub else ""
    sent = f", access email {access_email.get_status_display().lower()}" if access_email else ""
    refunded = f"; {order.refunded} of {order.price} refunded, access continues" if order.refunded_cents else ""
    return Diagnosis(
        "healthy",
        f"Healthy: paid and fulfilled via {order.get_fulfilled_via_display().lower()}, "
        f"access active{until}{sent}{refunded}.",
        "Nothing to fix. If they can't sign in, resend the access email.",
        ok=True,
    )


def _dispute_or_warning(order: Order) -> Diagnosis | None:
    """An open dispute comes before everything (its evidence has a deadline); then an early fraud
    warning on a charge that can still be refunded."""
    dispute = order.disputes.filter(status__in=Dispute.OPEN).order_by("evidence_due_by").first()
    if dispute is not None and dispute.needs_response:
        return Diagnosis(
            "disputed",
            f"Disputed by the customer's bank: {dispute.price}, reason \u201c{dispute.reason or 'not given'}\u201d; "
            f"{due_in_words(dispute.evidence_due_by)}. The money and Stripe's fee are already withdrawn; "
            "no evidence by then means the dispute is lost.",
            "Submit dispute evidence: review the pack PaidUp assembled, edit it, send it once. Do not refund and "
            "do not email the customer about the dispute (that is between them and their bank).",
        )
    if dispute is not None:
        return Diagnosis(
            "dispute_review",
            f"Disputed ({dispute.price}); evidence submitted {timesince(dispute.evidence_submitted_at)} ago"
            if dispute.evidence_submitted_at
            else f"Disputed ({dispute.price}); the bank is reviewing it ({dispute.status}).",
            "Nothing to do until Stripe says won or lost (the timeline will show it).",
        )
    warning = order.fraud_warnings.filter(auto_refunded_at__isnull=True).first()
    if warning is not None and order.state in (Order.State.PAID, Order.State.FULFILLED) and not order.refunded_cents:
        fee = format_money(settings.DISPUTE_FEE_CENTS, order.currency)
        return Diagnosis(
            "fraud_warning",
            f"The card issuer sent an early fraud warning ({warning.fraud_type or 'fraud'}): the cardholder's bank "
            f"thinks this payment may not be theirs. A dispute usually follows, costing a {fee} fee and days of "
            "evidence work, and is often lost.",
            "Refund in full and end access now: a refunded charge cannot be disputed, so refunding is usually "
            "cheaper than waiting.",
        )
    return None


def age(when) -> str:
    """How long ago `when` (an aware datetime) was, in Django's words ("3 hours, 5 minutes");
    "" for None."""
    return timesince(when, timezone.now()) if when else ""
