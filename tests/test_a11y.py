"""Usable without a mouse or eyes (issue 10, item 8), in a real browser against localstripe.

axe-core audits every page a customer can be on (the checkout, the checkout after an error,
each story the order page tells, sign-in, the help page, the account) and the console's
pages (the queue, an order, an action's confirmation, the System page) for WCAG 2.1 A and AA, desktop and a
390x844 phone, and fails on any violation (tests/fixtures/axe.py). axe cannot judge focus
order or what a screen reader hears when a page changes, so the rest is tested by hand: a
purchase with the keyboard alone, where focus goes after an error, what the status region
says, and that the order page updates in place instead of reloading.

Screenshots: artifacts/screenshots/a11y-*.png.
"""

import re
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from playwright.sync_api import expect

from accounts.models import User
from billing import order_links
from billing.fulfilment import fulfil
from billing.models import Order, OutboundEmail
from support.models import SupportCase
from tests.factories import OrderFactory
from tests.fixtures.axe import audit
from tests.fixtures.browser import DESKTOP, MOBILE, shoot
from tests.fixtures.checkout_page import CARD_3DS, CARD_DECLINED, CARD_OK, ORDER_URL, order_in
from tests.fixtures.console import client_for, support_group

pytestmark = [pytest.mark.browser, pytest.mark.localstripe, pytest.mark.usefixtures("browser")]


