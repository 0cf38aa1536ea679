"""Issue 10 item 1: no accidental second purchase.

Back after paying shows the paid order with "Buy another year"; an email that already has
access is told so and must confirm before anything is charged (checked on the server); a
confirmed second year starts where the first ends; two paid orders for one email within 24 hours
become a queue row with a one-click refund of the later one, and the diagnosis stops calling it
a double purchase once that is settled. Stripe is faked at billing.gateway.
"""

import re
from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.test import Client
from django.utils import timezone

from billing import access, email_change, refunds
from billing.fulfilment import fulfil
from billing.models import Alert, Order, Subscription
from support.diagnosis import diagnose
from tests.factories import OrderFactory, payment_intent
from tests.fixtures.console import act_url, change_url, client_for, fulfilled_order
from tests.fixtures.services import CARD, cookie_reference, give_cookie

pytestmark = pytest.mark.django_db

JSON = {"HTTP_ACCEPT": "application/json"}
EMAIL = "ada@example.com"


def text(response) -> str:
    """The page as a person reads it: tags stripped, whitespace collapsed."""
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", response.content.decode(), flags=re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def paid_and_fulfilled(plan, email: str = EMAIL, **fields) -> Order:
    order = OrderFactory(plan=plan, email=email, **fields)
    return fulfil(order, via="webhook", payment_intent=payment_intent(order)).order


def access_end(email: str = EMAIL):
    return access.access_until(email)


@pytest.fixture
def pay(client, plan, fake_stripe, django_capture_on_commit_callbacks):
    """Open the checkout page (which issues the reference), then POST the form."""
    client.get("/checkout/")

    def _pay(**overrides):
        data = {"email": EMAIL, "payment_method": CARD, **overrides}
        headers = data.pop("headers", {})
        with django_capture_on_commit_callbacks(execute=True):
            return client.post("/checkout/", {k: v for k, v in data.items() if v is not None}, **headers)

    return _pay


# --- Back after paying -------------------------------------------------------------------


@pytest.mark.parametrize("state", ["fulfilled", "paid"])
def test_back_after_paying_shows_the_paid_order_with_buy_another_year(client, plan, state):
    order = OrderFactory(plan=plan, email=EMAIL, stripe_payment_intent_id="pi_paid1", stripe_payment_status="succeeded")
    if state == "fulfilled":
        order = fulfil(order, via="webhook", payment_intent=payment_intent(order)).order
    else:
        Order.objects.filter(pk=order.pk).update(state="paid", paid_at=timezone.now())
    give_cookie(client, order.reference)

    response = client.get("/checkout/")
    assert response.status_code == 302 and response.url == f"/orders/{order.reference}/?resumed=1"
    page = client.get(response.url)
    assert "You already paid for this order" in text(page)
    assert 'id="buy-another"' in page.content.decode() and "Buy another year" in text(page)
    assert "You already started a payment" not in text(page)


def test_buy_another_year_starts_a_new_checkout_with_a_new_reference(client, plan, fake_stripe):
    order = paid_and_fulfilled(plan)
    give_cookie(client, order.reference)
    events = order.events.count()

    response = client.post("/checkout/another/")
    assert response.status_code == 302 and response.url == "/checkout/"
    new = cookie_reference(client)
    assert new != order.reference
    page = client.get("/checkout/")
    assert page.status_code == 200 and new in page.content.decode()
    # Nothing charged, nothing stored, the paid order untouched.
    assert not fake_stripe.created and Order.objects.count() == 1
    order.refresh_from_db()
    assert order.state == "fulfilled" and order.events.count() == events


def test_buy_another_year_refuses_a_get_and_a_post_without_csrf(plan):
    order = paid_and_fulfilled(plan)
    client = Client(enforce_csrf_checks=True)
    give_cookie(client, order.reference)
    assert client.get("/checkout/another/").status_code == 405
    assert client.post("/checkout/another/").status_code == 403
    assert cookie_reference(client) == order.reference  # the paid order's cookie is kept
    assert Order.objects.count() == 1


def test_buy_another_year_never_takes_a_reference_from_the_request(client, plan):
    order = paid_and_fulfilled(plan)
    other = OrderFactory(plan=plan)
    give_cookie(client, order.reference)
    client.post("/checkout/another/", {"reference": other.reference, "checkout_ref": other.reference})
    assert cookie_reference(client) not in (order.reference, other.reference)


