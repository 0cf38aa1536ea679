"""What a bare Stripe payment buys: the one rule for a payment that has no order here.

A payment reaches Stripe without one of our orders when our checkout lost its order (a
crash, a restore) or when it was made outside the app: a Payment Link, an invoice for
something else, a charge from the dashboard. Those arrive in the same account, often with a
customer email and no metadata (DESIGN.md, "Stripe's answers"). The rule: **access only for
a payment whose amount and currency are exactly a plan's price, or whose metadata names one
of our orders** (that order is then fulfilled through `fulfil()`, which checks the amount
against it: invariant I1). Anything else buys nothing: no order, no access, no email to the
customer; it is recorded as an alert for a person.

Reconciliation's Stripe scan (`reconciliation.adopt_payment`), the customer's self-service
check (through the same scan) and the console's "attach" (`support.actions.attach_payment`)
all ask `plan_for_payment()`, find the customer with `email_for_payment()` and create the
order with `create_order()`, so the three cannot disagree again.

Why an alert and not an order: an order is a promise of a plan (`Order.plan` is required,
and fulfilment gives its `duration_days`). A $15 payment promises none, so an order for it
would be a lie that every later path (fulfil, refund, support) would have to see through.
The `Alert` row (unique per payment: `unmatched_payment:<pi id>`) records the payment's
facts, emails support once, shows on the console's landing page until someone resolves it,
and stops a later scan or check from raising it again.
"""

from django.db import transaction
from django.db.models import Case, IntegerField, Value, When

from accounts.addresses import normalize_email

from . import gateway
from .alerts import raise_alert
from .models import Alert, Order, Plan
from .models.orders import format_money, is_valid_reference


def plan_for_payment(amount_cents: int, currency: str) -> Plan | None:
    """The plan a payment of `amount_cents` (integer minor units) in `currency` (ISO code, any
    case) buys: a plan with exactly that price, active ones first, then the oldest. None when
    no plan costs that much in that currency: the payment buys nothing (module docstring).

    Inactive plans count: a customer who paid an old price on an old page still paid for it.
    """
    if not isinstance(amount_cents, int) or amount_cents <= 0 or not currency:
        return None
    return (
        Plan.objects.filter(amount_cents=amount_cents, currency__iexact=str(currency))
        .order_by(Case(When(active=True, then=Value(0)), default=Value(1), output_field=IntegerField()), "id")
        .first()
    )


def unmatched_key(payment_intent_id: str) -> str:
    """The alert key of a payment that buys nothing: one alert per payment, ever."""
    return f"{Alert.Reason.UNMATCHED_PAYMENT}:{payment_intent_id}"


def is_recorded_unmatched(payment_intent_ids) -> set[str]:
    """Which of these PaymentIntent ids are already recorded as buying nothing (one query)."""
    keys = {unmatched_key(pi_id): pi_id for pi_id in payment_intent_ids}
    return {keys[k] for k in Alert.objects.filter(key__in=list(keys)).values_list("key", flat=True)}


def record_unmatched(payment_intent, *, found_by: str) -> Alert | None:
    """Record a succeeded payment that matches no plan and names none of our orders: an alert
    for support (emailed once), nothing for the customer. `found_by` says which path saw it
    ("reconciliation", "self-service"). Returns the new alert, or None when it was already
    recorded (then nothing is sent again)."""
    metadata = dict(payment_intent.get("metadata") or {})
    customer = payment_intent.get("customer")
    customer_id = customer if isinstance(customer, str) else getattr(customer, "id", "") or ""
    price = format_money(payment_intent["amount"], payment_intent["currency"])
    message = (
        f"Stripe payment {payment_intent['id']} of {price} succeeded, but no plan costs {price} and it names "
        f"no order of ours (found by {found_by}). No order was created, no access given, no email sent to the "
        f"customer. Stripe customer: {customer_id or 'none'}; metadata: {metadata or 'none'}."
    )
    return raise_alert(Alert.Reason.UNMATCHED_PAYMENT, message, key=unmatched_key(payment_intent["id"]))


def email_for_payment(payment_intent) -> str:
    """The customer's email for a bare payment: its metadata's `email`, else its Stripe
    customer's email (one Stripe request), normalised (accounts.addresses). Returns "" when
    there is none. Raises stripe.StripeError when the customer cannot be retrieved."""
    email = ((payment_intent.metadata or {}).get("email") or "").strip()
    if not email and payment_intent.customer:
        customer = payment_intent.customer
        email = (gateway.retrieve_customer(customer if isinstance(customer, str) else customer.id).email or "").strip()
    return normalize_email(email)


def create_order(payment_intent, plan: Plan, email: str, *, actor: str, kind: str, message: str, data=None) -> Order:
    """Create the order a bare succeeded payment should have had (not yet paid or fulfilled:
    the caller then fulfils it through `fulfil()`, which checks the amount, invariant I1).

    Takes Stripe's PaymentIntent, the plan it buys (`plan_for_payment`), the customer's email
    ("" when none is known), and the timeline row to write (`kind` such as "order:adopted" or
    "order:attached", `message`, `data`, by `actor`). The order copies the payment's amount
    (integer minor units) and currency, is marked `retroactive`, and takes the reference from
    the payment's metadata when it is valid and still free (the one the customer saw at
    checkout), else a new one. Raises IntegrityError when the PaymentIntent already has an
    order (`stripe_payment_intent_id` is unique): someone else created it meanwhile.
    """
    customer = payment_intent.customer
    fields = {
        "email": email,
        "plan": plan,
        "amount_cents": payment_intent.amount,
        "currency": payment_intent.currency,
        "stripe_payment_intent_id": payment_intent.id,
        "stripe_customer_id": (customer if isinstance(customer, str) else getattr(customer, "id", "")) or "",
        "stripe_payment_status": payment_intent.status,
        "retroactive": True,
    }
    reference = (payment_intent.metadata or {}).get("reference") or ""
    if is_valid_reference(reference) and not Order.objects.filter(reference=reference).exists():
        fields["reference"] = reference
    with transaction.atomic():
        order = Order.objects.create(**fields)
        order.log(kind, message, actor=actor, data=data or {})
    return order