def signed_in(page, site, user: User) -> None:
    """The browser holds `user`'s session, as after the sign-in link (or, for staff, the admin's
    login and the second factor)."""
    client = client_for(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    page.context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": site.url}])


def focused(page) -> str:
    """What has the keyboard's focus: `#id`, or the tag and placeholder."""
    return page.evaluate(
        "() => { const e = document.activeElement; return e.id ? '#' + e.id : e.tagName.toLowerCase() "
        "+ [...e.classList].map((c) => '.' + c).join('') "
        "+ (e.placeholder ? '[placeholder=' + e.placeholder + ']' : ''); }"
    )


def tab_to(page, target: str, *, most: int = 12) -> None:
    """Press Tab until `target` (as `focused()` names it) has focus: the keyboard's only way."""
    for _ in range(most):
        if focused(page) == target:
            return
        page.keyboard.press("Tab")
    assert focused(page) == target, f"{most} Tabs never reached {target}"


def type_into(page, target: str, text: str) -> None:
    tab_to(page, target)
    page.keyboard.type(text)


# --- customer pages ---------------------------------------------------------------------


def test_a_purchase_with_the_keyboard_alone(site, page, pages):
    """Tab, typing and Enter only, through localstripe's card field: a wrong email first (focus
    lands on it, marked and described), then a declined card (focus on the message), then paid."""
    page.goto(f"{site.url}/checkout/")
    expect(page.locator("input[placeholder=number]")).to_be_visible()
    audit(page, "checkout")

    type_into(page, "#email", "ada@")
    type_into(page, "input[placeholder=number]", CARD_DECLINED)
    type_into(page, "input[placeholder=exp_month]", "12")
    type_into(page, "input[placeholder=exp_year]", "34")  # the fake element prepends "20"
    type_into(page, "input[placeholder=cvc]", "123")
    type_into(page, "input[placeholder=postal_code]", "94110")
    tab_to(page, "#pay-button")
    page.keyboard.press("Enter")

    email = page.locator("#email")
    expect(email).to_be_focused()
    expect(email).to_have_attribute("aria-invalid", "true")
    expect(email).to_have_attribute("aria-describedby", "email-hint email-error")
    expect(page.locator("#email-error")).to_have_text("That doesn't look like an email address. Please check it.")
    expect(page).to_have_title(re.compile("^Not paid yet"))
    audit(page, "checkout-email-error")

    page.keyboard.type("example.com")  # focus is in the field: finish the address
    tab_to(page, "#pay-button")
    page.keyboard.press("Enter")
    error = page.locator("#form-error")
    expect(error).to_be_focused()
    expect(error).to_contain_text("declined")
    expect(error).to_contain_text("You have not been charged")
    expect(email).not_to_have_attribute("aria-invalid", "true")
    expect(page.locator("#pay-status")).to_have_text("")  # nothing under way any more
    audit(page, "checkout-declined")

    tab_to(page, "input[placeholder=number]")
    page.keyboard.press("Control+A")
    page.keyboard.type(CARD_OK)
    tab_to(page, "#pay-button")
    page.keyboard.press("Enter")
    page.wait_for_url(ORDER_URL)
    expect(page.get_by_role("heading", name="You're all set")).to_be_visible()
    expect(page).to_have_title(re.compile("^You're all set · Order PU-"))
    order = Order.objects.get(reference=ORDER_URL.search(page.url).group(1))
    assert order.state == Order.State.FULFILLED and order.payment_attempts == 2
    audit(page, "order-fulfilled")
    site.wait_for_webhook(order.stripe_payment_intent_id, timeout=15)


def test_paying_is_announced_in_the_status_region_and_the_title(site, page):
    """ "Paying…" was only the label of a disabled button, which a screen reader does not read
    out when it changes: the role=status region (there from the start, so it is announced)
    and the title say it while the payment is on its way."""
    page.goto(f"{site.url}/checkout/")
    status = page.locator("#pay-status")
    expect(status).to_have_attribute("role", "status")
    assert status.get_attribute("hidden") is None  # a hidden region's changes are not announced
    page.fill("#email", "grace@example.com")
    page.locator("input[placeholder=number]").fill(CARD_OK)
    for name, value in [("exp_month", "12"), ("exp_year", "34"), ("cvc", "123"), ("postal_code", "94110")]:
        page.locator(f"input[placeholder={name}]").fill(value)
    held = []
    page.route(
        "**/checkout/", lambda route: held.append(route) if route.request.method == "POST" else route.continue_()
    )
    page.click("#pay-button")
    expect(status).to_have_text("Paying…")
    expect(page).to_have_title("Paying · Checkout · PaidUp")
    expect(page.locator("#pay-button")).to_be_disabled()
    for _ in range(200):  # the card becomes a token first; then the payment request is held here
        if held:
            break
        page.wait_for_timeout(50)
    assert len(held) == 1
    expect(status).to_have_text("Paying…")  # still said while the payment is on its way
    held[0].continue_()
    page.wait_for_url(ORDER_URL)
    expect(page).to_have_title(re.compile("^You're all set · "))
    order = Order.objects.get(email="grace@example.com")
    site.wait_for_webhook(order.stripe_payment_intent_id, timeout=15)


def contrast_with_white(css_color: str) -> float:
    """WCAG 2.1's contrast ratio of an opaque `rgb(r, g, b)` against white."""
    red, green, blue = (int(c) / 255 for c in re.findall(r"\d+", css_color)[:3])
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (red, green, blue)]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return 1.05 / (luminance + 0.05)


def test_the_focus_ring_stands_out_against_white(site, page):
    """WCAG 2.1 1.4.11: the ring was #9db0f5, 2.1:1 against white; it must be 3:1 or more."""
    page.goto(f"{site.url}/checkout/")
    for target in ["#email", "#pay-button"]:
        tab_to(page, target)
        ring = page.evaluate(
            "() => { const s = getComputedStyle(document.activeElement); "
            "return {color: s.outlineColor, width: parseFloat(s.outlineWidth), style: s.outlineStyle}; }"
        )
        assert ring["style"] == "solid" and ring["width"] >= 2, (target, ring)
        assert contrast_with_white(ring["color"]) >= 3, (target, ring)


