"""The pages after a refund, as a browser shows them (desktop and a 390 px phone), and the
refund email as a mail client shows it. Screenshots in artifacts/screenshots/refund-*.png."""

import pytest
from playwright.sync_api import expect

from billing import order_links, refunds
from billing.models import OutboundEmail
from tests.factories import stripe_paid_order
from tests.fixtures import stripe_objects as so
from tests.fixtures.browser import shoot, shoot_mobile

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("browser"), pytest.mark.django_db(transaction=True)]


def test_a_partial_refund_reads_right_on_the_order_page_and_in_its_email(live_server, fake_stripe, page, pages, plan):
    order = stripe_paid_order(fake_stripe, state="fulfilled")
    refunds.note_card(order, "4242")
    refunds.record_refund(order, so.refund(order.stripe_payment_intent_id, 5000, refund_id="re_shot"), actor="test")

    page.goto(live_server.url + order_links.order_path(order.reference))  # the link from its emails
    expect(page.locator("#refunds")).to_contain_text("$50.00 refunded on")
    expect(page.locator("#refunds")).to_contain_text("Your access continues until")
    expect(page.locator("dl.facts")).to_contain_text("$50.00 of $249.00")
    shoot(page, "refund-order-partial")
    shoot_mobile(pages, page.url, "refund-order-partial-mobile")

    page.set_content(OutboundEmail.objects.get(order=order, kind="refund").body_html)
    expect(page.locator("body")).to_contain_text("card ending in 4242")
    shoot(page, "refund-email-partial")
