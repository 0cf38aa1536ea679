"""Two tabs (or two devices) buying a second year at the same moment, on PostgreSQL: each
payment adds one period after the other (old end + 2 years), none is lost, none doubled.

The customer's row lock in fulfil() (billing/access.py) is what chains them; without it both
would start from the same old end. A pause inside the locked step widens the window in which
the second fulfilment could read the old end, so a missing lock fails this test.
"""

import time
from datetime import timedelta

from django.test import Client

from billing import access
from billing.fulfilment import fulfil
from billing.models import Alert, Order, Subscription
from tests.factories import OrderFactory, payment_intent
from tests.fixtures.services import CARD, give_cookie
from tests.test_races import race, run_together

ROUNDS = 3


@race
def test_two_tabs_buying_another_year_at_once_extend_access_once_per_payment(
    plan, fake_stripe, mailoutbox, monkeypatch
):
    period_for = access.period_for

    def slow_period_for(*args, **kwargs):
        period = period_for(*args, **kwargs)
        time.sleep(0.3)  # the other fulfilment, unlocked, would read the old end meanwhile
        return period

    monkeypatch.setattr(access, "period_for", slow_period_for)
    for round_ in range(ROUNDS):
        email = f"ada{round_}@example.com"
        first = OrderFactory(plan=plan, email=email)
        first = fulfil(first, via="webhook", payment_intent=payment_intent(first)).order
        Order.objects.filter(pk=first.pk).update(paid_at=first.paid_at - timedelta(days=2))  # bought last week
        old_end = first.subscription.ends_at
        references = [f"PU-TAB{round_ + 2}A2", f"PU-TAB{round_ + 2}B2"]
        clients = [Client(), Client()]
        for client, reference in zip(clients, references, strict=True):
            give_cookie(client, reference)
        form = {"email": email, "payment_method": CARD, "extend_access": email}

        responses = run_together(*[lambda c=client, f=form: c.post("/checkout/", f) for client in clients])

        assert [r.status_code for r in responses] == [302, 302]
        orders = [Order.objects.get(reference=reference) for reference in references]
        assert [o.state for o in orders] == ["fulfilled", "fulfilled"]
        periods = sorted(Subscription.objects.filter(order__in=orders).values_list("starts_at", "ends_at"))
        year = timedelta(days=plan.duration_days)
        assert periods == [(old_end, old_end + year), (old_end + year, old_end + 2 * year)]
        assert access.access_until(email) == old_end + 2 * year
        # Each payment charged once, and the pair is one "possible double purchase" for support.
        assert sorted(c["order"] for c in fake_stripe.created if c["order"] in references) == sorted(references)
        assert Alert.objects.filter(reason="double_purchase", order__email=email).count() == 1


@race
def test_two_payments_fulfilled_at_once_by_webhook_and_reconciliation_chain_too(plan, monkeypatch):
    period_for = access.period_for
    monkeypatch.setattr(access, "period_for", lambda *a, **k: (period_for(*a, **k), time.sleep(0.3))[0])
    first = OrderFactory(plan=plan, email="grace@example.com")
    first = fulfil(first, via="webhook", payment_intent=payment_intent(first)).order
    old_end = first.subscription.ends_at
    second, third = (
        OrderFactory(plan=plan, email="grace@example.com"),
        OrderFactory(plan=plan, email="grace@example.com"),
    )

    run_together(
        lambda: fulfil(second, via="webhook", payment_intent=payment_intent(second)),
        lambda: fulfil(third, via="reconciliation", payment_intent=payment_intent(third)),
    )

    ends = sorted(Subscription.objects.filter(order__in=[second, third]).values_list("ends_at", flat=True))
    year = timedelta(days=plan.duration_days)
    assert ends == [old_end + year, old_end + 2 * year]
