"""Disputes and early fraud warnings through the real webhook endpoint (issue 11, items 3-5).

Every body is a Stripe object built by tests/fixtures/stripe_disputes.py (field names checked
against stripe-python's classes), wrapped in a signed event and POSTed to /stripe/webhook/.
"""

import json
import time
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from billing import disputes, evidence
from billing.models import Alert, Dispute, EarlyFraudWarning, Order, OutboundEmail
from tests.factories import stripe_paid_order
from tests.fixtures import stripe_disputes
from tests.fixtures.services import make_event, post_event, sign

pytestmark = pytest.mark.django_db


@pytest.fixture
def deliver(client, webhook_endpoint, django_capture_on_commit_callbacks):
    def _deliver(event_type, obj, *, created=None, event_id=None):
        body = json.dumps(make_event(event_type, obj, created=created, event_id=event_id))
        with django_capture_on_commit_callbacks(execute=True):
            response = post_event(client, webhook_endpoint, body, sign(body))
        assert response.status_code == 200, response.content
        return response

    return _deliver


@pytest.fixture
def order(fake_stripe, plan):
    return stripe_paid_order(fake_stripe, state="fulfilled")


def support_alerts(reason: str) -> list[OutboundEmail]:
    return list(OutboundEmail.objects.filter(kind="alert", subject__icontains=reason))


def test_a_dispute_is_recorded_linked_and_alerted_urgently_with_its_due_date_in_words(order, deliver):
    du = stripe_disputes.dispute(payment_intent=order.stripe_payment_intent_id, amount=24900, due_in_days=6.01)
    deliver("charge.dispute.created", du)
    dispute = Dispute.objects.get(stripe_dispute_id=du["id"])
    assert (dispute.order, dispute.amount_cents, dispute.currency) == (order, 24900, "usd")
    assert (dispute.reason, dispute.status) == ("fraudulent", "needs_response")
    assert dispute.evidence_due_by.timestamp() == du["evidence_details"]["due_by"]
    alert = Alert.objects.get(reason="dispute")
    assert alert.order == order and "evidence due in 6 days, by " in alert.message and "UTC" in alert.message
    emails = OutboundEmail.objects.filter(kind="alert")
    assert emails.count() == 1 and emails[0].subject.startswith("[PaidUp support] URGENT: dispute opened")
    assert order.reference in emails[0].body_text and "$249.00" in emails[0].body_text
    assert order.events.get(kind="dispute:opened").actor == "stripe:webhook"
    # PaidUp never writes to the customer about a dispute.
    assert not OutboundEmail.objects.filter(to=order.email).exclude(kind__in=OutboundEmail.ACCESS_KINDS).exists()


def test_the_stock_dj_stripe_dispute_handler_never_calls_stripe(order, deliver, monkeypatch):
    from djstripe.models import Dispute as StockDispute

    def refuse(*args, **kwargs):
        raise AssertionError("dj-stripe called Stripe inside the webhook")

    monkeypatch.setattr(StockDispute, "api_retrieve", refuse)
    deliver("charge.dispute.created", stripe_disputes.dispute(payment_intent=order.stripe_payment_intent_id))
    assert Dispute.objects.count() == 1


def test_every_dispute_event_delivered_twice_records_one_dispute_and_one_alert(order, deliver):
    du = stripe_disputes.dispute(payment_intent=order.stripe_payment_intent_id)
    for event_type in disputes_events():
        for _ in range(2):
            deliver(event_type, du, event_id=f"evt_{event_type}")
    assert Dispute.objects.count() == 1
    assert Alert.objects.filter(reason="dispute").count() == 1
    assert order.events.filter(kind="dispute:opened").count() == 1


def disputes_events():
    from billing.webhooks import DISPUTE_EVENTS

    return DISPUTE_EVENTS


def test_events_in_reverse_order_never_reopen_a_closed_dispute(order, deliver):
    now = int(time.time())
    du = stripe_disputes.dispute(payment_intent=order.stripe_payment_intent_id)
    deliver("charge.dispute.closed", {**du, "status": "won"}, created=now)
    deliver("charge.dispute.updated", {**du, "status": "under_review"}, created=now - 60)
    deliver("charge.dispute.created", du, created=now - 120)
    dispute = Dispute.objects.get()
    assert dispute.status == "won" and dispute.closed_at is not None
    assert Alert.objects.filter(reason="dispute").count() == 1
    assert Alert.objects.filter(reason="dispute_closed").count() == 1


