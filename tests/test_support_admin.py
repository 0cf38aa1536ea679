"""The support console in Django admin: queue, search, order page, actions, permissions.

Stripe is faked at billing.gateway (FakeStripe). Every action goes through the admin's
confirmation page (GET) and its POST, as a support person's browser does.
"""

import re
import uuid
from datetime import timedelta

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from billing.models import Alert, Order, OutboundEmail, ReconciliationRun, Refund, Subscription
from support import mirror
from support.models import RefundRequest, SupportCase
from tests.factories import OrderFactory, UserFactory, payment_intent
from tests.fixtures.console import (
    act_url,
    change_url,
    client_for,
    fulfilled_order,
    paid_order,
    staff,
)
from tests.fixtures.gateway import _Obj

pytestmark = pytest.mark.django_db


# --- people -----------------------------------------------------------------------------


@pytest.fixture
def as_ana(ana):
    return client_for(ana)


@pytest.fixture
def as_ben(ben):
    return client_for(ben)


# --- Stripe and orders ------------------------------------------------------------------


def text(response) -> str:
    """The page as a person reads it: tags stripped, whitespace collapsed."""
    html = response.content.decode()
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def snapshot(order: Order) -> dict:
    order.refresh_from_db()
    return {
        "state": order.state,
        "refunded": order.refunded_cents,
        "events": order.events.count(),
        "refunds": Refund.objects.filter(order=order).count(),
        "requests": RefundRequest.objects.filter(order=order).count(),
        "subscriptions": Subscription.objects.filter(order=order).count(),
        "emails": OutboundEmail.objects.count(),
        "log": LogEntry.objects.count(),
        "claimed_by": order.claimed_by_id,
    }


def log_messages(order: Order) -> list[str]:
    return list(
        LogEntry.objects.filter(object_id=str(order.pk)).order_by("pk").values_list("change_message", flat=True)
    )


# --- the queue --------------------------------------------------------------------------


def test_it_shows_every_kind_of_work_on_the_landing_page_oldest_first(as_ana, stripe_api):
    from djstripe.models import WebhookEventTrigger

    newer = paid_order(stripe_api, minutes_ago=5, email="newer@example.com")
    older = paid_order(stripe_api, minutes_ago=90, email="older@example.com")
    # The checkout crashed after the charge, and the webhook is late: pending here, charged there.
    crashed = OrderFactory(
        email="crashed@example.com", stripe_payment_intent_id="pi_crash", stripe_payment_status="succeeded"
    )
    stuck = OrderFactory(email="")
    stuck.flag_attention("Stripe payment pi_x succeeded with no email.", actor="system:reconciliation")
    adopted = fulfilled_order(stripe_api, email="adopted@example.com", retroactive=True)
    Alert.objects.create(key="unknown_payment:x", reason=Alert.Reason.UNKNOWN_PAYMENT, order=adopted, message="m")
    SupportCase.objects.create(email="worried@example.com", message="I paid and have nothing")
    OutboundEmail.objects.create(
        kind="signin",
        to="bounced@example.com",
        status="failed",
        subject="s",
        body_text="t",
        body_html="h",
        last_error="550 mailbox unavailable",
    )
    WebhookEventTrigger.objects.create(
        body='{"type": "payment_intent.succeeded"}',
        headers={},
        remote_ip="127.0.0.1",
        valid=True,
        processed=False,
        exception="boom",
    )

    response = as_ana.get(reverse("admin:index"))

    assert response.status_code == 200
    page = text(response)
    assert "Needs a human now: 8" in page
    for title in (
        "3 Charged, no access yet",
        "1 Needs a decision",
        "1 Unknown payments recovered",
        "1 Open support cases",
        "1 Emails that could not be sent",
        "1 Stripe events that failed",
    ):
        assert title in page
    assert page.index(older.reference) < page.index(newer.reference) < page.index(crashed.reference)  # oldest first
    assert "oldest 1 h 30 min" in page
    assert stuck.reference in page and "no email" in page
    assert "worried@example.com" in page and "bounced@example.com" in page and "550 mailbox" in page
    assert "Reconciliation heartbeat" in page and "never ran" in page
    html = response.content.decode()
    assert f'href="{reverse("admin:billing_order_changelist")}?queue=paid"' in html
    assert f'href="{change_url(older)}"' in html


def test_it_says_so_when_nothing_needs_a_human(as_ana, plan):
    at = timezone.now() - timedelta(seconds=30)
    ReconciliationRun.objects.create(started_at=at, finished_at=at, ok=True)
    page = text(as_ana.get(reverse("admin:index")))
    assert "Nothing needs a human right now" in page
    assert re.search(r"last run 3\d s ago", page) and "Healthy" in page


