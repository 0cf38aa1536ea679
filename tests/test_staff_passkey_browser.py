"""A support person's passkey in a real browser: Chromium, with the DevTools Protocol's virtual
authenticator standing in for the laptop's fingerprint reader (tests/fixtures/passkeys.py).

The story, against a live server and localstripe: Sue's first day (password, then "Add a
passkey" on the enrol page, then her backup codes), signing out, signing in again with password +
passkey, the password alone opening no admin page, and a full refund confirmed with the passkey.
Every page she visits is watched for Content-Security-Policy violations, console errors and
JavaScript errors: any fails the test. Screenshots: artifacts/screenshots/passkey-*.png.
"""

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from accounts.models import User
from billing.models import Order
from tests.factories import PlanFactory
from tests.fixtures.browser import shoot, shoot_mobile
from tests.fixtures.console import support_group
from tests.fixtures.passkeys import credentials_in, passkey_site, virtual_authenticator

pytestmark = [pytest.mark.browser, pytest.mark.localstripe, pytest.mark.usefixtures("browser")]

PASSWORD = "a long support passphrase"
VISA = "4242424242424242"


class Watcher:
    """What the browser complains about on every page: console errors (a refused script or
    style says "Refused to … Content Security Policy"), CSP violation reports, uncaught errors."""

    def __init__(self, page):
        self.problems: list[str] = []
        page.on("console", self.console)
        page.on("pageerror", lambda error: self.problems.append(f"{page.url}: {error}"))

    def console(self, message) -> None:
        url = message.location.get("url", "")
        if url.endswith("/favicon.ico"):
            return  # the browser's own request for a tab icon the site does not have, not the page's
        text = message.text
        if message.type == "error" or "Content Security Policy" in text or "Refused to" in text:
            self.problems.append(f"{message.type}: {text} ({url})")


@pytest.fixture
def site(stripe_site, settings):
    passkey_site(settings, stripe_site.url)  # the live server's http://localhost:<port>
    PlanFactory()
    return stripe_site


@pytest.fixture
def sue(db) -> User:
    person = User.objects.create_user("sue@paidup.example", PASSWORD, is_staff=True)
    person.groups.add(support_group("Support"), support_group("Support: refunds"))
    return person


def password_sign_in(page, url: str, person: User) -> None:
    page.goto(url)
    page.fill("#id_username", person.email)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")


def test_a_support_person_enrols_a_passkey_signs_in_with_it_and_confirms_a_refund(site, sue, page, pages, time_machine):
    time_machine.move_to(timezone.now(), tick=True)
    assert site.pay("dora@example.com", VISA).status_code == 200
    order = Order.objects.get(email="dora@example.com", state=Order.State.FULFILLED)
    watcher = Watcher(page)
    cdp, authenticator = virtual_authenticator(page)

    # First day: password, then the enrol page offers a passkey first.
    password_sign_in(page, f"{site.url}/admin/", sue)
    page.wait_for_url("**/admin/enrol/**")
    expect(page.locator("#passkey-register-button")).to_have_text("Add a passkey")
    shoot(page, "passkey-enrol")
    shoot_mobile(pages, page.url, "passkey-enrol-mobile", storage_state=page.context.storage_state())
    page.fill("#pu-passkey-name", "Work laptop")
    page.click("#passkey-register-button")
    expect(page.locator("#pu-codes li")).to_have_count(10)  # then her backup codes, as with an app
    page.click("#pu-continue")
    expect(page.locator("#pu-queue")).to_be_visible()
    assert len(credentials_in(cdp, authenticator)) == 1
    assert [p.name for p in sue.webauthncredential_set.all()] == ["Work laptop"]

    # Signed out, then back: the password alone opens no admin page, not even by its address.
    page.locator("#logout-form button").click()
    order_page = f"{site.url}/admin/billing/order/{order.pk}/change/"
    password_sign_in(page, order_page, sue)
    page.wait_for_url("**/admin/confirm/**")
    page.goto(order_page)
    page.wait_for_url("**/admin/confirm/**")
    expect(page.locator("body")).not_to_contain_text(order.email)
    expect(page.locator("#passkey-verification-button")).to_have_text("Use a passkey")
    shoot(page, "passkey-verify")
    shoot_mobile(pages, page.url, "passkey-verify-mobile", storage_state=page.context.storage_state())

    # Password + passkey: straight on to the page she asked for.
    page.click("#passkey-verification-button")
    page.wait_for_url(order_page)
    expect(page.locator("#pu-sentence")).to_be_visible()

    # Ten minutes later, a full refund asks for a fresh verification; the passkey gives it.
    time_machine.shift(timedelta(minutes=10))
    page.goto(f"{site.url}/admin/billing/order/{order.pk}/act/refund/")
    page.get_by_label("Reason").fill("Asked for the money back")
    page.click("#pu-confirm")  # Continue: the last question, in money
    expect(page.locator("#pu-question")).to_contain_text("Refund $249.00 of $249.00")
    page.click("#pu-confirm")  # Yes, refund $249.00
    page.wait_for_url("**/admin/confirm/**")
    expect(page.locator("#pu-refund-waiting")).to_contain_text("nothing has been refunded yet")
    shoot(page, "passkey-reverify-refund")
    order.refresh_from_db()
    assert order.refunded_cents == 0
    page.click("#passkey-verification-button")
    expect(page.locator("#pu-question")).to_contain_text("Refund $249.00 of $249.00")  # kept as typed
    page.click("#pu-confirm")
    expect(page.locator(".messagelist")).to_contain_text(f"Refunded $249.00 on {order.reference}")

    order.refresh_from_db()
    assert order.refunded_cents == 24900 and order.state == Order.State.REFUNDED

    # Her sign-in methods: the passkey by name, when it was last used, and no way to remove the last one.
    page.goto(f"{site.url}/admin/")
    page.click("#pu-sign-in-methods-link")
    expect(page.locator("#pu-passkeys")).to_contain_text("Work laptop")
    expect(page.locator("#pu-passkeys")).to_contain_text("last used")
    expect(page.locator("#pu-passkeys")).to_contain_text("Your only way to confirm it's you")
    shoot(page, "passkey-methods")
    shoot_mobile(pages, page.url, "passkey-methods-mobile", storage_state=page.context.storage_state())
    assert watcher.problems == []
