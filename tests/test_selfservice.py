"""The customer's "charged but no access?" page (/help/charged/) and the check behind it.

Stripe is faked at the gateway; the q cluster runs tasks inline (tests/settings.py), so a
POST runs the whole check, and `ask()` runs the after-commit email hand-offs too.
"""

import re
import uuid
from datetime import timedelta

import pytest
import requests
import stripe
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.signin import user_for_token
from billing import gateway
from billing.models import Alert, Order, OrderEvent, OutboundEmail, RateLimit, Subscription
from support import queue, selfservice
from support.models import SelfServiceRequest, SupportCase
from tests.factories import OrderFactory, stripe_paid_order
from tests.fixtures.console import staff
from tests.test_races import race, run_together

pytestmark = pytest.mark.django_db

URL = "/help/charged/"
SIGNIN_URL_RE = re.compile(r"/account/sign-in/([^/\s\"]+)/")


@pytest.fixture
def ask(client, django_capture_on_commit_callbacks, fake_stripe):
    """POST the form as a customer would, with the after-commit work (emails) executed."""

    def post(email="ada@example.com", *, ip="203.0.113.7", **fields):
        with django_capture_on_commit_callbacks(execute=True):
            return client.post(URL, {"email": email, **fields}, REMOTE_ADDR=ip)

    return post


@pytest.fixture
def queued(monkeypatch):
    """Record the checks the page queues instead of running them."""
    calls = []
    monkeypatch.setattr(selfservice, "async_task", lambda *args, **kwargs: calls.append(args))
    return calls


def paid_order(fake_stripe, email: str, *, state: str = "paid", charged_ago: int = 3600) -> Order:
    """An order Stripe says is paid (charged `charged_ago` seconds ago: a customer who asks
    for help has usually waited), left in `state` here."""
    return stripe_paid_order(fake_stripe, email=email, state=state, charged_ago=charged_ago)


def declined_order(fake_stripe, email: str) -> Order:
    order = OrderFactory(email=email)
    fake_stripe.create_payment_intent(order, "pm_card")
    pi_id = fake_stripe.created[-1]["pi"]
    fake_stripe.settle(pi_id, "requires_payment_method")
    Order.objects.filter(pk=order.pk).update(stripe_payment_intent_id=pi_id, stripe_payment_status="declined")
    order.refresh_from_db()
    return order


def sent_to(mailoutbox, address: str) -> list:
    return [m for m in mailoutbox if m.to == [address]]


def signin_user(body: str):
    return user_for_token(SIGNIN_URL_RE.search(body).group(1))


# --- the branches -------------------------------------------------------------------


def test_it_fulfils_a_paid_order_and_emails_the_sign_in_link(ask, fake_stripe, mailoutbox):
    order = paid_order(fake_stripe, "ada@example.com")

    assert ask("ada@example.com").status_code == 200

    order.refresh_from_db()
    assert order.state == "fulfilled" and order.fulfilled_via == "self_service"
    fulfilled = OrderEvent.objects.get(order=order, kind="state:fulfilled")
    assert fulfilled.actor == "customer:self-service"
    [email] = sent_to(mailoutbox, "ada@example.com")
    assert email.tags == ["recovery"]  # the recovery email carries the sign-in link: one email, not two
    assert signin_user(email.body).email == "ada@example.com"
    assert not SupportCase.objects.exists()


@pytest.mark.parametrize(
    ("charged_ago", "email_kind"), [(3600, "recovery"), (30, "confirmation")], ids=["waited", "just-paid"]
)
def test_the_timeline_says_the_self_service_page_fulfilled_it(ask, fake_stripe, mailoutbox, charged_ago, email_kind):
    """Not reconciliation: support reads who did it. The email follows fulfilment's rule
    (billing/fulfilment.py is_late), whichever path fulfils."""
    order = paid_order(fake_stripe, "ada@example.com", charged_ago=charged_ago)

    ask("ada@example.com")

    fulfilled = OrderEvent.objects.get(order=order, kind="state:fulfilled")
    assert fulfilled.data["via"] == "self_service" and fulfilled.message.startswith("Fulfilled via self_service")
    assert fulfilled.actor == "customer:self-service"
    assert [m.tags for m in sent_to(mailoutbox, "ada@example.com")] == [[email_kind]]
    order.refresh_from_db()
    assert order.get_fulfilled_via_display() == "Self-service page"


