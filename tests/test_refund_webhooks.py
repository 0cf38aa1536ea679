"""Refunds from anywhere: signed refund and charge events, shaped by stripe-python's own classes
(tests/fixtures/stripe_objects.py), delivered to the real webhook endpoint. Each refund is
recorded once by its re_ id with its own email; a failed one leaves the total and alerts
support; what cannot be true is refused with an alert, never a 500 (billing/refunds.py)."""

import json
import logging

import pytest
from django.test import Client
from django.utils import timezone
from djstripe.event_handlers import handle_charge_event
from djstripe.models import Event
from djstripe.signals import WEBHOOK_SIGNALS

from billing import reconciliation
from billing.models import Alert, Order, OutboundEmail, Refund
from tests.factories import stripe_paid_order
from tests.fixtures import stripe_objects as so
from tests.fixtures.services import post_event, sign
from tests.test_races import race, run_together

pytestmark = pytest.mark.django_db


@pytest.fixture
def order(fake_stripe):
    """A $249.00 order, paid and fulfilled (access for a year), with no refund yet."""
    return stripe_paid_order(fake_stripe, state="fulfilled")


@pytest.fixture
def deliver(client, webhook_endpoint, django_capture_on_commit_callbacks):
    """POST an event (a dict) signed as Stripe does, running what the commit hands off (emails);
    returns the HTTP status."""

    def _deliver(event: dict) -> int:
        body = json.dumps(event)
        with django_capture_on_commit_callbacks(execute=True):
            return post_event(client, webhook_endpoint, body, sign(body)).status_code

    return _deliver


def refund_emails(order) -> list[OutboundEmail]:
    return list(OutboundEmail.objects.filter(order=order, kind="refund").order_by("created_at", "pk"))


def test_a_dashboard_refund_is_recorded_from_its_event_with_its_own_email(order, deliver, mailoutbox):
    assert deliver(so.event("charge.refunded", so.charge(order.stripe_payment_intent_id, 24900, last4="4242"))) == 200
    refund = so.refund(order.stripe_payment_intent_id, 5000, refund_id="re_partial1")
    assert deliver(so.event("refund.created", refund)) == 200

    order.refresh_from_db()
    assert (order.state, order.refunded_cents, order.card_last4) == ("fulfilled", 5000, "4242")
    row = Refund.objects.get(order=order)
    assert (row.stripe_refund_id, row.amount_cents, row.status, row.actor) == (
        "re_partial1",
        5000,
        "succeeded",
        "stripe:webhook",
    )
    [email] = mailoutbox
    assert email.to == [order.email] and "$50.00" in email.subject and order.reference in email.subject
    body = email.body
    assert "We've refunded $50.00 of your $249.00 payment" in body and "card ending in 4242" in body
    assert "5 to 10 business days" in body
    assert f"it continues until {order.subscription.ends_at:%-d %B %Y}" in body
    assert "Refunded so far: $50.00 of $249.00" in body


def test_a_partial_then_a_full_refund_are_two_emails_with_the_right_totals(order, deliver, mailoutbox):
    pi = order.stripe_payment_intent_id
    assert deliver(so.event("refund.created", so.refund(pi, 5000, refund_id="re_a"))) == 200
    assert deliver(so.event("refund.created", so.refund(pi, 19900, refund_id="re_b"))) == 200

    order.refresh_from_db()
    assert order.state == "refunded" and order.refunded_cents == 24900
    assert order.subscription.ends_at <= timezone.now()
    first, second = refund_emails(order)
    assert [e.key for e in (first, second)] == ["refund:re_a", "refund:re_b"]
    assert "Refunded so far: $50.00 of $249.00" in first.body_text and "continues until" in first.body_text
    assert "This refund: $199.00" in second.body_text and "Refunded so far: $249.00 of $249.00" in second.body_text
    assert "your access from this order ended today" in second.body_text
    assert len(mailoutbox) == 2
    assert order.events.get(kind="state:refunded").actor == "stripe:webhook"


def test_a_full_refund_before_fulfilment_closes_the_order_and_its_email_says_no_access(fake_stripe, deliver):
    order = stripe_paid_order(fake_stripe, state="paid")
    assert deliver(so.event("refund.created", so.refund(order.stripe_payment_intent_id, 24900))) == 200

    order.refresh_from_db()
    assert order.state == "refunded" and not hasattr(order, "subscription")
    [email] = refund_emails(order)
    assert "this order is closed: it gives no access" in email.body_text and "ended today" not in email.body_text


