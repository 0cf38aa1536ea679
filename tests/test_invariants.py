"""The invariant checker (support/invariants.py) on a clean database, then on each kind of
violation seeded by hand, bypassing the one state-change method on purpose: it must find
exactly that one, name it, and find nothing else."""

import uuid
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from django.test import Client
from django.utils import timezone
from djstripe.models import WebhookEventTrigger

from billing import refunds
from billing.models import Order, OrderEvent, OutboundEmail, Refund, Subscription
from support.invariants import Violation, check_all, window_for
from support.models import RefundRequest
from support.stripe_view import StripeView
from tests.factories import OrderFactory, payment_intent
from tests.fixtures.console import act_url, client_for, fulfilled_order, paid_order
from tests.fixtures.gateway import _Obj
from tests.fixtures.services import post_event, signed_event


def view_of(fake) -> StripeView:
    """What read_stripe() would read from the fake: its PaymentIntents, charges and refunds."""
    return StripeView.of(fake.intents.values(), fake.charges.values(), fake.refunds)


def check(fake, **kwargs):
    """Check everything, with no grace: the test's world has settled."""
    return check_all(view_of(fake), window_for(grace_seconds=0), **kwargs)


def only(report, invariant: str) -> Violation:
    """The report's one violation, of `invariant`; fails naming everything found otherwise."""
    assert report.complete
    assert [v.invariant for v in report.violations] == [invariant], [str(v) for v in report.violations]
    return report.violations[0]


@pytest.fixture
def world(stripe_api, ben, webhook_endpoint, client, django_capture_on_commit_callbacks):
    """A clean shop: fulfilled by the webhook (a real signed delivery), fulfilled by support in
    the admin, refunded in full from the admin, partly refunded in the Stripe dashboard,
    pending, and failed; every email sent."""
    as_ben = client_for(ben)
    with django_capture_on_commit_callbacks(execute=True):
        hooked = OrderFactory(stripe_payment_intent_id="pi_hook1", stripe_payment_status="requires_confirmation")
        stripe_api.intents["pi_hook1"] = _Obj(payment_intent(hooked))
        assert (
            post_event(
                client, webhook_endpoint, *signed_event("payment_intent.succeeded", payment_intent(hooked))
            ).status_code
            == 200
        )
        by_support = paid_order(stripe_api)
        assert as_ben.post(act_url(by_support, "fulfil"), {}).status_code == 302
        refunded = fulfilled_order(stripe_api)
        form = {"amount": "249.00", "reason": "Asked", "token": uuid.uuid4(), "confirmed": "yes"}
        assert as_ben.post(act_url(refunded, "refund"), form).status_code == 302
        partly = fulfilled_order(stripe_api)
        refunds.record_refund(partly, stripe_api.refund(partly.stripe_payment_intent_id, 1000), actor="stripe:webhook")
        pending = OrderFactory()
        failed = OrderFactory()
        failed.close_unpaid(actor="system:reconciliation", message="Abandoned.")
    orders = {o.reference: o for o in Order.objects.all()}
    return dict(
        hooked=hooked, by_support=by_support, refunded=refunded, partly=partly, pending=pending, failed=failed
    ) | {"all": orders}


def test_it_finds_nothing_in_a_clean_shop(world, stripe_api):
    states = sorted(Order.objects.values_list("state", flat=True))
    assert states == ["failed", "fulfilled", "fulfilled", "fulfilled", "pending", "refunded"]
    assert Order.objects.get(pk=world["refunded"].pk).state == "refunded"
    report = check(stripe_api)
    assert report.ok, report.lines()
    assert report.counts == dict.fromkeys(["I1", "I2", "I3", "I4", "I5", "I6", "I7", "outbox"], 0)
    assert report.orders == 6 and report.lines()[0].startswith("OK: 0 violations")


# --- one seeded violation per invariant ---------------------------------------------------------


def test_i1_an_order_paid_on_a_payment_of_another_amount(world, stripe_api):
    stripe_api.intents[world["hooked"].stripe_payment_intent_id]["amount"] = 100
    found = only(check(stripe_api), "I1")
    assert found.ref == world["hooked"].reference and "$1.00" in found.found and "$249.00" in found.expected


