"""/help/charged/ with an email that matches nothing, plus the card's last four digits and the
payment date: the case names the orders paid around that day with such a card, for support only.
Nothing is given, sent or changed on the strength of four digits."""

from datetime import timedelta

import pytest
from django.utils import timezone

from billing.models import Order, OutboundEmail
from support import candidates
from support.models import SupportCase
from tests.factories import stripe_paid_order

pytestmark = pytest.mark.django_db

URL = "/help/charged/"


@pytest.fixture
def ask(client, django_capture_on_commit_callbacks, fake_stripe):
    def post(email, **fields):
        with django_capture_on_commit_callbacks(execute=True):
            return client.post(URL, {"email": email, **fields}, REMOTE_ADDR="203.0.113.9")

    return post


def paid_with_card(fake_stripe, email: str, last4: str, *, days_ago: float = 2) -> Order:
    """A fulfilled order charged `days_ago` days ago with a card ending `last4` (on its charge,
    where Stripe reports it)."""
    order = stripe_paid_order(fake_stripe, email=email, state="fulfilled", charged_ago=int(days_ago * 86400))
    charge = fake_stripe.charges[fake_stripe.intents[order.stripe_payment_intent_id]["latest_charge"]]
    charge["payment_method_details"] = {"type": "card", "card": {"brand": "visa", "last4": last4}}
    return order


def test_the_case_names_the_orders_paid_that_day_with_that_card(ask, fake_stripe, mailoutbox):
    typo = paid_with_card(fake_stripe, "jane@gmial.com", "4242")
    paid_with_card(fake_stripe, "other@example.com", "1881")  # same day, another card
    paid_with_card(fake_stripe, "older@example.com", "4242", days_ago=9)  # same card, another week
    mailoutbox.clear()
    paid_on = (timezone.now() - timedelta(days=2)).date()

    ask("jane@gmail.com", card_last4="4242", paid_on=paid_on.isoformat())

    case = SupportCase.objects.get()
    assert "Candidates: orders paid around" in case.diagnosis and "never give access on this alone" in case.diagnosis
    assert f"{typo.reference}: jane@gmial.com, $249.00" in case.diagnosis
    assert "other@example.com" not in case.diagnosis and "older@example.com" not in case.diagnosis
    # Nothing given or sent on four digits: the customer gets the case email, nobody else anything.
    assert [(m.to, m.tags) for m in mailoutbox if m.to != ["support@paidup.example"]] == [
        (["jane@gmail.com"], ["case_opened"])
    ]
    typo.refresh_from_db()
    assert typo.email == "jane@gmial.com" and typo.subscription.user.email == "jane@gmial.com"
    assert not OutboundEmail.objects.filter(kind="signin").exists()


def test_without_the_date_or_the_digits_no_candidates_are_looked_for(ask, fake_stripe):
    paid_with_card(fake_stripe, "jane@gmial.com", "4242")
    requests_before = fake_stripe.requests
    ask("jane@gmail.com", card_last4="4242")
    assert "Candidates" not in SupportCase.objects.get().diagnosis
    assert fake_stripe.requests - requests_before < 5  # the email search only, no card checks


def test_an_email_with_orders_gets_no_candidates(ask, fake_stripe):
    paid_with_card(fake_stripe, "jane@gmial.com", "4242")
    stripe_paid_order(fake_stripe, email="ann@example.com", state="pending", charged_ago=0)
    Order.objects.filter(email="ann@example.com").update(state="failed", stripe_payment_status="canceled")
    ask("ann@example.com", card_last4="4242", paid_on=timezone.localdate().isoformat())
    assert "Candidates" not in SupportCase.objects.get().diagnosis


def test_a_stripe_outage_during_the_card_check_is_a_note_not_a_failure(fake_stripe):
    paid_with_card(fake_stripe, "jane@gmial.com", "4242")
    fake_stripe.down = True
    found = candidates.find("4242", (timezone.now() - timedelta(days=2)).date())
    assert found.orders == [] and "stopped early" in found.notes[0]
