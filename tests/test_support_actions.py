"""The support console's actions (support/actions.py), with Stripe faked at the gateway.

Each action checks, acts, writes the timeline with the staff user as actor, and refuses
with a sentence for the support person, changing nothing, when it cannot.
"""

import re
import uuid
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.utils import timezone

from accounts.models import User
from accounts.signin import user_for_token
from billing.alerts import raise_alert
from billing.models import Alert, Order, OrderEvent, OutboundEmail, Refund, Subscription
from support import actions
from support.actions import ActionRefused
from support.models import RefundRequest, SupportCase
from tests.factories import OrderFactory, UserFactory, stripe_paid_order

pytestmark = pytest.mark.django_db


def staff(email: str, *permissions: str) -> User:
    """A staff user with these billing permissions (not through the groups: a transactional
    test elsewhere may have flushed the rows the group migration created)."""
    user = UserFactory(email=email, is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="billing", codename__in=permissions))
    return User.objects.get(pk=user.pk)  # no cached permissions


@pytest.fixture
def sam(db) -> User:
    """Support, without refunds."""
    return staff("sam@paidup.example", "view_order", "fulfil_order", "resend_access", "extend_subscription")


@pytest.fixture
def rita(db) -> User:
    """Support, with refunds."""
    return staff("rita@paidup.example", "view_order", "fulfil_order", "refund_order", "attach_payment")


def snapshot(order: Order) -> dict:
    """What an action may change, to prove a refused one changed nothing."""
    order.refresh_from_db()
    return {
        "order": (order.state, order.refunded_cents, order.needs_attention, order.fulfilled_via),
        "events": OrderEvent.objects.filter(order=order).count(),
        "emails": OutboundEmail.objects.count(),
        "subscriptions": Subscription.objects.count(),
        "refunds": Refund.objects.count(),
        "refund_requests": RefundRequest.objects.count(),
        "orders": Order.objects.count(),
    }


# --- fulfil_verified ------------------------------------------------------------------


def test_fulfil_verified_fulfils_what_stripe_confirms(fake_stripe, sam):
    order = stripe_paid_order(fake_stripe)  # charged an hour ago
    order.flag_attention("Fulfilment keeps failing", actor="test")

    done = actions.fulfil_verified(order, sam)

    order.refresh_from_db()
    assert order.state == "fulfilled" and order.fulfilled_via == "support" and not order.needs_attention
    assert "recovery email" in done.message
    assert OrderEvent.objects.get(order=order, kind="state:fulfilled").actor == "support:sam@paidup.example"
    assert OutboundEmail.objects.get(order=order).kind == "recovery"


def test_fulfil_verified_seconds_after_the_charge_sends_the_confirmation(fake_stripe, sam):
    """The email depends on how long the customer waited, not on who fulfilled."""
    order = stripe_paid_order(fake_stripe, charged_ago=5)

    done = actions.fulfil_verified(order, sam)

    assert "confirmation email" in done.message
    assert OutboundEmail.objects.get(order=order).kind == "confirmation"
    assert OrderEvent.objects.get(order=order, kind="state:fulfilled").data["via"] == "support"


@pytest.mark.parametrize("status", ["processing", "requires_payment_method", "canceled"])
def test_fulfil_verified_refuses_what_stripe_does_not_confirm(fake_stripe, sam, status):
    order = stripe_paid_order(fake_stripe)
    fake_stripe.intents[order.stripe_payment_intent_id]["status"] = status
    before = snapshot(order)

    with pytest.raises(ActionRefused, match=f"Stripe says the payment is {status}"):
        actions.fulfil_verified(order, sam)

    assert snapshot(order) == before


def test_fulfil_verified_refuses_when_stripe_is_unreachable(fake_stripe, sam):
    order = stripe_paid_order(fake_stripe, state="paid")
    fake_stripe.down = True
    before = snapshot(order)

    with pytest.raises(ActionRefused, match="Could not reach Stripe"):
        actions.fulfil_verified(order, sam)

    assert snapshot(order) == before


