"""GET/POST /checkout/ and /orders/<ref>/, with Stripe faked at billing.gateway."""

import pytest
from django.test import Client
from django.utils.html import escape

from billing.fulfilment import fulfil
from billing.models import Order, Subscription
from tests.factories import OrderFactory, payment_intent
from tests.fixtures.services import CARD, cookie_reference, give_cookie

pytestmark = pytest.mark.django_db

JSON = {"HTTP_ACCEPT": "application/json"}


def shown_error(response) -> str:
    """What the checkout page says went wrong (the box above the form, then the email field's
    own error next to it), after checking that each part is really on the page."""
    shown = [response.context["message"], *response.context["form"].errors.get("email", [])]
    shown = [part for part in shown if part]
    assert shown and all(escape(part) in response.content.decode() for part in shown)
    return " ".join(shown)


@pytest.fixture
def pay(client, plan, fake_stripe, django_capture_on_commit_callbacks):
    """Open the checkout page (which issues the reference), then POST the form."""
    client.get("/checkout/")

    def _pay(**overrides):
        data = {"email": "ada@example.com", "payment_method": CARD, **overrides}
        headers = data.pop("headers", {})
        with django_capture_on_commit_callbacks(execute=True):
            return client.post("/checkout/", {k: v for k, v in data.items() if v is not None}, **headers)

    return _pay


def test_it_hands_out_the_reference_before_any_payment(client, plan):
    response = client.get("/checkout/")
    reference = cookie_reference(client)
    assert response.status_code == 200
    assert reference.startswith("PU-") and reference in response.content.decode()
    assert not Order.objects.exists()


def test_it_charges_once_and_fulfils_via_the_return_path(client, pay, fake_stripe, mailoutbox):
    reference = cookie_reference(client)
    response = pay()
    assert response.status_code == 302 and response.url == f"/orders/{reference}/"
    order = Order.objects.get(reference=reference)
    assert order.state == "fulfilled" and order.fulfilled_via == "return"
    assert order.email == "ada@example.com" and Subscription.objects.filter(order=order).exists()
    assert [c["payment_method"] for c in fake_stripe.created] == [CARD]
    assert [m.to for m in mailoutbox] == [["ada@example.com"]]


def test_it_answers_the_page_script_in_json(client, pay):
    response = pay(headers=JSON)
    assert response.json() == {"redirect": f"/orders/{cookie_reference(client)}/"}


def test_a_decline_says_nothing_was_charged_and_a_retry_on_the_same_reference_works(client, pay, fake_stripe):
    reference = cookie_reference(client)
    fake_stripe.next_status = "declined"
    response = pay(email="grace@example.com")
    assert response.status_code == 402
    assert "Your card was declined." in shown_error(response) and "not been charged" in shown_error(response)
    assert 'value="grace@example.com"' in response.content.decode()
    assert Order.objects.get(reference=reference).state == "pending"

    fake_stripe.next_status = "succeeded"
    assert pay(email="grace@example.com").url == f"/orders/{reference}/"
    order = Order.objects.get(reference=reference)
    assert order.state == "fulfilled" and order.payment_attempts == 2
    assert order.stripe_payment_intent_id == fake_stripe.created[1]["pi"]


def test_a_card_refused_before_the_charge_is_a_decline(client, pay, fake_stripe):
    fake_stripe.next_status = "refused"
    response = pay(headers=JSON)
    assert response.status_code == 402
    assert "not been charged" in response.json()["error"]
    order = Order.objects.get(reference=cookie_reference(client))
    assert order.state == "pending" and not order.stripe_payment_intent_id
    assert not fake_stripe.confirmed


def test_3d_secure_is_handed_to_the_page_then_the_order_page_finishes_it(client, pay, fake_stripe, mailoutbox):
    reference = cookie_reference(client)
    fake_stripe.next_status = "requires_action"
    answer = pay(headers=JSON).json()
    pi_id = fake_stripe.created[0]["pi"]
    assert answer == {
        "requires_action": True,
        "client_secret": fake_stripe.intents[pi_id]["client_secret"],
        "redirect": f"/orders/{reference}/",
    }
    assert Order.objects.get(reference=reference).state == "pending"

    fake_stripe.settle(pi_id, "succeeded")
    response = client.get(f"/orders/{reference}/")
    order = Order.objects.get(reference=reference)
    assert order.state == "fulfilled" and order.fulfilled_via == "return"
    assert "You're all set" in response.content.decode()


@pytest.mark.parametrize("status", ["succeeded", "requires_action"])
def test_a_double_submit_creates_one_payment_intent(pay, fake_stripe, status):
    fake_stripe.next_status = status
    first, second = pay(headers=JSON).json(), pay(headers=JSON).json()
    assert first == second
    assert len(fake_stripe.created) == 1 and len(fake_stripe.confirmed) == 1


