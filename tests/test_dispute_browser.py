"""A support person sees a dispute at the top of the queue with its countdown, reviews the
evidence pack, edits it and submits it; and refunds a payment an early fraud warning names in
one click. In a real browser (Chromium through Playwright).

Stripe is the one fake at billing.gateway (pytest-django's live server runs in this process).
Screenshots: artifacts/screenshots/support-dispute-*.png and support-fraud-warning-*.png (desktop
and 390 px phone); the ones in docs/support.md are copies.
"""

import time

import pytest
from playwright.sync_api import expect

from accounts.models import User
from billing import disputes, fraud_warnings
from billing.models import Dispute
from tests.fixtures import stripe_disputes
from tests.fixtures.browser import shoot, shoot_mobile
from tests.fixtures.console import admin_signin, fulfilled_order, support_group

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "a long support passphrase"


def test_a_dispute_is_found_at_the_top_reviewed_and_submitted(live_server, fake_stripe, plan, page, pages):
    order = fulfilled_order(fake_stripe)
    du = stripe_disputes.dispute(payment_intent=order.stripe_payment_intent_id, due_in_days=6.01, reason="fraudulent")
    disputes.record_dispute(du, event_created=int(time.time()), actor="stripe:webhook")
    person = User.objects.create_user("sue@paidup.example", PASSWORD, is_staff=True)
    person.groups.add(support_group("Support"))

    admin_signin(page, live_server.url, person, PASSWORD)
    row = page.locator("#queue-disputes")
    expect(row).to_contain_text(order.reference)
    expect(row).to_contain_text("evidence due in 6 days, by")
    shoot(page, "support-dispute-queue")
    shoot_mobile(
        pages, f"{live_server.url}/admin/", "support-dispute-queue-phone", storage_state=page.context.storage_state()
    )

    page.get_by_role("link", name=order.reference).first.click()
    expect(page.locator("#pu-sentence")).to_contain_text("Disputed by the customer's bank")
    evidence = page.locator("#pu-actions a[data-action=evidence]")
    expect(evidence).to_have_class("pu-button pu-primary")
    evidence.click()
    cover = page.locator("textarea[name=uncategorized_text]")
    expect(cover).to_contain_text("The cardholder bought this subscription themselves")
    expect(page.locator("textarea[name=customer_email_address]")).to_have_value(order.email)
    cover.fill("The cardholder bought it and signed in twice since; see the activity log.")
    page.check("input[name=confirm]")
    shoot(page, "support-dispute-evidence")
    shoot_mobile(pages, page.url, "support-dispute-evidence-phone", storage_state=page.context.storage_state())
    page.locator("#pu-confirm").click()

    expect(page.locator(".messagelist")).to_contain_text("submitted to Stripe")
    expect(page.locator("#pu-timeline")).to_contain_text("support:sue@paidup.example")
    [(_, sent, _)] = fake_stripe.submitted
    assert sent["uncategorized_text"].startswith("The cardholder bought it and signed in twice")
    assert Dispute.objects.get().evidence_submitted_by == "support:sue@paidup.example"


def test_an_early_fraud_warning_is_found_in_the_queue_and_refunded_in_full(live_server, fake_stripe, plan, page, pages):
    order = fulfilled_order(fake_stripe)
    warning = stripe_disputes.early_fraud_warning(payment_intent=order.stripe_payment_intent_id)
    fraud_warnings.record_warning(warning, event_created=int(time.time()), actor="stripe:webhook")
    person = User.objects.create_user("ben@paidup.example", PASSWORD, is_staff=True)
    person.groups.add(support_group("Support"), support_group("Support: refunds"))

    admin_signin(page, live_server.url, person, PASSWORD)
    row = page.locator("#queue-warnings")
    expect(row).to_contain_text(order.reference)
    expect(row).to_contain_text("early fraud warning: made_with_stolen_card")

    row.get_by_role("link", name=order.reference).first.click()
    expect(page.locator("#pu-sentence")).to_contain_text("The card issuer sent an early fraud warning")
    refund = page.locator("#pu-actions a[data-action=refund_warning]")
    expect(refund).to_have_text("Refund in full and end access")
    shoot(page, "support-fraud-warning-order")
    shoot_mobile(pages, page.url, "support-fraud-warning-order-phone", storage_state=page.context.storage_state())

    refund.click()
    expect(page.locator("body")).to_contain_text("a refunded charge cannot be disputed")
    shoot(page, "support-fraud-warning-confirm")
    page.locator("#pu-confirm").click()

    expect(page.locator("#pu-timeline")).to_contain_text("support:ben@paidup.example")
    order.refresh_from_db()
    assert (order.state, order.refunded_cents, len(fake_stripe.refunds)) == ("refunded", 24900, 1)
    assert not order.subscription.is_active