def test_fulfil_verified_needs_a_payment_and_does_nothing_twice(fake_stripe, sam):
    with pytest.raises(ActionRefused, match="no Stripe payment"):
        actions.fulfil_verified(OrderFactory(), sam)
    order = stripe_paid_order(fake_stripe, state="fulfilled")
    before = snapshot(order)
    assert "already fulfilled" in actions.fulfil_verified(order, sam).message
    assert snapshot(order) == before


# --- resend_access --------------------------------------------------------------------


def signin_link(email: OutboundEmail) -> str:
    return re.search(r"/account/sign-in/([^/\s]+)/", email.body_text).group(1)


def test_resend_access_sends_a_fresh_working_link(fake_stripe, sam):
    order = stripe_paid_order(fake_stripe, state="fulfilled")
    customer = order.subscription.user
    first = signin_link(OutboundEmail.objects.get(order=order))
    User.objects.filter(pk=customer.pk).update(last_login=timezone.now())  # the customer used it
    assert user_for_token(first) is None

    done = actions.resend_access(Order.objects.get(pk=order.pk), sam)  # as the admin loads it

    email = OutboundEmail.objects.get(kind="signin")
    assert email.to == customer.email and customer.email in done.message
    assert user_for_token(signin_link(email)) == customer
    assert OrderEvent.objects.get(order=order, kind="support:resend").actor == "support:sam@paidup.example"


def test_resend_access_refuses_an_order_without_access(fake_stripe, sam):
    order = stripe_paid_order(fake_stripe, state="paid")
    with pytest.raises(ActionRefused, match="Fulfil it first"):
        actions.resend_access(order, sam)
    assert not OutboundEmail.objects.filter(kind="signin").exists()


# --- refund ---------------------------------------------------------------------------


def refund(order, user, amount, *, reason="Customer asked", token=None):
    return actions.refund(order, user, amount_cents=amount, reason=reason, token=token or uuid.uuid4())


def test_a_full_refund_refunds_in_stripe_records_it_and_ends_access(fake_stripe, rita):
    order = stripe_paid_order(fake_stripe, state="fulfilled")
    token = uuid.uuid4()

    done = refund(order, rita, order.amount_cents, token=token)

    [stripe_refund] = fake_stripe.refunds
    assert stripe_refund.amount == order.amount_cents and stripe_refund.payment_intent == order.stripe_payment_intent_id
    assert stripe_refund.idempotency_key == f"order-{order.id}-refund-{token}"
    order.refresh_from_db()
    assert order.state == "refunded" and order.refunded_cents == order.amount_cents
    assert order.subscription.ends_at <= timezone.now()
    assert Refund.objects.get(order=order).stripe_refund_id == stripe_refund.id
    request = RefundRequest.objects.get(token=token)
    assert request.stripe_refund_id == stripe_refund.id and request.requested_by == "support:rita@paidup.example"
    assert OutboundEmail.objects.filter(order=order, kind="refund").count() == 1
    assert OrderEvent.objects.get(order=order, kind="refund").actor == "support:rita@paidup.example"
    assert done.message == f"Refunded $249.00 on {order.reference}."


def test_a_partial_refund_keeps_access_and_the_rest_can_follow(fake_stripe, rita):
    order = stripe_paid_order(fake_stripe, state="fulfilled")

    refund(order, rita, 5000)
    order.refresh_from_db()
    assert order.state == "fulfilled" and order.refunded_cents == 5000
    assert order.subscription.ends_at > timezone.now()

    refund(order, rita, order.amount_cents - 5000)
    order.refresh_from_db()
    assert order.state == "refunded" and order.refunded_cents == order.amount_cents
    assert sum(r.amount for r in fake_stripe.refunds) == order.amount_cents


def test_a_refund_over_the_charge_is_refused_before_stripe(fake_stripe, rita):
    order = stripe_paid_order(fake_stripe, state="fulfilled")
    refund(order, rita, 20000)
    before = snapshot(order)

    with pytest.raises(ActionRefused, match=r"At most \$49.00 can be refunded"):
        refund(order, rita, 5000)

    assert snapshot(order) == before and len(fake_stripe.refunds) == 1