BAD_INPUT = {
    "no email": ({"email": ""}, "Please enter your email address"),
    "malformed email": ({"email": "ada@"}, "doesn't look like an email address"),
    "no card": ({"payment_method": None}, "Please enter your card details"),
    "garbage card": ({"payment_method": "xyz"}, "couldn't read your card details"),
    "huge card": ({"payment_method": "pm_" + "a" * 500}, "couldn't read your card details"),
    "script card": ({"payment_method": "<script>alert(1)</script>"}, "couldn't read your card details"),
    "unknown plan": ({"plan": "gold-forever"}, "That plan is not available"),
}


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_is_refused_before_any_charge(case, pay, fake_stripe):
    data, words = BAD_INPUT[case]
    response = pay(**data)
    assert response.status_code == 400
    assert words in shown_error(response)
    assert "<script>alert" not in response.content.decode()
    assert not fake_stripe.created and not Order.objects.exists()


@pytest.mark.parametrize("checkout_ref", [None, "", "PU-ABCDEF", "garbage:signed:value"])
def test_a_post_without_a_reference_is_refused_before_any_charge(plan, fake_stripe, checkout_ref):
    data = {"email": "ada@example.com", "payment_method": CARD}
    if checkout_ref is not None:
        data["checkout_ref"] = checkout_ref
    response = Client().post("/checkout/", data)
    assert response.status_code == 400
    assert "not been charged" in shown_error(response)
    assert not fake_stripe.created and not Order.objects.exists()


def test_the_page_field_carries_the_reference_when_cookies_are_blocked(client, plan, fake_stripe):
    page = client.get("/checkout/").context
    cookieless = Client()
    response = cookieless.post(
        "/checkout/", {"email": "ada@example.com", "payment_method": CARD, "checkout_ref": page["signed_reference"]}
    )
    # No cookie to show the order's details by: the way to the order page carries its signed link.
    assert response.url.startswith(f"/orders/{page['reference']}/?k=")
    assert Order.objects.get(reference=page["reference"]).state == "fulfilled"
    cookieless.cookies.clear()
    assert "ada@example.com" in cookieless.get(response.url).content.decode()


@pytest.mark.parametrize(("state", "stripe_status"), [("paid", "succeeded"), ("pending", "processing")])
def test_a_returning_customer_with_a_charge_under_way_sees_the_order_not_a_new_payment(
    client, plan, state, stripe_status
):
    order = OrderFactory(plan=plan, state=state, stripe_payment_intent_id="pi_x1", stripe_payment_status=stripe_status)
    give_cookie(client, order.reference)
    response = client.get("/checkout/")
    assert response.status_code == 302 and response.url == f"/orders/{order.reference}/?resumed=1"


@pytest.mark.parametrize("state", ["refunded", "failed"])
def test_a_returning_customer_whose_checkout_is_over_gets_a_fresh_reference(client, plan, state):
    # A fulfilled order's checkout is over too, but it is shown first (tests/test_second_purchase.py).
    order = OrderFactory(plan=plan, state=state)
    give_cookie(client, order.reference)
    response = client.get("/checkout/")
    assert response.status_code == 200
    assert cookie_reference(client) != order.reference
    assert cookie_reference(client) in response.content.decode()


def test_the_order_page_answers_json_with_exactly_three_keys(client, plan):
    order = OrderFactory(plan=plan)
    answer = client.get(f"/orders/{order.reference}/", **JSON).json()
    assert answer == {"reference": order.reference, "state": "pending", "fulfilled": False}


def test_the_order_page_accepts_the_reference_as_a_customer_types_it(client, plan):
    order = OrderFactory(plan=plan)
    for typed in (order.reference.lower(), order.reference[3:], order.reference[3:].lower()):
        assert client.get(f"/orders/{typed}/", **JSON).json()["reference"] == order.reference


@pytest.mark.parametrize("reference", ["PU-ABCDEF", "PU-0OOOOO", "nonsense", "PU-" + "A" * 40])
def test_an_unknown_order_is_our_404_page(client, plan, reference):
    response = client.get(f"/orders/{reference}/")
    assert response.status_code == 404
    assert "We couldn't find that page" in response.content.decode()
    assert "Traceback" not in response.content.decode()


def _fulfilled(plan, fake, settings):
    order = OrderFactory(plan=plan, stripe_payment_intent_id="pi_done")
    return fulfil(order, via="webhook", payment_intent=payment_intent(order)).order


def _paid_but_setup_failing(plan, fake, settings):
    settings.FAILPOINTS = "fulfil_before_commit=raise"
    return OrderFactory(plan=plan, state="paid", stripe_payment_intent_id="pi_paid", stripe_payment_status="succeeded")


