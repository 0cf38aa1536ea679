import pytest

from billing.fulfilment import NotFulfillable, PaymentMismatch, fulfil
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


@pytest.mark.parametrize("via", ["reconciliation", "support"])
def test_it_sends_the_recovery_email_when_fulfilment_was_not_the_normal_path(via, django_capture_on_commit_callbacks):
    order = OrderFactory()
    with django_capture_on_commit_callbacks(execute=True):
        fulfil(order, via=via, payment_intent=payment_intent(order))
    email = OutboundEmail.objects.get(order=order)
    assert email.kind == "recovery"
    assert "Sorry for the delay" in email.subject
    # What went wrong, that the year starts today, the sign-in link, a refund by replying.
    for words in ("a problem on our side", "Your year starts today", "/account/sign-in/", "just reply"):
        assert words in email.body_text, words
    assert order.events.get(kind="state:fulfilled").data["recovery"] is True


def test_a_late_webhook_counts_as_a_recovery(time_machine, django_capture_on_commit_callbacks):
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