def test_each_queue_row_links_to_its_filtered_list(as_ana, stripe_api):
    paid = paid_order(stripe_api)
    other = fulfilled_order(stripe_api)
    response = as_ana.get(reverse("admin:billing_order_changelist") + "?queue=paid")
    assert paid.reference in text(response) and other.reference not in text(response)


# --- search -----------------------------------------------------------------------------


@pytest.fixture
def haystack(stripe_api):
    """One order to find among others."""
    for _ in range(5):
        fulfilled_order(stripe_api)
    return paid_order(stripe_api, email="Needle@Example.com")


@pytest.mark.parametrize(
    "term",
    [
        lambda o: o.email,
        lambda o: o.email.lower(),
        lambda o: o.reference,
        lambda o: o.reference.lower().removeprefix("pu-"),
        lambda o: o.stripe_payment_intent_id,
        lambda o: o.stripe_customer_id,
        lambda o: f"  {o.stripe_payment_intent_id} ",
    ],
    ids=["email", "email-lowercase", "reference", "reference-typed-loosely", "pi", "cus", "pi-with-spaces"],
)
def test_it_finds_the_order_by_email_reference_or_stripe_id_in_a_few_queries(
    as_ana, haystack, term, django_assert_max_num_queries
):
    with django_assert_max_num_queries(12):
        response = as_ana.get(reverse("admin:billing_order_changelist"), {"q": term(haystack)})
    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [haystack]


def test_an_id_search_is_an_exact_indexed_lookup_not_a_scan(as_ana, haystack):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        as_ana.get(reverse("admin:billing_order_changelist"), {"q": haystack.stripe_payment_intent_id})
    searches = [q["sql"] for q in queries if 'FROM "billing_order"' in q["sql"] and "WHERE" in q["sql"]]
    assert searches
    for sql in searches:
        assert "LIKE" not in sql.upper()
        assert '"billing_order"."stripe_payment_intent_id" = ' in sql


def test_it_finds_the_order_by_charge_id_through_stripe_when_not_mirrored(as_ana, haystack):
    response = as_ana.get(reverse("admin:billing_order_changelist"), {"q": f"ch_{haystack.reference[3:]}"})
    assert list(response.context["cl"].result_list) == [haystack]


def test_it_finds_the_order_by_charge_id_in_dj_stripes_mirror_without_asking_stripe(as_ana, haystack, stripe_api):
    from djstripe.models import Charge, PaymentIntent

    PaymentIntent.objects.create(
        id=haystack.stripe_payment_intent_id, livemode=False, stripe_data={"status": "succeeded"}
    )
    Charge.objects.create(
        id="ch_mirrored1",
        livemode=False,
        amount=249,
        currency="usd",
        status="succeeded",
        payment_intent_id=haystack.stripe_payment_intent_id,
        stripe_data={},
    )
    stripe_api.down = True
    response = as_ana.get(reverse("admin:billing_order_changelist"), {"q": "ch_mirrored1"})
    assert list(response.context["cl"].result_list) == [haystack]


def test_a_charge_search_with_stripe_down_says_so_and_finds_nothing(as_ana, haystack, stripe_api):
    stripe_api.down = True
    response = as_ana.get(reverse("admin:billing_order_changelist"), {"q": "ch_unknown"}, follow=True)
    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == []
    assert "Could not ask Stripe about ch_unknown" in text(response)


def test_free_text_still_searches_emails(as_ana, haystack):
    response = as_ana.get(reverse("admin:billing_order_changelist"), {"q": "needle"})
    assert list(response.context["cl"].result_list) == [haystack]


# --- the order page ---------------------------------------------------------------------


def test_the_order_page_leads_with_the_diagnosis_and_the_suggested_action(as_ana, stripe_api):
    order = paid_order(stripe_api, email="ada@example.com")
    response = as_ana.get(change_url(order))
    assert response.status_code == 200
    page = text(response)
    assert "but not fulfilled: the customer has no access" in page
    assert page.index("not fulfilled: the customer has no access") < page.index("Timeline")
    html = response.content.decode()
    assert re.search(rf'class="pu-button pu-primary" href="{act_url(order, "fulfil")}"', html)
    # Ana cannot refund: no refund button at all.
    assert act_url(order, "refund") not in html
    assert "Checkout started." in page and "system:return" in page  # the timeline, with actors