def test_waiting_for_the_bank_is_announced_and_its_check_works_from_the_keyboard(site, page):
    page.goto(f"{site.url}/checkout/")
    page.fill("#email", "alan@example.com")
    page.locator("input[placeholder=number]").fill(CARD_3DS)
    for name, value in [("exp_month", "12"), ("exp_year", "34"), ("cvc", "123"), ("postal_code", "94110")]:
        page.locator(f"input[placeholder={name}]").fill(value)
    tab_to(page, "#pay-button")
    page.keyboard.press("Enter")
    expect(page.locator("#pay-status")).to_have_text("Waiting for your bank…")
    expect(page).to_have_title("Waiting for your bank · Checkout · PaidUp")
    complete = page.get_by_role("button", name="Complete authentication")
    expect(complete).to_be_focused()  # localstripe's dialog takes focus: Enter completes it
    page.keyboard.press("Enter")
    page.wait_for_url(ORDER_URL)
    expect(page).to_have_title(re.compile("^You're all set · "))
    order = Order.objects.get(email="alan@example.com")
    site.wait_for_webhook(order.stripe_payment_intent_id, timeout=15)


def test_the_card_fields_raw_errors_become_a_plain_sentence(site, page):
    """Issue 10, item 7: localstripe's fake Stripe.js with an empty card threw "Cannot read
    properties of undefined (reading 'card')", and the page showed it; Stripe answered "Bad
    request" for a card it could not take. Both are now one plain sentence, with focus on it."""
    page.goto(f"{site.url}/checkout/")
    page.fill("#email", "ada@example.com")
    page.click("#pay-button")  # no card typed at all
    error = page.locator("#form-error")
    expect(error).to_be_focused()
    expect(error).to_have_text(re.compile(r"^We couldn't read your card details\. .*You have not been charged\.$"))
    assert "Cannot read" not in error.inner_text() and "undefined" not in error.inner_text()
    assert not Order.objects.exists()


# A Stripe.js whose createToken answers like Stripe does to a request it cannot take.
BAD_REQUEST_STRIPE_JS = """
Object.defineProperty(window, "Stripe", {
  configurable: true,
  get() { return undefined; },
  set(fake) {
    Object.defineProperty(window, "Stripe", {configurable: true, writable: true, value: function (key) {
      const stripe = fake(key);
      stripe.createToken = async () => ({error: {type: "invalid_request_error", message: "Bad request"}});
      return stripe;
    }});
  },
});
"""


def test_a_bad_request_from_stripe_js_is_not_shown_as_is(site, page):
    page.add_init_script(BAD_REQUEST_STRIPE_JS)
    page.goto(f"{site.url}/checkout/")
    page.fill("#email", "ada@example.com")
    page.locator("input[placeholder=number]").fill(CARD_OK)
    page.click("#pay-button")
    error = page.locator("#form-error")
    expect(error).to_be_focused()
    expect(error).to_contain_text("We couldn't read your card details")
    assert "Bad request" not in error.inner_text()
    assert not Order.objects.exists()


ORDER_STATES = {
    "pending": lambda: order_in("pending"),
    "processing": lambda: order_in(
        "pending", stripe_payment_intent_id="pi_unknownToLocalstripeA", stripe_payment_status="processing"
    ),
    "declined": lambda: order_in(
        "pending", stripe_payment_intent_id="pi_unknownToLocalstripeB", stripe_payment_status="declined"
    ),
    "paid": lambda: order_in("paid", paid_at=timezone.now(), charged_at=timezone.now()),
    "failed": lambda: order_in("failed", failed_at=timezone.now()),
    "refunded": lambda: order_in("refunded", paid_at=timezone.now(), refunded_at=timezone.now()),
}


@pytest.mark.parametrize("state", ORDER_STATES)
def test_every_order_page_state_passes_axe(site, page, state):
    order = ORDER_STATES[state]()
    page.goto(site.url + order_links.order_path(order.reference))  # the link from its emails
    expect(page.locator("h1")).to_be_visible()
    assert page.title().endswith(f" · Order {order.reference} · PaidUp") and not page.title().startswith("Order PU-")
    audit(page, f"order-{state}")


