"""Issue 10, items 5 and 6 in a real browser (Chromium), with screenshots for people to look at:

- the order page a stranger sees (no cookie, no link), and the same order through the link in
  its confirmation email (desktop and a 390 x 844 phone);
- the console's refund typed as money, and its last question before the money moves.

Stripe is the one fake at the gateway (tests/fixtures/gateway.py): the live server runs in this
process, so nothing here needs localstripe.
"""

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from accounts.models import User
from billing.models import Order, OutboundEmail
from billing.order_views import LOOKUPS_PER_WINDOW
from tests.fixtures.browser import MOBILE, shoot, shoot_mobile
from tests.fixtures.console import admin_signin, fulfilled_order, support_group

# "browser" first: a missing Chromium fails the test before the database setup.
pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("browser")]

PASSWORD = "a long support passphrase"


@pytest.fixture
def site(live_server, settings, stripe_api):
    settings.SITE_URL = live_server.url
    return live_server


def visible_text(page) -> str:
    return page.locator("main").inner_text()


def test_a_stranger_sees_where_the_order_stands_and_the_email_link_shows_the_rest(site, page, pages):
    order = fulfilled_order_now()
    page.goto(f"{site.url}/orders/{order.reference}/")
    expect(page.get_by_role("heading", name="This order is paid and its access is ready")).to_be_visible()
    shown = visible_text(page)
    for detail in (order.email, "$249.00", order.plan.name, str(timezone.now().year)):
        assert detail not in shown
    shoot(page, "order-stranger")
    phone = shoot_mobile(pages, page.url, "order-stranger-mobile")
    assert phone.exists()

    # The customer opens the link from the confirmation email on another device.
    email = OutboundEmail.objects.get(order=order)
    link = next(w for w in email.body_text.split() if w.startswith(f"{site.url}/orders/"))
    linked = pages.new()
    linked.goto(link)
    expect(linked.get_by_role("heading", name="You're all set")).to_be_visible()
    expect(linked.locator("dl.facts")).to_contain_text(order.email)
    expect(linked.locator("dl.facts")).to_contain_text("$249.00")
    linked.goto(f"{site.url}/orders/{order.reference}/")  # the link left the cookie: a reload keeps the details
    expect(linked.locator("dl.facts")).to_contain_text(order.email)
    shoot(linked, "order-via-email-link")
    shoot_mobile(pages, link, "order-via-email-link-mobile")


def test_too_many_lookups_get_a_plain_page(site, page, pages):
    for n in range(LOOKUPS_PER_WINDOW):
        page.goto(f"{site.url}/orders/PU-{'23456789ABCDEFGHJKMNPQRSTVWXYZ'[n]}22222/")
    page.goto(f"{site.url}/orders/PU-ZZZZZZ/")
    expect(page.get_by_role("heading", name="Please wait a few minutes")).to_be_visible()
    shoot(page, "order-too-many-lookups")
    phone = pages.new(viewport=MOBILE, is_mobile=True, has_touch=True)
    phone.goto(f"{site.url}/orders/PU-ZZZZZZ/")  # another browser at the same address: still paused
    expect(phone.get_by_role("heading", name="Please wait a few minutes")).to_be_visible()
    shoot(phone, "order-too-many-lookups-mobile")


def test_a_refund_is_typed_as_money_and_confirmed_in_money(site, page, pages, stripe_api):
    order = fulfilled_order(stripe_api, email="dora@example.com")
    person = User.objects.create_user("ben@paidup.example", PASSWORD, is_staff=True)
    person.groups.add(support_group("Support"), support_group("Support: refunds"))
    sign_in(page, site, person)

    page.goto(f"{site.url}/admin/billing/order/{order.pk}/act/refund/")
    amount = page.get_by_label("Amount to refund, in USD")
    expect(amount).to_have_value("249.00")
    amount.fill("fifty")
    page.get_by_label("Reason").fill("Goodwill: the customer waited an hour")
    page.get_by_role("button", name="Continue").click()
    expect(page.locator("#id_amount_error")).to_contain_text("Type the amount in USD as digits")
    expect(amount).to_have_attribute("aria-invalid", "true")
    shoot(page, "support-refund-bad-amount")

    amount.fill("50")
    page.get_by_role("button", name="Continue").click()
    expect(page.locator("#pu-question")).to_have_text("Refund $50.00 of $249.00 to the card ending 4242?")
    shoot(page, "support-refund-question")
    shoot_mobile(pages, page.url, "support-refund-form-mobile", storage_state=page.context.storage_state())
    assert stripe_api.refunds == []

    phone = pages.new(viewport=MOBILE, is_mobile=True, has_touch=True, storage_state=page.context.storage_state())
    phone.goto(f"{site.url}/admin/billing/order/{order.pk}/act/refund/")
    phone.get_by_label("Amount to refund, in USD").fill("50")
    phone.get_by_label("Reason").fill("Goodwill")
    phone.get_by_role("button", name="Continue").click()
    expect(phone.locator("#pu-question")).to_be_visible()
    shoot(phone, "support-refund-question-mobile")

    page.get_by_role("button", name="Yes, refund $50.00").click()
    expect(page.locator(".messagelist")).to_contain_text("Refunded $50.00 on")
    expect(page.locator("#pu-timeline")).to_contain_text("of $50.00 recorded")
    shoot(page, "support-refund-done")
    order.refresh_from_db()
    assert order.refunded_cents == 5000 and order.state == Order.State.FULFILLED
    assert [r.amount for r in stripe_api.refunds] == [5000]


def fulfilled_order_now() -> Order:
    from billing.fulfilment import fulfil
    from tests.factories import OrderFactory, payment_intent

    order = OrderFactory(email="ada@example.com")
    fulfil(order, via="webhook", payment_intent=payment_intent(order))
    order.refresh_from_db()
    return order


def sign_in(page, site, person: User) -> None:
    admin_signin(page, site.url, person, PASSWORD)
    expect(page.locator("#pu-queue")).to_be_visible()
