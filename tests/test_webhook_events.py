"""The event types PaidUp has receivers for are the ones the webhook endpoint is subscribed to.

A receiver for an event type the endpoint is not subscribed to never runs in production: Stripe
delivers only `enabled_events`. That is how disputes and early fraud warnings reached PaidUp only
through reconciliation (issue 11). `tests/test_stripe_setup.py` checks the endpoint itself."""

import typing
import weakref

import pytest
from django.core.exceptions import ImproperlyConfigured
from djstripe.signals import WEBHOOK_SIGNALS

from billing import stripe_events, webhooks

PAIDUP_PACKAGES = ("billing.", "support.", "accounts.", "outbox.", "config.")


def paidup_receiver_types() -> set[str]:
    """Every Stripe event type with a receiver from PaidUp's own code connected to dj-stripe's signal
    (however it was connected: `webhooks.receiver`, `djstripe_receiver` or `signal.connect`)."""
    found = set()
    for event_type, signal in WEBHOOK_SIGNALS.items():
        for _key, target, _is_async in signal.receivers:
            function = target() if isinstance(target, weakref.ReferenceType) else target
            if getattr(function, "__module__", "").startswith(PAIDUP_PACKAGES):
                found.add(event_type)
    return found


def stripe_accepted_event_types() -> set[str]:
    """The values Stripe's API accepts in a webhook endpoint's `enabled_events`, from the parameter
    types stripe-python generates from Stripe's OpenAPI spec."""
    from stripe.params import WebhookEndpointCreateParams, WebhookEndpointModifyParams

    accepted = []
    for params in (WebhookEndpointCreateParams, WebhookEndpointModifyParams):
        hint = params.__annotations__["enabled_events"]  # List[Literal[…]], NotRequired[…] on update
        while typing.get_origin(hint) is not typing.Literal:
            (hint,) = typing.get_args(hint)
        accepted.append(set(typing.get_args(hint)))
    assert accepted[0] == accepted[1], "create and update accept different event types"
    return accepted[0]


def test_it_subscribes_to_exactly_the_event_types_paidup_has_receivers_for():
    assert paidup_receiver_types() == set(stripe_events.WEBHOOK_EVENTS)


def test_disputes_and_fraud_warnings_are_among_them():
    listed = set(stripe_events.WEBHOOK_EVENTS)
    assert {"charge.dispute.created", "charge.dispute.closed", "radar.early_fraud_warning.created"} <= listed
    assert set(stripe_events.DISPUTE_EVENTS) | set(stripe_events.FRAUD_WARNING_EVENTS) <= listed


def test_stripe_accepts_every_listed_event_type_and_none_twice():
    events = stripe_events.WEBHOOK_EVENTS
    assert len(events) == len(set(events))
    assert "*" not in events  # every event type Stripe has would arrive, each stored in the inbox
    assert set(events) <= stripe_accepted_event_types()


@pytest.mark.parametrize(
    "event_types",
    [
        ("customer.created",),  # a real Stripe event type PaidUp does not subscribe to
        ("charge.dispute.opened",),  # a typo for charge.dispute.created
        ("payment_intent.succeeded", "invoice.paid"),  # one listed, one not
    ],
)
def test_a_receiver_for_an_unlisted_event_type_is_refused_at_import(event_types):
    with pytest.raises(ImproperlyConfigured, match="not in billing.stripe_events.WEBHOOK_EVENTS") as error:
        webhooks.receiver(*event_types)

    unlisted = [name for name in event_types if name != "payment_intent.succeeded"]
    assert all(name in str(error.value) for name in unlisted)
    assert "payment_intent.succeeded" not in str(error.value)
    assert "manage.py stripe_setup" in str(error.value)


def test_a_receiver_without_an_event_type_is_refused():
    with pytest.raises(ImproperlyConfigured, match="at least one"):
        webhooks.receiver()


def test_a_listed_event_type_connects_the_receiver():
    signal = WEBHOOK_SIGNALS["charge.dispute.created"]
    before = len(signal.receivers)

    def on_dispute_too(sender, event, **kwargs):
        pass

    try:
        webhooks.receiver("charge.dispute.created")(on_dispute_too)
        assert len(signal.receivers) == before + 1
    finally:
        from djstripe.models import Event

        signal.disconnect(on_dispute_too, sender=Event)
    assert len(signal.receivers) == before