def test_a_dispute_for_an_unknown_charge_is_kept_and_linked_when_its_order_appears(fake_stripe, plan, deliver):
    from billing import reconciliation

    du = stripe_disputes.dispute(payment_intent="pi_notyet1")
    deliver("charge.dispute.created", du)
    dispute = Dispute.objects.get()
    assert dispute.order is None and dispute.payment_intent_id == "pi_notyet1"
    alert = Alert.objects.get(reason="dispute")
    assert alert.order is None and "matches no order here yet" in alert.message
    # The payment arrives later (its webhook, adoption, or the checkout): the next run links it.
    order = stripe_paid_order(fake_stripe, state="fulfilled")
    Order.objects.filter(pk=order.pk).update(stripe_payment_intent_id="pi_notyet1")
    run = reconciliation.run()
    assert run.counts["linked"] == 1
    dispute.refresh_from_db()
    alert.refresh_from_db()
    assert dispute.order_id == order.pk and alert.order_id == order.pk
    assert "arrived before this order" in order.events.get(kind="dispute:linked").message
    assert Alert.objects.filter(reason="dispute").count() == 1


@pytest.mark.parametrize("body", [{"object": "dispute"}, {"id": "", "object": "dispute", "amount": "lots"}])
def test_a_dispute_without_an_id_is_refused_with_an_alert_not_a_500(order, deliver, body):
    deliver("charge.dispute.created", body)
    assert Dispute.objects.count() == 0
    assert "had no dispute id" in Alert.objects.get(reason="webhook_failed").message


def test_a_dispute_with_missing_fields_and_an_unknown_status_is_recorded(order, deliver):
    deliver("charge.dispute.created", {"id": "du_bare1", "object": "dispute", "status": "something_new"})
    dispute = Dispute.objects.get()
    assert (dispute.amount_cents, dispute.status, dispute.evidence_due_by) == (0, "something_new", None)
    assert "no evidence due date" in Alert.objects.get(reason="dispute").message


def test_lost_ends_access_that_day_and_won_restores_it_with_suspend(order, deliver, settings):
    settings.DISPUTE_ACCESS = "suspend"
    ends = order.subscription.ends_at
    du = stripe_disputes.dispute(payment_intent=order.stripe_payment_intent_id)
    deliver("charge.dispute.created", du)
    order.subscription.refresh_from_db()
    assert not order.subscription.is_active
    deliver("charge.dispute.closed", {**du, "status": "won"})
    order.subscription.refresh_from_db()
    assert order.subscription.ends_at == ends and order.subscription.is_active
    kinds = list(order.events.filter(kind__startswith="dispute:access").values_list("kind", flat=True))
    assert kinds == ["dispute:access_suspended", "dispute:access_restored"]


def test_a_lost_dispute_ends_access_today_with_suspend(order, deliver, settings):
    settings.DISPUTE_ACCESS = "suspend"
    du = stripe_disputes.dispute(payment_intent=order.stripe_payment_intent_id)
    deliver("charge.dispute.created", du)
    deliver("charge.dispute.closed", {**du, "status": "lost"})
    order.subscription.refresh_from_db()
    assert order.subscription.ends_at <= timezone.now() and not order.subscription.is_active
    assert order.events.filter(kind="dispute:access_ended").count() == 1


def test_keep_leaves_access_alone_even_when_lost(order, deliver):
    ends = order.subscription.ends_at
    du = stripe_disputes.dispute(payment_intent=order.stripe_payment_intent_id)
    deliver("charge.dispute.created", du)
    deliver("charge.dispute.closed", {**du, "status": "lost"})
    order.subscription.refresh_from_db()
    assert order.subscription.ends_at == ends
    assert not order.events.filter(kind__startswith="dispute:access").exists()


def test_a_follow_up_alert_comes_72_hours_before_the_due_date_once_while_no_evidence(order, deliver):
    du = stripe_disputes.dispute(payment_intent=order.stripe_payment_intent_id, due_in_days=5)
    deliver("charge.dispute.created", du)
    assert disputes.send_reminders() == 0  # five days left
    later = timezone.now() + timedelta(days=2, hours=1)
    assert disputes.send_reminders(later) == 1
    assert disputes.send_reminders(later) == 0
    alert = Alert.objects.get(reason="dispute_due")
    assert "No evidence submitted yet" in alert.message and "evidence due in" in alert.message


def test_no_follow_up_once_evidence_was_submitted(order, deliver):
    du = stripe_disputes.dispute(payment_intent=order.stripe_payment_intent_id, due_in_days=2)
    deliver("charge.dispute.created", du)
    Dispute.objects.update(evidence_submitted_at=timezone.now())
    assert disputes.send_reminders() == 0


@pytest.mark.parametrize("reason", sorted(evidence.FIELDS_BY_REASON))
def test_the_evidence_pack_uses_only_stripes_field_names_and_what_we_know(order, deliver, reason):
    Order.objects.filter(pk=order.pk).update(checkout_ip="203.0.113.9", checkout_user_agent="Firefox/130")
    deliver(
        "charge.dispute.created", stripe_disputes.dispute(payment_intent=order.stripe_payment_intent_id, reason=reason)
    )
    pack = evidence.build(Dispute.objects.get())
    assert set(pack) <= stripe_disputes.evidence_field_names()
    assert pack["customer_email_address"] == order.email and pack["customer_purchase_ip"] == "203.0.113.9"
    assert order.reference in pack["uncategorized_text"]
    if "access_activity_log" in pack:
        assert "Firefox/130" in pack["access_activity_log"] and "access email sent" in pack["access_activity_log"]


