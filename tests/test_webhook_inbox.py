"""billing.webhook_inbox: the same rows as dj-stripe's `from_request`, in fewer statements.

The lean inbox replaces dj-stripe code on the path that guarantees I6, so these hold it to
dj-stripe's own answer: the Event row dj-stripe would build for the same body, the trigger and
Event rows dj-stripe's `from_request` stores for the same delivery, its signals, and one Event
(one run of the receivers) when the same event arrives twice at once.
"""

import json
import time

import pytest
from django.conf import settings
from django.test import Client, RequestFactory
from djstripe import signals
from djstripe.models import Event, WebhookEndpoint, WebhookEventTrigger

from billing import webhook_inbox, webhooks
from billing.models import Order, OutboundEmail, Subscription
from tests.factories import OrderFactory, payment_intent
from tests.fixtures.services import make_event, post_event, sign, signed_event
from tests.test_races import race, run_together

pytestmark = pytest.mark.django_db

# Compared column by column; these three are dj-stripe's bookkeeping (row id, row timestamps).
BOOKKEEPING = {"djstripe_id", "djstripe_created", "djstripe_updated"}


def _bodies(order_id: str) -> dict[str, dict]:
    pi = {"id": "pi_rows", "object": "payment_intent", "status": "succeeded", "amount": 24900, "currency": "usd"}
    refund = {"id": "re_rows", "object": "refund", "amount": 500, "currency": "usd", "payment_intent": "pi_rows"}
    dispute = {"id": "dp_rows", "object": "dispute", "amount": 24900, "currency": "usd", "charge": "ch_rows"}
    efw = {"id": "issfr_rows", "object": "radar.early_fraud_warning", "charge": "ch_rows", "actionable": True}
    return {
        "payment_intent.succeeded": make_event("payment_intent.succeeded", {**pi, "metadata": {"order_id": order_id}}),
        "refund.created with a request": {
            **make_event("refund.created", refund),
            "request": {"id": "req_abc", "idempotency_key": "refund-1"},
        },
        "charge.dispute.created, automatic (request null)": {
            **make_event("charge.dispute.created", dispute),
            "request": None,
        },
        "radar.early_fraud_warning.created, old request format": {
            **make_event("radar.early_fraud_warning.created", efw),
            "request": "req_old",
        },
        "no api_version": {**make_event("payment_intent.canceled", pi), "api_version": None},
    }


def _columns(row) -> dict:
    return {f.attname: getattr(row, f.attname) for f in type(row)._meta.concrete_fields if f.name not in BOOKKEEPING}


@pytest.mark.parametrize("case", list(_bodies("x")))
def test_the_event_row_is_the_one_dj_stripe_would_build(case, webhook_endpoint):
    data = _bodies("00000000-0000-0000-0000-000000000000")[case]
    # dj-stripe's own construction (no save, no receivers): owner found by API key, request
    # fields from _attach_objects_hook.
    theirs = Event._create_from_stripe_object(
        json.loads(json.dumps(data)), save=False, api_key=settings.STRIPE_SECRET_KEY
    )
    ours = webhook_inbox.event_row(json.loads(json.dumps(data)), webhook_endpoint.djstripe_owner_account_id)

    assert _columns(ours) == _columns(theirs)
    assert ours.djstripe_owner_account_id == webhook_endpoint.djstripe_owner_account_id


def test_event_row_refuses_what_is_not_an_event():
    with pytest.raises(ValueError, match="into 'Event'"):
        webhook_inbox.event_row({"id": "pi_1", "object": "payment_intent"}, "acct_1")