def test_i1_an_order_fulfilled_with_no_payment_at_all(world, stripe_api):
    order = world["pending"]
    with transaction.atomic():  # the state machine allows it; only Stripe can say it is wrong
        order.transition(Order.State.PAID, actor="test")
    violation = only(check(stripe_api), "I1")
    assert (violation.ref, violation.found) == (order.reference, "no PaymentIntent recorded")


def test_i2_a_succeeded_payment_nobody_fulfilled(world, stripe_api):
    lost = stripe_api.pay_elsewhere(created=int(timezone.now().timestamp()) - 600)
    violation = only(check(stripe_api), "I2")
    assert (violation.ref, violation.found) == (lost.id, "no order for it")


def test_i2_waits_for_the_grace_window(world, stripe_api):
    stripe_api.pay_elsewhere()  # succeeded a moment ago: reconciliation has a minute or two
    assert check_all(view_of(stripe_api), window_for(grace_seconds=180)).ok
    assert only(check(stripe_api), "I2")


def test_i2_a_payment_refunded_in_full_at_stripe_is_settled(world, stripe_api):
    lost = stripe_api.pay_elsewhere(created=int(timezone.now().timestamp()) - 600)
    stripe_api.refund(lost.id, lost.amount)
    assert check(stripe_api).ok


def test_i3_a_fulfilled_order_without_its_access_email(world, stripe_api):
    OutboundEmail.objects.filter(order=world["partly"], kind__in=OutboundEmail.ACCESS_KINDS).delete()
    violation = only(check(stripe_api), "I3")
    assert violation.ref == world["partly"].reference and violation.found == "1 subscriptions, 0 access emails"


def test_i3_a_subscription_for_an_order_that_failed(world, stripe_api):
    user = world["hooked"].subscription.user
    now = timezone.now()
    Subscription.objects.create(order=world["failed"], user=user, starts_at=now, ends_at=now + timedelta(days=1))
    violation = only(check(stripe_api), "I3")
    assert violation.ref == world["failed"].reference and violation.found == "1 subscriptions, 0 access emails"


def test_i4_a_dashboard_refund_never_recorded_here(world, stripe_api):
    refund = stripe_api.refund(world["hooked"].stripe_payment_intent_id, 500)
    violation = only(check(stripe_api), "I4")
    assert violation.ref == f"{world['hooked'].reference} {refund.id}" and violation.found == "only at Stripe"


def test_i4_a_refunded_total_that_is_not_the_sum_of_the_refunds(world, stripe_api):
    Order.objects.filter(pk=world["partly"].pk).update(refunded_cents=2000)
    violation = only(check(stripe_api), "I4")
    assert violation.ref == world["partly"].reference and "refunded_cents 2000, counted refunds 1000" in violation.found


def test_i4_a_refund_that_failed_at_stripe_still_counted_here(world, stripe_api):
    refund = next(r for r in stripe_api.refunds if r.payment_intent == world["partly"].stripe_payment_intent_id)
    refund["status"] = "failed"
    violation = only(check(stripe_api), "I4")
    assert violation.what == "refund differs from Stripe's" and "1000 failed at Stripe" in violation.found


def test_i4_stripe_refunding_more_than_the_charge(world, stripe_api):
    pi = stripe_api.pay_elsewhere(created=int(timezone.now().timestamp()) - 600)
    stripe_api.refund(pi.id, pi.amount)
    stripe_api.refund(pi.id, 100)
    violation = only(check(stripe_api), "I4")
    assert (violation.ref, violation.found) == (pi.id, "25000")


def test_i5_a_state_changed_without_its_timeline_row(world, stripe_api):
    Order.objects.filter(pk=world["pending"].pk).update(state=Order.State.FAILED)
    violation = only(check(stripe_api), "I5")
    assert (violation.ref, violation.what, violation.found) == (
        world["pending"].reference,
        "state not in the timeline",
        "failed",
    )


def test_i5_an_illegal_move_and_a_move_without_an_actor(world, stripe_api):
    order = world["failed"]
    OrderEvent.objects.create(order=order, kind="state:paid", actor="", data={"from": "failed", "to": "paid"})
    Order.objects.filter(pk=order.pk).update(state=Order.State.PAID)
    report = check(stripe_api)
    assert {v.invariant for v in report.violations} == {"I5", "I1"}  # paid with no payment: I1 as well
    i5 = [v for v in report.violations if v.invariant == "I5"]
    assert [(v.ref, v.what) for v in i5] == [
        (order.reference, "illegal move in the timeline"),
        (order.reference, "move to paid without an actor"),
    ]