@pytest.mark.parametrize("reason", ["", "   "])
def test_a_refund_needs_a_reason(fake_stripe, rita, reason):
    order = stripe_paid_order(fake_stripe, state="fulfilled")
    before = snapshot(order)
    with pytest.raises(ActionRefused, match="A reason is required"):
        refund(order, rita, 1000, reason=reason)
    assert snapshot(order) == before and not fake_stripe.refunds


@pytest.mark.parametrize("amount", [0, -100])
def test_a_refund_needs_an_amount(fake_stripe, rita, amount):
    order = stripe_paid_order(fake_stripe, state="fulfilled")
    with pytest.raises(ActionRefused, match="more than zero"):
        refund(order, rita, amount)
    assert not fake_stripe.refunds


def test_a_refund_needs_the_refund_permission(fake_stripe, sam):
    order = stripe_paid_order(fake_stripe, state="fulfilled")
    before = snapshot(order)
    with pytest.raises(ActionRefused, match="permission"):
        refund(order, sam, 1000)
    assert snapshot(order) == before and not fake_stripe.refunds


def test_an_unpaid_order_cannot_be_refunded(fake_stripe, rita):
    order = OrderFactory()
    with pytest.raises(ActionRefused, match="no payment to refund"):
        refund(order, rita, 1000)
    assert not fake_stripe.refunds


@pytest.mark.parametrize("amount", [5000, 24900], ids=["partial", "full"])
def test_the_same_refund_form_submitted_twice_refunds_once(fake_stripe, rita, amount):
    order = stripe_paid_order(fake_stripe, state="fulfilled")
    token = uuid.uuid4()

    refund(order, rita, amount, token=token)
    again = refund(order, rita, amount, token=token)

    assert "already made" in again.message
    assert len(fake_stripe.refunds) == 1
    order.refresh_from_db()
    assert order.refunded_cents == amount
    assert RefundRequest.objects.count() == 1 and Refund.objects.count() == 1


def test_a_refund_stripe_refuses_leaves_nothing_behind(fake_stripe, rita):
    order = stripe_paid_order(fake_stripe, state="fulfilled")
    before = snapshot(order)
    fake_stripe.down = True

    with pytest.raises(ActionRefused, match="Stripe refused the refund"):
        refund(order, rita, 1000)

    assert snapshot(order) == before  # the refund request rolled back: the form can be sent again


# --- extend ---------------------------------------------------------------------------


@pytest.mark.parametrize("days", [0, -1, 367])
def test_extend_refuses_days_out_of_bounds(fake_stripe, sam, days):
    order = stripe_paid_order(fake_stripe, state="fulfilled")
    ends_at = order.subscription.ends_at
    with pytest.raises(ActionRefused, match="1 to 366 days"):
        actions.extend(order, sam, days=days)
    assert Subscription.objects.get(order=order).ends_at == ends_at


@pytest.mark.parametrize("days", [1, 366])
def test_extend_pushes_the_end_date(fake_stripe, sam, days):
    order = stripe_paid_order(fake_stripe, state="fulfilled")
    ends_at = order.subscription.ends_at

    actions.extend(order, sam, days=days, reason="Sorry for the delay")

    assert Subscription.objects.get(order=order).ends_at == ends_at + timedelta(days=days)
    event = OrderEvent.objects.get(order=order, kind="support:extend")
    assert event.actor == "support:sam@paidup.example" and "Sorry for the delay" in event.message


def test_extend_starts_from_today_when_access_has_ended(fake_stripe, sam):
    order = stripe_paid_order(fake_stripe, state="fulfilled")
    Subscription.objects.filter(order=order).update(ends_at=timezone.now() - timedelta(days=30))
    order.refresh_from_db()

    actions.extend(order, sam, days=10)

    ends_at = Subscription.objects.get(order=order).ends_at
    assert timezone.now() + timedelta(days=9) < ends_at <= timezone.now() + timedelta(days=10)


def test_extend_needs_a_subscription(fake_stripe, sam):
    with pytest.raises(ActionRefused, match="Only a fulfilled order"):
        actions.extend(stripe_paid_order(fake_stripe, state="paid"), sam, days=10)


