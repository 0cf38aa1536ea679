"""The evidence pack for a dispute: what PaidUp knows, in Stripe's evidence fields.

`build(dispute)` assembles it from the order: the checkout time, the client address and browser
recorded at checkout (Order.checkout_ip / checkout_user_agent), the email address, when the
access email was sent and whether it was delivered, the customer's sign-ins after the purchase,
the refund offer every access email makes, the plan and its terms. `FIELDS_BY_REASON` picks the
fields Stripe asks for each reason code (https://docs.stripe.com/disputes/categories) and the
cover text (`uncategorized_text`) argues that reason. Support reviews and edits it in the console
before it is submitted (support/disputes.py); only text fields, never files.

Field names are Stripe's (`stripe.Dispute.Evidence`; tests/test_disputes.py checks every name).
"""

from datetime import UTC

from outbox.models import Kind, OutboundEmail

from .models import Dispute, Order

# Always sent: who bought what, from where.
COMMON = ("customer_email_address", "customer_purchase_ip", "product_description", "service_date")
FIELDS_BY_REASON = {
    "fraudulent": (*COMMON, "access_activity_log", "uncategorized_text"),
    "unrecognized": (*COMMON, "access_activity_log", "uncategorized_text"),
    "product_not_received": (*COMMON, "access_activity_log", "uncategorized_text"),
    "product_unacceptable": (*COMMON, "refund_policy_disclosure", "refund_refusal_explanation", "uncategorized_text"),
    "subscription_canceled": (
        *COMMON,
        "cancellation_policy_disclosure",
        "cancellation_rebuttal",
        "access_activity_log",
        "uncategorized_text",
    ),
    "credit_not_processed": (*COMMON, "refund_policy_disclosure", "refund_refusal_explanation", "uncategorized_text"),
    "duplicate": (*COMMON, "duplicate_charge_explanation", "uncategorized_text"),
    "general": (*COMMON, "access_activity_log", "refund_policy_disclosure", "uncategorized_text"),
}
# The order the console shows them in; every field any reason uses.
ALL_FIELDS = tuple(dict.fromkeys(f for fields in FIELDS_BY_REASON.values() for f in fields))

COVER = {
    "fraudulent": "The cardholder bought this subscription themselves: the purchase was made from the address and "
    "browser below, the access link was emailed to the cardholder's address, and the account was used after the "
    "purchase.",
    "unrecognized": "The charge is for a subscription the cardholder bought on our site; the statement descriptor "
    "names us, and the access email was sent to the cardholder's address.",
    "product_not_received": "The product is online access, delivered at once by email; the access email was sent "
    "and delivered, and the customer signed in after the purchase (below).",
    "product_unacceptable": "The customer received the access they paid for and never asked us for a refund, "
    "which every email offers in full.",
    "subscription_canceled": "This is a one-year subscription paid once; it does not renew by itself, and the "
    "customer never asked us to cancel it or for a refund, which every email offers in full.",
    "credit_not_processed": "We have no record of a refund request from the customer; every email offers a full "
    "refund on request, and any refund made is shown below.",
    "duplicate": "There is one charge for this order; it is not a duplicate of another charge.",
    "general": "The customer bought a one-year subscription and received access at once; details below.",
}


def _when(moment) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if moment else "unknown"


def activity_log(order: Order) -> str:
    """Checkout, the access email and sign-ins after the purchase, one line each."""
    address = order.checkout_ip or "an address not recorded"
    browser = order.checkout_user_agent or "browser not recorded"
    lines = [f"{_when(order.created_at)}: checkout started for {order.email} from {address} ({browser})."]
    if order.paid_at:
        lines.append(f"{_when(order.charged_at or order.paid_at)}: payment {order.stripe_payment_intent_id} succeeded.")
    access = order.emails.filter(kind__in=OutboundEmail.ACCESS_KINDS).first()
    if access is not None:
        delivered = "delivered" if access.status == OutboundEmail.Status.SENT else access.get_status_display().lower()
        lines.append(
            f"{_when(access.sent_at or access.created_at)}: access email sent to {access.to} ({delivered}); it "
            "offers a full refund on request."
        )
    subscription = getattr(order, "subscription", None)
    if subscription is not None:
        user = subscription.user
        signins = OutboundEmail.objects.filter(kind=Kind.SIGNIN, to=user.email, created_at__gte=order.created_at)
        if signins.exists():
            lines.append(f"{signins.count()} sign-in link(s) requested by the customer after the purchase.")
        if user.last_login and user.last_login >= order.created_at:
            lines.append(f"{_when(user.last_login)}: last sign-in to the account.")
    return "\n".join(lines)


def build(dispute: Dispute) -> dict[str, str]:
    """The evidence pack for `dispute`: Stripe evidence field name → text, the fields its
    reason asks for (FIELDS_BY_REASON; "general" for a reason not listed). Empty values are
    left out. Raises nothing; a dispute without an order gets only what Stripe told us."""
    order = dispute.order
    fields = FIELDS_BY_REASON.get(dispute.reason, FIELDS_BY_REASON["general"])
    if order is None:
        return {"uncategorized_text": COVER.get(dispute.reason, COVER["general"])}
    plan = order.plan
    refunded = ", ".join(f"{r.price} on {_when(r.created_at)}" for r in order.refunds.all()) or "none"
    values = {
        "customer_email_address": order.email,
        "customer_purchase_ip": order.checkout_ip or "",
        "product_description": f"{plan.name}: online access for {plan.duration_days} days, {plan.price}, paid once "
        f"(order {order.reference}).",
        "service_date": (order.paid_at or order.created_at).date().isoformat(),
        "access_activity_log": activity_log(order),
        "refund_policy_disclosure": "Every email we send offers a full refund on request (quoted: \u201cwe refund in "
        "full if you ask\u201d). Refunds made: " + refunded + ".",
        "refund_refusal_explanation": "The customer never asked us for a refund; we would have given one in full.",
        "cancellation_policy_disclosure": "A one-year subscription paid once; nothing renews and nothing is charged "
        "again.",
        "cancellation_rebuttal": "There was nothing to cancel: the subscription was paid once and never renews; the "
        "customer never wrote to us.",
        "duplicate_charge_explanation": f"Order {order.reference} has one charge, {order.stripe_payment_intent_id}.",
        "uncategorized_text": COVER.get(dispute.reason, COVER["general"]) + f" Order {order.reference}.",
    }
    return {name: values[name] for name in fields if values.get(name)}


def pack(dispute: Dispute) -> dict[str, str]:
    """What the console shows and submits: support's saved draft, else `build(dispute)`."""
    return dict(dispute.evidence_draft) if dispute.evidence_draft else build(dispute)
