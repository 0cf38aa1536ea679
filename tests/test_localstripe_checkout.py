"""The paid path end to end over HTTP: the live server, a real localstripe, its real webhooks.

Each test pays as the checkout page does (token from localstripe, POST /checkout/), then
checks the invariants: one succeeded PaymentIntent per order (I1), one subscription and one
access email (I3), and that the webhook arriving a second later changes nothing.
"""

import re

import pytest
from django.core import mail

from billing.models import Order, OutboundEmail, Subscription
from tests.fixtures.localstripe import in_threads

pytestmark = [pytest.mark.localstripe, pytest.mark.usefixtures("plan")]

VISA = "4242424242424242"
DECLINED = "4000000000000341"  # refused when the PaymentIntent is confirmed
THREE_D_SECURE = "4000002500003155"


def order_for(response) -> Order:
    return Order.objects.get(reference=response.checkout.reference)


def words(html: str) -> str:
    """What a person reads on the page (copy changes; the facts must stay)."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split()).lower()


def timeline(order: Order) -> list[tuple[str, str]]:
    return list(order.events.values_list("kind", "actor"))


def succeeded(intents) -> list:
    return [pi for pi in intents if pi.status == "succeeded"]


def assert_fulfilled_once(site, order: Order) -> None:
    order.refresh_from_db()
    assert order.state == Order.State.FULFILLED
    assert Subscription.objects.filter(order=order).count() == 1
    site.wait_for(lambda: OutboundEmail.objects.filter(order=order, status=OutboundEmail.Status.SENT).exists())
    assert OutboundEmail.objects.filter(order=order).count() == 1
    assert [m.to for m in mail.outbox] == [[order.email]]
    [payment] = succeeded(site.payment_intents(order))
    assert payment.id == order.stripe_payment_intent_id
    assert payment.amount == order.amount_cents


def assert_webhook_changes_nothing(site, order: Order) -> None:
    """Wait for localstripe's payment_intent.succeeded delivery; the order must not move."""
    before = (timeline(order), order.fulfilled_via)
    trigger = site.wait_for_webhook(order.stripe_payment_intent_id)
    assert trigger.valid and trigger.processed, trigger.exception
    order.refresh_from_db()
    assert (timeline(order), order.fulfilled_via) == before
    assert_fulfilled_once(site, order)


def test_it_fulfils_a_card_payment_once(stripe_site):
    response = stripe_site.pay("ann@example.com", VISA)

    assert response.status_code == 200
    order = order_for(response)
    assert response.json() == {"redirect": f"/orders/{order.reference}/"}
    assert stripe_site.order_status(order.reference)["fulfilled"] is True
    assert order.fulfilled_via in (Order.Via.RETURN, Order.Via.WEBHOOK)  # whichever came first
    assert_fulfilled_once(stripe_site, order)
    assert_webhook_changes_nothing(stripe_site, order)


def test_a_declined_card_charges_nothing_and_a_retry_in_the_same_checkout_pays_once(stripe_site):
    declined = stripe_site.pay("bob@example.com", DECLINED)

    assert declined.status_code == 402
    assert "declined" in declined.json()["error"]
    assert "not been charged" in words(declined.json()["error"])
    order = order_for(declined)
    assert order.state == Order.State.PENDING
    # "declined" from the checkout; the payment_failed webhook may already have said more.
    assert order.stripe_payment_status in ("declined", "requires_payment_method")
    trigger = stripe_site.wait_for_webhook(order.stripe_payment_intent_id, "payment_intent.payment_failed")
    assert trigger.processed
    order.refresh_from_db()
    assert order.state == Order.State.PENDING
    assert not Subscription.objects.filter(order=order).exists()
    assert not OutboundEmail.objects.filter(order=order).exists()
    assert mail.outbox == []
    assert stripe_site.order_status(order.reference) == {
        "reference": order.reference,
        "state": "pending",
        "fulfilled": False,
    }

    retry = stripe_site.pay("bob@example.com", VISA, checkout=declined.checkout)

    assert retry.status_code == 200
    assert retry.json() == {"redirect": f"/orders/{order.reference}/"}
    order.refresh_from_db()
    assert order.payment_attempts == 2
    assert len(stripe_site.payment_intents(order)) == 2
    assert_fulfilled_once(stripe_site, order)
    assert_webhook_changes_nothing(stripe_site, order)


def test_3d_secure_completed_in_the_page_fulfils_the_order(stripe_site):
    checkout = stripe_site.open_checkout()
    response = checkout.pay("cy@example.com", THREE_D_SECURE)

    assert response.status_code == 200
    body = response.json()
    order = order_for(response)
    assert body["requires_action"] is True
    assert body["client_secret"].startswith(order.stripe_payment_intent_id + "_secret")
    assert body["redirect"] == f"/orders/{order.reference}/"
    assert checkout.order_status()["state"] == "pending"
    assert not Subscription.objects.filter(order=order).exists()

    assert stripe_site.complete_3ds(order.stripe_payment_intent_id, success=True)["status"] == "succeeded"

    stripe_site.wait_for(lambda: checkout.order_status()["fulfilled"], message="the order page to say fulfilled")
    order.refresh_from_db()
    assert order.fulfilled_via in (Order.Via.RETURN, Order.Via.WEBHOOK)
    assert_fulfilled_once(stripe_site, order)
    assert_webhook_changes_nothing(stripe_site, order)