def test_the_waiting_order_page_updates_in_place_and_says_so(site, page):
    """No reload (WCAG 2.2.1): the page polls the JSON, swaps its story in, announces it in
    the role=status region and the title; focus stays where the customer is."""
    order = order_in("pending")
    page.goto(site.url + order_links.order_path(order.reference))  # the link from its emails
    expect(page.locator("[data-view=awaiting_payment]")).to_be_visible()
    assert page.locator("head > meta[http-equiv=refresh]").count() == 0
    assert page.locator("noscript").count() >= 1  # the slow reload is kept for no script
    page.evaluate("window.stillTheSamePage = true")
    tab_to(page, "a.button")  # "Return to checkout": the keyboard user is somewhere on the page

    Order.objects.filter(pk=order.pk).update(state=Order.State.FAILED, failed_at=timezone.now())
    expect(page.locator("[data-view=not_charged]")).to_be_visible(timeout=20_000)
    assert page.evaluate("window.stillTheSamePage") is True  # updated in place, never reloaded
    expect(page.locator("#order-live")).to_have_text("This order was not completed")
    expect(page).to_have_title(re.compile(f"^Order not completed, not charged · Order {order.reference}"))
    expect(page.locator("h1")).to_be_focused()  # the link that had focus went with the old story
    audit(page, "order-updated-in-place", phone=False)


def test_a_paid_page_becomes_ready_without_a_reload(site, page):
    order = order_in("paid", paid_at=timezone.now(), charged_at=timezone.now())
    page.goto(site.url + order_links.order_path(order.reference))  # the link from its emails
    expect(page.locator("[data-view=setting_up]")).to_be_visible()
    page.evaluate("window.stillTheSamePage = true")
    fulfil(order, via=Order.Via.WEBHOOK)
    expect(page.get_by_role("heading", name="You're all set")).to_be_visible(timeout=20_000)
    assert page.evaluate("window.stillTheSamePage") is True
    expect(page.locator("#order-live")).to_have_text("You're all set")


def test_sign_in_help_and_account_pass_axe_with_their_errors_linked(site, page):
    page.goto(f"{site.url}/account/sign-in/")
    audit(page, "signin")
    page.fill("#id_email", "not-an-address")
    page.keyboard.press("Enter")
    field = page.locator("#id_email")
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#" + field.get_attribute("aria-describedby"))).to_contain_text("doesn't look like")
    expect(field).to_be_focused()
    audit(page, "signin-error")

    page.goto(f"{site.url}/help/charged/")
    audit(page, "help")
    page.fill("#id_email", "ada@")  # (too long cannot be typed here: the field's maxlength stops it)
    page.fill("#id_card_last4", "42")
    page.click("button[type=submit]")
    for name, words in [("email", "doesn't look like"), ("card_last4", "4 numbers")]:
        field = page.locator(f"#id_{name}")
        expect(field).to_have_attribute("aria-invalid", "true")
        described = field.get_attribute("aria-describedby").split()
        assert f"id_{name}_error" in described
        expect(page.locator(f"#id_{name}_error")).to_contain_text(words)
    page.locator("#form-errors a").first.click()  # the summary's link takes focus to the field
    expect(page.locator("#id_email")).to_be_focused()
    audit(page, "help-error")

    fulfil(order_in("paid", paid_at=timezone.now(), charged_at=timezone.now()), via=Order.Via.WEBHOOK)
    signed_in(page, site, User.objects.get(email="ada@example.com"))
    page.goto(f"{site.url}/account/")
    expect(page.locator("#subscription-status")).to_contain_text("active")
    audit(page, "account")


# --- the console ------------------------------------------------------------------------


