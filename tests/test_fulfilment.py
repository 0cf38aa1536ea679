from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from billing.fulfilment import NotFulfillable, PaymentMismatch, charge_time, fulfil
from billing.models import Order, OutboundEmail, Subscription
from tests.factories import OrderFactory, payment_intent

pytestmark = pytest.mark.django_db


def test_it_fulfils_a_paid_order_once_with_one_subscription_and_one_email(
    django_capture_on_commit_callbacks, mailoutbox
):
    order = OrderFactory()
    with django_capture_on_commit_callbacks(execute=True):
        first = fulfil(order, via="webhook", payment_intent=payment_intent(order))
    with django_capture_on_commit_callbacks(execute=True):
        second = fulfil(order, via="return", payment_intent=payment_intent(order))
    assert first.fulfilled_now and not second.fulfilled_now
    order.refresh_from_db()
    assert order.state == "fulfilled" and order.fulfilled_via == "webhook"
    assert Subscription.objects.filter(order=order).count() == 1
    sub = order.subscription
    assert (sub.ends_at - sub.starts_at).days == 365
    assert sub.user.email == order.email
    email = OutboundEmail.objects.get(order=order)
    assert email.kind == "confirmation" and email.status == "sent" and email.attempts == 1
    assert len(mailoutbox) == 1
    assert mailoutbox[0].to == [order.email]
    assert order.reference in mailoutbox[0].subject
    assert "/account/sign-in/" in mailoutbox[0].body


def test_it_refuses_a_payment_intent_that_does_not_prove_payment():
    order = OrderFactory()
    for bad in (
        payment_intent(order, status="processing"),
        payment_intent(order, amount=100),
        payment_intent(order, currency="eur"),
    ):
        with pytest.raises(PaymentMismatch):
            fulfil(order, via="webhook", payment_intent=bad)
    order.refresh_from_db()
    assert order.state == "pending"
    assert not Subscription.objects.exists()
    assert not OutboundEmail.objects.exists()


def test_it_refuses_to_fulfil_an_unpaid_or_failed_order():
    with pytest.raises(NotFulfillable):
        fulfil(OrderFactory(), via="support")
    with pytest.raises(NotFulfillable):
        fulfil(OrderFactory(state="failed"), via="webhook", payment_intent=None)


PATHS = ["webhook", "return", "reconciliation", "support"]


@pytest.mark.parametrize("via", PATHS)
def test_seconds_after_the_charge_every_path_sends_the_confirmation(via, django_capture_on_commit_callbacks):
    """Reconciliation (or support) that gets there in the second between the charge and the
    return page must not send "sorry for the delay": the customer waited 5 s."""
    order = OrderFactory()
    charged = int(timezone.now().timestamp()) - 5
    with django_capture_on_commit_callbacks(execute=True):
        result = fulfil(order, via=via, payment_intent=payment_intent(order, created=charged))
    assert result.email_kind == "confirmation"
    assert OutboundEmail.objects.get(order=order).kind == "confirmation"
    fulfilled = order.events.get(kind="state:fulfilled")
    assert fulfilled.data["via"] == via and fulfilled.data["recovery"] is False  # the path is still recorded
    order.refresh_from_db()
    assert order.fulfilled_via == via and order.charged_at == datetime.fromtimestamp(charged, UTC)


@pytest.mark.parametrize("via", PATHS)
def test_past_the_threshold_every_path_sends_the_recovery_email(via, settings, django_capture_on_commit_callbacks):
    order = OrderFactory()
    charged = int(timezone.now().timestamp()) - settings.LATE_FULFILMENT_SECONDS - 2
    with django_capture_on_commit_callbacks(execute=True):
        fulfil(order, via=via, payment_intent=payment_intent(order, created=charged))
    email = OutboundEmail.objects.get(order=order)
    assert email.kind == "recovery"
    assert "Sorry for the delay" in email.subject
    # What went wrong, that the year starts today, the sign-in link, a refund by replying.
    for words in ("a problem on our side", "Your year starts today", "/account/sign-in/", "just reply"):
        assert words in email.body_text, words
    fulfilled = order.events.get(kind="state:fulfilled")
    assert fulfilled.data["recovery"] is True and fulfilled.data["via"] == via


def test_the_charge_time_is_stripes_not_when_we_noticed(django_capture_on_commit_callbacks):
    """A webhook delivered 20 minutes late: the order is recorded paid just now, but the
    event says when the card was charged. The customer waited 20 minutes: recovery."""
    order = OrderFactory()
    charged = timezone.now() - timedelta(minutes=20)
    pi = payment_intent(order, created=int(timezone.now().timestamp()))  # what the PaymentIntent alone would say
    with django_capture_on_commit_callbacks(execute=True):
        fulfil(order, via="webhook", payment_intent=pi, charged_at=charged)
    order.refresh_from_db()
    assert order.paid_at > charged + timedelta(minutes=19)  # noticed now
    assert OutboundEmail.objects.get(order=order).kind == "recovery"


def test_an_expanded_charge_is_the_best_clock_after_the_event(django_capture_on_commit_callbacks):
    """3-D Secure can hold a charge minutes after its PaymentIntent was created: the charge's
    own `created` wins over the PaymentIntent's when Stripe sends it."""
    order = OrderFactory()
    now = int(timezone.now().timestamp())
    pi = payment_intent(order, created=now - 900, latest_charge={"id": "ch_x", "created": now - 3})
    with django_capture_on_commit_callbacks(execute=True):
        fulfil(order, via="return", payment_intent=pi)
    assert OutboundEmail.objects.get(order=order).kind == "confirmation"


@pytest.mark.parametrize("bad", [None, "", "yesterday", [1], 10**20])
def test_a_charge_time_that_says_nothing_is_ignored(bad):
    order = OrderFactory()
    pi = payment_intent(order, created=bad)
    assert charge_time(pi) is None
    assert charge_time(pi, charged_at=bad) is None


def test_a_late_webhook_counts_as_a_recovery(time_machine, django_capture_on_commit_callbacks):
    """An order paid before charge times were recorded: when it was recorded paid stands in."""
    order = OrderFactory()
    time_machine.move_to("2026-01-01 12:00")
    order.transition(Order.State.PAID, actor="test")
    time_machine.move_to("2026-01-01 12:30")
    with django_capture_on_commit_callbacks(execute=True):
        fulfil(order, via="webhook")
    assert OutboundEmail.objects.get(order=order).kind == "recovery"


def test_the_database_refuses_a_second_access_email():
    from django.db import IntegrityError

    order = OrderFactory()
    OutboundEmail.objects.create(
        order=order, kind="confirmation", to=order.email, subject="s", body_text="t", body_html="h"
    )
    with pytest.raises(IntegrityError):
        OutboundEmail.objects.create(
            order=order, kind="recovery", to=order.email, subject="s", body_text="t", body_html="h"
        )