def test_i6_a_webhook_answered_2xx_whose_event_is_not_recorded(world, stripe_api):
    trigger = WebhookEventTrigger.objects.get()
    WebhookEventTrigger.objects.filter(pk=trigger.pk).update(event=None)
    violation = only(check(stripe_api), "I6")
    assert violation.ref == f"trigger {trigger.pk}" and violation.what.endswith("answered 2xx, not recorded")


def test_i6_a_failed_webhook_never_replayed(world, stripe_api, webhook_endpoint, settings):
    order = OrderFactory(stripe_payment_intent_id="pi_hook2", stripe_payment_status="requires_confirmation")
    settings.FAILPOINTS = "fulfil_before_commit=raise"
    body, header = signed_event("payment_intent.succeeded", payment_intent(order), event_id="evt_lost1")
    assert post_event(Client(raise_request_exception=False), webhook_endpoint, body, header).status_code == 500
    violation = only(check(stripe_api), "I6")
    assert "evt_lost1 never committed" in violation.what and "never replayed" in violation.found


def test_i6_an_acknowledged_event_that_is_not_recorded(world, stripe_api):
    violation = only(check(stripe_api, acknowledged=["evt_acked_but_lost"]), "I6")
    assert violation.ref == "evt_acked_but_lost"


def test_i7_a_console_refund_without_its_request(world, stripe_api):
    RefundRequest.objects.all().delete()
    violation = only(check(stripe_api), "I7")
    assert violation.what == "console refund without its request" and violation.expected == "support:ben@paidup.example"


def test_i7_a_support_fulfilment_without_its_admin_log(world, stripe_api):
    from django.contrib.admin.models import LogEntry

    LogEntry.objects.filter(object_id=str(world["by_support"].pk)).delete()
    violation = only(check(stripe_api), "I7")
    assert (violation.ref, violation.what) == (
        world["by_support"].reference,
        "support fulfilment without its admin log",
    )


def test_i7_a_refund_without_its_timeline_row(world, stripe_api):
    OrderEvent.objects.filter(order=world["partly"], kind="refund").delete()
    violation = only(check(stripe_api), "I7")
    refund = Refund.objects.get(order=world["partly"])
    assert violation.ref == f"{world['partly'].reference} {refund.stripe_refund_id}"


def test_the_outbox_an_email_nobody_sent(world, stripe_api):
    email = OutboundEmail.objects.filter(order=world["hooked"]).first()
    OutboundEmail.objects.filter(pk=email.pk).update(status=OutboundEmail.Status.RETRY, attempts=6)
    violation = only(check(stripe_api), "outbox")
    assert violation.ref == f"email {email.pk}" and "retry after 6 attempts" in violation.found


@pytest.mark.parametrize("claimed_minutes_ago, stuck", [(1, False), (11, True)])
def test_the_outbox_an_email_whose_sender_died(world, stripe_api, claimed_minutes_ago, stuck):
    """A worker killed mid-send leaves the row "sending"; the outbox takes it over after
    STALE_SENDING (10 min). Before that it is in progress, not stuck (found by the chaos run)."""
    email = OutboundEmail.objects.filter(order=world["hooked"]).first()
    claimed = timezone.now() - timedelta(minutes=claimed_minutes_ago)
    sending = OutboundEmail.Status.SENDING
    OutboundEmail.objects.filter(pk=email.pk).update(status=sending, attempts=1, next_attempt_at=claimed)
    report = check(stripe_api)
    if stuck:
        assert only(report, "outbox").ref == f"email {email.pk}"
    else:
        assert report.ok, [str(v) for v in report.violations]


def test_the_window_leaves_out_older_orders(world, stripe_api):
    Order.objects.filter(pk=world["pending"].pk).update(state=Order.State.FAILED)
    later = window_for(timezone.now() + timedelta(seconds=1), grace_seconds=0)
    report = check_all(view_of(stripe_api), later)
    assert report.orders == 0 and not [v for v in report.violations if v.invariant == "I5"]


