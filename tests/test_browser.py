"""The paid path in a real browser: Chromium, the checkout page's JavaScript, localstripe's
fake Stripe.js, the live server, the webhook, the email and the sign-in link.

Every test leaves screenshots in artifacts/screenshots/ for a person to look at: these are
the pages a worried customer who just paid $249 reads.
"""

import re

import pytest
from django.core import mail
from django.utils import timezone
from django.utils.formats import date_format
from playwright.sync_api import expect

from billing import order_links
from billing.models import Order, OutboundEmail
from tests.fixtures.browser import MOBILE, shoot, shoot_mobile
from tests.fixtures.checkout_page import (
    CARD_3DS,
    CARD_DECLINED,
    CARD_OK,
    fill_checkout,
    open_checkout,
    open_new_checkout,
    order_in,
    signin_link,
    wait_for_order_page,
    wait_for_webhook,
)

# "browser" first: a missing Chromium fails the test before minutes of database setup.
pytestmark = [pytest.mark.browser, pytest.mark.localstripe, pytest.mark.usefixtures("browser")]


def show_email(page, email: OutboundEmail, name: str) -> None:
    """The email as a mail client shows it (the dev outbox page frames it at a fixed height)."""
    page.set_content(email.body_html)
    shoot(page, name)


def test_it_takes_a_payment_and_signs_the_customer_in(site, page, pages):
    open_checkout(page, site)
    shoot(page, "checkout")
    shoot_mobile(pages, f"{site.url}/checkout/", "checkout-mobile")

    fill_checkout(page, "ada@example.com", CARD_OK)
    page.click("#pay-button")
    order = wait_for_order_page(page)
    expect(page.get_by_role("heading", name="You're all set")).to_be_visible()
    order.refresh_from_db()
    ends = date_format(timezone.localtime(order.subscription.ends_at), "j F Y")
    expect(page.locator(".notice.ok")).to_contain_text(ends)
    shoot(page, "order-ready")
    shoot_mobile(pages, page.url, "order-ready-mobile")

    wait_for_webhook(site, order)
    order.refresh_from_db()
    assert order.state == Order.State.FULFILLED and order.fulfilled_via == Order.Via.RETURN
    assert order.payment_attempts == 1
    email = OutboundEmail.objects.get(order=order)  # exactly one access email
    assert email.kind == OutboundEmail.Kind.CONFIRMATION
    site.wait_for(lambda: any(m.to == ["ada@example.com"] for m in mail.outbox))

    page.goto(f"{site.url}/dev/emails/{email.pk}/")
    shoot(page, "email-confirmation-dev-outbox")
    show_email(page, email, "email-confirmation")
    show_email(pages.new(viewport=MOBILE), email, "email-confirmation-mobile")

    page.goto(signin_link(email))
    shoot(page, "signin-confirm")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{site.url}/account/")
    expect(page.locator("#subscription-status")).to_contain_text("active")
    expect(page.locator("#subscription-status")).to_contain_text(ends)
    expect(page.get_by_text(order.reference)).to_be_visible()
    shoot(page, "account")
    shoot_mobile(pages, page.url, "account-mobile", storage_state=page.context.storage_state())


def test_it_completes_3d_secure_in_the_page(site, page, pages):
    open_checkout(page, site)
    fill_checkout(page, "grace@example.com", CARD_3DS)
    page.click("#pay-button")
    complete = page.get_by_role("button", name="Complete authentication")
    expect(complete).to_be_visible()
    shoot(page, "checkout-3ds-dialog")

    order = Order.objects.get(email="grace@example.com")
    waiting = pages.new()
    waiting.goto(f"{site.url}{order_links.order_path(order.reference)}")  # another tab: as from an email
    expect(waiting.locator("[data-view=needs_authentication]")).to_be_visible()
    shoot(waiting, "order-needs-authentication")

    complete.click()
    wait_for_order_page(page)
    expect(page.get_by_role("heading", name="You're all set")).to_be_visible()
    wait_for_webhook(site, order)
    order.refresh_from_db()
    assert order.state == Order.State.FULFILLED
    assert OutboundEmail.objects.filter(order=order).count() == 1