def test_the_order_page_fills_the_reply_templates_and_lists_what_never_to_say(as_ana, stripe_api):
    order = fulfilled_order(stripe_api, email="ada@example.com")
    html = as_ana.get(change_url(order)).content.decode()
    replies = dict(re.findall(r'<textarea id="reply-text-(\w+)"[^>]*>(.*?)</textarea>', html, flags=re.S))
    assert set(replies) == {"acknowledge", "resolved", "refunded", "cant_find", "dispute"}
    for body in replies.values():
        assert "screenshot of" not in body.lower().replace("don't send a screenshot", "")
    assert order.reference in replies["resolved"] and "PaidUp Pro, one year" in replies["resolved"]
    assert "$249.00" in replies["resolved"] and "http://127.0.0.1:8000/account/sign-in/" in replies["resolved"]
    assert f"{order.subscription.ends_at:%-d %B %Y}" in replies["resolved"]
    assert "statement" in replies["cant_find"] and "please don&#x27;t send a screenshot" in replies["cant_find"]
    assert "Please don&#x27;t pay again" in replies["cant_find"]
    assert 'data-copy="reply-text-resolved"' in html
    page = text(as_ana.get(change_url(order)))
    assert "Never ask for proof of payment" in page and "Never ask them to pay again" in page


def test_the_order_page_asks_stripe_live_for_a_pending_order_and_spots_a_missed_webhook(as_ana, stripe_api):
    order = OrderFactory(stripe_payment_intent_id="pi_live1")
    stripe_api.intents["pi_live1"] = _Obj(payment_intent(order))
    page = text(as_ana.get(change_url(order)))
    assert "Stripe says the payment succeeded" in page and "Stripe says now: succeeded" in page


def test_the_order_page_renders_when_stripe_is_down(as_ana, stripe_api):
    order = OrderFactory(stripe_payment_intent_id="pi_live2")
    stripe_api.down = True
    response = as_ana.get(change_url(order))
    assert response.status_code == 200
    assert "Live Stripe status unknown: Stripe could not be asked" in text(response)


def test_a_charge_we_recorded_is_not_called_not_charged_when_stripe_is_down(as_ana, stripe_api):
    order = OrderFactory(stripe_payment_intent_id="pi_live3", stripe_payment_status="succeeded")
    stripe_api.down = True
    page = text(as_ana.get(change_url(order)))
    assert "Not charged" not in page
    assert "Stripe says the payment succeeded" in page and "Fulfil (it checks with Stripe first)" in page


def test_the_order_page_never_asks_stripe_for_a_settled_order(as_ana, stripe_api, django_assert_max_num_queries):
    order = fulfilled_order(stripe_api)
    stripe_api.down = True
    with django_assert_max_num_queries(31):  # one more since issue 12: the session's second factor
        response = as_ana.get(change_url(order))
    assert "Stripe could not be asked" not in text(response)


def test_the_order_page_shows_the_emails_and_their_status(as_ana, stripe_api):
    order = fulfilled_order(stripe_api)
    OutboundEmail.objects.filter(order=order).update(status="failed", last_error="550 no such user", attempts=6)
    page = text(as_ana.get(change_url(order)))
    assert "Recovery" in page and "Failed" in page and "550 no such user" in page
    assert "the access email was not delivered" in page


def test_the_order_page_shows_dj_stripes_mirror_linked_to_its_admin(stripe_api, ben, ana):
    from djstripe.models import PaymentIntent

    order = fulfilled_order(stripe_api)
    PaymentIntent.objects.create(
        id=order.stripe_payment_intent_id,
        livemode=False,
        stripe_data={"status": "succeeded", "amount": 24900, "currency": "usd"},
    )
    superuser = UserFactory(email="root@paidup.example", is_staff=True, is_superuser=True)
    html = client_for(superuser).get(change_url(order)).content.decode()
    link = reverse("admin:djstripe_paymentintent_change", args=[PaymentIntent.objects.get().pk])
    assert f'href="{link}"' in html and "$249.00" in html
    # Support cannot open dj-stripe's admin: the row is shown without the link.
    html = client_for(ana).get(change_url(order)).content.decode()
    assert order.stripe_payment_intent_id in html and link not in html


# --- actions: the confirmation step -----------------------------------------------------


def test_get_on_an_action_only_shows_its_confirmation(as_ana, stripe_api):
    order = paid_order(stripe_api)
    before = snapshot(order)
    response = as_ana.get(act_url(order, "fulfil"))
    assert response.status_code == 200
    assert "Ask Stripe whether" in text(response) and 'id="pu-confirm"' in response.content.decode()
    assert snapshot(order) == before