def test_an_incomplete_read_of_stripe_is_never_clean_and_blames_nothing_it_did_not_read(world, stripe_api):
    view = StripeView.of(list(stripe_api.intents.values())[:1])  # the budget ran out after one payment
    view.complete = False
    report = check_all(view, window_for(grace_seconds=0))
    assert not report.violations and not report.ok
    assert report.lines()[0].startswith("INCOMPLETE")
    Order.objects.filter(pk=world["pending"].pk).update(state=Order.State.FAILED)
    assert only_incomplete(check_all(view, window_for(grace_seconds=0)), "I5")  # what needs no Stripe still runs


def only_incomplete(report, invariant: str) -> bool:
    return not report.complete and [v.invariant for v in report.violations] == [invariant]


# --- the command ------------------------------------------------------------------------------


@pytest.fixture
def stripe_read(monkeypatch, stripe_api):
    """read_stripe() answers the fake's objects (its own paging is tested against localstripe)."""
    calls = []

    def fake_read(since, **kwargs):
        calls.append((since, kwargs))
        return view_of(stripe_api)

    monkeypatch.setattr("support.invariants.read_stripe", fake_read)
    return calls


def test_the_command_prints_the_report_and_exits_0_when_clean(world, stripe_read):
    out = StringIO()
    call_command("check_invariants", "--grace", "0", stdout=out)
    assert out.getvalue().startswith("OK: 0 violations")


def test_the_command_exits_1_and_names_each_violation(world, stripe_read):
    Order.objects.filter(pk=world["pending"].pk).update(state=Order.State.FAILED)
    out = StringIO()
    with pytest.raises(CommandError) as error:
        call_command("check_invariants", "--grace", "0", stdout=out)
    assert error.value.returncode == 1
    assert f"I5 {world['pending'].reference}: state not in the timeline" in out.getvalue()


def test_the_command_reads_since_as_seconds_ago_or_an_iso_time(world, stripe_read):
    call_command("check_invariants", "--since", "3600", "--grace", "0", stdout=StringIO())
    call_command("check_invariants", "--since", "2026-01-01T00:00:00Z", "--grace", "0", stdout=StringIO())
    ago, iso = stripe_read[0][0], stripe_read[1][0]
    assert abs(ago - (timezone.now().timestamp() - 3600)) < 60
    assert iso == 1767225600


@pytest.mark.parametrize(
    "args, message",
    [
        (["--since", "yesterday"], "neither seconds ago"),
        (["--since", "-5"], "between 0 and ten years"),
        (["--since", "2999-01-01T00:00:00"], "in the future"),
        (["--since", ""], "neither seconds ago"),
        (["--grace", "-1"], "--grace must be 0 or more"),
        (["--budget", "0"], "--budget must be at least 1"),
        (["--acknowledged", "/nonexistent/acked.txt"], "cannot read it"),
    ],
)
def test_the_command_refuses_bad_options_with_exit_2(db, stripe_read, args, message):
    with pytest.raises(CommandError, match=message) as error:
        call_command("check_invariants", *args, stdout=StringIO())
    assert error.value.returncode == 2 and not stripe_read


def test_the_command_refuses_a_file_of_things_that_are_not_event_ids(db, stripe_read, tmp_path):
    acked = tmp_path / "acked.txt"
    acked.write_text("evt_1\nnot-an-event\n")
    with pytest.raises(CommandError, match="not an event id: 'not-an-event'") as error:
        call_command("check_invariants", "--acknowledged", str(acked), stdout=StringIO())
    assert error.value.returncode == 2


def test_the_command_checks_the_acknowledged_events(world, stripe_read, tmp_path):
    acked = tmp_path / "acked.txt"
    acked.write_text("# sent by the chaos run\nevt_never_arrived\n")
    out = StringIO()
    with pytest.raises(CommandError):
        call_command("check_invariants", "--grace", "0", "--acknowledged", str(acked), stdout=out)
    assert "I6 evt_never_arrived: answered 2xx, not recorded" in out.getvalue()


def test_the_command_says_when_stripe_cannot_be_read(db, monkeypatch):
    import stripe

    def down(since, **kwargs):
        raise stripe.APIConnectionError("Could not connect to Stripe (fake outage).")

    monkeypatch.setattr("support.invariants.read_stripe", down)
    with pytest.raises(CommandError, match="Could not read Stripe") as error:
        call_command("check_invariants", stdout=StringIO())
    assert error.value.returncode == 2


# --- reading Stripe: stripe-python against localstripe ------------------------------------------


