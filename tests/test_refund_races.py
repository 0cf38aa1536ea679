"""Refunds requested at the same moment, on PostgreSQL with real threads and commits.

support.actions.refund() locks the order row for the whole call (amount check, Stripe call,
record), and the refund request's token is unique here and Stripe's idempotency key there.
select_for_update is a no-op on SQLite: these run on PostgreSQL only (see tests/test_races.py).
"""

import uuid

import pytest
from django.contrib.auth.models import Permission

from billing.fulfilment import fulfil
from billing.models import Order, OrderEvent, OutboundEmail, Refund
from support import actions
from support.actions import ActionRefused
from support.models import RefundRequest
from tests.factories import OrderFactory, UserFactory
from tests.test_races import race, run_together

# Stripe's latency on a refund: the window in which a second request could slip in.
LATENCY = 0.3


@pytest.fixture
def refunders(db):
    permission = Permission.objects.get(content_type__app_label="billing", codename="refund_order")
    people = [UserFactory(email=f"{name}@paidup.example", is_staff=True) for name in ("rita", "sam")]
    for person in people:
        person.user_permissions.add(permission)
    return people


def fulfilled_order(fake_stripe) -> Order:
    order = OrderFactory()
    pi = fake_stripe.pay_elsewhere(
        email=order.email, metadata={"order_id": str(order.id), "reference": order.reference, "email": order.email}
    )
    fulfil(order, via="webhook", payment_intent=pi)
    order.refresh_from_db()
    return order


def attempt(order_pk, user_pk, amount: int, token: uuid.UUID) -> str:
    """One person pressing "Refund": the action's sentence, or why it was refused."""
    from accounts.models import User

    try:
        return actions.refund(
            Order.objects.get(pk=order_pk),
            User.objects.get(pk=user_pk),
            amount_cents=amount,
            reason="Customer asked",
            token=token,
        ).message
    except ActionRefused as refused:
        return f"refused: {refused}"


def assert_refunded_once(order: Order, fake_stripe, requests_before: int) -> None:
    order.refresh_from_db()
    # One request reached Stripe: the second was stopped here, not by Stripe's own check.
    assert fake_stripe.requests - requests_before == 1
    assert len(fake_stripe.refunds) == 1
    assert order.state == "refunded" and order.refunded_cents == order.amount_cents
    assert Refund.objects.filter(order=order).count() == 1
    assert RefundRequest.objects.filter(order=order).count() == 1
    assert OrderEvent.objects.filter(order=order, kind="state:refunded").count() == 1
    assert OutboundEmail.objects.filter(order=order, kind="refund").count() == 1


@race
def test_two_people_refunding_the_full_amount_at_once_refund_once(fake_stripe, refunders, plan):
    fake_stripe.refund_latency = LATENCY
    order = fulfilled_order(fake_stripe)
    rita, sam = refunders
    requests_before = fake_stripe.requests

    answers = run_together(
        lambda: attempt(order.pk, rita.pk, order.amount_cents, uuid.uuid4()),
        lambda: attempt(order.pk, sam.pk, order.amount_cents, uuid.uuid4()),
    )

    assert sorted(a.startswith("refused") for a in answers) == [False, True], answers
    assert_refunded_once(order, fake_stripe, requests_before)


@race
def test_the_same_refund_form_submitted_twice_at_once_refunds_once(fake_stripe, refunders, plan):
    fake_stripe.refund_latency = LATENCY
    order = fulfilled_order(fake_stripe)
    rita, _ = refunders
    token = uuid.uuid4()
    requests_before = fake_stripe.requests

    answers = run_together(*[lambda: attempt(order.pk, rita.pk, order.amount_cents, token)] * 2)

    assert sorted("already made" in a for a in answers) == [False, True], answers
    assert_refunded_once(order, fake_stripe, requests_before)