# --- early fraud warnings ------------------------------------------------------------------------


def test_an_early_fraud_warning_is_recorded_linked_and_alerted_once(order, deliver):
    warning = stripe_disputes.early_fraud_warning(payment_intent=order.stripe_payment_intent_id)
    deliver("radar.early_fraud_warning.created", warning)
    deliver("radar.early_fraud_warning.created", warning)
    deliver("radar.early_fraud_warning.updated", {**warning, "actionable": False})
    row = EarlyFraudWarning.objects.get()
    assert row.order == order and row.fraud_type == "made_with_stolen_card" and row.actionable is False
    assert Alert.objects.filter(reason="fraud_warning").count() == 1
    order.refresh_from_db()
    assert order.state == "fulfilled" and order.refunded_cents == 0  # the default policy is off


@pytest.mark.parametrize(
    "policy, fee, refunded",
    [("off", 100_000, False), ("below_fee", 1500, False), ("below_fee", 30_000, True), ("always", 1500, True)],
)
def test_efw_auto_refund_follows_the_policy(order, deliver, fake_stripe, settings, policy, fee, refunded):
    settings.EFW_AUTO_REFUND, settings.DISPUTE_FEE_CENTS = policy, fee
    deliver(
        "radar.early_fraud_warning.created",
        stripe_disputes.early_fraud_warning(payment_intent=order.stripe_payment_intent_id),
    )
    order.refresh_from_db()
    assert (order.state == "refunded") is refunded
    assert (order.refunded_cents == 24900) is refunded
    assert Alert.objects.filter(reason="fraud_refunded").exists() is refunded
    if refunded:
        assert "EFW_AUTO_REFUND=" in order.refunds.get().reason
        assert not order.subscription.is_active


def test_a_retried_warning_event_never_refunds_twice(order, deliver, fake_stripe, settings):
    settings.EFW_AUTO_REFUND = "always"
    warning = stripe_disputes.early_fraud_warning(payment_intent=order.stripe_payment_intent_id)
    for n in range(3):
        deliver("radar.early_fraud_warning.created", warning, event_id=f"evt_retry{n}")
    assert len(fake_stripe.refunds) == 1
    order.refresh_from_db()
    assert order.refunded_cents == 24900 and order.refunds.count() == 1
    assert len([m for m in mail.outbox if order.email in m.to and m.tags == ["refund"]]) == 1


def test_no_auto_refund_for_a_charge_already_disputed(order, deliver, fake_stripe, settings):
    settings.EFW_AUTO_REFUND = "always"
    deliver("charge.dispute.created", stripe_disputes.dispute(payment_intent=order.stripe_payment_intent_id))
    deliver(
        "radar.early_fraud_warning.created",
        stripe_disputes.early_fraud_warning(payment_intent=order.stripe_payment_intent_id),
    )
    assert fake_stripe.refunds == []


# --- reconciliation: the net --------------------------------------------------------------------


def test_reconciliation_records_what_the_webhooks_missed_and_costs_one_request_each_when_idle(fake_stripe, order):
    from billing import reconciliation

    reconciliation.run()
    idle = reconciliation.run()
    assert idle.counts["stripe_requests"] == 5  # events page, refunds, refund events, disputes, warnings
    fake_stripe.disputes.append(stripe_disputes.dispute(payment_intent=order.stripe_payment_intent_id))
    fake_stripe.fraud_warnings.append(
        stripe_disputes.early_fraud_warning(payment_intent=order.stripe_payment_intent_id)
    )
    net = reconciliation.run()
    assert net.ok and net.counts["disputes_missed"] == 1 and net.counts["warnings_missed"] == 1
    assert Dispute.objects.get().order == order and EarlyFraudWarning.objects.get().order == order
    assert order.events.get(kind="dispute:opened").actor == "system:reconciliation"
    again = reconciliation.run()
    assert again.counts.get("disputes_missed", 0) == 0 and Alert.objects.filter(reason="dispute").count() == 1


# --- checkout records who paid (evidence) ---------------------------------------------------------


def test_the_checkout_records_the_client_address_and_browser_on_the_order(client, plan, fake_stripe):
    from tests.fixtures.services import CARD, cookie_reference

    client.get("/checkout/")
    headers = {"REMOTE_ADDR": "198.51.100.7", "HTTP_USER_AGENT": "Mozilla/5.0 (X11) Firefox/130.0"}
    client.post("/checkout/", {"email": "ada@example.com", "payment_method": CARD}, **headers)
    order = Order.objects.get(reference=cookie_reference(client))
    assert (order.checkout_ip, order.checkout_user_agent) == ("198.51.100.7", "Mozilla/5.0 (X11) Firefox/130.0")