def test_it_sends_a_fresh_sign_in_link_for_a_fulfilled_order(ask, fake_stripe, mailoutbox):
    order = paid_order(fake_stripe, "ada@example.com", state="fulfilled")
    mailoutbox.clear()

    ask("Ada@Example.com")

    [email] = sent_to(mailoutbox, "ada@example.com")
    assert email.tags == ["signin"]
    assert signin_user(email.body).email == "ada@example.com"
    assert OrderEvent.objects.filter(order=order, kind="support:resend", actor="customer:self-service").exists()
    assert not SupportCase.objects.exists() and not Alert.objects.exists()


def test_it_fulfils_a_pending_order_that_stripe_says_succeeded(ask, fake_stripe, mailoutbox):
    order = paid_order(fake_stripe, "ada@example.com", state="pending")

    ask("ada@example.com")

    order.refresh_from_db()
    assert order.state == "fulfilled"
    assert [m.tags for m in sent_to(mailoutbox, "ada@example.com")] == [["recovery"]]


@pytest.mark.parametrize("lists_by_customer", [True, False], ids=["stripe", "localstripe-events"])
@pytest.mark.parametrize("metadata", [True, False], ids=["metadata-email", "customer-email"])
def test_it_adopts_an_unknown_stripe_payment(ask, fake_stripe, mailoutbox, plan, lists_by_customer, metadata):
    fake_stripe.lists_by_customer = lists_by_customer
    pi = fake_stripe.pay_elsewhere(
        email="lost@example.com",
        metadata={"email": "lost@example.com"} if metadata else {},
        created=int(timezone.now().timestamp()) - 3600,
    )

    ask("lost@example.com")

    order = Order.objects.get(stripe_payment_intent_id=pi.id)
    assert order.retroactive and order.state == "fulfilled" and order.email == "lost@example.com"
    assert Alert.objects.get(order=order).reason == Alert.Reason.UNKNOWN_PAYMENT
    [email] = sent_to(mailoutbox, "lost@example.com")
    assert email.tags == ["recovery"]
    assert not SupportCase.objects.exists()


def test_a_payment_that_buys_no_plan_gets_a_person_not_a_year(ask, fake_stripe, mailoutbox, plan):
    """A $15 payment (a Payment Link for something else) under the customer's email: the check
    gives no access and sends no access email; the customer gets the case-opened email, and
    support sees the payment recorded and the case."""
    pi = fake_stripe.pay_elsewhere(email="payer@example.com", amount=1500, metadata={"email": "payer@example.com"})

    ask("payer@example.com")

    assert not Order.objects.exists() and not Subscription.objects.exists()
    [email] = sent_to(mailoutbox, "payer@example.com")
    assert email.tags == ["case_opened"]
    unmatched = Alert.objects.get(reason=Alert.Reason.UNMATCHED_PAYMENT)
    assert unmatched.order is None and pi.id in unmatched.message and "self-service" in unmatched.message
    case = SupportCase.objects.get()
    assert f"Stripe payment {pi.id} of $15.00 matches no plan" in case.diagnosis
    # Asking again records nothing new about the payment.
    ask("payer@example.com", ip="203.0.113.8")
    assert Alert.objects.filter(reason=Alert.Reason.UNMATCHED_PAYMENT).count() == 1


def test_it_finds_a_payment_whose_email_was_typed_in_another_case(ask, fake_stripe, mailoutbox, plan):
    fake_stripe.pay_elsewhere(email="Lost@Example.com", metadata={"email": "Lost@Example.com"})

    ask("lost@example.com", paid_on=timezone.localdate().isoformat())

    assert Order.objects.get().state == "fulfilled"
    assert not SupportCase.objects.exists()