def test_no_action_is_done_without_csrf(ana, stripe_api):
    order = paid_order(stripe_api)
    browser = client_for(ana, enforce_csrf_checks=True)
    before = snapshot(order)
    assert browser.post(act_url(order, "fulfil")).status_code == 403
    assert browser.post(act_url(order, "note"), {"text": "hi"}).status_code == 403
    assert snapshot(order) == before
    # The same browser, with the token its confirmation page carries, can.
    page = browser.get(act_url(order, "fulfil")).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    assert browser.post(act_url(order, "fulfil"), {"csrfmiddlewaretoken": token}).status_code == 302
    order.refresh_from_db()
    assert order.state == Order.State.FULFILLED


def test_refresh_from_stripe_needs_csrf_and_a_post(ana, stripe_api):
    order = paid_order(stripe_api)
    browser = client_for(ana, enforce_csrf_checks=True)
    assert browser.post(reverse("admin:billing_order_refresh", args=[order.pk])).status_code == 403
    assert browser.get(reverse("admin:billing_order_refresh", args=[order.pk])).status_code == 302


def test_an_unknown_action_is_not_found(as_ana, stripe_api):
    order = paid_order(stripe_api)
    assert as_ana.post(act_url(order, "delete")).status_code == 404


# --- actions: happy paths ---------------------------------------------------------------


def test_it_fulfils_a_paid_order_after_asking_stripe(as_ana, ana, stripe_api, django_capture_on_commit_callbacks):
    order = paid_order(stripe_api, email="ada@example.com")
    with django_capture_on_commit_callbacks(execute=True):
        response = as_ana.post(act_url(order, "fulfil"))
    assert response.status_code == 302 and response.url == change_url(order)
    order.refresh_from_db()
    assert order.state == Order.State.FULFILLED and order.fulfilled_via == "support"
    assert order.events.filter(kind="state:fulfilled", actor="support:ana@paidup.example").exists()
    assert OutboundEmail.objects.get(order=order).kind == "recovery"
    entry = LogEntry.objects.get(object_id=str(order.pk))
    assert entry.user == ana and entry.action_flag == CHANGE and "Fulfil" in entry.change_message
    page = text(as_ana.get(change_url(order)))
    assert "fulfilled; the customer gets the recovery email" in page  # the message after the redirect


def test_fulfil_is_refused_when_stripe_says_the_payment_did_not_succeed(as_ana, stripe_api):
    order = paid_order(stripe_api)
    stripe_api.intents[order.stripe_payment_intent_id]["status"] = "requires_payment_method"
    before = snapshot(order)
    response = as_ana.post(act_url(order, "fulfil"))
    assert response.status_code == 400
    assert "Stripe says the payment is requires_payment_method" in text(response)
    assert snapshot(order) == before


def test_fulfil_when_stripe_is_down_says_so_and_changes_nothing(as_ana, stripe_api):
    order = paid_order(stripe_api)
    stripe_api.down = True
    before = snapshot(order)
    response = as_ana.post(act_url(order, "fulfil"))
    assert response.status_code == 400 and "Could not reach Stripe" in text(response)
    assert snapshot(order) == before


def test_it_resends_the_access_email(as_ana, stripe_api):
    order = fulfilled_order(stripe_api, email="ada@example.com")
    response = as_ana.post(act_url(order, "resend"))
    assert response.status_code == 302
    assert OutboundEmail.objects.filter(kind="signin", to="ada@example.com").count() == 1
    assert order.events.filter(kind="support:resend", actor="support:ana@paidup.example").exists()
    assert "Resend access email" in log_messages(order)[0]
    # The resent link shows among the order's emails.
    assert "Sign-in link" in text(as_ana.get(change_url(order)))


