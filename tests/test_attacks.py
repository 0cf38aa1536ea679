"""The issue's "Bad input and attacks" list, each a test (issue 12): redirects to other hosts,
HTML and script in what customers type, SQL metacharacters in the admin's searches, webhooks
without a valid signature, CSRF on every POST form, and a session cookie replayed after logout."""

import html
import json
import re

import pytest
from django.test import Client
from djstripe.models import WebhookEventTrigger

from billing.alerts import raise_alert
from billing.fulfilment import fulfil
from billing.models import Alert, Order, OrderEvent, OutboundEmail
from support.models import SupportCase
from tests.factories import OrderFactory, UserFactory, payment_intent
from tests.fixtures.console import PASSWORD, act_url, change_url, client_for, paid_order, staff_with_password
from tests.fixtures.services import db_snapshot, give_cookie, make_event, post_event, sign
from tests.fixtures.tracking import event_for, fulfilled_with_sent_email, post_tracking

pytestmark = pytest.mark.django_db

EVIL = ["https://evil.example/", "//evil.example/", "https:evil.example", "/\\evil.example", "\\\\evil.example"]
# A quoted local part is a valid email address (Django's validator and RFC 5321 accept it), so a
# customer can really type this at checkout; a note or a case message can hold anything.
SCRIPT_EMAIL = '"<script>alert(1)</script>"@evil.example'
SCRIPT = '<script>alert("x")</script><img src=x onerror=alert(2)>'


@pytest.fixture
def ann(db):
    return staff_with_password("ann@paidup.example", "Support", "Support: refunds")


def assert_escaped(page: str) -> None:
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert" in page


# --- next= pointing at another host -----------------------------------------------------


@pytest.mark.parametrize("target", EVIL)
def test_the_admin_login_ignores_a_next_to_another_host(ann, target):
    response = Client().post("/admin/login/", {"username": ann.email, "password": PASSWORD, "next": target})
    # Signed in with her password, she goes on to the console's own next step (enrolling a second
    # factor, as she has none yet), never to the other host.
    assert response.status_code == 302 and response.url == "/admin/enrol/"


@pytest.mark.parametrize("target", EVIL)
def test_the_admin_logout_ignores_a_next_to_another_host(ann, target):
    response = client_for(ann).post(f"/admin/logout/?next={target}")
    assert "evil.example" not in response.get("Location", "")


@pytest.mark.parametrize("target", EVIL)
def test_the_customer_sign_in_ignores_a_next_to_another_host(plan, target, django_capture_on_commit_callbacks):
    order = OrderFactory(plan=plan, email="ada@example.com")
    with django_capture_on_commit_callbacks(execute=True):
        fulfil(order, via="webhook", payment_intent=payment_intent(order))
    link = re.search(r"(/account/sign-in/[^\s/]+/)", OutboundEmail.objects.get(order=order).body_text).group(1)
    client = Client()
    assert "evil.example" not in client.get(f"/account/sign-in/?next={target}").content.decode()
    response = client.post(f"{link}?next={target}", {"next": target})
    assert response.status_code == 302 and response.url == "/account/"


# --- HTML and script in what customers type ---------------------------------------------


@pytest.fixture
def hostile(stripe_api):
    """An order paid with the script email and carrying a script note, and a case with a script message."""
    order = paid_order(stripe_api, email=SCRIPT_EMAIL)
    order.log("note", f"Customer wrote: {SCRIPT}", actor="support:ann@paidup.example")
    SupportCase.objects.create(email=SCRIPT_EMAIL, order=order, message=SCRIPT, diagnosis=f"They said {SCRIPT}")
    return order


def test_the_order_change_page_escapes_the_customers_words(ann, hostile):
    page = client_for(ann).get(change_url(hostile)).content.decode()
    assert_escaped(page)


def test_the_queue_and_the_lists_escape_the_customers_words(ann, hostile):
    console = client_for(ann)
    for url in ["/admin/", "/admin/billing/order/", "/admin/support/supportcase/", f"/admin/billing/order/?q={SCRIPT}"]:
        response = console.get(url)
        assert response.status_code == 200, url
        assert "<script>alert" not in response.content.decode(), url
    assert "&lt;script&gt;alert(1)" in console.get("/admin/").content.decode()  # the paid order is in the queue


def test_the_emails_escape_the_customers_words(hostile):
    raise_alert(Alert.Reason.CUSTOMER_CASE, f"Case says {SCRIPT}", order=hostile)
    email = OutboundEmail.objects.filter(kind="alert").first()
    assert email is not None
    assert_escaped(email.body_html)


def test_the_order_page_escapes_the_customers_email(plan, client, django_capture_on_commit_callbacks):
    order = OrderFactory(plan=plan, email=SCRIPT_EMAIL)
    with django_capture_on_commit_callbacks(execute=True):
        fulfil(order, via="webhook", payment_intent=payment_intent(order))
    give_cookie(client, order.reference)
    page = client.get(f"/orders/{order.reference}/").content.decode()
    assert "&lt;script&gt;alert(1)" in page and "<script>alert" not in page


# --- SQL metacharacters in the admin's searches -----------------------------------------

METACHARACTERS = ["' OR 1=1 --", "%", "_", "\\", "'; DROP TABLE billing_order; --", '" OR ""="', "%' OR '%'='"]


@pytest.mark.parametrize("q", METACHARACTERS)
def test_the_admin_searches_answer_metacharacters_with_a_normal_empty_result(ann, stripe_api, q):
    paid_order(stripe_api, email="ada@example.com")
    console = client_for(ann)
    for url in ["/admin/billing/order/", "/admin/support/supportcase/", "/admin/support/staffevent/"]:
        response = console.get(url, {"q": q})
        assert response.status_code == 200, url
        assert "ada@example.com" not in response.content.decode(), url
    assert Order.objects.count() == 1