# --- attach_payment -------------------------------------------------------------------


@pytest.mark.parametrize("by", ["payment_intent", "charge"])
def test_attach_turns_a_bare_payment_into_a_fulfilled_order(fake_stripe, rita, plan, by):
    an_hour_ago = int(timezone.now().timestamp()) - 3600
    pi = fake_stripe.pay_elsewhere(
        email="lost@example.com", metadata={"email": "Lost@Example.com"}, created=an_hour_ago
    )
    stripe_id = pi.id if by == "payment_intent" else pi.latest_charge

    done = actions.attach_payment(f"  {stripe_id} ", rita)

    order = Order.objects.get(stripe_payment_intent_id=pi.id)
    assert done.order == order and order.reference in done.message
    assert (order.state, order.fulfilled_via, order.email, order.retroactive) == (
        "fulfilled",
        "support",
        "lost@example.com",
        True,
    )
    assert OrderEvent.objects.get(order=order, kind="order:attached").actor == "support:rita@paidup.example"
    assert OutboundEmail.objects.get(order=order).kind == "recovery"  # charged an hour ago
    assert "recovery email" in done.message


def test_attach_finds_the_email_on_the_stripe_customer(fake_stripe, rita, plan):
    pi = fake_stripe.pay_elsewhere(email="customer@example.com")
    actions.attach_payment(pi.id, rita)
    assert Order.objects.get(stripe_payment_intent_id=pi.id).email == "customer@example.com"


def test_attach_asks_for_an_email_when_stripe_has_none(fake_stripe, rita, plan):
    pi = fake_stripe.pay_elsewhere(email=None)
    with pytest.raises(ActionRefused, match="type the customer's email"):
        actions.attach_payment(pi.id, rita)
    assert not Order.objects.exists()

    actions.attach_payment(pi.id, rita, email="typed@example.com")
    assert Order.objects.get().email == "typed@example.com"


@pytest.mark.parametrize(
    "stripe_id, message",
    [
        ("pi_doesnotexist", "Stripe has no payment pi_doesnotexist"),
        ("ch_doesnotexist", "Stripe has no payment ch_doesnotexist"),
        ("cus_123", r"Paste a Stripe PaymentIntent \(pi_…\) or charge \(ch_…\) id"),
        ("", "Paste a Stripe PaymentIntent"),
        ("pi_" + "x" * 300, "Paste a Stripe PaymentIntent"),
    ],
)
def test_attach_refuses_what_is_not_a_stripe_payment(fake_stripe, rita, plan, stripe_id, message):
    with pytest.raises(ActionRefused, match=message):
        actions.attach_payment(stripe_id, rita)
    assert not Order.objects.exists() and not OrderEvent.objects.exists()


def test_attach_refuses_a_payment_that_did_not_succeed(fake_stripe, rita, plan):
    pi = fake_stripe.pay_elsewhere(email="lost@example.com")
    fake_stripe.intents[pi.id]["status"] = "requires_payment_method"
    with pytest.raises(ActionRefused, match="requires_payment_method, not succeeded. Nothing created."):
        actions.attach_payment(pi.id, rita)
    assert not Order.objects.exists()


def test_attach_refuses_a_payment_that_already_has_its_order(fake_stripe, rita):
    order = stripe_paid_order(fake_stripe, state="fulfilled")
    charge = fake_stripe.intents[order.stripe_payment_intent_id]["latest_charge"]
    for stripe_id in (order.stripe_payment_intent_id, charge):
        with pytest.raises(ActionRefused, match=f"already belongs to order {order.reference}"):
            actions.attach_payment(stripe_id, rita)
    assert Order.objects.count() == 1


def test_attach_refuses_when_stripe_is_unreachable(fake_stripe, rita, plan):
    pi = fake_stripe.pay_elsewhere(email="lost@example.com")
    fake_stripe.down = True
    with pytest.raises(ActionRefused, match="Could not reach Stripe"):
        actions.attach_payment(pi.id, rita)
    assert not Order.objects.exists()