def test_one_refund_told_by_every_event_stripe_sends_is_recorded_and_emailed_once(order, deliver, mailoutbox):
    pi = order.stripe_payment_intent_id
    created = so.event("refund.created", so.refund(pi, 5000, refund_id="re_once", status="pending"))
    for event in [
        created,
        created,  # the same event delivered again
        so.event("charge.refund.updated", so.refund(pi, 5000, refund_id="re_once", status="pending")),
        so.event("refund.updated", so.refund(pi, 5000, refund_id="re_once", status="succeeded")),
        so.event("refund.updated", so.refund(pi, 5000, refund_id="re_once", status="succeeded")),
    ]:
        assert deliver(event) == 200

    order.refresh_from_db()
    assert order.refunded_cents == 5000
    assert Refund.objects.get().status == "succeeded"
    assert len(refund_emails(order)) == 1 and len(mailoutbox) == 1
    assert Event.objects.count() == 4


def test_events_in_reverse_order_end_in_stripes_latest_status(order, deliver, mailoutbox):
    pi = order.stripe_payment_intent_id
    assert deliver(so.event("refund.updated", so.refund(pi, 5000, refund_id="re_rev", status="succeeded"))) == 200
    assert deliver(so.event("refund.created", so.refund(pi, 5000, refund_id="re_rev", status="pending"))) == 200

    order.refresh_from_db()
    assert Refund.objects.get().status == "succeeded" and order.refunded_cents == 5000
    assert len(mailoutbox) == 1


def test_a_refund_that_fails_later_is_undone_in_the_total_and_alerts_support(order, deliver, mailoutbox):
    pi = order.stripe_payment_intent_id
    assert deliver(so.event("refund.created", so.refund(pi, 5000, refund_id="re_fail", status="pending"))) == 200
    assert deliver(so.event("refund.failed", so.refund(pi, 5000, refund_id="re_fail", status="failed"))) == 200
    # Stripe's older pending snapshot, delivered late, does not bring the money back.
    assert deliver(so.event("refund.updated", so.refund(pi, 5000, refund_id="re_fail", status="pending"))) == 200

    order.refresh_from_db()
    row = Refund.objects.get()
    assert (row.status, row.failure_reason) == ("failed", "expired_or_canceled_card")
    assert order.refunded_cents == 0 and order.state == "fulfilled"
    alert = Alert.objects.get(reason="refund_failed")
    assert alert.order == order and "re_fail" in alert.message and "emailed that it was on its way" in alert.message
    assert "Refunded total now $0.00" in alert.message
    assert order.events.filter(kind="refund:status").count() == 1
    # One email to the customer (the refund), one alert to each support address.
    assert [m.to for m in mailoutbox].count([order.email]) == 1


def test_a_full_refund_that_fails_keeps_the_order_refunded_and_says_so(order, deliver):
    pi = order.stripe_payment_intent_id
    assert deliver(so.event("refund.created", so.refund(pi, 24900, refund_id="re_full"))) == 200
    assert deliver(so.event("refund.updated", so.refund(pi, 24900, refund_id="re_full", status="canceled"))) == 200

    order.refresh_from_db()
    assert order.state == "refunded" and order.refunded_cents == 0
    assert "stays refunded and its access stays ended" in Alert.objects.get(reason="refund_failed").message


def test_a_refund_for_a_charge_with_no_order_is_refused_with_an_alert_not_a_500(deliver, caplog, mailoutbox):
    caplog.set_level(logging.ERROR, logger="billing.refunds")
    event = so.event("refund.created", so.refund("pi_unknown1", 5000, refund_id="re_stray"))
    assert deliver(event) == 200
    assert deliver(event) == 200  # retried: still one alert

    assert not Refund.objects.exists() and not OutboundEmail.objects.filter(kind="refund").exists()
    alert = Alert.objects.get(reason="refund_problem")
    assert alert.order is None and "re_stray" in alert.message and "pi_unknown1" in alert.message
    assert "refund not recorded" in caplog.text and "re_stray" in caplog.text


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"amount": 30000}, "more than the $249.00 charged"),
        ({"currency": "eur"}, "is in eur, the order in usd"),
        ({"status": "reversed_by_magic"}, "a status PaidUp does not know"),
    ],
)
def test_a_refund_that_cannot_be_true_is_refused_and_changes_nothing(order, deliver, mailoutbox, fields, says):
    refund = so.refund(order.stripe_payment_intent_id, **{"amount": 5000, **fields}, refund_id="re_bad")
    assert deliver(so.event("refund.created", refund)) == 200

    order.refresh_from_db()
    assert order.refunded_cents == 0 and order.state == "fulfilled" and not Refund.objects.exists()
    assert not refund_emails(order)
    assert says in Alert.objects.get(reason="refund_problem", order=order).message
    assert says in order.events.get(kind="refund:refused").message


