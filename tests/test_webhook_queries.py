"""The cost of a webhook in database statements: a guard against creeping back.

A first delivery of `payment_intent.succeeded` (store the trigger, verify, record the event,
lock the order, pending → paid → fulfilled, subscription, access email, timeline) was 37
statements on PostgreSQL, 33 since issue 13 item 5 (docs/benchmarks.md, "Cheaper webhooks").
Counted as production runs the view: no test transaction around it (`transaction=True`), so
savepoints here are the ones production sends. The q broker's enqueue of the email after the
commit is left out (a Redis command in production, one INSERT with the ORM broker). When a
change needs more statements, raise the number here and say why in the commit.
"""

from unittest import mock

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from billing.models import Order, Subscription
from tests.factories import OrderFactory, payment_intent
from tests.fixtures.services import post_event, signed_event

FIRST_DELIVERY_STATEMENTS = 23
DUPLICATE_STATEMENTS = 6

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def order(plan):
    return OrderFactory(plan=plan, stripe_payment_intent_id="pi_count1", stripe_payment_status="requires_confirmation")


def _deliver(client, endpoint, body, header):
    with mock.patch("outbox.sending.async_task") as enqueue, CaptureQueriesContext(connection) as queries:
        response = post_event(client, endpoint, body, header)
    return response, [q["sql"] for q in queries.captured_queries], enqueue


def test_a_first_delivery_of_payment_succeeded_costs_23_statements(order, client, webhook_endpoint):
    body, header = signed_event("payment_intent.succeeded", payment_intent(order))
    response, statements, enqueue = _deliver(client, webhook_endpoint, body, header)

    assert response.status_code == 200
    order.refresh_from_db()
    assert order.state == Order.State.FULFILLED and order.fulfilled_via == "webhook"
    assert Subscription.objects.filter(order=order).count() == 1
    assert enqueue.call_count == 1  # the access email went to the queue after the commit
    # The checks are still made: the row lock is taken, the trigger stored before processing.
    assert any("FOR UPDATE" in sql and "billing_order" in sql for sql in statements)
    assert statements[1].startswith('INSERT INTO "djstripe_webhookeventtrigger"')
    assert len(statements) == FIRST_DELIVERY_STATEMENTS, "\n".join(s[:120] for s in statements)


def test_a_duplicate_delivery_stays_cheap_and_changes_nothing(order, client, webhook_endpoint):
    body, header = signed_event("payment_intent.succeeded", payment_intent(order))
    _deliver(client, webhook_endpoint, body, header)
    response, statements, enqueue = _deliver(client, webhook_endpoint, body, header)

    assert response.status_code == 200
    assert enqueue.call_count == 0
    assert Subscription.objects.filter(order=order).count() == 1
    assert len(statements) == DUPLICATE_STATEMENTS, "\n".join(s[:120] for s in statements)


def test_a_refused_delivery_stores_nothing(order, client, webhook_endpoint):
    body, header = signed_event("payment_intent.succeeded", payment_intent(order))
    response, statements, _ = _deliver(client, webhook_endpoint, body, header.replace("v1=", "v1=0"))

    assert response.status_code == 400
    assert not any(sql.startswith("INSERT") for sql in statements)
