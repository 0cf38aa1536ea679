"""The mistyped email in a real browser: pay with name@gmial.com, the provider's bounce webhook
arrives, the order page (in the browser that paid) says the address could not be reached and
takes the correction, and the fresh sign-in link at the corrected address signs the customer in.
Screenshots (desktop and a 390x844 phone) in artifacts/screenshots/bounce-*.png."""

import re

import pytest
import requests
from django.core import mail
from django.test import Client
from playwright.sync_api import expect

from accounts.models import User
from billing.models import Alert, OutboundEmail
from tests.fixtures.browser import MOBILE, shoot
from tests.fixtures.checkout_page import CARD_OK, fill_checkout, open_checkout, signin_link, wait_for_order_page
from tests.fixtures.console import admin_signin, support_group
from tests.fixtures.tracking import auth, event_for, fulfilled_with_sent_email, post_tracking

pytestmark = [pytest.mark.browser, pytest.mark.localstripe, pytest.mark.usefixtures("browser")]


def bounce(site, email: OutboundEmail) -> dict:
    """Postmark posts its bounce webhook to the live site, basic auth and all."""
    headers = {"Authorization": auth()["HTTP_AUTHORIZATION"], "Content-Type": "application/json"}
    answer = requests.post(f"{site.url}/anymail/postmark/tracking/", json=event_for(email), headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_bounced_access_email_is_corrected_by_the_customer_from_the_order_page(site, page, pages, tracking):
    open_checkout(page, site)
    fill_checkout(page, "jane@gmial.com", CARD_OK)
    page.click("#pay-button")
    # The checkout asks "Did you mean jane@gmail.com?" first (the server's answer: nothing charged,
    # Pay is pressable again); she keeps her typo and pays. Waiting for Pay to come back matters:
    # the page script may show the question while that first request is still on its way.
    expect(page.locator("#pay-button")).to_be_enabled()
    expect(page.locator("#email-suggestion")).to_be_visible()
    page.locator("#keep-typed").click()
    page.click("#pay-button")
    order = wait_for_order_page(page)
    expect(page.get_by_role("heading", name="You're all set")).to_be_visible()
    site.wait_for(lambda: OutboundEmail.objects.filter(order=order, status="sent").exists())
    confirmation = OutboundEmail.objects.get(order=order)

    assert bounce(site, confirmation)["outcome"] == "recorded"
    assert Alert.objects.filter(order=order, reason=Alert.Reason.ACCESS_BOUNCED).exists()

    page.reload()
    notice = page.locator("#email-bounced")
    expect(notice).to_contain_text("We couldn't reach jane@gmial.com.")
    shoot(page, "bounce-order-page")
    phone = pages.new(viewport=MOBILE, is_mobile=True, has_touch=True, storage_state=page.context.storage_state())
    phone.goto(page.url)
    expect(phone.locator("#email-bounced")).to_be_visible()
    shoot(phone, "bounce-order-page-mobile")

    # A typo in the correction is caught first, next to its field.
    page.get_by_label("Your correct email address").fill("jane@")
    page.get_by_role("button", name="Send my sign-in link there").click()
    expect(page.locator("#email-correction-error")).to_contain_text("doesn't look like an email address")
    expect(page.get_by_label("Your correct email address")).to_have_attribute("aria-invalid", "true")
    shoot(page, "bounce-correction-error")

    page.get_by_label("Your correct email address").fill("jane@gmail.com")
    page.get_by_role("button", name="Send my sign-in link there").click()
    expect(page.locator("#email-corrected")).to_contain_text("We've sent a new sign-in link to jane@gmail.com")
    expect(page.locator("#email-bounced")).to_have_count(0)
    shoot(page, "bounce-corrected")
    phone.goto(page.url)
    shoot(phone, "bounce-corrected-mobile")

    site.wait_for(lambda: any(m.to == ["jane@gmail.com"] for m in mail.outbox))
    link = OutboundEmail.objects.get(kind="signin", to="jane@gmail.com")
    page.goto(signin_link(link))
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{site.url}/account/")
    expect(page.locator("#subscription-status")).to_contain_text("active")
    expect(page.get_by_text(order.reference)).to_be_visible()


def test_support_changes_the_email_from_the_queue_with_old_and_new_on_the_confirmation(
    live_server, page, pages, tracking, django_capture_on_commit_callbacks
):
    order, confirmation = fulfilled_with_sent_email(django_capture_on_commit_callbacks, email="jane@gmial.com")
    assert post_tracking(Client(), event_for(confirmation)).json()["outcome"] == "recorded"
    sue = User.objects.create_user("sue@paidup.example", "a-long-test-password", is_staff=True)
    sue.groups.add(support_group("Support"))

    admin_signin(page, live_server.url, sue, "a-long-test-password")
    row = page.locator("#queue-bounced")
    expect(row).to_contain_text("Access email bounced")
    expect(row).to_contain_text(order.reference)
    shoot(page, "bounce-support-queue")

    row.get_by_role("link", name=re.compile(order.reference)).first.click()
    expect(page.get_by_text("jane@gmial.com could not be reached")).to_be_visible()
    page.get_by_role("link", name="Change email").first.click()
    page.get_by_label("Correct email").fill("jane@gmail.com")
    page.get_by_role("button", name="Show me the change").click()
    expect(page.locator("#pu-old-email")).to_have_text("jane@gmial.com")
    expect(page.locator("#pu-new-email")).to_have_text("jane@gmail.com")
    shoot(page, "bounce-support-change-email-confirm")
    phone = pages.new(viewport=MOBILE, is_mobile=True, has_touch=True, storage_state=page.context.storage_state())
    phone.goto(page.url)
    phone.get_by_label("Correct email").fill("jane@gmail.com")
    phone.get_by_role("button", name="Show me the change").click()
    expect(phone.locator("#pu-new-email")).to_have_text("jane@gmail.com")
    shoot(phone, "bounce-support-change-email-confirm-mobile")

    page.get_by_role("button", name="Yes, change email").click()
    expect(page.locator(".messagelist")).to_contain_text("email changed from jane@gmial.com to jane@gmail.com")
    shoot(page, "bounce-support-changed")
    order.refresh_from_db()
    assert order.email == "jane@gmail.com" and order.subscription.user.email == "jane@gmail.com"