@pytest.mark.parametrize(
    "broken",
    [
        lambda r: {k: v for k, v in r.items() if k != "amount"},
        lambda r: {**r, "amount": -5},
        lambda r: {**r, "id": None},
        lambda r: {**r, "object": "charge"},
    ],
    ids=["no amount", "negative amount", "no id", "not a refund"],
)
def test_a_malformed_refund_event_is_refused_and_changes_nothing(order, deliver, broken):
    refund = broken(so.refund(order.stripe_payment_intent_id, 5000))
    assert deliver(so.event("refund.created", refund)) == 200
    order.refresh_from_db()
    assert order.refunded_cents == 0 and not Refund.objects.exists() and not refund_emails(order)
    assert Alert.objects.filter(reason="refund_problem").count() == 1


def test_charge_refunded_records_the_card_and_what_stripe_says_is_refunded(order, deliver):
    charge = so.charge(order.stripe_payment_intent_id, 24900, amount_refunded=5000, last4="1881")
    assert deliver(so.event("charge.refunded", charge)) == 200

    order.refresh_from_db()
    assert order.card_last4 == "1881" and order.refunded_cents == 0  # the refund's own event records it
    note = order.events.get(kind="refund:pending_event")
    assert note.data["stripe_refunded"] == 5000 and "Stripe says $50.00 of charge" in note.message


@pytest.mark.parametrize(
    "fields",
    [{"payment_method_details": None}, {"payment_intent": None}, {"amount_refunded": None}],
    ids=["no card details", "no payment intent", "no refunded amount"],
)
def test_a_charge_refunded_missing_fields_is_answered_200_and_changes_no_money(order, deliver, fields):
    charge = {**so.charge(order.stripe_payment_intent_id, 24900, amount_refunded=5000), **fields}
    assert deliver(so.event("charge.refunded", charge)) == 200
    order.refresh_from_db()
    assert order.refunded_cents == 0 and not Refund.objects.exists()


def test_charge_refunded_at_an_older_api_version_records_the_refunds_it_lists(order, deliver, mailoutbox):
    pi = order.stripe_payment_intent_id
    listed = {"object": "list", "data": [so.refund(pi, 5000, refund_id="re_listed")], "has_more": False, "url": "/"}
    assert deliver(so.event("charge.refunded", so.charge(pi, 24900, amount_refunded=5000, refunds=listed))) == 200

    order.refresh_from_db()
    assert order.refunded_cents == 5000 and Refund.objects.get().stripe_refund_id == "re_listed"
    assert "card ending in 4242" in refund_emails(order)[0].body_text


def test_the_refund_events_never_call_stripe_from_the_webhook():
    """dj-stripe's stock charge handler retrieves the Charge from Stripe inside the webhook."""
    for name in ("charge.refunded", "charge.refund.updated"):
        keys = [entry[0][0] for entry in WEBHOOK_SIGNALS[name].receivers]  # (id(receiver), id(sender))
        assert keys and id(handle_charge_event) not in keys


def test_reconciliation_records_a_missed_refund_and_its_failure(order, fake_stripe, django_capture_on_commit_callbacks):
    refund = fake_stripe.refund(order.stripe_payment_intent_id, 5000)
    with django_capture_on_commit_callbacks(execute=True):
        first = reconciliation.run()
    refund["status"], refund["failure_reason"] = "failed", "lost_or_stolen_card"
    with django_capture_on_commit_callbacks(execute=True):
        second = reconciliation.run()

    order.refresh_from_db()
    assert first.counts["refunds"] == 1 and second.counts["refunds"] == 1
    assert Refund.objects.get().status == "failed" and order.refunded_cents == 0
    assert len(refund_emails(order)) == 1 and Alert.objects.filter(reason="refund_failed").count() == 1
    assert Order.objects.get(pk=order.pk).state == "fulfilled"


@race
def test_events_for_one_refund_arriving_at_once_record_it_and_email_once(fake_stripe, webhook_endpoint, plan):
    """Stripe sends refund.created, charge.refund.updated and refund.updated for one refund
    within a second; three webhook requests run at once (PostgreSQL: the order's row lock and
    the refund id's uniqueness decide, not the timing)."""
    order = stripe_paid_order(fake_stripe, state="fulfilled")
    pi = order.stripe_payment_intent_id
    events = [
        so.event("refund.created", so.refund(pi, 5000, refund_id="re_race", status="pending")),
        so.event("charge.refund.updated", so.refund(pi, 5000, refund_id="re_race", status="pending")),
        so.event("refund.updated", so.refund(pi, 5000, refund_id="re_race", status="succeeded")),
    ]

    def post(event):
        body = json.dumps(event)
        return post_event(Client(), webhook_endpoint, body, sign(body)).status_code

    assert run_together(*[lambda e=e: post(e) for e in events]) == [200, 200, 200]

    order.refresh_from_db()
    assert order.refunded_cents == 5000 and Refund.objects.get(order=order).status == "succeeded"
    assert [e.key for e in refund_emails(order)] == ["refund:re_race"]