def _in_stripe(status, *, local_status):
    def make(plan, fake, settings):
        order = OrderFactory(plan=plan)
        fake.create_payment_intent(order, CARD)
        pi_id = fake.created[-1]["pi"]
        fake.settle(pi_id, status)
        Order.objects.filter(pk=order.pk).update(stripe_payment_intent_id=pi_id, stripe_payment_status=local_status)
        return order

    return make


def _unanswered_confirm(plan, fake, settings):
    """A confirm was sent, its answer never recorded, and Stripe cannot be asked now."""
    order = _in_stripe("requires_confirmation", local_status="confirming")(plan, fake, settings)
    fake.fail("retrieve", "conn", times=None)
    return order


VIEWS = {
    "ready": (_fulfilled, ["You're all set", "active until"]),
    "setting_up": (_paid_but_setup_failing, ["Setting up your access", "will not be charged again"]),
    "confirming": (_unanswered_confirm, ["Confirming your payment", "don't pay again"]),
    "processing": (_in_stripe("processing", local_status="processing"), ["processing your payment", "don't pay again"]),
    "not_charged_retry": (
        _in_stripe("requires_confirmation", local_status="confirming"),
        ["didn't go through", "not been charged", "Try again"],
    ),
    "awaiting_payment": (lambda plan, fake, settings: OrderFactory(plan=plan), ["Waiting for your payment"]),
    "needs_authentication": (_in_stripe("requires_action", local_status="requires_action"), ["3-D Secure"]),
    "declined": (
        _in_stripe("requires_payment_method", local_status="declined"),
        ["didn't go through", "not been charged"],
    ),
    "not_charged": (
        lambda plan, fake, settings: OrderFactory(plan=plan, state="failed"),
        ["not completed", "not been charged"],
    ),
}


@pytest.mark.parametrize("view", VIEWS)
def test_the_order_page_tells_the_right_story(view, client, plan, fake_stripe, settings):
    make, words = VIEWS[view]
    order = make(plan, fake_stripe, settings)
    give_cookie(client, order.reference)  # the browser that placed it (a stranger's page: test_order_privacy.py)
    response = client.get(f"/orders/{order.reference}/")
    page = response.content.decode()
    assert response.status_code == 200
    assert f'data-view="{view}"' in page
    for word in words:
        assert word in page
    assert order.reference in page


def test_a_checkout_left_at_the_bank_check_can_be_finished_from_checkout(client, plan, fake_stripe):
    fake_stripe.next_status = "requires_action"
    client.get("/checkout/")
    first = client.post(
        "/checkout/", {"email": "ada@example.com", "payment_method": "pm_card4242"}, HTTP_ACCEPT="application/json"
    )
    assert first.json()["requires_action"]
    page = client.get("/checkout/")
    assert page.status_code == 200
    assert "security check for this order was not finished" in page.content.decode()
    again = client.post(
        "/checkout/", {"email": "ada@example.com", "payment_method": "pm_card4242"}, HTTP_ACCEPT="application/json"
    )
    assert again.json()["client_secret"] == first.json()["client_secret"]
    assert len(fake_stripe.created) == 1  # the same PaymentIntent, never a second one


def test_a_refused_csrf_token_says_nothing_was_charged(plan):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    response = client.post("/checkout/", {"email": "ada@example.com", "payment_method": "pm_card4242"})
    assert response.status_code == 403
    assert "You have not been charged" in response.content.decode()
    json_response = client.post("/checkout/", {"email": "a@b.c"}, HTTP_ACCEPT="application/json")
    assert "not been charged" in json_response.json()["error"]
    assert "Back to checkout" in response.content.decode() and "Back to the console" not in response.content.decode()


def test_a_refused_csrf_token_in_the_console_says_the_page_expired_not_payment(plan):
    from django.test import Client

    response = Client(enforce_csrf_checks=True).post("/admin/login/", {"username": "a@b.c", "password": "x"})
    page = response.content.decode()
    assert response.status_code == 403 and "This page expired" in page and 'href="/admin/">Back to the console' in page
    assert "payment" not in page and "charged" not in page and "Back to checkout" not in page


def test_the_return_path_shows_the_order_as_it_stands_when_the_webhook_got_there_first(plan, fake_stripe):
    """The order page read the order pending; meanwhile the webhook fulfilled it, so the return
    path's claim (pending only) finds nothing to do. The page gets the fulfilled order, not its
    own stale copy that says "confirming your payment" (found by test_races under load)."""
    from billing import checkout

    order = OrderFactory(plan=plan, stripe_payment_intent_id="pi_first", stripe_payment_status="processing")
    stale = Order.objects.get(pk=order.pk)
    fulfil(order, via="webhook", payment_intent=payment_intent(order))

    shown = checkout.sync_with_stripe(stale)

    assert shown.state == "fulfilled" and shown.fulfilled_via == "webhook"
    assert fake_stripe.requests == 0  # nothing asked of Stripe: the order was settled meanwhile