def test_an_address_that_is_not_an_ip_is_not_kept(client, plan, fake_stripe):
    from tests.fixtures.services import CARD, cookie_reference

    client.get("/checkout/")
    client.post("/checkout/", {"email": "ada@example.com", "payment_method": CARD}, REMOTE_ADDR="not-an-ip")
    order = Order.objects.get(reference=cookie_reference(client))
    assert order.checkout_ip is None and order.state == "fulfilled"


def test_reconciliation_catches_a_missed_close_and_enforces_suspend(fake_stripe, order, deliver, settings):
    from billing import reconciliation

    settings.DISPUTE_ACCESS = "suspend"
    du = stripe_disputes.dispute(payment_intent=order.stripe_payment_intent_id)
    deliver("charge.dispute.created", du)
    fake_stripe.disputes.append({**du, "status": "lost"})  # `.closed` never arrives
    run = reconciliation.run()
    assert run.ok and run.counts["disputes_updated"] == 1
    dispute = Dispute.objects.get()
    assert dispute.status == "lost"
    order.subscription.refresh_from_db()
    assert not order.subscription.is_active
    assert Alert.objects.filter(reason="dispute_closed").count() == 1


def test_a_dispute_amount_over_the_charge_is_recorded_as_stripe_says_and_flagged(order, deliver):
    deliver(
        "charge.dispute.created", stripe_disputes.dispute(payment_intent=order.stripe_payment_intent_id, amount=99900)
    )
    assert Dispute.objects.get().amount_cents == 99900
    assert "more than the charge ($249.00)" in Alert.objects.get(reason="dispute").message
    order.refresh_from_db()
    assert order.refunded_cents == 0 and order.state == "fulfilled"


def test_a_warning_without_an_id_is_refused_with_an_alert_not_a_500(order, deliver):
    deliver("radar.early_fraud_warning.created", {"object": "radar.early_fraud_warning", "charge": "ch_1"})
    assert EarlyFraudWarning.objects.count() == 0
    assert "had no warning id" in Alert.objects.get(reason="webhook_failed").message


def test_an_automatic_refund_stripe_refuses_is_an_alert_not_a_500(order, deliver, fake_stripe, settings):
    settings.EFW_AUTO_REFUND = "always"
    fake_stripe.down = True
    warning = stripe_disputes.early_fraud_warning(payment_intent=order.stripe_payment_intent_id)
    deliver("radar.early_fraud_warning.created", warning)
    order.refresh_from_db()
    assert order.state == "fulfilled" and order.refunded_cents == 0
    assert EarlyFraudWarning.objects.get().auto_refunded_at is None
    assert "could not refund" in Alert.objects.get(key__startswith="fraud_refund_failed:").message


@pytest.mark.localstripe
def test_against_localstripe_which_has_no_disputes_a_run_stays_ok(localstripe, settings):
    """localstripe has no /v1/disputes and no Radar: a stand-in Stripe's 404 means "none here",
    once, so `make run`'s reconciliation (and its heartbeat) stays healthy."""
    from billing import gateway, reconciliation

    settings.STRIPE_API_BASE = localstripe
    gateway._missing_lists.clear()
    first, second = reconciliation.run(), reconciliation.run()
    assert first.ok and second.ok, (first.errors, second.errors)
    assert {(localstripe, "disputes"), (localstripe, "early_fraud_warnings")} <= gateway._missing_lists
    assert second.counts["stripe_requests"] == 3  # events page, refunds, refund events: the two lists not asked again


def test_a_warning_that_came_before_its_order_is_refunded_by_the_policy_once_linked(
    fake_stripe, plan, deliver, settings
):
    from billing import reconciliation

    settings.EFW_AUTO_REFUND = "always"
    deliver("radar.early_fraud_warning.created", stripe_disputes.early_fraud_warning(payment_intent="pi_later1"))
    assert EarlyFraudWarning.objects.get().order is None and fake_stripe.refunds == []
    order = stripe_paid_order(fake_stripe, state="fulfilled")
    Order.objects.filter(pk=order.pk).update(stripe_payment_intent_id="pi_later1")
    fake_stripe.intents["pi_later1"] = fake_stripe.intents[order.stripe_payment_intent_id]
    run = reconciliation.run()
    assert run.counts["linked"] == 1 and run.counts["auto_refunded"] == 1
    order.refresh_from_db()
    assert order.state == "refunded" and len(fake_stripe.refunds) == 1
    assert reconciliation.run().counts.get("auto_refunded", 0) == 0
