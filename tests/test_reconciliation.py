"""Reconciliation with Stripe faked at the gateway: every orphaned payment ends fulfilled."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from billing import reconciliation
from billing.models import Alert, Order, OutboundEmail, ReconciliationRun, Refund, Subscription
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
    old(order, seconds=600)  # ten minutes without access: the recovery email
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
    assert result.counts["stripe_requests"] == 6  # two pages of events, refunds, refund events, disputes, warnings
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

    def broken(since, until=None):
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


# --- a payment that buys nothing (issue 7, item 3) ---------------------------------------


@pytest.mark.parametrize(
    "amount, currency, metadata",
    [
        (1500, "usd", {}),  # a $15 Payment Link
        (1500, "usd", {"email": "payer@example.com", "reference": "PU-ABCDEF"}),  # looks like ours, is not
        (24900, "eur", {}),  # the plan's number in another currency
        (24899, "usd", {}),
    ],
    ids=["payment-link", "our-metadata-wrong-amount", "other-currency", "one-cent-less"],
)
def test_a_payment_that_matches_no_plan_gets_nothing_and_a_person_is_told(
    run, fake_stripe, mailoutbox, amount, currency, metadata
):
    pi = fake_stripe.pay_elsewhere(amount=amount, currency=currency, email="payer@example.com", metadata=metadata)

    result = run()

    assert result.ok and result.counts["unmatched"] == 1 and result.counts.get("retroactive", 0) == 0
    assert not Order.objects.exists() and not Subscription.objects.exists()
    alert = Alert.objects.get()
    assert (alert.reason, alert.order, alert.key) == ("unmatched_payment", None, f"unmatched_payment:{pi.id}")
    assert pi.id in alert.message and "no access given" in alert.message
    assert [m.to for m in mailoutbox] == [["support@paidup.example"]]  # nothing to the customer
    assert "payer@example.com" not in mailoutbox[0].to


def test_an_unmatched_payment_is_recorded_once_and_costs_no_more_stripe_requests(run, fake_stripe, mailoutbox):
    fake_stripe.pay_elsewhere(amount=1500, email="payer@example.com")
    run()
    before = fake_stripe.requests
    second = run()  # the payment is inside the overlap again
    assert second.ok and second.counts.get("unmatched", 0) == 0 and second.counts.get("alerts", 0) == 0
    # One page each of payment events, refunds, refund events, disputes and fraud warnings: no customer lookup.
    assert fake_stripe.requests - before == 5
    assert Alert.objects.count() == 1 and len(mailoutbox) == 1


def test_a_payment_at_a_plans_exact_price_is_still_adopted(run, fake_stripe):
    pi = fake_stripe.pay_elsewhere(amount=24900, currency="USD", email="payer@example.com")
    run()
    assert Order.objects.get(stripe_payment_intent_id=pi.id).state == "fulfilled"


def test_a_payment_naming_our_order_with_the_wrong_amount_is_flagged_not_fulfilled(run, fake_stripe):
    order = OrderFactory()
    fake_stripe.pay_elsewhere(amount=1500, metadata={"order_id": str(order.id), "reference": order.reference})
    run()
    order.refresh_from_db()
    assert order.state == "pending" and order.needs_attention
    assert Alert.objects.get().reason == "payment_mismatch"
    assert not Subscription.objects.exists()


def test_dry_run_says_it_would_record_an_unmatched_payment(fake_stripe, capsys):
    pi = fake_stripe.pay_elsewhere(amount=1500, email="payer@example.com")
    call_command("reconcile", "--dry-run")
    assert f"would record {pi.id}: $15.00 matches no plan" in capsys.readouterr().out
    assert not Alert.objects.exists()


def test_the_support_queue_shows_payments_that_bought_nothing(run, fake_stripe, admin_user):
    from support import queue

    pi = fake_stripe.pay_elsewhere(amount=1500, email="payer@example.com")
    run()
    row = next(r for r in queue.build(admin_user).rows if r.key == "unmatched")
    assert row.count == 1 and pi.id in row.items[0].title and "$15.00" in row.items[0].title
    assert row.list_url and "unmatched_payment" in row.list_url
    Alert.objects.update(resolved_at=timezone.now())
    assert next(r for r in queue.build(admin_user).rows if r.key == "unmatched").count == 0


# --- which email: the wait since the charge, not the path (issue 7, item 4) ---------------


def test_reconciliation_in_the_second_after_the_charge_sends_the_confirmation(
    run, fake_stripe, django_capture_on_commit_callbacks
):
    """The scan finds a checkout's payment two seconds after the charge, before its return
    page: the customer has waited two seconds and gets the confirmation."""
    from billing.fulfilment import fulfil

    order = OrderFactory()
    pi = fake_stripe.pay_elsewhere(
        metadata={"order_id": str(order.id), "reference": order.reference, "email": order.email},
        created=int(timezone.now().timestamp()) - 2,
    )
    Order.objects.filter(pk=order.pk).update(stripe_payment_intent_id=pi.id)
    run()
    order.refresh_from_db()
    assert order.state == "fulfilled" and order.fulfilled_via == "reconciliation"
    assert OutboundEmail.objects.get(order=order).kind == "confirmation"
    with django_capture_on_commit_callbacks(execute=True):
        assert not fulfil(order, via="return", payment_intent=pi).fulfilled_now  # the return page, a second later
    assert OutboundEmail.objects.filter(order=order).count() == 1


def test_reconciliation_reads_the_charge_time_from_the_event(run, fake_stripe):
    """The PaymentIntent says it was created just now, its succeeded event says ten minutes
    ago (3-D Secure held it, say): the event is Stripe's word for when the charge happened."""
    order = OrderFactory()
    pi = fake_stripe.pay_elsewhere(
        metadata={"order_id": str(order.id), "reference": order.reference, "email": order.email},
        created=int(timezone.now().timestamp()) - 600,
    )
    pi["created"] = int(timezone.now().timestamp())
    Order.objects.filter(pk=order.pk).update(stripe_payment_intent_id=pi.id)
    run()
    assert OutboundEmail.objects.get(order=order).kind == "recovery"
    order.refresh_from_db()
    assert timezone.now() - order.charged_at > timedelta(seconds=590)