# --- webhooks without a valid signature -------------------------------------------------


def test_the_stripe_webhook_without_a_valid_signature_is_refused_and_records_nothing(client, plan, webhook_endpoint):
    order = OrderFactory(plan=plan, stripe_payment_intent_id="pi_attack1")
    body = json.dumps(make_event("payment_intent.succeeded", payment_intent(order)))
    before = db_snapshot()
    for header in (None, "t=1,v1=deadbeef", sign(body, secret="whsec_attacker")):
        assert post_event(client, webhook_endpoint, body, header).status_code == 400
    assert db_snapshot() == before and not WebhookEventTrigger.objects.exists()


def test_the_tracking_webhook_without_its_credentials_is_refused_and_records_nothing(
    client, tracking, django_capture_on_commit_callbacks
):
    _order, email = fulfilled_with_sent_email(django_capture_on_commit_callbacks)
    before = (email.delivery, Alert.objects.count(), OrderEvent.objects.count())
    for secret in (None, "postmark:wrong"):
        assert post_tracking(client, event_for(email), secret=secret).status_code == 401
    email.refresh_from_db()
    assert (email.delivery, Alert.objects.count(), OrderEvent.objects.count()) == before


# --- CSRF on every POST form ------------------------------------------------------------


def everything() -> dict:
    """What any of these forms could change."""
    from billing.models import RateLimit

    return {
        **db_snapshot(),
        "order_emails": sorted(Order.objects.values_list("reference", "email")),
        "cases": list(SupportCase.objects.values_list("pk", "status")),
        "rate_limits": RateLimit.objects.count(),
    }


def csrf_client(user=None) -> Client:
    client = Client(enforce_csrf_checks=True)
    if user is not None:
        client.force_login(user)
    return client


def test_the_customer_forms_refuse_a_post_without_the_csrf_token(plan, django_capture_on_commit_callbacks):
    UserFactory(email="ada@example.com")
    order = OrderFactory(plan=plan, email="ada@example.com")
    client = csrf_client()
    give_cookie(client, order.reference)
    before = everything()
    forms = [
        ("/checkout/", {"email": "bea@example.com", "payment_method": "pm_card_visa"}),
        ("/account/sign-in/", {"email": "ada@example.com"}),
        (f"/orders/{order.reference}/email/", {"email": "ada2@example.com"}),
        ("/help/charged/", {"email": "ada@example.com"}),
    ]
    for url, data in forms:
        assert client.post(url, data).status_code == 403, url
    assert everything() == before


def test_the_customer_sign_out_refuses_a_post_without_the_csrf_token(db):
    client = csrf_client(UserFactory(email="ada@example.com"))
    assert client.post("/account/sign-out/").status_code == 403
    assert client.get("/account/").status_code == 200  # still signed in


def test_the_admin_login_refuses_a_post_without_the_csrf_token(ann):
    response = csrf_client().post("/admin/login/", {"username": ann.email, "password": PASSWORD})
    assert response.status_code == 403


@pytest.mark.parametrize("action", ["fulfil", "refund", "resend", "note", "email"])
def test_the_admin_actions_refuse_a_post_without_the_csrf_token(ann, stripe_api, action):
    order = paid_order(stripe_api)
    before = everything()
    data = {"reason": "test", "note": "x", "amount": "249.00", "new_email": "x@example.com", "token": "t"}
    assert csrf_client(ann).post(act_url(order, action), data).status_code == 403
    assert everything() == before and not stripe_api.refunds


def test_the_admin_list_actions_refuse_a_post_without_the_csrf_token(ann, hostile):
    case = SupportCase.objects.get()
    data = {"action": "mark_resolved", "_selected_action": [case.pk]}
    assert csrf_client(ann).post("/admin/support/supportcase/", data).status_code == 403
    case.refresh_from_db()
    assert case.status == SupportCase.Status.OPEN


# --- a stolen session cookie after logout -----------------------------------------------


def test_a_staff_session_cookie_replayed_after_logout_is_refused(ann):
    client = Client()
    assert client.post("/admin/login/", {"username": ann.email, "password": PASSWORD}).status_code == 302
    stolen = client.cookies["sessionid"].value
    client.post("/admin/logout/")
    thief = Client()
    thief.cookies["sessionid"] = stolen
    response = thief.get("/admin/")
    assert response.status_code == 302 and response.url.startswith("/admin/login/")
    assert thief.get("/admin/billing/order/").status_code == 302


def test_a_customer_session_cookie_replayed_after_sign_out_is_refused(db):
    client = client_for(UserFactory(email="ada@example.com"))
    stolen = client.cookies["sessionid"].value
    assert client.get("/account/").status_code == 200
    client.post("/account/sign-out/")
    thief = Client()
    thief.cookies["sessionid"] = stolen
    assert thief.get("/account/").status_code == 302


def test_logging_out_deletes_the_session_server_side(ann):
    from django.contrib.sessions.models import Session

    client = client_for(ann)
    key = client.cookies["sessionid"].value
    assert Session.objects.filter(session_key=key).exists()
    client.post("/admin/logout/")
    assert not Session.objects.filter(session_key=key).exists()


def test_the_escaping_helper_would_catch_a_raw_script():
    with pytest.raises(AssertionError):
        assert_escaped(f"<p>{html.escape(SCRIPT)}</p><script>alert(1)</script>")
