"""Two support people press "Refund" on the same order at the same moment, through the admin.

PostgreSQL only (row locks; see tests/test_races.py for the marker). The action locks the
order row and the admin writes its LogEntry inside the same transaction, so the loser waits,
sees nothing left to refund, and leaves no audit row behind. The same race one level down,
at support.actions, is in tests/test_refund_races.py.
"""

import threading
import time
import uuid

import pytest
from django.contrib.admin.models import LogEntry
from django.test import Client

from billing import gateway
from billing.models import Order, Refund
from support.models import RefundRequest
from tests.fixtures.console import act_url, client_for, fulfilled_order, staff
from tests.fixtures.gateway import FakeStripe
from tests.test_races import race, run_together

LATENCY = 0.3  # Stripe's time to answer a refund: the window a second request could use


@pytest.fixture
def slow_stripe(stripe_api, monkeypatch) -> FakeStripe:
    api = stripe_api
    create, lock = api.create_refund, threading.Lock()
    api.calls = 0

    def create_refund(*args, **kwargs):
        with lock:
            api.calls += 1
        time.sleep(LATENCY)
        with lock:
            return create(*args, **kwargs)

    monkeypatch.setattr(gateway, "create_refund", create_refund)
    return api


def browser_of(user) -> Client:
    return client_for(user)  # signed in, second factor verified


@race
def test_two_people_refunding_in_the_console_at_once_make_one_stripe_refund(slow_stripe):
    order = fulfilled_order(slow_stripe)
    people = [staff(f"{name}@paidup.example", "Support", "Support: refunds") for name in ("rita", "sam")]
    browsers = [browser_of(person) for person in people]
    form = {"amount": "249.00", "reason": "Customer asked", "confirmed": "yes"}

    responses = run_together(
        *[lambda b=b: b.post(act_url(order, "refund"), {**form, "token": str(uuid.uuid4())}) for b in browsers]
    )

    assert sorted(r.status_code for r in responses) == [302, 400]
    loser = next(r for r in responses if r.status_code == 400)
    page = loser.content.decode()
    assert "there is no payment to refund" in page or "At most $0.00" in page or "at most $0.00" in page
    order.refresh_from_db()
    assert order.state == Order.State.REFUNDED and order.refunded_cents == order.amount_cents
    assert slow_stripe.calls == 1 and len(slow_stripe.refunds) == 1
    assert Refund.objects.filter(order=order).count() == 1
    assert RefundRequest.objects.filter(order=order).count() == 1
    # One audit row: the loser's transaction wrote none.
    assert LogEntry.objects.filter(object_id=str(order.pk), change_message__startswith="Refund").count() == 1


@race
def test_a_refund_form_submitted_twice_at_once_refunds_once(slow_stripe):
    order = fulfilled_order(slow_stripe)
    rita = staff("rita@paidup.example", "Support", "Support: refunds")
    browsers = [browser_of(rita), browser_of(rita)]
    form = {"amount": "10", "reason": "Double click", "token": str(uuid.uuid4()), "confirmed": "yes"}

    responses = run_together(*[lambda b=b: b.post(act_url(order, "refund"), form) for b in browsers])

    assert [r.status_code for r in responses] == [302, 302]
    order.refresh_from_db()
    assert order.refunded_cents == 1000 and order.state == Order.State.FULFILLED
    assert len(slow_stripe.refunds) == 1
    assert RefundRequest.objects.filter(order=order).count() == 1
