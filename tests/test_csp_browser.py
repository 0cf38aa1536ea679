"""The pages work under the Content-Security-Policy in a real browser (issue 12, item 4).

Chromium enforces the policy the server sends; the `page` fixture (tests/fixtures/browser.py) fails
any browser test on a CSP violation (Chromium's console line or a `securitypolicyviolation` event)
or a JavaScript error. These tests walk what customers and support people use: the checkout with
a plain card and with 3-D Secure (localstripe's fake Stripe.js, from its own origin), the order
page, the help page, sign-in, and the support console's queue, order list, order page and action
pages; they fail on any console error too.
"""

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from playwright.sync_api import expect

from billing.models import Order
from tests.factories import OrderFactory
from tests.fixtures.checkout_page import CARD_3DS, CARD_OK, fill_checkout, open_checkout, wait_for_order_page
from tests.fixtures.console import client_for, staff

pytestmark = [pytest.mark.browser, pytest.mark.localstripe, pytest.mark.usefixtures("browser")]


@pytest.fixture
def console_errors(page):
    """Every console message of type "error" the page logs (a blocked resource, a failed script...)."""
    errors: list[str] = []
    page.on(
        "console", lambda message: errors.append(f"{page.url}: {message.text}") if message.type == "error" else None
    )
    return errors


def test_the_collector_sees_a_violation(site, page, pages):
    """The fixture's collector works: an inline script added to a page is blocked and reported."""
    page.goto(f"{site.url}/help/charged/")
    page.evaluate("""() => { const s = document.createElement("script"); s.textContent = "window.ran = 1";
                             document.body.appendChild(s); }""")
    expect(page.locator("body")).to_be_visible()
    page.wait_for_function("() => window.__cspViolations.length > 0")
    assert page.evaluate("() => window.ran") is None  # the browser refused to run it
    found = pages.violations()
    assert any("script-src" in line for line in found), found
    assert any("Content Security Policy" in line for line in pages.csp), pages.csp
    pages.csp.clear()  # expected here: the fixture must not fail this test for it
    page.evaluate("() => { window.__cspViolations = []; }")


@pytest.mark.parametrize("card", [CARD_OK, CARD_3DS], ids=["plain card", "3-D Secure"])
def test_a_customer_pays_and_reads_every_page_without_a_violation(site, page, console_errors, card):
    open_checkout(page, site)
    fill_checkout(page, "ada@example.com", card)
    page.click("#pay-button")
    if card == CARD_3DS:
        page.get_by_role("button", name="Complete authentication").click()
    order = wait_for_order_page(page)
    expect(page.get_by_role("heading", name="You're all set")).to_be_visible()
    assert Order.objects.get(pk=order.pk).state in (Order.State.PAID, Order.State.FULFILLED)

    page.goto(f"{site.url}/help/charged/")
    expect(page.locator("main form")).to_be_visible()
    page.goto(f"{site.url}/account/sign-in/")
    expect(page.locator("main form")).to_be_visible()
    page.get_by_label("Email").fill("ada@example.com")
    page.locator("main form button[type=submit]").click()
    page.wait_for_load_state()
    assert console_errors == []


def test_a_waiting_order_page_updates_itself_without_a_violation(site, page, console_errors):
    order = OrderFactory(state="pending", stripe_payment_intent_id="pi_waiting0000000000000001")
    from billing import order_links

    page.goto(f"{site.url}{order_links.order_path(order.reference)}")
    page.wait_for_timeout(2500)  # the page's script polls the order's JSON
    assert console_errors == []


def test_the_support_console_works_under_the_policy(site, page, console_errors):
    person = staff("sue@paidup.example", "Support", "Support: refunds")
    paid = OrderFactory(
        email="dora@example.com",
        state="paid",
        paid_at=timezone.now() - timedelta(minutes=12),
        stripe_payment_intent_id="pi_3QxYzAbCdEfGhIjKlMnOpQr0",
    )
    page.goto(f"{site.url}/admin/login/")  # the staff sign-in page
    expect(page.locator("#login-form")).to_be_visible()
    cookie = client_for(person).cookies[settings.SESSION_COOKIE_NAME].value
    page.context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": site.url}])

    page.goto(f"{site.url}/admin/")  # the queue
    expect(page.locator("#pu-queue")).to_be_visible()
    page.goto(f"{site.url}/admin/billing/order/?q=dora")
    expect(page.locator("#result_list")).to_contain_text(paid.reference)
    for listing in ("support/supportcase", "billing/alert", "outbox/outboundemail", "billing/order/attach"):
        page.goto(f"{site.url}/admin/{listing}/")
        expect(page.locator("#content")).to_be_visible()
    page.goto(f"{site.url}/admin/billing/order/{paid.pk}/change/")
    expect(page.locator("#pu-sentence")).to_be_visible()
    # The reply templates' Copy button: its script was inline, now a static file.
    page.locator("#pu-replies details").first.evaluate("(d) => d.open = true")
    page.locator("#pu-replies .pu-copy").first.click()
    expect(page.locator("#pu-replies .pu-copied").first).to_contain_text("Paste it into your reply")
    page.locator("a[data-action]").first.click()  # an action's confirmation page
    expect(page.locator("#pu-confirm")).to_be_visible()
    page.goto(f"{site.url}/admin/billing/order/{paid.pk}/act/extend/")
    assert console_errors == []
    page.fill("#id_days", "999")
    page.click("#pu-confirm")  # the form posts to itself: form-action 'self'
    expect(page.locator("#id_days_error")).to_be_visible()
    # The refused form answers 400 on purpose (Chromium logs that as an error); nothing else.
    assert [e for e in console_errors if "status of 400" not in e] == []
