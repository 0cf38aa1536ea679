"""Disputes and early fraud warnings in the support console: the queue, the order page, the
evidence pack (review, edit, submit once) and "Refund in full and end access".

Every action goes through the admin's confirmation page (GET) and its POST, as a browser does.
The double-click race is PostgreSQL only (row locks), like tests/test_support_races.py.
"""

import html as html_lib
import re
import threading
import time
import uuid
from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from billing import disputes, fraud_warnings, gateway
from billing.models import Dispute, Order
from support.replies import replies_for
from tests.fixtures import stripe_disputes
from tests.fixtures.console import act_url, change_url, client_for, fulfilled_order, staff
from tests.test_races import race, run_together

pytestmark = pytest.mark.django_db


def text(response) -> str:
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", response.content.decode(), flags=re.S)
    return html_lib.unescape(" ".join(re.sub(r"<[^>]+>", " ", html).split()))


def disputed(stripe_api, *, due_in_days: float = 6.01, reason: str = "fraudulent") -> tuple[Order, Dispute]:
    order = fulfilled_order(stripe_api)
    du = stripe_disputes.dispute(payment_intent=order.stripe_payment_intent_id, due_in_days=due_in_days, reason=reason)
    dispute = disputes.record_dispute(du, event_created=int(time.time()), actor="stripe:webhook")
    return order, dispute


def warned(stripe_api) -> Order:
    order = fulfilled_order(stripe_api)
    warning = stripe_disputes.early_fraud_warning(payment_intent=order.stripe_payment_intent_id)
    fraud_warnings.record_warning(warning, event_created=int(time.time()), actor="stripe:webhook")
    return order


def evidence_form(client: Client, order: Order) -> dict:
    """The evidence page's form as the browser would post it back, with the box ticked."""
    page = client.get(act_url(order, "evidence")).content.decode()
    fields = dict(re.findall(r'<textarea name="([a-z_]+)"[^>]*>\s*(.*?)</textarea>', page, flags=re.S))
    token = re.search(r'name="token" value="([^"]+)"', page).group(1)
    return {
        **{k: v.replace("&#x27;", "'").replace("&quot;", '"').replace("&amp;", "&") for k, v in fields.items()},
        "token": token,
        "confirm": "on",
    }


# --- the queue and the order page -----------------------------------------------------------


def test_the_queue_shows_disputes_first_by_due_date_with_a_countdown(ana, stripe_api):
    later, _ = disputed(stripe_api, due_in_days=9.01)
    sooner, _ = disputed(stripe_api, due_in_days=3.01)
    page = text(client_for(ana).get(reverse("admin:index")))
    row = page.index("Disputes: evidence due")
    assert row < page.index("Charged, no access yet")
    assert page.index(sooner.reference, row) < page.index(later.reference, row)
    assert "evidence due in 3 days, by" in page and "evidence due in 9 days, by" in page


def test_the_queue_lists_an_open_early_fraud_warning(ana, stripe_api):
    order = warned(stripe_api)
    page = text(client_for(ana).get(reverse("admin:index")))
    assert "Early fraud warnings" in page and order.reference in page[page.index("Early fraud warnings") :]


def test_the_order_page_diagnoses_a_dispute_and_suggests_the_evidence(ana, stripe_api):
    order, dispute = disputed(stripe_api)
    page = text(client_for(ana).get(change_url(order)))
    assert "Disputed by the customer's bank" in page and "evidence due in 6 days" in page
    assert "Submit dispute evidence" in page and dispute.stripe_dispute_id in page
    assert "Do not refund and do not email the customer" in page


def test_the_order_page_says_why_refunding_at_a_warning_is_usually_right(ben, stripe_api):
    order = warned(stripe_api)
    page = text(client_for(ben).get(change_url(order)))
    assert "early fraud warning" in page and "a refunded charge cannot be disputed" in page
    assert "Refund in full and end access" in page


def test_support_has_a_reply_for_a_customer_asking_about_a_dispute(stripe_api):
    order, _ = disputed(stripe_api)
    reply = next(r for r in replies_for(order) if r.key == "dispute")
    assert order.reference in reply.body and "$249.00" in reply.body
    assert "prove" in reply.body and "pay again" not in reply.body


# --- evidence -------------------------------------------------------------------------------------


def test_the_evidence_pack_is_shown_for_review_and_submitted_once_with_the_edits(ana, stripe_api):
    order, dispute = disputed(stripe_api)
    browser = client_for(ana)
    review = text(browser.get(act_url(order, "evidence")))
    assert "customer_email_address" in review and order.email in review and "access_activity_log" in review
    form = evidence_form(browser, order)
    form["uncategorized_text"] = "Edited by Ana: the customer used the product."
    response = browser.post(act_url(order, "evidence"), form)
    assert response.status_code == 302
    [(sent_id, sent, key)] = stripe_api.submitted
    assert sent_id == dispute.stripe_dispute_id and sent["uncategorized_text"].startswith("Edited by Ana")
    assert set(sent) <= stripe_disputes.evidence_field_names() and key.startswith(f"dispute-{dispute}-evidence-")
    dispute.refresh_from_db()
    assert dispute.evidence_submitted_at and dispute.evidence_submitted_by == "support:ana@paidup.example"
    assert dispute.status == "under_review"
    assert order.events.get(kind="dispute:evidence_submitted").actor == "support:ana@paidup.example"
    assert LogEntry.objects.get(object_id=str(order.pk)).change_message.startswith("Submit dispute evidence")
    # A second submit of the same page sends nothing more.
    again = browser.post(act_url(order, "evidence"), form)
    assert again.status_code == 302 and len(stripe_api.submitted) == 1