@pytest.mark.django_db(transaction=True)  # each path commits as in production
def test_a_delivery_stores_the_rows_dj_stripe_stores(webhook_endpoint):
    """The same delivery through the front door and through dj-stripe's `from_request`: the
    trigger rows and the Event rows are the same but for ids, times and the event's own id. An
    event type with no receiver, so the two paths run nothing else."""
    bodies = []
    for event_id in ("evt_ours", "evt_theirs"):
        event = {**make_event("balance.available", {"object": "balance", "available": []}), "id": event_id}
        event["request"] = {"id": "req_rows", "idempotency_key": "key-rows"}
        bodies.append(json.dumps(event))
    header = sign(bodies[0])
    assert post_event(Client(REMOTE_ADDR="203.0.113.9"), webhook_endpoint, bodies[0], header).status_code == 200
    request = RequestFactory().post(
        "/", data=bodies[1], content_type="application/json", HTTP_STRIPE_SIGNATURE=sign(bodies[1])
    )
    request.META["REMOTE_ADDR"] = "203.0.113.9"
    WebhookEventTrigger.from_request(request, webhook_endpoint=WebhookEndpoint.objects.get(pk=webhook_endpoint.pk))

    ours, theirs = WebhookEventTrigger.objects.order_by("id")
    differ = {"id", "created", "updated", "body", "headers", "event_id"}
    assert {k: v for k, v in _columns(ours).items() if k not in differ} == {
        k: v for k, v in _columns(theirs).items() if k not in differ
    }
    assert ours.valid and ours.processed and not ours.exception and not ours.traceback
    assert (ours.event_id, theirs.event_id) == ("evt_ours", "evt_theirs")
    assert ours.body == bodies[0] and ours.headers["Stripe-Signature"] == header
    assert set(ours.headers) == set(theirs.headers)
    event_ours, event_theirs = Event.objects.get(id="evt_ours"), Event.objects.get(id="evt_theirs")
    same = {"id", "stripe_data"}
    assert {k: v for k, v in _columns(event_ours).items() if k not in same} == {
        k: v for k, v in _columns(event_theirs).items() if k not in same
    }
    assert event_ours.request_id == "req_rows" and event_ours.idempotency_key == "key-rows"


def test_dj_stripe_signals_are_sent_as_dj_stripe_sends_them(plan, webhook_endpoint, settings):
    seen = []

    def spy(name):
        def receiver(sender, instance, **kwargs):
            seen.append((name, instance.pk, instance.valid, instance.processed))

        return receiver

    names = ["webhook_pre_validate", "webhook_post_validate", "webhook_pre_process", "webhook_post_process"]
    receivers = [spy(name) for name in [*names, "webhook_processing_error"]]
    for name, receiver in zip([*names, "webhook_processing_error"], receivers, strict=True):
        getattr(signals, name).connect(receiver, weak=False)
    try:
        order = OrderFactory(
            plan=plan, stripe_payment_intent_id="pi_sig", stripe_payment_status="requires_confirmation"
        )
        body, header = signed_event("payment_intent.succeeded", payment_intent(order))
        assert post_event(Client(), webhook_endpoint, body, header).status_code == 200
        trigger = WebhookEventTrigger.objects.get()
        assert [name for name, *_ in seen] == names
        assert all(pk == trigger.pk for _, pk, *_ in seen)

        seen.clear()
        settings.FAILPOINTS = "fulfil_before_commit=raise"
        other = OrderFactory(
            plan=plan, stripe_payment_intent_id="pi_sig2", stripe_payment_status="requires_confirmation"
        )
        body, header = signed_event("payment_intent.succeeded", payment_intent(other))
        assert post_event(Client(raise_request_exception=False), webhook_endpoint, body, header).status_code == 500
        assert [name for name, *_ in seen] == [*names[:3], "webhook_processing_error"]
        assert seen[-1][2:] == (True, False)  # valid, not processed: reconciliation replays it
    finally:
        for name, receiver in zip([*names, "webhook_processing_error"], receivers, strict=True):
            getattr(signals, name).disconnect(receiver)


