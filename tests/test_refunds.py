"""The core's refund rule (billing/refunds.py), called as the console calls it, Stripe faked
at the gateway (FakeStripe). The console's own checks (permission, reason, double submit) are
in tests/test_support_actions.py."""

import pytest
import stripe

from billing import refunds
from billing.models import Order, OrderEvent, OutboundEmail, Refund
from tests.factories import OrderFactory, stripe_paid_order

pytestmark = pytest.mark.django_db


def fulfilled(fake_stripe) -> Order:
    return stripe_paid_order(fake_stripe, state="fulfilled")


def give_back(order: Order, amount_cents: int, key: str = "key-1"):
    return refunds.refund_payment(order, amount_cents=amount_cents, reason="asked", idempotency_key=key, actor="test")


def test_it_refunds_in_stripe_with_the_callers_key_and_records_it_once(fake_stripe):
    order = fulfilled(fake_stripe)

    first = give_back(order, 5000, key="order-x-refund-1")
    again = give_back(order, 5000, key="order-x-refund-1")  # a replay: Stripe returns the same refund

    assert again.id == first.id and [r.idempotency_key for r in fake_stripe.refunds] == ["order-x-refund-1"]
    order.refresh_from_db()
    assert order.refunded_cents == 5000 and order.state == Order.State.FULFILLED
    assert Refund.objects.filter(order=order).count() == 1
    assert OutboundEmail.objects.filter(order=order, kind="refund").count() == 1
    assert OrderEvent.objects.get(order=order, kind="refund").actor == "test"


def test_a_full_refund_ends_access_and_moves_the_order_with_its_actor(fake_stripe):
    order = fulfilled(fake_stripe)

    give_back(order, order.amount_cents)

    order.refresh_from_db()
    assert order.state == Order.State.REFUNDED and order.refunded_cents == order.amount_cents
    assert OrderEvent.objects.get(order=order, kind="state:refunded").actor == "test"


@pytest.mark.parametrize(
    ("amount", "message"),
    [(0, "must be more than zero"), (-100, "must be more than zero"), (24901, r"At most \$249.00 can be refunded")],
)
def test_it_refuses_an_amount_it_cannot_refund_before_asking_stripe(fake_stripe, amount, message):
    order = fulfilled(fake_stripe)

    with pytest.raises(refunds.RefundRefused, match=message):
        give_back(order, amount)

    assert fake_stripe.refunds == [] and not Refund.objects.exists()


def test_it_refuses_an_order_that_took_no_money(fake_stripe):
    order = OrderFactory()

    with pytest.raises(refunds.RefundRefused, match=f"{order.reference} is pending: there is no payment to refund"):
        give_back(order, 100)

    assert fake_stripe.refunds == [] and not Refund.objects.exists()


def test_a_refusal_from_stripe_records_nothing(fake_stripe, monkeypatch):
    order = fulfilled(fake_stripe)

    def refused(*args, **kwargs):
        raise stripe.InvalidRequestError("Charge ch_1 has been disputed.", "charge")

    monkeypatch.setattr("billing.gateway.create_refund", refused)

    with pytest.raises(refunds.RefundRefused, match="Stripe refused the refund: Charge ch_1 has been disputed."):
        give_back(order, 100)

    order.refresh_from_db()
    assert order.refunded_cents == 0 and not Refund.objects.exists()
    assert not OutboundEmail.objects.filter(kind="refund").exists()