@pytest.fixture
def console(site, page):
    """A support person with every permission (the queue shows the attach link), signed in,
    and a queue with work in it."""
    person = User.objects.create_user("sue@paidup.example", is_staff=True, is_superuser=True)
    person.groups.add(support_group("Support"))
    paid = OrderFactory(
        email="dora.with-a-longer-address@example.com",
        state="paid",
        paid_at=timezone.now() - timedelta(minutes=12),
        stripe_payment_intent_id="pi_3QxYzAbCdEfGhIjKlMnOpQr0",
    )
    # A timeline and an email as a real order has them: long actors, ids and addresses.
    paid.log("order:created", "Checkout started.", actor="customer")
    paid.log("order:paid", "Paid (pi_3QxYzAbCdEfGhIjKlMnOpQr0).", actor="system:reconciliation")
    paid.log("support:claim", "On it for 30 minutes.", actor="support:sue@paidup.example")
    OutboundEmail.objects.create(
        order=paid,
        kind="recovery",
        to=paid.email,
        status="failed",
        subject="s",
        body_text="t",
        body_html="h",
        last_error="421 4.7.0 Try again later, closing connection. (throttled by the receiving server)",
    )
    SupportCase.objects.create(
        email="jo@example.com",
        order=paid,
        message="Charged twice?",
        diagnosis=f"{paid.reference} (paid, $249.00): Charged, no access yet.\n    Suggested: Fulfil",
    )
    OutboundEmail.objects.create(
        kind="signin",
        to="kim@exmaple.com",
        status="failed",
        subject="s",
        body_text="t",
        body_html="h",
        last_error="550 5.1.1 no such domain",
    )
    signed_in(page, site, person)
    return paid


def test_the_console_pages_pass_axe(site, page, console):
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(f"{site.url}/admin/")
    expect(page.locator("#pu-queue")).to_contain_text("Charged, no access yet")
    attach = page.get_by_role("link", name="Attach a Stripe payment")
    assert attach.evaluate("(a) => getComputedStyle(a).textDecorationLine") == "underline"  # not colour alone
    audit(page, "console-queue")

    page.goto(f"{site.url}/admin/billing/order/{console.pk}/change/")
    expect(page.locator("#pu-sentence")).to_be_visible()
    audit(page, "console-order")

    page.goto(f"{site.url}/admin/system/")
    expect(page.locator("#pu-days")).to_be_visible()
    audit(page, "console-system")

    page.goto(f"{site.url}/admin/billing/order/{console.pk}/act/extend/")
    audit(page, "console-action")
    page.fill("#id_days", "999")
    page.click("#pu-confirm")
    days = page.locator("#id_days")
    expect(days).to_have_attribute("aria-invalid", "true")
    for reference in days.get_attribute("aria-describedby").split():
        assert page.locator(f"#{reference}").count() == 1, reference
    expect(page.locator("#id_days_error")).to_be_visible()
    audit(page, "console-action-error")


WIDER_THAN_SCREEN = """() => {
  const width = document.documentElement.clientWidth;
  return [...document.querySelectorAll("body *")]
    .filter((e) => e.getBoundingClientRect().right > width + 1 && getComputedStyle(e).position !== "fixed")
    .filter((e) => !e.closest("details:not([open])"))
    .slice(0, 8)
    .map((e) => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") +
      (e.className ? "." + String(e.className).split(" ").join(".") : "") +
      " right=" + Math.round(e.getBoundingClientRect().right));
}"""


def test_the_console_fits_a_phone_and_a_wide_screen(site, page, console):
    """Issue 10, item 7: the order page was 560 px wide on a 390 px phone; the queue sat in 600 px
    of a 1280 px screen, its "Who's on it" header one letter a line."""
    page.set_viewport_size({"width": 390, "height": 844})
    for url in [
        f"/admin/billing/order/{console.pk}/change/",
        "/admin/",
        f"/admin/billing/order/{console.pk}/act/refund/",
        "/admin/system/",
    ]:
        page.goto(site.url + url)
        wide = page.evaluate("document.documentElement.scrollWidth")
        assert wide <= 390, f"{url} is {wide} px wide on a 390 px phone: {page.evaluate(WIDER_THAN_SCREEN)}"
    page.goto(f"{site.url}/admin/billing/order/{console.pk}/change/")
    shoot(page, "console-order-phone")

    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(f"{site.url}/admin/")
    queue = page.locator("#pu-queue").bounding_box()
    assert queue["width"] >= 1000, f"the queue is {queue['width']} px of 1280"
    header = page.get_by_role("columnheader", name="Who's on it")
    line = page.evaluate("parseFloat(getComputedStyle(document.querySelector('.pu-table th')).lineHeight) || 16")
    assert header.bounding_box()["height"] < 2.5 * line + 12, "the header wraps"
    shoot(page, "console-queue-1280")