def test_it_keeps_the_form_and_says_so_when_the_card_is_declined(site, page, pages):
    open_checkout(page, site)
    fill_checkout(page, "linus@example.com", CARD_DECLINED)
    page.click("#pay-button")
    error = page.locator("#form-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("declined")
    expect(error).to_contain_text("You have not been charged")
    assert page.url == f"{site.url}/checkout/"
    expect(page.locator("#email")).to_have_value("linus@example.com")
    expect(page.locator("input[placeholder=number]")).to_have_value(CARD_DECLINED)
    expect(page.locator("#pay-button")).to_be_enabled()
    shoot(page, "checkout-declined")

    order = Order.objects.get(email="linus@example.com")
    assert order.state == Order.State.PENDING and not order.was_charged
    wait_for_webhook(site, order, "payment_intent.payment_failed")
    view = pages.new()
    view.goto(f"{site.url}{order_links.order_path(order.reference)}")  # the details need the cookie or a link
    expect(view.locator("[data-view=declined]")).to_be_visible()
    shoot(view, "order-declined")
    shoot_mobile(pages, view.url, "order-declined-mobile")

    # The customer tries another card on the same page: same order, charged once.
    page.locator("input[placeholder=number]").fill(CARD_OK)
    page.click("#pay-button")
    assert wait_for_order_page(page).pk == order.pk
    expect(page.get_by_role("heading", name="You're all set")).to_be_visible()
    order.refresh_from_db()
    assert order.state == Order.State.FULFILLED and order.payment_attempts == 2
    wait_for_webhook(site, order)


def test_a_failed_3d_secure_check_says_nothing_was_charged_and_keeps_the_email(site, page):
    open_checkout(page, site)
    fill_checkout(page, "alan@example.com", CARD_3DS)
    page.click("#pay-button")
    page.get_by_role("button", name="Fail authentication").click()
    order = wait_for_order_page(page)
    expect(page.locator("[data-view=declined]")).to_be_visible()
    expect(page.locator(".notice.error")).to_contain_text("you have not been charged")

    page.get_by_role("link", name="Try again").click()
    page.wait_for_url(f"{site.url}/checkout/")
    expect(page.locator("#email")).to_have_value("alan@example.com")
    expect(page.locator(".reference")).to_have_text(order.reference)  # the same checkout
    order.refresh_from_db()
    assert order.state == Order.State.PENDING and not order.was_charged


# Real Stripe.js turns the card into a PaymentMethod (createPaymentMethod), which localstripe's
# fake Stripe.js cannot do. This wraps the fake so that it answers like the real one, with a
# PaymentMethod the test made, to prove the page's real-Stripe path end to end.
REAL_STRIPE_JS_SHAPE = """
Object.defineProperty(window, "Stripe", {
  configurable: true,
  get() { return undefined; },
  set(fake) {
    Object.defineProperty(window, "Stripe", {configurable: true, writable: true, value: function (key) {
      const stripe = fake(key);
      stripe.createToken = async () => ({error: {message: "createToken must not be used with real Stripe.js"}});
      stripe.createPaymentMethod = async (data) => {
        const request = {type: data.type, card: Boolean(data.card && data.card.mount)};
        sessionStorage.setItem("paymentMethodRequest", JSON.stringify(request));
        return {paymentMethod: {id: window.paymentMethodId}};
      };
      return stripe;
    }});
  },
});
"""


def test_the_page_also_speaks_real_stripe_js_payment_methods(site, page):
    card = {"number": CARD_OK, "exp_month": 12, "exp_year": 2034, "cvc": "123"}
    payment_method = site.api.v1.payment_methods.create({"type": "card", "card": card}).id
    page.add_init_script(REAL_STRIPE_JS_SHAPE + f"window.paymentMethodId = {payment_method!r};")
    open_checkout(page, site)
    page.locator("#checkout-form").evaluate("(form) => { form.dataset.cardMode = 'payment_method'; }")
    fill_checkout(page, "katherine@example.com", CARD_OK)
    page.click("#pay-button")
    order = wait_for_order_page(page)
    expect(page.get_by_role("heading", name="You're all set")).to_be_visible()
    assert page.evaluate("JSON.parse(sessionStorage.getItem('paymentMethodRequest'))") == {"type": "card", "card": True}
    [payment_intent] = site.payment_intents(order)
    assert payment_intent.payment_method == payment_method and payment_intent.status == "succeeded"
    wait_for_webhook(site, order)


def post_checkout_without_our_script(page, site, email: str) -> None:
    """A plain form post, as a browser without our JavaScript would send it."""
    page.fill("#email", email)
    page.locator("#payment_method").evaluate("(input, token) => { input.value = token; }", site.create_token(CARD_OK))
    with page.expect_navigation():
        page.locator("#checkout-form").evaluate("(form) => form.submit()")


def test_a_crash_after_the_charge_goes_to_the_order_page_never_to_a_second_payment(site, page, pages, settings):
    settings.FAILPOINTS = "before_response=raise"  # the POST crashes after the charge
    open_checkout(page, site)
    fill_checkout(page, "edsger@example.com", CARD_OK)
    page.click("#pay-button")
    order = wait_for_order_page(page)  # the script saw an HTML 500, looked, and found the order
    expect(page.get_by_role("heading", name="You're all set")).to_be_visible()
    assert order.payment_attempts == 1

    # The same crash without our script: the browser shows the 500 page, which reads the
    # reference cookie the checkout page set before the payment.
    open_new_checkout(page, site)
    reference = page.locator(".reference").inner_text()
    post_checkout_without_our_script(page, site, "barbara@example.com")
    expect(page.get_by_role("heading", name=re.compile("nothing is lost"))).to_be_visible()
    expect(page.get_by_text("Please don't pay again")).to_be_visible()
    shoot(page, "500-with-reference")
    page.set_viewport_size({"width": 390, "height": 844})
    shoot(page, "500-with-reference-mobile")
    page.set_viewport_size({"width": 1024, "height": 800})
    page.get_by_role("link", name=re.compile(f"See where order {reference} stands")).click()
    expect(page.get_by_role("heading", name="You're all set")).to_be_visible()

    # Cookies blocked: the page's signed field still carries the checkout; the 500 page
    # cannot name the reference, and still says what to do.
    open_new_checkout(page, site)
    page.context.clear_cookies(name="paidup_ref")
    post_checkout_without_our_script(page, site, "frances@example.com")
    expect(page.get_by_role("heading", name="Something went wrong on our side")).to_be_visible()
    shoot(page, "500-without-reference")
    for order in Order.objects.all():
        wait_for_webhook(site, order)
    assert Order.objects.filter(state=Order.State.FULFILLED).count() == 3


def test_a_lost_response_goes_to_the_order_page(site, page):
    """The request reaches us and the customer is charged, but the answer never arrives."""

    def deliver_then_drop(route):
        if route.request.method != "POST":
            return route.continue_()
        route.fetch()  # the server gets it and charges the card
        route.abort("connectionreset")

    page.route("**/checkout/", deliver_then_drop)
    open_checkout(page, site)
    fill_checkout(page, "donald@example.com", CARD_OK)
    page.click("#pay-button")
    order = wait_for_order_page(page)
    expect(page.get_by_role("heading", name="You're all set")).to_be_visible()
    assert order.payment_attempts == 1
    wait_for_webhook(site, order)


def test_a_request_that_never_arrived_says_nothing_was_charged_and_lets_the_customer_retry(site, page):
    page.route(
        "**/checkout/",
        lambda route: route.abort("internetdisconnected") if route.request.method == "POST" else route.continue_(),
    )
    open_checkout(page, site)
    fill_checkout(page, "margaret@example.com", CARD_OK)
    page.click("#pay-button")
    error = page.locator("#form-error")
    expect(error).to_contain_text("you have not been charged")
    expect(page.locator("#pay-button")).to_be_enabled()
    shoot(page, "checkout-request-never-arrived")
    assert not Order.objects.exists()

    page.unroute("**/checkout/")
    page.click("#pay-button")
    wait_for_order_page(page)
    expect(page.get_by_role("heading", name="You're all set")).to_be_visible()
    wait_for_webhook(site, Order.objects.get())


def test_the_order_page_while_we_cannot_reach_the_server_asks_not_to_pay_again(site, page):
    page.route("**/checkout/", lambda route: route.abort() if route.request.method == "POST" else route.continue_())
    page.route("**/orders/**", lambda route: route.abort("internetdisconnected"))
    open_checkout(page, site)
    fill_checkout(page, "ken@example.com", CARD_OK)
    page.click("#pay-button")
    expect(page.locator("#form-error")).to_contain_text("Please don't pay again", timeout=20_000)
    expect(page.locator("#pay-button")).to_be_disabled()
    shoot(page, "checkout-connection-lost")

    page.unroute("**/orders/**")  # back online: the page finds out by itself
    expect(page.locator("#form-error")).to_contain_text("you have not been charged", timeout=20_000)
    expect(page.locator("#pay-button")).to_be_enabled()


PAGES = {
    "order-setting-up": lambda: order_in("paid", paid_at=timezone.now(), stripe_payment_status="succeeded"),
    "order-paid-not-yet-recorded": lambda: order_in(
        "pending", stripe_payment_intent_id="pi_unknownToLocalstripe1", stripe_payment_status="succeeded"
    ),
    "order-confirming": lambda: order_in(
        "pending", stripe_payment_intent_id="pi_unknownToLocalstripe2", stripe_payment_status="processing"
    ),
    "order-waiting-for-payment": lambda: order_in("pending"),
    "order-not-charged": lambda: order_in("failed", failed_at=timezone.now()),
    "order-refunded": lambda: order_in("refunded", paid_at=timezone.now(), refunded_at=timezone.now()),
}


def test_every_order_page_state_is_readable(site, page, pages):
    """States that are hard to reach through the browser, made directly, for the screenshots."""
    for name, make in PAGES.items():
        order = make()
        page.goto(f"{site.url}{order_links.order_path(order.reference)}")  # the customer's view, not a stranger's
        expect(page.locator("h1")).to_be_visible()
        expect(page.locator("dl.facts")).to_contain_text(order.reference)
        shoot(page, name)
        if name in ("order-setting-up", "order-confirming"):
            shoot_mobile(pages, page.url, f"{name}-mobile")


def test_the_404_pages_help(site, page, pages):
    page.goto(f"{site.url}/no-such-page/")
    expect(page.get_by_role("heading", name="We couldn't find that page")).to_be_visible()
    shoot(page, "404")

    open_checkout(page, site)  # a checkout reference, and no order behind it
    reference = page.locator(".reference").inner_text()
    page.goto(f"{site.url}/orders/{reference}/")
    expect(page.locator("h1")).to_contain_text(f"We have no payment for order {reference}")
    expect(page.get_by_text("you have not been charged")).to_be_visible()
    shoot(page, "404-own-checkout-without-order")
    page.get_by_role("link", name="Return to checkout").click()
    expect(page.locator(".reference")).to_have_text(reference)
