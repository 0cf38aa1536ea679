"""POST /stripe/webhook/<uuid>/: signed events fulfil exactly once; refusals change nothing (I6)."""

import json
import time

import pytest
from django.test import Client
from djstripe.models import Event, WebhookEventTrigger

from billing.models import Order, OrderEvent, OutboundEmail, Subscription
from tests.factories import OrderFactory, payment_intent
from tests.fixtures.services import db_snapshot, make_event, post_event, sign, signed_event, webhook_url

pytestmark = pytest.mark.django_db


@pytest.fixture
def order(plan):
    """A pending order whose PaymentIntent was created and is being confirmed."""
    return OrderFactory(
        plan=plan, stripe_payment_intent_id="pi_webhook1", stripe_payment_status="requires_confirmation"
    )


@pytest.fixture
def deliver(client, webhook_endpoint, django_capture_on_commit_callbacks):
    """Deliver (body, header) as Stripe does, running what the commit hands off (emails)."""

    def _deliver(body, header):
        with django_capture_on_commit_callbacks(execute=True):
            return post_event(client, webhook_endpoint, body, header)

    return _deliver


def test_it_fulfils_a_pending_order_from_a_signed_payment_succeeded(order, deliver, mailoutbox):
    response = deliver(*signed_event("payment_intent.succeeded", payment_intent(order)))
    assert response.status_code == 200
    order.refresh_from_db()
    assert order.state == "fulfilled" and order.fulfilled_via == "webhook"
    assert Subscription.objects.filter(order=order).count() == 1
    assert [m.to for m in mailoutbox] == [[order.email]]
    assert order.events.get(kind="state:fulfilled").actor == "stripe:webhook"


@pytest.mark.parametrize("minutes_late, kind", [(0, "confirmation"), (20, "recovery")])
def test_the_events_created_decides_confirmation_or_recovery(order, deliver, mailoutbox, minutes_late, kind):
    """Stripe retries a webhook for days: one that arrives 20 minutes after the charge (our
    endpoint was down) is a late fulfilment, whatever the PaymentIntent's own dates say."""
    body = json.dumps(
        make_event(
            "payment_intent.succeeded",
            payment_intent(order, created=int(time.time())),
            created=int(time.time()) - minutes_late * 60,
        )
    )
    assert deliver(body, sign(body)).status_code == 200
    assert OutboundEmail.objects.get(order=order).kind == kind
    fulfilled = order.events.get(kind="state:fulfilled")
    assert fulfilled.data["via"] == "webhook" and fulfilled.data["recovery"] is (kind == "recovery")


def test_it_processes_an_event_delivered_five_times_once(order, deliver, mailoutbox):
    body, header = signed_event("payment_intent.succeeded", payment_intent(order))
    statuses = [deliver(body, header).status_code for _ in range(5)]
    assert statuses == [200] * 5
    assert Subscription.objects.count() == 1
    assert OutboundEmail.objects.count() == 1 and len(mailoutbox) == 1
    assert Event.objects.count() == 1
    assert order.events.filter(kind="state:fulfilled").count() == 1


def test_it_fulfils_once_when_distinct_events_report_the_same_payment(order, deliver, mailoutbox):
    for _ in range(3):
        assert deliver(*signed_event("payment_intent.succeeded", payment_intent(order))).status_code == 200
    assert Event.objects.count() == 3
    assert Subscription.objects.count() == 1
    assert OutboundEmail.objects.count() == 1 and len(mailoutbox) == 1


@pytest.mark.parametrize("state", ["paid", "fulfilled"])
def test_it_never_moves_a_paid_order_backwards_on_a_late_failure(plan, state, deliver):
    order = OrderFactory(plan=plan, state=state, stripe_payment_intent_id="pi_paid1", stripe_payment_status="succeeded")
    failed = payment_intent(order, status="requires_payment_method", last_payment_error={"message": "Card declined."})
    assert deliver(*signed_event("payment_intent.payment_failed", failed)).status_code == 200
    order.refresh_from_db()
    assert order.state == state and order.stripe_payment_status == "succeeded"
    row = order.events.get(kind="payment:failed")
    assert row.actor == "stripe:webhook" and row.data["applied"] is False