def test_it_opens_a_case_when_nothing_is_found(ask, fake_stripe, mailoutbox, settings):
    settings.SUPPORT_REPLY_HOURS = 12
    paid_on = timezone.localdate() - timedelta(days=2)

    ask("nobody@example.com", card_last4="4242", paid_on=paid_on.isoformat())

    case = SupportCase.objects.get()
    assert (case.email, case.card_last4, case.paid_on, case.order, case.status) == (
        "nobody@example.com",
        "4242",
        paid_on,
        None,
        "open",
    )
    assert "No order here for this email." in case.diagnosis
    assert "card ending 4242" in case.diagnosis
    alert = Alert.objects.get()
    assert alert.reason == Alert.Reason.CUSTOMER_CASE and alert.key == f"customer_case:{case.pk}"
    [email] = sent_to(mailoutbox, "nobody@example.com")
    assert email.tags == ["case_opened"]
    assert "within 12 hours" in email.subject and "within 12 hours" in email.body
    assert f"Your case number: {case.pk}" in email.body
    assert "proof" in email.body  # ... of payment is never asked for
    assert sent_to(mailoutbox, settings.SUPPORT_EMAILS[0])  # support is alerted


def test_a_flood_of_cases_sends_one_alert_an_hour_past_ten(fake_stripe, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        for n in range(selfservice.CASE_ALERTS_PER_HOUR + 5):
            selfservice.check(f"stranger{n}@example.com")

    assert SupportCase.objects.count() == selfservice.CASE_ALERTS_PER_HOUR + 5
    keys = list(Alert.objects.values_list("key", flat=True))
    assert len(keys) == selfservice.CASE_ALERTS_PER_HOUR + 1
    assert [k for k in keys if k.startswith("customer_case:many:")]


def test_a_declined_order_gets_a_case_with_its_diagnosis(ask, fake_stripe, mailoutbox):
    order = declined_order(fake_stripe, "ada@example.com")

    ask("ada@example.com")

    case = SupportCase.objects.get()
    assert case.order == order
    assert "Not charged: the card was declined." in case.diagnosis
    assert Alert.objects.get().order == order
    assert OrderEvent.objects.filter(order=order, kind="support:case").exists()
    assert [m.tags for m in sent_to(mailoutbox, "ada@example.com")] == [["case_opened"]]


def test_an_order_waiting_for_a_person_is_left_to_the_person(ask, fake_stripe):
    order = paid_order(fake_stripe, "ada@example.com")
    order.flag_attention("Paid after the order had failed", actor="test")

    ask("ada@example.com")

    order.refresh_from_db()
    assert order.state == "paid"
    case = SupportCase.objects.get()
    assert case.order == order and "waiting for a person" in case.diagnosis


def test_a_customer_who_asks_again_gets_the_same_case(ask, fake_stripe, mailoutbox):
    ask("nobody@example.com")
    ask("nobody@example.com", card_last4="1234")

    case = SupportCase.objects.get()
    assert case.card_last4 == "1234" and "Asked again" in case.diagnosis
    assert Alert.objects.count() == 1
    assert [m.tags for m in sent_to(mailoutbox, "nobody@example.com")] == [["case_opened"]] * 2


def test_a_case_asked_about_twice_shows_its_diagnosis_once(ask, fake_stripe):
    """Issue 10, item 7: the queue's case row printed the diagnosis twice when the customer
    asked twice (each ask appended a full copy). The same finding again is one line on the
    case, and the queue shows the latest finding once, with how often they asked."""
    ask("nobody@example.com")
    ask("nobody@example.com")

    case = SupportCase.objects.get()
    assert case.diagnosis.count("No order here for this email.") == 1
    assert "Asked again" in case.diagnosis and case.diagnosis.endswith("UTC: the same finding.")
    [row] = [r for r in queue.build(staff("sue@paidup.example", "Support")).rows if r.key == "cases"]
    [item] = row.items
    assert item.detail.count("No order here for this email.") == 1
    assert item.detail.endswith("(asked 2 times)")


def test_a_stripe_outage_during_the_check_ends_in_a_case(ask, fake_stripe, mailoutbox):
    fake_stripe.down = True

    ask("ada@example.com")

    case = SupportCase.objects.get()
    assert "Could not search Stripe" in case.diagnosis
    assert [m.tags for m in sent_to(mailoutbox, "ada@example.com")] == [["case_opened"]]


def test_a_queue_outage_still_gets_the_customer_a_person(ask, monkeypatch, mailoutbox):
    def broken(*args, **kwargs):
        raise ConnectionError("broker down")

    monkeypatch.setattr(selfservice, "async_task", broken)

    response = ask("ada@example.com")

    assert response.status_code == 200
    assert "could not be queued" in SupportCase.objects.get().diagnosis
    assert [m.tags for m in sent_to(mailoutbox, "ada@example.com")] == [["case_opened"]]


@pytest.mark.localstripe
def test_it_recovers_a_payment_from_a_real_localstripe(localstripe, settings, plan, django_capture_on_commit_callbacks):
    """localstripe lists customers by email but not PaymentIntents by customer: the check
    falls back to the succeeded-payment events, and adopts the payment."""
    settings.STRIPE_API_BASE = localstripe
    # The crash before the order committed: Stripe has the payment, we have no order.
    order = OrderFactory.build(email=f"crash-{uuid.uuid4().hex[:8]}@example.com", plan=plan)
    token = requests.post(
        f"{localstripe}/v1/tokens",
        data={"key": settings.STRIPE_PUBLISHABLE_KEY, "card[number]": "4242424242424242"}
        | {"card[exp_month]": "12", "card[exp_year]": "34", "card[cvc]": "123"},
        timeout=10,
    ).json()["id"]
    pi = gateway.create_payment_intent(order, token)
    assert gateway.confirm(order, pi.id).status == "succeeded"
    with pytest.raises(stripe.InvalidRequestError):  # why the fallback exists
        gateway.customer_payment_intents(pi.customer)

    with django_capture_on_commit_callbacks(execute=True):
        assert selfservice.check(order.email) == "access_emailed"

    adopted = Order.objects.get(stripe_payment_intent_id=pi.id)
    assert adopted.state == "fulfilled" and adopted.retroactive and adopted.reference == order.reference
    assert not SupportCase.objects.exists()


# --- it reveals nothing -------------------------------------------------------------

BRANCHES = {
    "paid": lambda fake, email: paid_order(fake, email),
    "fulfilled": lambda fake, email: paid_order(fake, email, state="fulfilled"),
    "unknown payment": lambda fake, email: fake.pay_elsewhere(email=email, metadata={"email": email}),
    "declined": declined_order,
    "nothing": lambda fake, email: None,
}


def normalized(response, email: str) -> str:
    body = response.content.decode()
    body = re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', "", body)
    return body.replace(email, "EMAIL")


def test_the_answer_is_the_same_whatever_is_found(ask, fake_stripe, plan):
    answers = {}
    for n, (branch, setup) in enumerate(BRANCHES.items()):
        email = f"customer{n}@example.com"
        setup(fake_stripe, email)
        response = ask(email, card_last4="4242", ip=f"198.51.100.{n}")
        answers[branch] = (response.status_code, normalized(response, email))

    assert SupportCase.objects.count() == 2  # declined, nothing: the check really ran
    assert len(set(answers.values())) == 1, answers.keys()
    status, body = answers["nothing"]
    assert status == 200 and "We're on it" in body and "EMAIL" in body


def test_the_page_does_the_same_work_whatever_is_found(client, fake_stripe, queued, plan):
    """No Stripe request and no read of anyone's orders, cases or account while answering: the
    answer's timing cannot depend on what exists."""
    work = {}
    for n, (branch, setup) in enumerate(BRANCHES.items()):
        email = f"customer{n}@example.com"
        setup(fake_stripe, email)
        if n % 2:  # asked about before: the rate-limit rows exist already
            client.post(URL, {"email": email}, REMOTE_ADDR=f"198.51.100.{n}")
        requests_before = fake_stripe.requests
        with CaptureQueriesContext(connection) as queries:
            client.post(URL, {"email": email}, REMOTE_ADDR=f"198.51.100.{n}")
        assert fake_stripe.requests == requests_before
        sql = [q["sql"] for q in queries.captured_queries]
        assert not [s for s in sql if re.search(r"billing_|accounts_user|support_supportcase|support_alert", s)], sql
        work[branch] = len(sql)

    assert len(set(work.values())) == 1, work
    kept = SelfServiceRequest.objects.get(email="customer0@example.com")
    assert queued[0] == (selfservice.REQUEST_TASK, kept.pk)


# --- rate limits ----------------------------------------------------------------------


def test_it_allows_five_requests_an_hour_per_client_address(client, queued):
    answers = [client.post(URL, {"email": f"c{n}@example.com"}, REMOTE_ADDR="203.0.113.7") for n in range(6)]

    assert [a.status_code for a in answers] == [200] * 5 + [429]
    assert len(queued) == 5
    assert client.post(URL, {"email": "c9@example.com"}, REMOTE_ADDR="203.0.113.8").status_code == 200


def test_a_brand_new_email_from_a_busy_address_hears_about_the_address_not_the_email(client, queued):
    """Issue 10, item 7: the sixth request from one address, for an email nobody asked about,
    was told "We already have your request". It says the address sent too many, and its page
    is the same whichever email was typed (nothing about the email leaks)."""
    for n in range(5):
        client.post(URL, {"email": f"c{n}@example.com"}, REMOTE_ADDR="203.0.113.7")
    answers = {
        email: client.post(URL, {"email": email}, REMOTE_ADDR="203.0.113.7")
        for email in ("brand-new@example.com", "c0@example.com")
    }

    pages = {email: normalized(answer, email) for email, answer in answers.items()}
    assert [a.status_code for a in answers.values()] == [429, 429]
    assert len(set(pages.values())) == 1 and "EMAIL" not in pages["c0@example.com"]
    body = pages["c0@example.com"]
    assert "Too many requests from here" in body and "from your connection" in body
    assert "We already have your request" not in body
    assert len(queued) == 5  # neither was handled
    # The email's own limit was not touched: from another address it goes through.
    assert client.post(URL, {"email": "brand-new@example.com"}, REMOTE_ADDR="203.0.113.9").status_code == 200


def test_an_email_asked_about_too_often_says_we_already_have_it(client, queued):
    for n in range(3):
        client.post(URL, {"email": "ada@example.com"}, REMOTE_ADDR=f"203.0.113.{n}")
    answer = client.post(URL, {"email": "ada@example.com"}, REMOTE_ADDR="203.0.113.60")
    assert answer.status_code == 429
    assert "We already have your request" in answer.content.decode()
    assert "Too many requests from here" not in answer.content.decode()


def test_it_allows_three_requests_an_hour_per_email(client, queued):
    answers = [client.post(URL, {"email": "ada@example.com"}, REMOTE_ADDR=f"203.0.113.{n}") for n in range(4)]
    answers.append(client.post(URL, {"email": "ADA@example.com"}, REMOTE_ADDR="203.0.113.99"))

    assert [a.status_code for a in answers] == [200] * 3 + [429] * 2
    assert len(queued) == 3


@race
def test_the_email_limit_holds_when_requests_arrive_at_once(queued):
    """Eight processes' worth of requests for one email, at the same instant: three get through."""
    from django.test import Client

    answers = run_together(
        *[lambda n=n: Client().post(URL, {"email": "ada@example.com"}, REMOTE_ADDR=f"203.0.113.{n}") for n in range(8)]
    )

    assert sorted(a.status_code for a in answers) == [200] * 3 + [429] * 5
    assert len(queued) == 3


def test_the_limits_reset_after_the_hour(client, queued, fake_stripe):
    with time_machine.travel(timezone.now(), tick=False) as clock:
        for n in range(3):
            client.post(URL, {"email": "ada@example.com"}, REMOTE_ADDR=f"203.0.113.{n}")
        assert client.post(URL, {"email": "ada@example.com"}, REMOTE_ADDR="203.0.113.50").status_code == 429
        clock.shift(timedelta(hours=1))
        assert client.post(URL, {"email": "ada@example.com"}, REMOTE_ADDR="203.0.113.51").status_code == 200
        # the check sweeps the rows of windows that are over
        selfservice.check("someone@example.com")
    assert RateLimit.objects.count() == 2  # this window's: one address, one email


def test_no_address_or_email_is_stored_in_the_clear(client, queued):
    client.post(URL, {"email": "ada@example.com"}, REMOTE_ADDR="203.0.113.7")

    keys = " ".join(RateLimit.objects.values_list("key", flat=True))
    assert "ada" not in keys and "203.0.113.7" not in keys


@pytest.mark.parametrize(
    "forwarded, proxies, expected",
    [
        ("198.51.100.1", 0, "10.0.0.1"),  # no proxy configured: the header is not trusted
        ("198.51.100.1", 1, "198.51.100.1"),
        ("6.6.6.6, 198.51.100.1", 1, "198.51.100.1"),  # a spoofed entry in front is ignored
        ("198.51.100.1, 10.0.0.2", 2, "198.51.100.1"),
        ("", 1, "10.0.0.1"),
    ],
)
def test_the_client_address_behind_proxies(rf, settings, forwarded, proxies, expected):
    settings.NUM_PROXIES = proxies
    request = rf.post(URL, REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR=forwarded)
    assert selfservice.client_address(request) == expected


# --- bad input, and GET ---------------------------------------------------------------

FUTURE = (timezone.localdate() + timedelta(days=3)).isoformat()


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"email": ""}, "Please enter the email address you paid with."),
        ({"email": "ada.example.com"}, "doesn&#x27;t look like an email address"),
        ({"email": "ada@example.com", "card_last4": "42a2"}, "The last four digits are 4 numbers"),
        ({"email": "ada@example.com", "card_last4": "12345"}, "The last four digits are 4 numbers"),
        ({"email": "ada@example.com", "card_last4": "4242424242424242"}, "The last four digits are 4 numbers"),
        ({"email": "ada@example.com", "paid_on": FUTURE}, "That date is in the future"),
        ({"email": "ada@example.com", "paid_on": "2026-13-45"}, "We couldn&#x27;t read that date"),
        ({"email": "ada@example.com", "paid_on": "last tuesday"}, "We couldn&#x27;t read that date"),
    ],
)
def test_bad_input_gets_a_clear_message_and_nothing_is_done(client, queued, fields, message, mailoutbox):
    response = client.post(URL, fields)

    assert response.status_code == 400
    assert message in response.content.decode()
    assert not queued and not RateLimit.objects.exists()
    assert not SupportCase.objects.exists() and not OutboundEmail.objects.exists()


def test_it_accepts_the_last_four_digits_with_a_space_and_today(client, queued):
    today = timezone.localdate()
    response = client.post(URL, {"email": " ada@example.com ", "card_last4": "42 42", "paid_on": today.isoformat()})

    assert response.status_code == 200
    kept = SelfServiceRequest.objects.get()
    assert queued == [(selfservice.REQUEST_TASK, kept.pk)]
    assert (kept.email, kept.card_last4, kept.paid_on) == ("ada@example.com", "4242", today)


def test_get_shows_the_form_and_changes_nothing(client, queued, fake_stripe):
    response = client.get(URL, {"email": "ada@example.com"})

    assert response.status_code == 200
    body = response.content.decode()
    assert "Charged but no access?" in body and "proof of payment" in body
    assert 'name="email"' in body and 'name="card_last4"' in body and 'name="paid_on"' in body
    assert not queued and fake_stripe.requests == 0
    assert not RateLimit.objects.exists() and not OutboundEmail.objects.exists()
    assert response.headers["Cache-Control"].startswith("max-age=0")


def test_other_methods_are_refused(client, queued):
    assert client.put(URL, {"email": "ada@example.com"}).status_code == 405
    assert not queued
