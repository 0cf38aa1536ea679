"""Reconciliation with Stripe faked at the gateway: every orphaned payment ends fulfilled."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from billing import reconciliation
from billing.models import Order, OutboundEmail, ReconciliationRun, Refund, Subscription
from support.models import Alert
from tests.factories import OrderFactory

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def run(plan, django_capture_on_commit_callbacks):
    """One reconciliation run, with its after-commit work (emails) executed."""

    def run_once(**kwargs):
        with django_capture_on_commit_callbacks(execute=True):
            return reconciliation.run(**kwargs)

    return run_once


def old(order, seconds=120):
    """Age an order past the grace period."""
    then = timezone.now() - timedelta(seconds=seconds)
    Order.objects.filter(pk=order.pk).update(created_at=then, paid_at=then if order.paid_at else None)
    order.refresh_from_db()
    return order


def paid_order(fake_stripe, **kwargs):
    order = OrderFactory(**kwargs)
    pi = fake_stripe.pay_elsewhere(
        metadata={"order_id": str(order.id), "reference": order.reference, "email": order.email}
    )
    Order.objects.filter(pk=order.pk).update(stripe_payment_intent_id=pi.id, stripe_payment_status="succeeded")
    order.refresh_from_db()
    return order, pi


def test_it_fulfils_a_paid_order_whose_fulfilment_crashed(run, fake_stripe):
    order, _ = paid_order(fake_stripe)
    order.transition(Order.State.PAID, actor="test")
    old(order)
    result = run()
    order.refresh_from_db()
    assert order.state == "fulfilled" and order.fulfilled_via == "reconciliation"
    assert result.ok and result.counts["recovered"] == 1
    email = OutboundEmail.objects.get(order=order)
    assert email.kind == "recovery" and email.status == "sent"


def test_it_leaves_young_orders_to_the_webhook(run, fake_stripe):
    order, _ = paid_order(fake_stripe)
    order.transition(Order.State.PAID, actor="test")
    result = run()
    order.refresh_from_db()
    assert order.state == "fulfilled"  # found by the Stripe scan, but only because Stripe says succeeded
    assert result.ok


def test_it_fulfils_a_pending_order_whose_webhook_was_lost(run, fake_stripe):
    order, _ = paid_order(fake_stripe)
    old(order)
    run()
    order.refresh_from_db()
    assert order.state == "fulfilled" and order.fulfilled_via == "reconciliation"
    assert Subscription.objects.filter(order=order).count() == 1


def test_it_adopts_an_unknown_payment_from_its_metadata(run, fake_stripe, mailoutbox):
    pi = fake_stripe.pay_elsewhere(metadata={"email": "lost@example.com", "reference": "PU-ABCDEF"})
    result = run()
    order = Order.objects.get(stripe_payment_intent_id=pi.id)
    assert order.retroactive and order.reference == "PU-ABCDEF"
    assert order.email == "lost@example.com" and order.state == "fulfilled"
    assert result.counts["retroactive"] == 1 and result.counts["alerts"] == 1
    assert Alert.objects.get(order=order).reason == "unknown_payment"
    recipients = sorted(m.to[0] for m in mailoutbox)
    assert recipients == ["lost@example.com", "support@paidup.example"]


def test_it_adopts_an_unknown_payment_by_its_customer_email(run, fake_stripe):
    pi = fake_stripe.pay_elsewhere(email="Customer@Example.com")
    run()
    order = Order.objects.get(stripe_payment_intent_id=pi.id)
    assert order.email == "customer@example.com" and order.state == "fulfilled"


def test_a_payment_with_no_email_is_paid_flagged_and_alerted_not_fulfilled(run, fake_stripe):
    pi = fake_stripe.pay_elsewhere()
    run()
    order = Order.objects.get(stripe_payment_intent_id=pi.id)
    assert order.state == "paid" and order.needs_attention
    assert Alert.objects.get(order=order).reason == "no_email"
    # The next run neither retries nor alerts again.
    result = run()
    assert result.counts.get("alerts", 0) == 0
    assert Alert.objects.count() == 1


def test_a_second_run_changes_nothing(run, fake_stripe):
    order, _ = paid_order(fake_stripe)
    old(order)
    run()
    second = run()
    assert second.counts.get("recovered", 0) == 0 and second.counts.get("retroactive", 0) == 0
    assert OutboundEmail.objects.filter(order=order).count() == 1


def test_it_closes_an_abandoned_checkout_and_cancels_its_payment(run, fake_stripe, settings):
    order = OrderFactory()
    pi = fake_stripe.create_payment_intent(order, "pm_card1234")
    Order.objects.filter(pk=order.pk).update(
        stripe_payment_intent_id=pi.id, stripe_payment_status="requires_confirmation"
    )
    old(order, seconds=settings.RECONCILE_ABANDON_AFTER_SECONDS + 60)
    run()
    order.refresh_from_db()
    assert order.state == "failed"
    assert fake_stripe.intents[pi.id]["status"] == "canceled"
    assert not Subscription.objects.exists()


def test_it_closes_a_checkout_whose_payment_was_cancelled(run, fake_stripe):
    order = OrderFactory()
    pi = fake_stripe.create_payment_intent(order, "pm_card1234")
    fake_stripe.settle(pi.id, "canceled")
    Order.objects.filter(pk=order.pk).update(stripe_payment_intent_id=pi.id, stripe_payment_status="requires_action")
    old(order)
    run()
    order.refresh_from_db()
    assert order.state == "failed"


def test_a_declined_checkout_is_not_asked_about_every_minute(run, fake_stripe, time_machine):
    order = OrderFactory()
    pi = fake_stripe.create_payment_intent(order, "pm_card1234")
    fake_stripe.settle(pi.id, "requires_payment_method")
    Order.objects.filter(pk=order.pk).update(stripe_payment_intent_id=pi.id, stripe_payment_status="declined")
    old(order, seconds=3 * 3600)
    first = run()
    second = run()
    assert first.counts["stripe_requests"] == second.counts["stripe_requests"] + 1


def test_it_records_a_refund_made_in_stripe(run, fake_stripe, mailoutbox):
    order, pi = paid_order(fake_stripe)
    old(order)
    run()
    fake_stripe.refund(pi.id, order.amount_cents)
    result = run()
    order.refresh_from_db()
    assert order.state == "refunded" and order.refunded_cents == order.amount_cents
    assert result.counts["refunds"] == 1
    assert Refund.objects.get(order=order).amount_cents == order.amount_cents
    assert order.subscription.ends_at <= timezone.now()
    assert OutboundEmail.objects.filter(order=order, kind="refund").count() == 1
    run()
    assert Refund.objects.count() == 1


def test_a_partial_refund_keeps_access(run, fake_stripe):
    order, pi = paid_order(fake_stripe)
    old(order)
    run()
    fake_stripe.refund(pi.id, 5000)
    run()
    order.refresh_from_db()
    assert order.state == "fulfilled" and order.refunded_cents == 5000


def test_the_stripe_scan_costs_one_request_per_page_and_constant_queries(
    run, fake_stripe, django_assert_max_num_queries
):
    for _ in range(150):
        order, _ = paid_order(fake_stripe, state="fulfilled")
    run()  # first run establishes the cursor
    fake_stripe.requests = 0
    with django_assert_max_num_queries(40):
        result = run()
    assert result.counts["stripe_requests"] == 3  # two pages of events + one of refunds
    assert result.counts.get("recovered", 0) == 0


def test_the_budget_stops_a_run_and_says_so(run, fake_stripe, settings):
    settings.RECONCILE_STRIPE_BUDGET = 1
    for _ in range(3):
        fake_stripe.pay_elsewhere(email="x@example.com")
    result = run()
    assert not result.ok and "budget" in result.errors


def test_two_runners_never_work_at_once(run, fake_stripe):
    from billing.locks import exclusive

    with exclusive(reconciliation.LOCK) as held:
        assert held
        assert reconciliation.run() is None
    assert run() is not None


def test_the_command_prints_one_summary_line(fake_stripe, capsys):
    fake_stripe.pay_elsewhere(email="cmd@example.com")
    call_command("reconcile")
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    assert "checked=1" in out[0] and "retroactive=1" in out[0] and "stripe_requests=" in out[0]


def test_dry_run_lists_actions_and_changes_nothing(fake_stripe, capsys):
    pi = fake_stripe.pay_elsewhere(email="dry@example.com")
    call_command("reconcile", "--dry-run")
    out = capsys.readouterr().out
    assert f"would adopt {pi.id}" in out
    assert not Order.objects.exists()
    assert ReconciliationRun.objects.get().dry_run


def test_the_command_exits_non_zero_on_errors(fake_stripe, monkeypatch):
    from django.core.management.base import CommandError

    def broken(since):
        raise RuntimeError("Stripe is down")
        yield

    monkeypatch.setattr("billing.gateway.succeeded_payment_pages", broken)
    with pytest.raises(CommandError):
        call_command("reconcile")
    assert not ReconciliationRun.objects.get().ok


def test_a_second_payment_for_a_paid_order_alerts_support_once(run, fake_stripe):
    order, _ = paid_order(fake_stripe)
    old(order)
    run()
    second = fake_stripe.pay_elsewhere(metadata={"order_id": str(order.id), "reference": order.reference})
    result = run()
    alert = Alert.objects.get(reason="duplicate_payment")
    assert second.id in alert.message and alert.order == order
    assert result.counts["alerts"] == 1
    assert run().counts.get("alerts", 0) == 0
    assert Order.objects.count() == 1 and Subscription.objects.count() == 1