def test_evidence_is_not_sent_without_the_confirmation_box(ana, stripe_api):
    order, dispute = disputed(stripe_api)
    browser = client_for(ana)
    form = evidence_form(browser, order)
    del form["confirm"]
    assert browser.post(act_url(order, "evidence"), form).status_code == 400
    assert stripe_api.submitted == [] and not order.events.filter(kind="dispute:evidence_submitted").exists()


def test_a_stripe_error_is_shown_not_raised_and_nothing_is_recorded(ana, stripe_api):
    order, dispute = disputed(stripe_api)
    browser = client_for(ana)
    stripe_api.fail("submit", "500")
    response = browser.post(act_url(order, "evidence"), evidence_form(browser, order))
    assert response.status_code == 400 and "Stripe refused the evidence" in text(response)
    dispute.refresh_from_db()
    assert dispute.evidence_submitted_at is None and not LogEntry.objects.exists()
    # The page comes back with a fresh key: Stripe would replay a saved 500 under the old one.
    old = evidence_form(browser, order)["token"]
    assert re.search(r'name="token" value="([^"]+)"', response.content.decode()).group(1) != old


def test_submitting_evidence_needs_its_permission_csrf_and_a_post(stripe_api):
    order, _ = disputed(stripe_api)
    nobody = staff("view@paidup.example", perms=("billing.view_order",))
    assert client_for(nobody).get(act_url(order, "evidence")).status_code == 403
    assert client_for(nobody).post(act_url(order, "evidence"), {"confirm": "on"}).status_code == 403
    ana = staff("ana@paidup.example", "Support")
    strict = client_for(ana, enforce_csrf_checks=True)
    assert strict.post(act_url(order, "evidence"), {"confirm": "on", "token": str(uuid.uuid4())}).status_code == 403
    assert client_for(ana).put(act_url(order, "evidence")).status_code == 404
    assert stripe_api.submitted == []


def test_an_order_without_a_dispute_has_no_evidence_to_send(ana, stripe_api):
    order = fulfilled_order(stripe_api)
    response = client_for(ana).post(act_url(order, "evidence"), {"confirm": "on", "token": str(uuid.uuid4())})
    assert response.status_code == 400 and "no dispute waiting for evidence" in text(response)


# --- early fraud warning: refund in full ------------------------------------------------------


def test_refund_in_full_and_end_access_at_a_warning(ben, stripe_api, django_capture_on_commit_callbacks):
    order = warned(stripe_api)
    browser = client_for(ben)
    page = browser.get(act_url(order, "refund_warning")).content.decode()
    token = re.search(r'name="token" value="([^"]+)"', page).group(1)
    with django_capture_on_commit_callbacks(execute=True):
        assert browser.post(act_url(order, "refund_warning"), {"token": token}).status_code == 302
        assert browser.post(act_url(order, "refund_warning"), {"token": token}).status_code in (302, 400)
    order.refresh_from_db()
    assert order.state == "refunded" and order.refunded_cents == 24900 and len(stripe_api.refunds) == 1
    assert not order.subscription.is_active
    assert "Early fraud warning" in order.refunds.get().reason


def test_refunding_at_a_warning_needs_the_refund_permission(ana, stripe_api):
    order = warned(stripe_api)
    assert client_for(ana).post(act_url(order, "refund_warning"), {"token": str(uuid.uuid4())}).status_code == 403
    assert stripe_api.refunds == []


# --- the double click, for real (PostgreSQL) -----------------------------------------------------


@race
def test_evidence_submitted_twice_at_once_reaches_stripe_once(stripe_api, monkeypatch):
    order, dispute = disputed(stripe_api)
    ana = staff("ana@paidup.example", "Support")
    submit, lock = gateway.submit_dispute_evidence, threading.Lock()
    calls = []

    def slow_submit(*args, **kwargs):
        with lock:
            calls.append(args[0])
        time.sleep(0.3)  # Stripe's time to answer: the window a second request could use
        return submit(*args, **kwargs)

    monkeypatch.setattr(gateway, "submit_dispute_evidence", slow_submit)
    browsers = [client_for(ana), client_for(ana)]
    forms = [evidence_form(browsers[0], order), evidence_form(browsers[1], order)]
    responses = run_together(
        *[lambda b=b, f=f: b.post(act_url(order, "evidence"), f) for b, f in zip(browsers, forms, strict=True)]
    )
    assert sorted(r.status_code for r in responses) == [302, 302]
    assert len(calls) == 1 and len(stripe_api.submitted) == 1
    assert order.events.filter(kind="dispute:evidence_submitted").count() == 1
    dispute.refresh_from_db()
    assert dispute.evidence_submitted_at is not None


def test_a_reminder_is_not_sent_for_a_dispute_whose_evidence_went_in(ana, stripe_api):
    order, dispute = disputed(stripe_api, due_in_days=2)
    browser = client_for(ana)
    browser.post(act_url(order, "evidence"), evidence_form(browser, order))
    assert disputes.send_reminders(timezone.now() + timedelta(hours=1)) == 0