def test_failed_3d_secure_says_declined_and_a_retry_works(stripe_site):
    checkout = stripe_site.open_checkout()
    response = checkout.pay("di@example.com", THREE_D_SECURE)
    order = order_for(response)
    assert response.json()["requires_action"] is True

    assert stripe_site.complete_3ds(order.stripe_payment_intent_id, success=False)["status"] == (
        "requires_payment_method"
    )

    # localstripe sends no event for a failed authentication: the order page asks Stripe.
    page = checkout.session.get(f"{stripe_site.url}/orders/{order.reference}/", timeout=10)
    assert 'data-view="declined"' in page.text
    assert "not been charged" in words(page.text)
    order.refresh_from_db()
    assert order.state == Order.State.PENDING
    assert not Subscription.objects.filter(order=order).exists()

    retry = checkout.pay("di@example.com", VISA)

    assert retry.json() == {"redirect": f"/orders/{order.reference}/"}
    assert len(stripe_site.payment_intents(order)) == 2
    assert_fulfilled_once(stripe_site, order)
    assert_webhook_changes_nothing(stripe_site, order)


def test_the_same_post_twice_charges_once(stripe_site):
    checkout = stripe_site.open_checkout()
    token = stripe_site.create_token(VISA)

    first = checkout.submit("ed@example.com", token)
    second = checkout.submit("ed@example.com", token)

    order = order_for(first)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json() == {"redirect": f"/orders/{order.reference}/"}
    assert len(stripe_site.payment_intents(order)) == 1
    assert_fulfilled_once(stripe_site, order)
    assert_webhook_changes_nothing(stripe_site, order)


def test_two_concurrent_posts_charge_once(stripe_site):
    checkout = stripe_site.open_checkout()
    token = stripe_site.create_token(VISA)
    sessions = [checkout.twin(), checkout.twin()]

    responses = in_threads(*(lambda s=s: checkout.submit("flo@example.com", token, session=s) for s in sessions))

    order = order_for(responses[0])
    assert [r.status_code for r in responses] == [200, 200]
    assert [r.json() for r in responses] == [{"redirect": f"/orders/{order.reference}/"}] * 2
    assert order.payment_attempts == 1
    assert len(stripe_site.payment_intents(order)) == 1
    assert_fulfilled_once(stripe_site, order)
    assert_webhook_changes_nothing(stripe_site, order)


def test_the_webhook_fulfils_an_order_whose_checkout_crashed_after_the_charge(stripe_site, settings):
    settings.FAILPOINTS = "after_charge=raise"

    response = stripe_site.pay("gus@example.com", VISA)

    order = order_for(response)
    assert response.status_code == 500
    assert order.reference in response.text
    assert "payment may have gone through" in words(response.text)
    assert order.stripe_payment_status == "succeeded"  # charged; fulfilled only by the webhook (below)

    stripe_site.wait_for(
        lambda: Order.objects.filter(pk=order.pk, state=Order.State.FULFILLED).exists(),
        message="the webhook to fulfil the order",
    )
    settings.FAILPOINTS = ""
    order.refresh_from_db()
    assert order.fulfilled_via == Order.Via.WEBHOOK
    assert_fulfilled_once(stripe_site, order)  # waits for the email, the timeline's last entry
    before = timeline(order)

    # The customer follows the link on the error page, after the webhook.
    assert response.checkout.order_status()["fulfilled"] is True

    order.refresh_from_db()
    assert order.fulfilled_via == Order.Via.WEBHOOK
    assert timeline(order) == before
    assert_fulfilled_once(stripe_site, order)


def test_the_return_page_fulfils_a_crashed_checkout_before_the_webhook_and_the_webhook_changes_nothing(
    stripe_site, settings
):
    settings.FAILPOINTS = "after_charge=raise"
    response = stripe_site.pay("hal@example.com", VISA)
    assert response.status_code == 500
    settings.FAILPOINTS = ""

    # The customer follows the link on the error page at once (the webhook is a second away).
    assert response.checkout.order_status()["fulfilled"] is True

    order = order_for(response)
    assert order.fulfilled_via == Order.Via.RETURN
    assert_fulfilled_once(stripe_site, order)
    assert_webhook_changes_nothing(stripe_site, order)


@pytest.mark.parametrize(
    ("typed", "status"),
    [
        ("4242 4242 4242 4242", 200),  # as the README prints it, as a person types it
        ("4242424242424242", 200),
        ("4242 4242 4242 424", 400),  # fifteen digits: still refused
        ("4242-4242-4242-4242", 400),  # only spaces are what the card field strips
    ],
)
def test_the_fake_card_field_takes_a_number_typed_with_spaces(localstripe, settings, typed, status):
    import requests

    answer = requests.post(
        f"{localstripe}/v1/tokens",
        data={"key": settings.STRIPE_PUBLISHABLE_KEY, "card[number]": typed}
        | {"card[exp_month]": "12", "card[exp_year]": "34", "card[cvc]": "123"},
        timeout=10,
    )
    assert answer.status_code == status, answer.text
    if status == 200:
        assert answer.json()["card"]["last4"] == "4242"