def test_it_records_a_failed_attempt_on_a_pending_order_without_failing_it(order, deliver):
    failed = payment_intent(order, status="requires_payment_method", last_payment_error={"message": "Card declined."})
    assert deliver(*signed_event("payment_intent.payment_failed", failed)).status_code == 200
    order.refresh_from_db()
    assert order.state == "pending" and order.stripe_payment_status == "requires_payment_method"
    assert "Card declined." in order.events.get(kind="payment:failed").message


def test_a_late_failure_of_an_earlier_attempt_does_not_touch_the_current_one(order, deliver):
    first_attempt = payment_intent(order, pi_id="pi_attempt1", status="requires_payment_method")
    assert deliver(*signed_event("payment_intent.payment_failed", first_attempt)).status_code == 200
    order.refresh_from_db()
    assert order.stripe_payment_intent_id == "pi_webhook1"
    assert order.stripe_payment_status == "requires_confirmation"
    assert order.events.get(kind="payment:failed").data["applied"] is False


def test_it_fails_a_pending_order_whose_payment_was_canceled(order, deliver):
    assert (
        deliver(*signed_event("payment_intent.canceled", payment_intent(order, status="canceled"))).status_code == 200
    )
    order.refresh_from_db()
    assert order.state == "failed" and order.failed_at is not None
    assert order.events.get(kind="state:failed").actor == "stripe:webhook"


def test_it_leaves_a_paid_order_alone_when_its_payment_is_canceled(plan, deliver):
    order = OrderFactory(
        plan=plan, state="paid", stripe_payment_intent_id="pi_paid2", stripe_payment_status="succeeded"
    )
    assert (
        deliver(*signed_event("payment_intent.canceled", payment_intent(order, status="canceled"))).status_code == 200
    )
    order.refresh_from_db()
    assert order.state == "paid"
    assert order.events.filter(kind="payment:canceled").exists()
    assert not order.events.filter(kind__startswith="state:").exists()


def test_it_does_not_fulfil_a_payment_of_another_amount(order, deliver, mailoutbox):
    response = deliver(*signed_event("payment_intent.succeeded", payment_intent(order, amount=100)))
    assert response.status_code == 200  # retrying cannot fix it: a human must look
    order.refresh_from_db()
    assert order.state == "pending"
    assert not Subscription.objects.exists() and not mailoutbox
    assert "amount $1.00 != $249.00" in order.events.get(kind="needs_attention").message


def test_it_answers_200_and_creates_nothing_for_an_unknown_payment(plan, deliver, webhook_endpoint):
    stranger = payment_intent(OrderFactory.build(plan=plan), pi_id="pi_unknown1", metadata={})
    before = db_snapshot()
    assert deliver(*signed_event("payment_intent.succeeded", stranger)).status_code == 200
    after = db_snapshot()
    assert after == {**before, "triggers": before["triggers"] + 1, "events": before["events"] + 1}


def _bad_signature(body):
    return body, sign(body).rsplit("v1=", 1)[0] + "v1=" + "0" * 64


def _other_secret(body):
    return body, sign(body, secret="whsec_someoneelse")


def _stale(body):
    return body, sign(body, timestamp=int(time.time()) - 301)


def _no_header(body):
    return body, None


def _signed(text):
    return lambda body: (text, sign(text))


def _oversized(body):
    from django.conf import settings

    event = json.loads(body)
    event["data"]["object"]["metadata"]["padding"] = "x" * settings.WEBHOOK_MAX_BODY_BYTES
    big = json.dumps(event)
    return big, sign(big)


_EVENT = '"id": "evt_1", "object": "event", "type": "payment_intent.succeeded"'