# --- a scan that outlives a run (issue 7, item 5) ----------------------------------------


class Crash(BaseException):
    """The process dies: nothing after this line runs, not even `except Exception`."""


def backlog(fake_stripe, n: int, *, spacing: int = 120) -> tuple[list, list]:
    """n succeeded payments over the last hours, three kinds in turn: a healthy fulfilled order,
    a pending order whose checkout crashed after the charge, a payment with no order here.
    Every fifth shares the previous one's second, so pages break inside a second."""
    now = int(timezone.now().timestamp())
    pis, stuck = [], []
    created = now - spacing * n
    for i in range(n):
        created += 0 if i % 5 == 4 else spacing
        kind = i % 3
        if kind == 2:
            pis.append(fake_stripe.pay_elsewhere(metadata={"email": f"lost{i}@example.com"}, created=created))
            continue
        order = OrderFactory(state="fulfilled" if kind == 0 else "pending")
        pi = fake_stripe.pay_elsewhere(
            metadata={"order_id": str(order.id), "reference": order.reference, "email": order.email}, created=created
        )
        Order.objects.filter(pk=order.pk).update(stripe_payment_intent_id=pi.id, stripe_payment_status="succeeded")
        pis.append(pi)
        if kind == 1:
            stuck.append(order)
    return pis, stuck


def assert_settled_once(pis) -> None:
    """Every payment has exactly one order, fulfilled, with one subscription and one access email."""
    orders = Order.objects.filter(stripe_payment_intent_id__in=[pi.id for pi in pis])
    assert orders.count() == len(pis)
    assert set(orders.values_list("state", flat=True)) == {"fulfilled"}
    recovered = orders.filter(fulfilled_via="reconciliation")  # the healthy ones were fulfilled before
    assert recovered.count() == len(pis) - len(pis) // 3
    assert Subscription.objects.filter(order__in=orders).count() == recovered.count()
    assert OutboundEmail.objects.filter(order__in=orders).count() == recovered.count()


@pytest.mark.parametrize("newest_first", [True, False], ids=["stripe-newest-first", "localstripe-oldest-first"])
def test_a_scan_larger_than_the_budget_finishes_over_several_runs(run, fake_stripe, settings, newest_first):
    fake_stripe.newest_first, fake_stripe.page_size = newest_first, 5
    settings.RECONCILE_STRIPE_BUDGET = 7  # seven pages a run (steps 5-6 need 4 requests); the backlog is twelve
    pis, stuck = backlog(fake_stripe, 60)

    runs = [run()]
    while not runs[-1].ok:
        assert len(runs) < 10, "the scan does not move forward"
        runs.append(run())

    assert len(runs) >= 3 and "budget" in runs[0].errors
    assert_settled_once(pis)
    assert all(r.counts.get("checked", 0) <= 7 * 5 for r in runs)  # no run read a page twice over its budget
    assert sum(r.counts.get("retroactive", 0) for r in runs) == 20
    assert sum(r.counts.get("recovered", 0) for r in runs) == 40  # 20 crashed checkouts + 20 adopted
    # Caught up: the next run reads from the newest payment (minus the overlap), not from the start.
    fake_stripe.requests = 0
    settings.RECONCILE_STRIPE_BUDGET = 1000
    assert run().counts.get("recovered", 0) == 0 and fake_stripe.requests <= 6  # + refund events, disputes, warnings