# --- Access that already runs ------------------------------------------------------------


def test_an_email_with_access_is_told_so_and_nothing_is_charged(pay, plan, fake_stripe, client):
    first = paid_and_fulfilled(plan)
    until = access_end()
    reference = cookie_reference(client)

    response = pay()
    assert response.status_code == 409
    shown = text(response)
    assert f"You already have access until {until:%-d %b %Y}" in shown
    assert 'href="/account/sign-in/"' in response.content.decode()
    assert 'name="extend_access"' in response.content.decode()
    assert not fake_stripe.created and not Order.objects.filter(reference=reference).exists()
    assert access_end() == until and Order.objects.count() == 1 and first.subscription.ends_at == until


def test_the_page_script_gets_the_access_notice_in_json(pay, plan, fake_stripe):
    paid_and_fulfilled(plan)
    until = access_end()
    response = pay(email="ADA@example.com", headers=JSON)
    assert response.status_code == 409
    answer = response.json()
    assert answer["access"] == {"email": EMAIL, "until": f"{until:%-d %b %Y}", "signin_url": "/account/sign-in/"}
    assert f"You already have access until {until:%-d %b %Y}" in answer["error"]
    assert not fake_stripe.created


@pytest.mark.parametrize(
    "answer",
    ["", "on", "1", "yes", "grace@example.com", "ada@example.co", "<script>alert(1)</script>", "a" * 5000],
)
def test_a_confirmation_that_does_not_name_this_email_charges_nothing(pay, plan, fake_stripe, answer):
    paid_and_fulfilled(plan)
    until = access_end()
    response = pay(extend_access=answer)
    assert response.status_code == 409
    assert "You already have access until" in text(response)
    assert "<script>alert" not in response.content.decode()
    assert not fake_stripe.created and Order.objects.count() == 1 and access_end() == until


def test_a_confirmed_second_year_starts_where_the_first_ends(pay, plan, fake_stripe, client, mailoutbox):
    first = paid_and_fulfilled(plan)
    old_end = first.subscription.ends_at
    reference = cookie_reference(client)

    response = pay(extend_access="Ada@Example.com")  # any spelling of the same address
    assert response.status_code == 302 and response.url == f"/orders/{reference}/"
    second = Order.objects.get(reference=reference)
    assert second.state == "fulfilled" and len(fake_stripe.created) == 1
    assert second.subscription.starts_at == old_end
    assert second.subscription.ends_at == old_end + timedelta(days=plan.duration_days)
    assert second.subscription.user == first.subscription.user
    assert access_end() == old_end + timedelta(days=plan.duration_days)
    confirmed = second.events.get(kind="checkout:extend_confirmed")
    assert confirmed.actor == "customer" and f"{timezone.localtime(old_end):%d %b %Y}" in confirmed.message
    fulfilled = second.events.get(kind="state:fulfilled").message
    assert "access added after the current access" in fulfilled
    # The order page and the confirmation email give the new end date.
    end_text = f"{second.subscription.ends_at:%-d %B %Y}"
    page = text(client.get(f"/orders/{reference}/"))
    assert end_text in page and f"it starts on {old_end:%-d %B %Y}" in page
    assert end_text in mailoutbox[-1].body


def test_expired_or_refunded_access_needs_no_confirmation(pay, plan, fake_stripe):
    old = paid_and_fulfilled(plan)
    Subscription.objects.filter(order=old).update(ends_at=timezone.now() - timedelta(days=1))
    refunded = paid_and_fulfilled(plan)
    Order.objects.filter(pk=refunded.pk).update(state="refunded")
    assert access_end() is None
    response = pay()
    assert response.status_code == 302 and len(fake_stripe.created) == 1


def test_a_first_purchase_starts_today(plan, client):
    before = timezone.now()
    order = paid_and_fulfilled(plan, email="new@example.com")
    assert before <= order.subscription.starts_at <= timezone.now()
    assert order.subscription.ends_at == order.subscription.starts_at + timedelta(days=plan.duration_days)
    assert "added after the access you already had" not in text(client.get(f"/orders/{order.reference}/"))


# --- Two paid orders within 24 hours: the support queue ------------------------------------


def double_purchase(stripe_api):
    first = fulfilled_order(stripe_api, email=EMAIL, minutes_ago=30)
    second = fulfilled_order(stripe_api, email=EMAIL, minutes_ago=5)
    return first, second