def test_the_dev_email_viewer_shows_the_whole_email(site, page):
    """Issue 10, item 7: the dev outbox framed every email at a fixed 34rem, cutting long ones off."""
    long_body = (
        "<html><body>" + "".join(f"<p>Line {n} of a long email.</p>" for n in range(80)) + "<p id=end>The end</p>"
    )
    email = OutboundEmail.objects.create(
        kind="signin", to="ada@example.com", subject="A long one", body_text="t", body_html=long_body + "</body></html>"
    )
    page.goto(f"{site.url}/dev/emails/{email.pk}/")
    frame = page.locator("#email-frame")
    expect(frame).to_have_attribute("style", re.compile(r"height: ?\d+px"))
    inside = page.frame_locator("#email-frame").locator("#end")
    expect(inside).to_have_text("The end")
    frame_box, end_box = frame.bounding_box(), inside.bounding_box()
    assert end_box["y"] + end_box["height"] <= frame_box["y"] + frame_box["height"], "the email is cut off"
    assert frame_box["height"] > 34 * 16 * 2  # far taller than the old fixed frame
    shoot(page, "dev-email-long")


def test_the_staff_sign_in_pages_pass_axe(site, page, pages):
    """Issue 12: the invite's password page, the enrol page (QR code), the backup codes and
    "Confirm it's you" with an error, as a new support person meets them."""
    from django.urls import reverse
    from django_otp.oath import totp
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from support.invites import make_token
    from tests.fixtures.console import current_code

    passphrase = "a long support passphrase"
    person = User.objects.create_user("new@paidup.example", is_staff=True)
    person.groups.add(support_group("Support"))
    page.goto(site.url + reverse("admin:staff_invite", args=[make_token(person)]))
    audit(page, "staff-invite")
    page.fill("#id_new_password1", passphrase)
    page.fill("#id_new_password2", passphrase)
    page.click("#pu-set-password")
    expect(page.locator("#pu-qr svg")).to_be_visible()
    audit(page, "staff-enrol")
    device = TOTPDevice.objects.get(user=person, confirmed=False)
    page.fill("#id_code", f"{totp(device.bin_key, device.step, device.t0, device.digits, device.drift):06d}")
    page.click("#pu-enrol")
    expect(page.locator("#pu-codes li")).to_have_count(10)
    audit(page, "staff-backup-codes")
    # On a phone each code stays on one line (one line box per code), so it is copied whole.
    page.set_viewport_size({"width": MOBILE["width"], "height": MOBILE["height"]})
    assert page.locator("#pu-codes code").evaluate_all("codes => codes.map(c => c.getClientRects().length)") == [1] * 10
    shoot(page, "staff-backup-codes-phone")
    page.set_viewport_size({"width": DESKTOP["width"], "height": DESKTOP["height"]})
    page.click("#pu-continue")
    expect(page.locator("#pu-queue")).to_be_visible()

    other = pages.new()
    other.goto(f"{site.url}/admin/")
    other.fill("#id_username", person.email)
    other.fill("#id_password", passphrase)
    other.click("input[type=submit]")
    other.fill("#id_code", "000000" if current_code(person) != "000000" else "111111")
    other.click("#pu-verify")
    expect(other.locator("#pu-error")).to_contain_text("That code didn't work")
    audit(other, "staff-verify-error")