def test_it_refunds_part_then_the_rest(as_ben, ben, stripe_api, django_capture_on_commit_callbacks):
    order = fulfilled_order(stripe_api)
    form = as_ben.get(act_url(order, "refund"))
    assert form.status_code == 200
    token = form.context["form"]["token"].value()
    assert uuid.UUID(str(token)) and form.context["form"]["amount"].value() == "249.00"

    # "50" is fifty dollars, and the console asks once more, in money, before anything moves.
    typed = {"amount": "50", "reason": "Goodwill", "token": token}
    question = as_ben.post(act_url(order, "refund"), typed)
    assert question.status_code == 200
    assert "Refund $50.00 of $249.00 to the card ending 4242?" in text(question)
    assert "Yes, refund $50.00" in text(question)
    assert stripe_api.refunds == [] and not RefundRequest.objects.exists()
    response = as_ben.post(act_url(order, "refund"), {**typed, "confirmed": "yes"})
    assert response.status_code == 302
    order.refresh_from_db()
    assert order.refunded_cents == 5000 and order.state == Order.State.FULFILLED
    assert [r.idempotency_key for r in stripe_api.refunds] == [f"order-{order.id}-refund-{token}"]
    request = RefundRequest.objects.get(order=order)
    assert request.stripe_refund_id == "re_fake1" and request.requested_by == "support:ben@paidup.example"

    second = as_ben.get(act_url(order, "refund")).context["form"]
    assert second["token"].value() != token and second["amount"].value() == "199.00"
    with django_capture_on_commit_callbacks(execute=True):
        as_ben.post(
            act_url(order, "refund"),
            {"amount": "199.00", "reason": "Changed mind", "token": second["token"].value(), "confirmed": "yes"},
        )
    order.refresh_from_db()
    assert order.state == Order.State.REFUNDED and order.refunded_cents == 24900
    assert len(stripe_api.refunds) == 2 and Refund.objects.filter(order=order).count() == 2
    assert [m for m in log_messages(order) if m.startswith("Refund")] == [
        f"Refund: Refunded $50.00 on {order.reference}.",
        f"Refund: Refunded $199.00 on {order.reference}.",
    ]


def test_a_double_submitted_refund_form_refunds_once(as_ben, stripe_api):
    order = fulfilled_order(stripe_api)
    token = str(uuid.uuid4())
    for _ in range(2):
        as_ben.post(act_url(order, "refund"), {"amount": "10", "reason": "Twice", "token": token, "confirmed": "yes"})
    order.refresh_from_db()
    assert order.refunded_cents == 1000 and len(stripe_api.refunds) == 1


def test_a_refund_over_the_charged_amount_is_refused_and_changes_nothing(as_ben, stripe_api):
    order = fulfilled_order(stripe_api)
    before = snapshot(order)
    token = str(uuid.uuid4())
    data = {"amount": "249.01", "reason": "Too much", "token": token, "confirmed": "yes"}
    response = as_ben.post(act_url(order, "refund"), data)
    assert response.status_code == 400
    assert "That is more than is left to refund: at most $249.00" in text(response)
    assert snapshot(order) == before and stripe_api.refunds == []
    # The form comes back, as typed.
    assert response.context["form"]["reason"].value() == "Too much"
    assert response.context["form"]["amount"].value() == "249.01"


def test_a_refund_the_core_refuses_comes_back_with_a_new_key(as_ben, stripe_api):
    order = fulfilled_order(stripe_api)
    token = str(uuid.uuid4())
    data = {"amount": "50", "reason": "Asked", "token": token, "confirmed": "yes"}
    stripe_api.down = True  # Stripe refuses: nothing was refunded, and its answer may be saved under the key
    response = as_ben.post(act_url(order, "refund"), data)
    assert response.status_code == 400 and "Stripe refused the refund" in text(response)
    assert response.context["form"]["token"].value() != token


def test_a_refund_without_a_reason_is_refused(as_ben, stripe_api):
    order = fulfilled_order(stripe_api)
    before = snapshot(order)
    data = {"amount": "1", "reason": "", "token": str(uuid.uuid4()), "confirmed": "yes"}
    response = as_ben.post(act_url(order, "refund"), data)
    assert response.status_code == 400 and "Say why, in a few words" in text(response)
    assert snapshot(order) == before and stripe_api.refunds == []


def test_it_extends_the_subscription(as_ana, stripe_api):
    order = fulfilled_order(stripe_api)
    ends = order.subscription.ends_at
    response = as_ana.post(act_url(order, "extend"), {"days": 30, "reason": "Sorry for the wait"})
    assert response.status_code == 302
    order.subscription.refresh_from_db()
    assert order.subscription.ends_at == ends + timedelta(days=30)
    assert order.events.filter(kind="support:extend", actor="support:ana@paidup.example").exists()
    assert log_messages(order)[0].startswith("Extend: Access now ends on")


def test_it_adds_a_note_claims_and_resolves(as_ana, ana, stripe_api):
    order = paid_order(stripe_api)
    order.flag_attention("Fulfilment keeps failing", actor="system:reconciliation")
    alert = Alert.objects.create(key=f"fulfil_failed:{order.pk}", reason="fulfil_failed", order=order, message="m")
    case = SupportCase.objects.create(email=order.email, order=order)

    assert as_ana.post(act_url(order, "note"), {"text": "Customer phoned, calm."}).status_code == 302
    assert as_ana.post(act_url(order, "claim")).status_code == 302
    order.refresh_from_db()
    assert order.claimed_by == ana and order.claimed_until > timezone.now()
    assert "You're on this order until" in text(as_ana.get(change_url(order)))

    assert as_ana.post(act_url(order, "resolve"), {"note_text": "Fulfilled by hand"}).status_code == 302
    order.refresh_from_db()
    alert.refresh_from_db()
    case.refresh_from_db()
    assert not order.needs_attention and alert.resolved_at and case.status == "resolved"
    kinds = list(order.events.filter(actor="support:ana@paidup.example").values_list("kind", flat=True))
    assert kinds == ["support:note", "support:claim", "support:resolved"]
    assert [m.split(":")[0] for m in log_messages(order)] == ["Add a note", "I'm on it", "Resolved"]