def test_two_paid_orders_within_a_day_become_one_queue_row_on_the_later_order(stripe_api, ben, mailoutbox):
    first, second = double_purchase(stripe_api)
    alert = Alert.objects.get(reason="double_purchase")
    assert alert.order == second and first.reference in alert.message and second.reference in alert.message
    assert second.events.filter(kind="alert").exists()

    page = client_for(ben).get("/admin/")
    row = re.search(r'<tbody id="queue-double_purchase">(.*?)</tbody>', page.content.decode(), re.S).group(1)
    assert "Possible double purchase" in row and second.reference in row
    assert f'href="{act_url(second, "refund")}?why=double"' in row and f"Refund {second.reference}" in row


def test_orders_a_day_apart_or_for_other_emails_are_not_a_double_purchase(stripe_api):
    fulfilled_order(stripe_api, email=EMAIL, minutes_ago=25 * 60)
    fulfilled_order(stripe_api, email=EMAIL, minutes_ago=5)
    fulfilled_order(stripe_api, email="grace@example.com", minutes_ago=5)
    assert not Alert.objects.filter(reason="double_purchase").exists()


def test_the_queue_refund_link_needs_the_refunds_permission(stripe_api, ana):
    _, second = double_purchase(stripe_api)
    as_ana = client_for(ana)
    row = re.search(r'<tbody id="queue-double_purchase">(.*?)</tbody>', as_ana.get("/admin/").content.decode(), re.S)
    assert second.reference in row.group(1) and "?why=double" not in row.group(1)
    assert as_ana.get(act_url(second, "refund") + "?why=double").status_code == 403


def test_one_click_refund_of_the_later_order_confirms_then_refunds_and_settles_it(
    stripe_api, ben, django_capture_on_commit_callbacks
):
    first, second = double_purchase(stripe_api)
    as_ben = client_for(ben)
    confirm = as_ben.get(act_url(second, "refund") + "?why=double")
    assert confirm.status_code == 200
    form = confirm.context["form"]
    assert "Double purchase" in form["reason"].value() and second.reference in form["reason"].value()
    assert not stripe_api.refunds  # the click only opened the confirmation

    data = {name: form[name].value() for name in form.fields if form[name].value() is not None}
    question = as_ben.post(act_url(second, "refund"), data)  # the last question, in money
    assert question.status_code == 200 and f"Refund {second.price} of {second.price}" in question.content.decode()
    assert not stripe_api.refunds
    with django_capture_on_commit_callbacks(execute=True):
        done = as_ben.post(act_url(second, "refund"), {**data, "confirmed": "yes"})
    assert done.status_code == 302
    second.refresh_from_db()
    assert second.state == "refunded" and second.refunded_cents == second.amount_cents
    assert len(stripe_api.refunds) == 1
    assert second.events.filter(kind="refund", actor="support:ben@paidup.example").exists()
    assert LogEntry.objects.filter(object_id=str(second.pk), change_message__startswith="Refund").exists()
    # Settled: off the queue, and neither order's diagnosis says "double purchase" any more.
    assert not Alert.objects.filter(reason="double_purchase", resolved_at__isnull=True).exists()
    first.refresh_from_db()
    assert diagnose(first).code == "healthy"
    assert "double purchase" not in diagnose(first).sentence
    page = client_for(ben).get("/admin/").content.decode()
    row = re.search(r'<tbody id="queue-double_purchase">(.*?)</tbody>', page, re.S).group(1)
    assert "pu-empty" in row and second.reference not in row


def test_the_diagnosis_names_the_pair_until_support_dismisses_it(stripe_api, ben):
    first, second = double_purchase(stripe_api)
    assert diagnose(second).code == "two_payments"
    assert diagnose(first).code == "two_payments_earlier" and second.reference in diagnose(first).action
    as_ben = client_for(ben)
    assert "possibly a double purchase" in text(as_ben.get(change_url(second)))

    as_ben.post(act_url(second, "resolve"), {"note_text": "They meant to buy two years."})
    first.refresh_from_db()
    second.refresh_from_db()
    assert diagnose(second).code == "healthy" and diagnose(first).code == "healthy"
    assert "possibly a double purchase" not in text(as_ben.get(change_url(first)))
    assert second.state == "fulfilled" and not stripe_api.refunds  # dismissing changes no money


def test_a_pair_is_flagged_once_whichever_is_fulfilled_last(stripe_api):
    first, second = double_purchase(stripe_api)
    fulfil(first, via="support")  # again: already fulfilled, nothing new
    assert Alert.objects.filter(reason="double_purchase").count() == 1