def test_attach_refuses_an_amount_no_plan_costs(fake_stripe, rita, plan):
    pi = fake_stripe.pay_elsewhere(email="lost@example.com", amount=1234)
    with pytest.raises(ActionRefused, match=r"No plan costs \$12.34: this payment buys nothing here"):
        actions.attach_payment(pi.id, rita)
    assert not Order.objects.exists() and not OutboundEmail.objects.exists()


@pytest.mark.parametrize("amount, currency", [(1500, "usd"), (24900, "eur"), (24901, "usd"), (24899, "usd")])
def test_attach_refuses_what_reconciliation_would_not_adopt(fake_stripe, rita, plan, amount, currency):
    """The console and reconciliation follow one rule (billing.adoption.plan_for_payment): a
    $15 Payment Link, the plan's price in another currency, a cent more or less buy nothing."""
    pi = fake_stripe.pay_elsewhere(email="lost@example.com", amount=amount, currency=currency)
    with pytest.raises(ActionRefused, match="No plan costs"):
        actions.attach_payment(pi.id, rita)
    assert not Order.objects.exists()
    assert fake_stripe.requests == 1  # refused before asking Stripe for the customer's email


def test_attach_takes_an_inactive_plan_at_that_price_and_the_currency_in_any_case(fake_stripe, rita, plan):
    from tests.factories import PlanFactory

    old = PlanFactory(slug="old-price", amount_cents=19900, active=False)
    pi = fake_stripe.pay_elsewhere(email="lost@example.com", amount=19900, currency="USD")
    actions.attach_payment(pi.id, rita)
    assert Order.objects.get(stripe_payment_intent_id=pi.id).plan == old


# --- note, claim, resolve -------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "  \n "])
def test_an_empty_note_is_refused(sam, text):
    order = OrderFactory()
    with pytest.raises(ActionRefused, match="The note is empty"):
        actions.note(order, sam, text)
    assert not OrderEvent.objects.filter(order=order).exists()


def test_a_note_goes_on_the_timeline(sam):
    order = OrderFactory()
    actions.note(order, sam, "  Called the customer; they will retry.  ")
    event = OrderEvent.objects.get(order=order, kind="support:note")
    assert event.message == "Called the customer; they will retry." and event.actor == "support:sam@paidup.example"


def test_a_claim_holds_the_order_for_thirty_minutes(sam, rita, time_machine):
    order = OrderFactory()
    time_machine.move_to(timezone.now(), tick=False)

    actions.claim(order, sam)
    with pytest.raises(ActionRefused, match="sam@paidup.example is on it until"):
        actions.claim(order, rita)
    actions.claim(order, sam)  # the holder may renew

    time_machine.shift(timedelta(minutes=29))
    with pytest.raises(ActionRefused):
        actions.claim(order, rita)
    time_machine.shift(timedelta(minutes=31))
    actions.claim(order, rita)

    order.refresh_from_db()
    assert order.claimed_by == rita
    assert OrderEvent.objects.filter(order=order, kind="support:claim").count() == 3


def test_resolve_clears_attention_and_resolves_alerts_and_cases(sam, rita):
    order = OrderFactory(email="ada@example.com")
    order.flag_attention("Fulfilment keeps failing", actor="test")
    raise_alert(Alert.Reason.FULFIL_FAILED, "It keeps failing", order=order)
    raise_alert(Alert.Reason.CUSTOMER_CASE, "The customer wrote", order=order, key="customer_case:1")
    case = SupportCase.objects.create(email=order.email, order=order)
    other_case = SupportCase.objects.create(email="someone@example.com")
    actions.claim(order, rita)

    actions.resolve(order, sam, note_text="Fulfilled by hand; replied.")

    order.refresh_from_db()
    assert not order.needs_attention and order.attention_reason == "" and order.claimed_until is None
    assert not Alert.objects.filter(resolved_at__isnull=True).exists()
    case.refresh_from_db()
    assert case.status == "resolved" and case.resolved_by == "support:sam@paidup.example" and case.resolved_at
    assert SupportCase.objects.get(pk=other_case.pk).status == "open"
    assert OrderEvent.objects.get(order=order, kind="support:resolved").message == "Fulfilled by hand; replied."
