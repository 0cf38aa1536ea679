"""Staff sessions (issue 12, item 3): a working day from the password sign-in, the browser's
session only, a code again after 15 idle minutes, and a fresh code before a large refund that
keeps what the person typed. Customers' sessions are untouched."""

import html
import re
import time
import uuid

import pytest
from django.test import Client
from django.urls import reverse
from django_otp.plugins.otp_totp.models import TOTPDevice

from billing.models import Order
from support import staff_session
from tests.factories import UserFactory
from tests.fixtures.console import (
    PASSWORD,
    act_url,
    change_url,
    client_for,
    current_code,
    fulfilled_order,
    staff_with_password,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def ben():
    person = staff_with_password("ben@paidup.example", "Support", "Support: refunds")
    TOTPDevice.objects.create(user=person, name="Authenticator app", confirmed=True)
    return person


def signed_in(person) -> Client:
    """Through the real pages: the admin's password page, then one code."""
    browser = Client()
    browser.post(reverse("admin:login"), {"username": person.email, "password": PASSWORD})
    assert browser.post(reverse("admin:staff_verify"), {"code": current_code(person)}).status_code == 302
    return browser


def text(response) -> str:
    return html.unescape(re.sub(r"\s+", " ", response.content.decode()))


# --- how long a session lasts ------------------------------------------------------------


def test_a_staff_session_ends_with_the_browser(ben):
    browser = signed_in(ben)
    assert browser.session.get_expire_at_browser_close()
    cookie = browser.cookies["sessionid"]
    assert cookie["expires"] == "" and cookie["max-age"] == ""


def test_a_customer_session_is_unchanged(client):
    customer = UserFactory(email="cleo@example.com")
    client.force_login(customer)
    client.get(reverse("accounts:account"))
    assert not client.session.get_expire_at_browser_close()
    assert staff_session.SIGNED_IN_AT not in client.session


def test_a_staff_session_ends_a_working_day_after_the_password_even_when_busy(ben, time_machine, settings):
    time_machine.move_to("2026-11-30 09:00:00+00:00", tick=False)
    browser = signed_in(ben)
    for hour in range(1, 8):  # busy all day: a request every 10 minutes would not help either
        time_machine.move_to(f"2026-11-30 {9 + hour:02d}:00:00+00:00", tick=False)
        browser.post(reverse("admin:staff_verify"), {"code": current_code(ben)})  # the idle rule asks again
        assert browser.get(reverse("admin:index")).status_code == 200
    time_machine.move_to("2026-11-30 17:00:01+00:00", tick=False)
    response = browser.get(reverse("admin:index"))
    assert response.status_code == 302 and response.url.startswith(reverse("admin:login"))
    assert "_auth_user_id" not in browser.session  # signed out, not just unverified
    assert browser.get(response.url).status_code == 200  # the password page


def test_fifteen_idle_minutes_ask_for_one_code_again(ben, time_machine):
    time_machine.move_to("2026-11-30 09:00:00+00:00", tick=False)
    browser = signed_in(ben)
    time_machine.move_to("2026-11-30 09:14:00+00:00", tick=False)
    assert browser.get(reverse("admin:index")).status_code == 200  # 14 minutes: still open
    time_machine.move_to("2026-11-30 09:29:30+00:00", tick=False)
    response = browser.get(reverse("admin:billing_order_changelist"))
    assert response.status_code == 302
    verify_url = browser.get(response.url).url
    assert verify_url.startswith(reverse("admin:staff_verify"))  # one code, not the password again
    back = browser.post(verify_url, {"code": current_code(ben)})
    assert back.status_code == 302 and back.url == reverse("admin:billing_order_changelist")
    assert browser.get(back.url).status_code == 200


def test_a_stolen_session_cookie_after_sign_out_is_refused(ben):
    browser = signed_in(ben)
    cookie = browser.cookies["sessionid"].value
    browser.post(reverse("admin:logout"))
    thief = Client()
    thief.cookies["sessionid"] = cookie
    assert thief.get(reverse("admin:index")).status_code == 302


# --- a fresh code before a large refund ----------------------------------------------------


def refund(browser, order, amount: str):
    data = {"amount": amount, "reason": "Asked for it back", "token": str(uuid.uuid4()), "confirmed": "yes"}
    return browser.post(act_url(order, "refund"), data), data


def test_a_full_price_refund_asks_for_a_fresh_code_and_keeps_the_form(ben, stripe_api, time_machine):
    time_machine.move_to("2026-11-30 09:00:00+00:00", tick=True)
    order = fulfilled_order(stripe_api)
    browser = signed_in(ben)
    time_machine.move_to("2026-11-30 09:10:00+00:00", tick=True)  # verified 10 minutes ago, not idle
    assert browser.get(change_url(order)).status_code == 200
    response, typed = refund(browser, order, "249.00")
    assert response.status_code == 302 and response.url.startswith(reverse("admin:staff_verify"))
    order.refresh_from_db()
    assert order.refunded_cents == 0 and stripe_api.refunds == []  # nothing done yet
    page = browser.get(response.url)
    assert "A refund this large needs a fresh code" in text(page)
    back = browser.post(response.url, {"code": current_code(ben)})
    assert back.status_code == 302 and back.url == act_url(order, "refund") + "?resume=1"
    question = browser.get(back.url)
    body = text(question)
    assert question.status_code == 200 and 'id="pu-question"' in body and "Asked for it back" in body
    assert f'value="{typed["token"]}"' in body  # the same refund (its idempotency key), not a new one
    done = browser.post(act_url(order, "refund"), {**typed, "amount": "249.00"})
    assert done.status_code == 302 and done.url == change_url(order)
    order.refresh_from_db()
    assert order.refunded_cents == 24900 and order.state == Order.State.REFUNDED
    assert len(stripe_api.refunds) == 1


def test_a_refund_below_a_plan_price_needs_no_fresh_code(ben, stripe_api, time_machine):
    time_machine.move_to("2026-11-30 09:00:00+00:00", tick=True)
    order = fulfilled_order(stripe_api)
    browser = signed_in(ben)
    time_machine.move_to("2026-11-30 09:10:00+00:00", tick=True)
    response, _ = refund(browser, order, "50")
    assert response.status_code == 302 and response.url == change_url(order)
    order.refresh_from_db()
    assert order.refunded_cents == 5000


def test_a_refund_split_in_two_asks_at_the_one_that_reaches_the_plan_price(ben, stripe_api, time_machine):
    time_machine.move_to("2026-11-30 09:00:00+00:00", tick=True)
    order = fulfilled_order(stripe_api)
    browser = signed_in(ben)
    time_machine.move_to("2026-11-30 09:10:00+00:00", tick=True)
    first, _ = refund(browser, order, "200.00")
    assert first.status_code == 302 and first.url == change_url(order)  # $200 of $249: no code
    second, _ = refund(browser, order, "49.00")
    assert second.status_code == 302 and second.url.startswith(reverse("admin:staff_verify"))
    order.refresh_from_db()
    assert order.refunded_cents == 20000 and len(stripe_api.refunds) == 1  # the $49 waits for the code


def test_a_large_refund_right_after_the_code_goes_through(ben, stripe_api):
    order = fulfilled_order(stripe_api)
    browser = signed_in(ben)
    response, _ = refund(browser, order, "249.00")
    assert response.status_code == 302 and response.url == change_url(order)


def test_the_threshold_is_a_setting(ben, stripe_api, time_machine, settings):
    settings.REFUND_REVERIFY_CENTS = 1000
    time_machine.move_to("2026-11-30 09:00:00+00:00", tick=True)
    order = fulfilled_order(stripe_api)
    browser = signed_in(ben)
    time_machine.move_to("2026-11-30 09:10:00+00:00", tick=True)
    response, _ = refund(browser, order, "10.00")
    assert response.url.startswith(reverse("admin:staff_verify"))


def test_a_kept_refund_is_only_for_its_own_page(ben, stripe_api, time_machine):
    time_machine.move_to("2026-11-30 09:00:00+00:00", tick=True)
    order, other = fulfilled_order(stripe_api), fulfilled_order(stripe_api)
    browser = signed_in(ben)
    time_machine.move_to("2026-11-30 09:10:00+00:00", tick=True)
    refund(browser, order, "249.00")
    page = text(browser.get(act_url(other, "refund") + "?resume=1"))
    assert "Asked for it back" not in page and 'id="pu-question"' not in page


def test_client_for_gives_a_verified_session_as_the_console_tests_expect(ben):
    assert client_for(ben).get(reverse("admin:index")).status_code == 200


def test_the_full_refund_at_a_fraud_warning_asks_for_a_fresh_code_too(ben, stripe_api, time_machine):
    from billing import fraud_warnings
    from tests.fixtures import stripe_disputes

    time_machine.move_to("2026-11-30 09:00:00+00:00", tick=True)
    order = fulfilled_order(stripe_api)
    warning = stripe_disputes.early_fraud_warning(payment_intent=order.stripe_payment_intent_id)
    fraud_warnings.record_warning(warning, event_created=int(time.time()), actor="stripe:webhook")
    browser = signed_in(ben)
    time_machine.move_to("2026-11-30 09:10:00+00:00", tick=True)
    token = str(uuid.uuid4())
    response = browser.post(act_url(order, "refund_warning"), {"token": token})
    assert response.status_code == 302 and response.url.startswith(reverse("admin:staff_verify"))
    order.refresh_from_db()
    assert order.refunded_cents == 0 and stripe_api.refunds == []
    back = browser.post(response.url, {"code": current_code(ben)})
    assert f'value="{token}"' in text(browser.get(back.url))  # the same refund, kept
    assert browser.post(act_url(order, "refund_warning"), {"token": token}).status_code == 302
    order.refresh_from_db()
    assert order.refunded_cents == 24900