def test_an_empty_note_is_refused(as_ana, stripe_api):
    order = paid_order(stripe_api)
    before = snapshot(order)
    assert as_ana.post(act_url(order, "note"), {"text": "  "}).status_code == 400
    assert snapshot(order) == before


def test_actions_that_do_not_fit_the_order_are_refused(as_ana, stripe_api):
    order = paid_order(stripe_api)
    before = snapshot(order)
    response = as_ana.post(act_url(order, "resend"))
    assert response.status_code == 400 and "Fulfil it first" in text(response)
    assert as_ana.post(act_url(order, "extend"), {"days": 10}).status_code == 400
    assert snapshot(order) == before


# --- attach -----------------------------------------------------------------------------


@pytest.mark.parametrize("use_charge_id", [False, True], ids=["pi", "ch"])
def test_it_attaches_a_bare_stripe_payment(as_ben, ben, stripe_api, use_charge_id):
    pi = stripe_api.bare_payment(email="walkin@example.com")
    stripe_id = "ch_bare1" if use_charge_id else pi.id
    assert as_ben.get(reverse("admin:billing_order_attach")).status_code == 200
    response = as_ben.post(reverse("admin:billing_order_attach"), {"stripe_id": stripe_id})
    order = Order.objects.get(stripe_payment_intent_id=pi.id)
    assert response.status_code == 302 and response.url == change_url(order)
    assert order.state == Order.State.FULFILLED and order.email == "walkin@example.com" and order.retroactive
    assert order.events.filter(kind="order:attached", actor="support:ben@paidup.example").exists()
    entry = LogEntry.objects.get(object_id=str(order.pk))
    assert entry.action_flag == ADDITION and entry.user == ben


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda s: "pi_doesnotexist", "Stripe has no payment pi_doesnotexist"),
        (lambda s: "ch_doesnotexist", "Stripe has no payment ch_doesnotexist"),
        (lambda s: s.bare_payment(status="requires_payment_method").id, "not succeeded. Nothing created"),
        (lambda s: "in_123", "Paste a Stripe PaymentIntent"),
        (lambda s: s.bare_payment(email=None, charge=False).id, "Stripe has no email for that payment"),
    ],
    ids=["unknown-pi", "unknown-ch", "not-succeeded", "not-a-payment-id", "no-email"],
)
def test_attaching_a_payment_that_cannot_be_attached_says_why_and_creates_nothing(as_ben, stripe_api, make, message):
    stripe_id = make(stripe_api)
    orders, logs = Order.objects.count(), LogEntry.objects.count()
    response = as_ben.post(reverse("admin:billing_order_attach"), {"stripe_id": stripe_id})
    assert response.status_code == 400
    assert message in text(response)
    assert Order.objects.count() == orders and LogEntry.objects.count() == logs


def test_attaching_a_payment_twice_names_the_order_it_belongs_to(as_ben, stripe_api):
    order = paid_order(stripe_api)
    response = as_ben.post(reverse("admin:billing_order_attach"), {"stripe_id": order.stripe_payment_intent_id})
    assert response.status_code == 400 and f"already belongs to order {order.reference}" in text(response)


# --- permissions ------------------------------------------------------------------------


def test_support_without_the_refunds_group_cannot_refund(as_ana, stripe_api):
    order = fulfilled_order(stripe_api)
    before = snapshot(order)
    assert as_ana.get(act_url(order, "refund")).status_code == 403
    data = {"amount": "1", "reason": "x", "token": str(uuid.uuid4()), "confirmed": "yes"}
    response = as_ana.post(act_url(order, "refund"), data)
    assert response.status_code == 403
    assert snapshot(order) == before and stripe_api.refunds == []


def test_support_without_the_refunds_group_cannot_attach(as_ana, stripe_api):
    pi = stripe_api.bare_payment()
    assert as_ana.get(reverse("admin:billing_order_attach")).status_code == 403
    assert as_ana.post(reverse("admin:billing_order_attach"), {"stripe_id": pi.id}).status_code == 403
    assert not Order.objects.filter(stripe_payment_intent_id=pi.id).exists()
    assert "Attach a Stripe payment" not in text(as_ana.get(reverse("admin:billing_order_changelist")))