@pytest.mark.parametrize("newest_first", [True, False], ids=["stripe-newest-first", "localstripe-oldest-first"])
def test_a_run_that_dies_mid_scan_resumes_where_its_last_page_ended(run, fake_stripe, monkeypatch, newest_first):
    fake_stripe.newest_first, fake_stripe.page_size = newest_first, 5
    pis, stuck = backlog(fake_stripe, 60, spacing=600)  # ten minutes apart: the overlap is one payment
    settled = reconciliation.settle_page
    pages = []

    def dies_on_the_ninth_page(ctx, payment_intents):
        pages.append(payment_intents)
        if len(pages) == 9:
            settled(ctx, payment_intents[:2])  # half a page done, then the process is killed
            raise Crash
        settled(ctx, payment_intents)

    monkeypatch.setattr(reconciliation, "settle_page", dies_on_the_ninth_page)
    with pytest.raises(Crash):
        run()
    monkeypatch.setattr(reconciliation, "settle_page", settled)
    died = ReconciliationRun.objects.get()
    assert died.finished_at is None and died.cursor is not None  # its place was written page by page

    fake_stripe.requests = 0
    resumed = run()

    assert resumed.ok
    # The 4 pages left (+1 for the overlap), newest first also the newer payments since (1), and
    # the refunds, the refund events, the disputes and the fraud warnings: not the 12 pages again.
    assert fake_stripe.requests <= (10 if newest_first else 9)
    assert_settled_once(pis)


def test_a_run_that_finishes_an_older_rest_goes_on_to_newer_payments(run, fake_stripe, settings):
    """Newest first: the run that reads the last of a window's older part then reads what
    came in since, in the same run (else new payments wait one more run)."""
    fake_stripe.newest_first, fake_stripe.page_size = True, 5
    settings.RECONCILE_STRIPE_BUDGET = 3
    backlog(fake_stripe, 12)  # three pages: one run reads two, and stops
    assert not run().ok
    settings.RECONCILE_STRIPE_BUDGET = 1000
    new = fake_stripe.pay_elsewhere(metadata={"email": "new@example.com"})
    assert run().ok
    assert Order.objects.get(stripe_payment_intent_id=new.id).state == "fulfilled"


def test_the_scan_state_never_claims_a_page_it_did_not_settle():
    from billing.scan_state import Listing, ScanState

    newest_first = Listing(ScanState(cursor=100))
    assert newest_first.page_settled([500, 490, 480])
    assert (newest_first.state.cursor, newest_first.state.upto, newest_first.state.end) == (100, 480, 500)
    newest_first.page_settled([480, 470])
    assert newest_first.state.upto == 470  # the rest is older than 470; 470 itself is read again
    newest_first.finished()
    assert (newest_first.state.cursor, newest_first.state.upto, newest_first.state.end) == (500, None, None)

    oldest_first = Listing(ScanState(cursor=100))
    assert oldest_first.page_settled([200, 210, 220])
    assert (oldest_first.state.cursor, oldest_first.state.upto) == (220, None)

    one_second = Listing(ScanState(cursor=100))
    assert not one_second.page_settled([300, 300, 300])  # which way? claim nothing
    assert one_second.state == ScanState(cursor=100)
    assert not one_second.page_settled([])


# --- step 4 reads an index (issue 7, item 5) ---------------------------------------------


def test_step_4_reads_the_failed_triggers_index_not_the_whole_table():
    """Migration billing/0009's partial index on dj-stripe's webhook table answers step 4's
    query (and the support queue's count of failed events) on SQLite and PostgreSQL."""
    from django.db import connection
    from djstripe.models import WebhookEventTrigger

    with connection.cursor() as cursor:
        indexes = connection.introspection.get_constraints(cursor, WebhookEventTrigger._meta.db_table)
        assert indexes["billing_djstripe_failed_triggers"]["columns"] == ["created"]
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL enable_seqscan = off")  # a tiny table: make the planner show what it can use
    failed = WebhookEventTrigger.objects.filter(valid=True, processed=False)
    step_4 = failed.filter(created__lt=timezone.now() - reconciliation.grace()).order_by("created")[:100]
    assert "billing_djstripe_failed_triggers" in step_4.explain()
    assert "billing_djstripe_failed_triggers" in failed.order_by().values("pk").explain()