def test_what_the_lean_inbox_does_not_cover_goes_to_dj_stripe(plan, webhook_endpoint, monkeypatch):
    """An endpoint with no owner account (dj-stripe would find one by API key): dj-stripe's own
    path stores and processes it, and the order is fulfilled once all the same. A Connect event
    naming an account, and an endpoint that validates by asking Stripe, are not covered either."""
    WebhookEndpoint.objects.filter(pk=webhook_endpoint.pk).update(djstripe_owner_account=None)
    called = []
    original = WebhookEventTrigger.from_request.__func__
    monkeypatch.setattr(
        WebhookEventTrigger,
        "from_request",
        classmethod(lambda cls, *a, **k: called.append(1) or original(cls, *a, **k)),
    )
    order = OrderFactory(plan=plan, stripe_payment_intent_id="pi_cover", stripe_payment_status="requires_confirmation")
    body, header = signed_event("payment_intent.succeeded", payment_intent(order))

    assert post_event(Client(), webhook_endpoint, body, header).status_code == 200
    assert called == [1]
    assert Order.objects.get(pk=order.pk).state == "fulfilled" and Subscription.objects.count() == 1
    assert WebhookEventTrigger.objects.get().processed

    endpoint = WebhookEndpoint.objects.get(pk=webhook_endpoint.pk)
    endpoint.djstripe_owner_account_id = webhook_endpoint.djstripe_owner_account_id
    assert webhook_inbox.covers(endpoint, {"id": "evt_1"})
    assert not webhook_inbox.covers(endpoint, {"id": "evt_1", "account": "acct_connected"})
    endpoint.djstripe_validation_method = "retrieve_event"
    assert not webhook_inbox.covers(endpoint, {"id": "evt_1"})


@race
def test_the_same_event_delivered_twice_at_once_runs_its_receivers_once(plan, webhook_endpoint, monkeypatch):
    """Stripe retries a delivery it timed out while the first is still running. The second
    request finds no Event yet (the first has not committed), inserts one, waits on the unique
    id until the first commits, then rolls back and answers 200 as a duplicate: one Event, one
    fulfilment, one access email, and both triggers processed and pointing at the Event."""
    order = OrderFactory(plan=plan, stripe_payment_intent_id="pi_twice", stripe_payment_status="requires_confirmation")
    body, header = signed_event("payment_intent.succeeded", payment_intent(order))
    fulfilments, post_processed = [], []
    fulfil = webhooks.fulfil_from_payment_intent

    def slow_fulfil(*args, **kwargs):
        fulfilments.append(1)
        result = fulfil(*args, **kwargs)
        time.sleep(0.5)  # holds the Event's uncommitted row while the duplicate arrives
        return result

    def seen(sender, instance, **kwargs):
        post_processed.append(instance.pk)

    monkeypatch.setattr(webhooks, "fulfil_from_payment_intent", slow_fulfil)
    signals.webhook_post_process.connect(seen, weak=False)
    post = lambda: post_event(Client(), webhook_endpoint, body, header).status_code  # noqa: E731
    try:
        assert run_together(post, post) == [200, 200]
    finally:
        signals.webhook_post_process.disconnect(seen)

    event_id = json.loads(body)["id"]
    assert fulfilments == [1]
    assert Event.objects.filter(id=event_id).count() == 1
    triggers = list(WebhookEventTrigger.objects.all())
    assert len(triggers) == 2 and all(t.valid and t.processed and t.event_id == event_id for t in triggers)
    assert sorted(post_processed) == sorted(t.pk for t in triggers)  # as dj-stripe: once per trigger
    assert Order.objects.get(pk=order.pk).state == "fulfilled"
    assert Subscription.objects.filter(order=order).count() == 1
    assert OutboundEmail.objects.filter(order=order, kind__in=["confirmation", "recovery"]).count() == 1


def test_a_webhook_event_callback_set_in_settings_is_called_as_dj_stripe_calls_it(plan, webhook_endpoint, settings):
    """DJSTRIPE_WEBHOOK_EVENT_CALLBACK replaces dj-stripe's processing (e.g. to queue it); only
    dj-stripe's from_request calls it, so with it set every delivery goes there."""
    called = []

    def callback(trigger, api_key):
        called.append(trigger.pk)
        trigger.process(save=False, api_key=api_key)

    settings.DJSTRIPE_WEBHOOK_EVENT_CALLBACK = callback
    order = OrderFactory(plan=plan, stripe_payment_intent_id="pi_cb", stripe_payment_status="requires_confirmation")
    body, header = signed_event("payment_intent.succeeded", payment_intent(order))

    assert not webhook_inbox.covers(WebhookEndpoint.objects.get(pk=webhook_endpoint.pk), json.loads(body))
    assert post_event(Client(), webhook_endpoint, body, header).status_code == 200
    assert called == [WebhookEventTrigger.objects.get().pk]
    assert Order.objects.get(pk=order.pk).state == "fulfilled"
