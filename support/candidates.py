"""Orders that might be a customer's when their email matches nothing: paid around the day they
give, with a card ending in the four digits they give. For support's eyes only.

The self-service check (support/selfservice.py) calls `find()` when the email typed on
/help/charged/ has no order and the customer gave both the card's last four digits and the
payment date; the case's diagnosis then names the candidates. Nothing is done with them: four
digits and a day are shared by many people, so they never give access, never send an email and
never change an order. A person confirms with the customer (the exact amount and time on their
statement, the address they may have mistyped) and then uses "Change email" on the right order.
"""

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import stripe
from django.db.models import Q

from billing import gateway
from billing.models import Order

# Orders looked at per request: two Stripe requests each (the PaymentIntent, its charge).
LOOKED_AT = 25
STRIPE_BUDGET = 2 * LOOKED_AT
# The customer's day may be ours one day earlier or later (time zones, a charge near midnight).
SLACK = timedelta(days=1)


@dataclass
class Candidates:
    """`orders`: those whose card ends in the digits; `notes`: what could not be checked."""

    orders: list = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def find(last4: str, paid_on: date) -> Candidates:
    """Charged orders (paid, fulfilled or refunded) charged between `paid_on` - 1 day and
    `paid_on` + 1 day (Stripe's charge time, else when we recorded the payment), at most
    LOOKED_AT of them, whose card's last four digits (asked of Stripe: gateway.card_last4) are
    `last4`. Returns Candidates; raises nothing (a Stripe error or the budget becomes a note)."""
    start = datetime.combine(paid_on, datetime.min.time(), tzinfo=UTC) - SLACK
    end = start + timedelta(days=1) + 2 * SLACK
    charged_then = Q(charged_at__gte=start, charged_at__lt=end) | Q(
        charged_at__isnull=True, paid_at__gte=start, paid_at__lt=end
    )
    orders = (
        Order.objects.filter(charged_then, stripe_payment_intent_id__isnull=False)
        .filter(state__in=[Order.State.PAID, Order.State.FULFILLED, Order.State.REFUNDED])
        .select_related("plan")
        .order_by("charged_at", "paid_at")
    )
    found = Candidates()
    looked_at = list(orders[: LOOKED_AT + 1])
    if len(looked_at) > LOOKED_AT:
        found.notes.append(f"More than {LOOKED_AT} payments around that day: only the first {LOOKED_AT} were checked.")
    try:
        with gateway.budget(STRIPE_BUDGET, per_second=10):
            for order in looked_at[:LOOKED_AT]:
                if gateway.card_last4(order.stripe_payment_intent_id) == last4:
                    found.orders.append(order)
    except (gateway.BudgetExhausted, stripe.StripeError) as error:
        found.notes.append(f"The card check stopped early ({type(error).__name__}); the list may be incomplete.")
    return found


def describe(last4: str, paid_on: date, found: Candidates) -> list[str]:
    """The diagnosis lines for support: each candidate with its email, amount, state and charge
    time, under a warning that they are candidates only."""
    if not found.orders:
        return [f"No order paid around {paid_on:%d %b %Y} with a card ending {last4}.", *found.notes]
    lines = [
        f"Candidates: orders paid around {paid_on:%d %b %Y} with a card ending {last4}. Four digits and a day are "
        "shared by many people: never give access on this alone. Confirm with the customer (exact amount and time "
        "on their statement, the address they meant), then \u201cChange email\u201d on the right order."
    ]
    for order in found.orders:
        when = order.charged_at or order.paid_at
        lines.append(
            f"    {order.reference}: {order.email or 'no email'}, {order.price}, {order.get_state_display().lower()}, "
            f"charged {when:%Y-%m-%d %H:%M} UTC"
        )
    return lines + found.notes