def test_a_staff_user_without_fulfil_order_cannot_fulfil(stripe_api):
    viewer = staff("viewer@paidup.example", perms=("billing.view_order",))
    order = paid_order(stripe_api)
    before = snapshot(order)
    browser = client_for(viewer)
    assert browser.get(change_url(order)).status_code == 200
    assert act_url(order, "fulfil") not in browser.get(change_url(order)).content.decode()
    assert browser.post(act_url(order, "fulfil")).status_code == 403
    assert snapshot(order) == before


def test_people_outside_the_console_cannot_reach_it(stripe_api):
    order = paid_order(stripe_api)
    customer = UserFactory(email="customer@example.com")
    for user_client in (Client(), client_for(customer)):
        response = user_client.post(act_url(order, "fulfil"))
        assert response.status_code == 302 and "/admin/login/" in response.url
    nobody = staff("nobody@paidup.example")  # staff, but in no group
    assert client_for(nobody).post(act_url(order, "fulfil")).status_code == 403
    assert client_for(nobody).get(reverse("admin:index")).status_code == 200
    order.refresh_from_db()
    assert order.state == Order.State.PAID


def test_orders_cannot_be_edited_or_deleted_by_hand(as_ben, stripe_api):
    order = paid_order(stripe_api)
    superuser = client_for(UserFactory(email="root@paidup.example", is_staff=True, is_superuser=True))
    response = superuser.post(change_url(order), {"state": "fulfilled", "email": "x@example.com"})
    assert response.status_code == 403
    assert superuser.post(reverse("admin:billing_order_delete", args=[order.pk]), {"post": "yes"}).status_code == 403
    order.refresh_from_db()
    assert order.state == Order.State.PAID


# --- claims -----------------------------------------------------------------------------


def test_a_claim_is_visible_to_the_other_person_and_their_actions_ask_first(as_ana, ana, stripe_api):
    order = paid_order(stripe_api)
    as_ana.post(act_url(order, "claim"))
    bea = staff("bea@paidup.example", "Support")
    as_bea = client_for(bea)

    assert "ana@paidup.example is on this order until" in text(as_bea.get(change_url(order)))
    listing = text(as_bea.get(reverse("admin:billing_order_changelist")))
    assert "ana@paidup.example until" in listing
    assert "ana@paidup.example until" in text(as_bea.get(reverse("admin:index")))

    confirmation = as_bea.get(act_url(order, "fulfil"))
    assert "ana@paidup.example is on this order" in text(confirmation)
    assert "act_anyway" in confirmation.content.decode()

    before = snapshot(order)
    refused = as_bea.post(act_url(order, "fulfil"))
    assert refused.status_code == 400
    assert "ana@paidup.example is on this order until" in text(refused) and "act anyway" in text(refused)
    assert snapshot(order) == before
    # Bea cannot take the claim either while it runs.
    assert as_bea.post(act_url(order, "claim")).status_code == 400
    order.refresh_from_db()
    assert order.claimed_by == ana

    assert as_bea.post(act_url(order, "fulfil"), {"act_anyway": "on"}).status_code == 302
    order.refresh_from_db()
    assert order.state == Order.State.FULFILLED


def test_an_expired_claim_no_longer_asks(as_ana, ana, stripe_api):
    order = paid_order(stripe_api)
    Order.objects.filter(pk=order.pk).update(claimed_by=ana, claimed_until=timezone.now() - timedelta(minutes=1))
    as_bea = client_for(staff("bea@paidup.example", "Support"))
    assert "is on this order" not in text(as_bea.get(change_url(order)))
    assert as_bea.post(act_url(order, "fulfil")).status_code == 302


def test_the_changelist_filters_by_claim_and_attention(as_ana, ana, stripe_api):
    mine = paid_order(stripe_api)
    free = paid_order(stripe_api)
    free.flag_attention("why", actor="system")
    as_ana.post(act_url(mine, "claim"))
    listing = reverse("admin:billing_order_changelist")
    assert list(as_ana.get(listing, {"claimed": "me"}).context["cl"].result_list) == [mine]
    assert list(as_ana.get(listing, {"claimed": "no"}).context["cl"].result_list) == [free]
    assert list(as_ana.get(listing, {"needs_attention__exact": "1"}).context["cl"].result_list) == [free]
    assert list(as_ana.get(listing, {"queue": "attention"}).context["cl"].result_list) == [free]


# --- refresh from Stripe ----------------------------------------------------------------