REFUSALS = {
    "bad signature": (_bad_signature, 400),
    "another secret": (_other_secret, 400),
    "stale timestamp": (_stale, 400),
    "missing header": (_no_header, 400),
    "malformed JSON": (_signed('{"id": "evt_1", "type": "payment_intent.succeeded", '), 400),
    "not an object": (_signed('["evt_1"]'), 400),
    "not an event": (_signed('{"hello": "world"}'), 400),
    "not an event object": (_signed('{"id": "ch_1", "object": "charge", "type": "x", "livemode": false}'), 400),
    "event without livemode": (_signed(f'{{{_EVENT}, "data": {{"object": {{}}}}}}'), 400),
    "event without data": (_signed(f'{{{_EVENT}, "livemode": false}}'), 400),
    "oversized": (_oversized, 413),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_it_refuses_and_changes_nothing(case, order, client, webhook_endpoint):
    tamper, status = REFUSALS[case]
    body = json.dumps(make_event("payment_intent.succeeded", payment_intent(order)))
    before = db_snapshot()
    response = post_event(client, webhook_endpoint, *tamper(body))
    assert response.status_code == status
    assert db_snapshot() == before
    assert not WebhookEventTrigger.objects.exists()


def test_it_refuses_an_event_that_went_stale_in_transit(order, client, webhook_endpoint, time_machine):
    body, header = signed_event("payment_intent.succeeded", payment_intent(order))
    time_machine.move_to(time.time() + 301)
    before = db_snapshot()
    assert post_event(client, webhook_endpoint, body, header).status_code == 400
    assert db_snapshot() == before


def test_it_refuses_a_forged_event_even_with_debug_on(order, client, webhook_endpoint, settings):
    # dj-stripe alone trusts X-Djstripe-Webhook-Secret when DEBUG is on; the front door must not.
    settings.DEBUG = True
    body, header = signed_event("payment_intent.succeeded", payment_intent(order), secret="whsec_forger")
    response = client.post(
        webhook_url(webhook_endpoint),
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=header,
        HTTP_X_DJSTRIPE_WEBHOOK_SECRET="whsec_forger",
    )
    assert response.status_code == 400
    order.refresh_from_db()
    assert order.state == "pending" and not WebhookEventTrigger.objects.exists()


def test_it_answers_404_for_an_unknown_endpoint(order, client, webhook_endpoint):
    body, header = signed_event("payment_intent.succeeded", payment_intent(order))
    before = db_snapshot()
    response = client.post(
        "/stripe/webhook/00000000-0000-4000-8000-000000000000/",
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=header,
    )
    assert response.status_code == 404
    assert db_snapshot() == before


def test_it_answers_405_to_a_get(client, webhook_endpoint):
    assert client.get(webhook_url(webhook_endpoint)).status_code == 405
    assert not WebhookEventTrigger.objects.exists()


@pytest.mark.django_db(transaction=True)  # real commits and rollbacks, not savepoints
def test_a_failing_receiver_answers_500_keeps_only_the_trigger_and_replays_once(
    order, webhook_endpoint, settings, mailoutbox
):
    settings.FAILPOINTS = "fulfil_before_commit=raise"
    body, header = signed_event("payment_intent.succeeded", payment_intent(order))
    before = db_snapshot()
    response = post_event(Client(raise_request_exception=False), webhook_endpoint, body, header)

    assert response.status_code == 500
    assert db_snapshot() == {**before, "triggers": 1}
    trigger = WebhookEventTrigger.objects.get()
    assert trigger.valid and not trigger.processed
    assert "failpoint fulfil_before_commit" in trigger.exception
    assert "FailpointError" in trigger.traceback

    settings.FAILPOINTS = ""
    assert not mailoutbox
    for _ in range(2):  # a replay, then a second replay by an impatient operator
        trigger.process(save=True)
    trigger.refresh_from_db()
    order.refresh_from_db()
    assert trigger.processed and order.state == "fulfilled"
    assert Subscription.objects.count() == 1 and len(mailoutbox) == 1
    assert Event.objects.count() == 1
    assert OrderEvent.objects.filter(order=order, kind="state:fulfilled").count() == 1
    assert Order.objects.get(pk=order.pk).fulfilled_via == "webhook"


@pytest.mark.parametrize("our_status", ["creating", ""])
def test_the_cancel_of_a_payment_the_checkout_replaced_leaves_the_order_open(plan, deliver, our_status):
    """The checkout cancels a PaymentIntent before a new attempt replaces it (billing.checkout);
    Stripe's canceled event for it arrives while the new attempt is being made, or after it
    failed: the customer is still paying, and the order stays pending."""
    order = OrderFactory(plan=plan, stripe_payment_intent_id="pi_replaced", stripe_payment_status=our_status)
    response = deliver(*signed_event("payment_intent.canceled", payment_intent(order, status="canceled")))
    assert response.status_code == 200
    order.refresh_from_db()
    assert order.state == "pending"
    assert order.events.filter(kind="payment:canceled").exists()