def test_three_orders_in_a_day_are_two_rows_one_per_extra_order(stripe_api):
    first, second = double_purchase(stripe_api)
    third = fulfilled_order(stripe_api, email=EMAIL, minutes_ago=1)
    flagged = Alert.objects.filter(reason="double_purchase").order_by("created_at")
    assert [alert.order for alert in flagged] == [second, third]


def test_the_account_page_counts_the_year_bought_on_top(client, plan):
    first = paid_and_fulfilled(plan)
    second = OrderFactory(plan=plan, email=EMAIL)
    second = fulfil(second, via="webhook", payment_intent=payment_intent(second)).order
    client.force_login(first.subscription.user)
    page = text(client.get("/account/"))
    assert f"Your access is active until {second.subscription.ends_at:%-d %B %Y}" in page
    assert f"{first.subscription.ends_at:%-d %b %Y} to {second.subscription.ends_at:%-d %b %Y}" in page


def test_a_late_second_year_says_when_it_starts_in_the_recovery_email(
    plan, mailoutbox, django_capture_on_commit_callbacks
):
    first = paid_and_fulfilled(plan)
    second = OrderFactory(plan=plan, email=EMAIL)
    an_hour_ago = int((timezone.now() - timedelta(hours=1)).timestamp())
    with django_capture_on_commit_callbacks(execute=True):
        result = fulfil(second, via="reconciliation", payment_intent=payment_intent(second, created=an_hour_ago))
    assert result.email_kind == "recovery"
    body = mailoutbox[-1].body
    assert (
        f"This year is added after the access you already had (it starts on {first.subscription.ends_at:%-d %B %Y})"
        in body
    )
    assert "Your year starts today" not in body


# --- Years that follow each other stay whole (found by a newcomer trying to break it) ------


def test_a_first_purchase_is_not_called_added_after_the_current_access(plan):
    order = paid_and_fulfilled(plan, email="first.time@example.com")
    assert "added after the current access" not in order.events.get(kind="state:fulfilled").message


def test_refunding_the_running_year_brings_the_year_on_top_forward_to_today(plan):
    first = paid_and_fulfilled(plan)
    second = paid_and_fulfilled(plan)  # chained: starts where the first ends
    assert second.subscription.starts_at == first.subscription.ends_at
    before = timezone.now()
    refunds.record_refund(
        first,
        {"id": "re_first", "amount": first.amount_cents, "currency": first.currency},
        actor="support:rita",
        reason="Asked",
    )
    second.subscription.refresh_from_db()
    # The paid year runs from today, whole: no gap, nothing lost, and the pages tell the truth.
    assert before <= second.subscription.starts_at <= timezone.now()
    assert second.subscription.ends_at - second.subscription.starts_at == timedelta(days=plan.duration_days)
    assert access_end() == second.subscription.ends_at
    assert second.subscription.is_active
    assert second.events.filter(kind="access:moved", actor="support:rita").exists()


def test_access_moved_to_an_account_with_access_comes_after_it(plan):
    mine = paid_and_fulfilled(plan, email="bob@example.com")
    typo = paid_and_fulfilled(plan, email="bob@gmial.com")
    email_change.change_email(typo, "bob@example.com", actor="support:rita")
    typo.subscription.refresh_from_db()
    mine.subscription.refresh_from_db()
    assert typo.subscription.starts_at == mine.subscription.ends_at
    assert typo.subscription.ends_at == mine.subscription.ends_at + timedelta(days=plan.duration_days)
    assert access_end("bob@example.com") == typo.subscription.ends_at
    assert typo.events.filter(kind="access:moved").exists()


def test_the_access_notice_is_limited_per_client_address(pay, plan, fake_stripe, settings):
    """The notice says until when an email has access: one address may not look up many."""
    from billing.views import ACCESS_NOTICES

    for n in range(ACCESS_NOTICES + 1):
        paid_and_fulfilled(plan, email=f"person{n}@example.com")
    answers = [pay(email=f"person{n}@example.com") for n in range(ACCESS_NOTICES + 1)]
    assert [a.status_code for a in answers] == [409] * ACCESS_NOTICES + [429]
    last = text(answers[-1])
    assert "Too many checkouts from here" in last and not re.search(r"access until \d", last)  # no date told
    assert not fake_stripe.created