@pytest.fixture
def local_api(localstripe, settings, monkeypatch):
    """The gateway pointed at the session's localstripe, with pages of 2 so that three objects
    take two pages."""
    import stripe

    settings.STRIPE_API_BASE, settings.STRIPE_SECRET_KEY = localstripe, "sk_test_" + "i" * 24
    monkeypatch.setattr("support.stripe_view.PAGE_SIZE", 2)
    return stripe.StripeClient(settings.STRIPE_SECRET_KEY, base_addresses={"api": localstripe})


def _pay(api, amount: int):
    card = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}
    method = api.v1.payment_methods.create({"type": "card", "card": card})
    params = {"amount": amount, "currency": "usd", "payment_method": method.id, "payment_method_types": ["card"]}
    return api.v1.payment_intents.create({**params, "confirm": True})


@pytest.mark.localstripe
def test_it_reads_every_page_of_payments_charges_and_refunds_from_stripe(db, local_api):
    from support.stripe_view import read_stripe

    since = int(timezone.now().timestamp()) - 1
    paid = [_pay(local_api, amount) for amount in (24900, 24900, 4900)]
    refund = local_api.v1.refunds.create({"payment_intent": paid[0].id, "amount": 1000})
    view = read_stripe(since, budget=100)
    assert view.complete and {p.id for p in paid} <= set(view.payment_intents)
    assert all(view.payment_intents[p.id]["status"] == "succeeded" for p in paid)
    assert refund.id in view.refunds and view.refunded_cents(paid[0].id) == 1000
    assert view.refunded_cents(paid[1].id) == 0
    assert len({c["payment_intent"] for c in view.charges.values()} & {p.id for p in paid}) == 3
    assert view.requests >= 5  # at least two pages of payments, two of charges, one of refunds


@pytest.mark.localstripe
def test_it_says_so_when_the_read_budget_runs_out(db, local_api):
    from support.stripe_view import read_stripe

    _pay(local_api, 24900)
    _pay(local_api, 24900)
    _pay(local_api, 24900)
    view = read_stripe(0, budget=1)
    assert not view.complete and view.requests == 1 and len(view.payment_intents) == 2


@pytest.mark.localstripe
def test_an_order_payment_stripe_does_not_know_is_left_for_i1_to_report(db, local_api, plan):
    from support.invariants import check_all
    from support.stripe_view import read_stripe

    order = OrderFactory(plan=plan, stripe_payment_intent_id="pi_nobody_made")
    with transaction.atomic():
        order.transition(Order.State.PAID, actor="test")
    # From an hour ahead: the lists bring nothing (other tests' payments stay out), only `also` is asked.
    view = read_stripe(int(timezone.now().timestamp()) + 3600, also=["pi_nobody_made"])
    assert view.complete and "pi_nobody_made" not in view.payment_intents
    report = check_all(view, window_for(timezone.now() - timedelta(seconds=5), grace_seconds=0))
    found = only(report, "I1")
    assert (found.ref, found.found) == (order.reference, "Stripe has no such payment")


@pytest.mark.localstripe
def test_a_shop_paid_and_refunded_through_localstripe_checks_clean_and_a_lost_payment_does_not(
    db, local_api, plan, django_capture_on_commit_callbacks
):
    """localstripe's own objects (their currency, `created`, a refund's charge) through the whole
    checker: a fulfilled order partly refunded by the core is clean; a payment with no order is I2."""
    import time

    from billing.fulfilment import fulfil
    from support.invariants import read_and_check

    time.sleep(1.1)  # other tests' payments fall in an earlier second than the window
    since = timezone.now().replace(microsecond=0)
    order = OrderFactory(plan=plan)
    paid = _pay(local_api, order.amount_cents)
    with django_capture_on_commit_callbacks(execute=True):
        fulfil(order, via=Order.Via.RETURN, payment_intent=paid)
        refunds.refund_payment(order, amount_cents=1000, reason="Asked", idempotency_key="k1", actor="system:test")
    order.refresh_from_db()
    assert (order.state, order.refunded_cents) == ("fulfilled", 1000)
    report = read_and_check(since, grace_seconds=0)
    assert report.ok, report.lines()
    assert report.orders == 1

    lost = _pay(local_api, plan.amount_cents)
    violation = only(read_and_check(since, grace_seconds=0), "I2")
    assert (violation.ref, violation.found) == (lost.id, "no order for it")