def test_refresh_with_stripe_unreachable_is_a_message_not_an_error(as_ana, stripe_api):
    order = paid_order(stripe_api)
    stripe_api.down = True
    response = as_ana.post(reverse("admin:billing_order_refresh", args=[order.pk]), follow=True)
    assert response.status_code == 200
    assert "Could not reach Stripe" in text(response)


def test_refresh_shows_dj_stripes_refusal_and_still_syncs_the_rest(as_ana, stripe_api, monkeypatch):
    from djstripe.models import Customer, PaymentIntent

    order = paid_order(stripe_api)

    def refuse(cls, data, api_key=None):
        raise ValueError("Trying to fit 'card' into 'PaymentMethod'")

    monkeypatch.setattr(PaymentIntent, "sync_from_stripe_data", classmethod(refuse))
    monkeypatch.setattr(Customer, "sync_from_stripe_data", classmethod(lambda cls, data, api_key=None: None))
    response = as_ana.post(reverse("admin:billing_order_refresh", args=[order.pk]), follow=True)
    assert response.status_code == 200
    page = text(response)
    assert f"Could not copy PaymentIntent {order.stripe_payment_intent_id} into dj-stripe" in page
    assert "Trying to fit &#x27;card&#x27; into &#x27;PaymentMethod&#x27;" in page
    assert f"Customer {order.stripe_customer_id} refreshed" in page


def test_refresh_syncs_every_object_of_the_order(stripe_api, monkeypatch):
    from djstripe.models import Charge, Customer, PaymentIntent
    from djstripe.models import Refund as StripeRefund

    order = fulfilled_order(stripe_api)
    pi = stripe_api.intents[order.stripe_payment_intent_id]
    pi["latest_charge"] = f"ch_{order.reference[3:]}"
    Refund.objects.create(order=order, stripe_refund_id="re_1", amount_cents=100, currency="usd", actor="x")
    synced = []
    for model in (PaymentIntent, Charge, Customer, StripeRefund):
        monkeypatch.setattr(
            model,
            "sync_from_stripe_data",
            classmethod(lambda cls, data, api_key=None: synced.append((cls.__name__, data["id"]))),
        )
    monkeypatch.setattr(mirror, "_retrieve_refund", lambda refund_id: _Obj(id=refund_id))
    results = mirror.refresh(order)
    assert all(ok for ok, _ in results), results
    assert synced == [
        ("PaymentIntent", order.stripe_payment_intent_id),
        ("Charge", f"ch_{order.reference[3:]}"),
        ("Customer", order.stripe_customer_id),
        ("Refund", "re_1"),
    ]


def test_the_order_list_counts_exactly_below_the_estimate_threshold(plan):
    from billing.models import Order
    from support.order_admin import EstimatedCountPaginator
    from tests.factories import OrderFactory

    OrderFactory.create_batch(3, plan=plan)
    assert EstimatedCountPaginator(Order.objects.all(), 50).count == 3
    assert EstimatedCountPaginator(Order.objects.filter(state="pending"), 50).count == 3


# --- payments that bought nothing -------------------------------------------------------------


def test_support_closes_an_alert_about_a_payment_that_bought_nothing(as_ana, plan):
    unmatched = Alert.objects.create(
        key="unmatched_payment:pi_1", reason=Alert.Reason.UNMATCHED_PAYMENT, message="Stripe payment pi_1 of $15.00"
    )
    with_order = Alert.objects.create(
        key="fulfil_failed:x", reason=Alert.Reason.FULFIL_FAILED, order=OrderFactory(), message="m"
    )
    assert "Payments that bought nothing" in text(as_ana.get(reverse("admin:index")))

    response = as_ana.post(
        reverse("admin:billing_alert_changelist"),
        {"action": "mark_resolved", "_selected_action": [unmatched.pk, with_order.pk]},
    )

    assert response.status_code == 302
    unmatched.refresh_from_db(), with_order.refresh_from_db()
    assert unmatched.resolved_at is not None
    assert with_order.resolved_at is None  # an order's alerts close with the order's own "Resolved"


def test_closing_alerts_needs_the_console(plan):
    alert = Alert.objects.create(key="unmatched_payment:pi_2", reason=Alert.Reason.UNMATCHED_PAYMENT, message="m")
    outsider = client_for(UserFactory(email="outsider@example.com", is_staff=True))
    response = outsider.post(
        reverse("admin:billing_alert_changelist"), {"action": "mark_resolved", "_selected_action": [alert.pk]}
    )
    assert response.status_code == 403
    alert.refresh_from_db()
    assert alert.resolved_at is None
