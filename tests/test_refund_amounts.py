"""Money typed as money in the console's refund form (issue 10, item 6).

"50" or "50.00" means $50.00 in a dollar order and "500" means ¥500 in a yen order; the console
asks "Refund $50.00 of $249.00 to the card ending 4242?" before anything moves; bad amounts are
refused next to the field, in words, and change nothing. Stored amounts stay in minor units.
"""

import re
import uuid

import pytest
from django.core.management import call_command

from billing.currencies import PriceError, parse_amount
from billing.models import Order, OutboundEmail, Refund
from support.models import RefundRequest
from tests.factories import PlanFactory
from tests.fixtures.console import act_url, client_for, fulfilled_order, staff
from tests.test_support_admin import snapshot, text

pytestmark = pytest.mark.django_db


@pytest.fixture
def as_ben():
    return client_for(staff("ben@paidup.example", "Support", "Support: refunds"))


def form_data(amount: str, **extra) -> dict:
    return {"amount": amount, "reason": "Customer asked", "token": str(uuid.uuid4()), **extra}


# --- reading the amount ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "currency", "minor"),
    [
        ("50", "usd", 5000),
        ("50.00", "usd", 5000),
        ("50.5", "usd", 5050),
        (" 50 ", "usd", 5000),
        ("0.01", "usd", 1),
        ("249", "USD", 24900),
        ("500", "jpy", 500),
        ("1.250", "kwd", 1250),
        ("40", "isk", 4000),
    ],
)
def test_an_amount_is_read_in_the_currencys_own_units(typed, currency, minor):
    assert parse_amount(typed, currency) == minor


@pytest.mark.parametrize(
    ("typed", "currency", "why"),
    [
        ("-5", "usd", "can't be negative"),
        ("- 5", "usd", "can't be negative"),
        ("0", "usd", "more than zero"),
        ("0.00", "usd", "more than zero"),
        ("50.001", "usd", "USD amounts have at most 2 decimals"),
        ("500.5", "jpy", "JPY amounts have no decimals"),
        ("fifty", "usd", "Type the amount in USD as digits"),
        ("", "usd", "Type the amount in USD as digits"),
        ("$50", "usd", "no symbol or separators"),
        ("1,000", "usd", "no symbol or separators"),
        ("50,00", "eur", "Type the amount in EUR as digits"),
        ("1e3", "usd", "as digits"),
        (".5", "usd", "as digits"),
        ("50.", "usd", "as digits"),
        ("5000", "jpy", None),  # fine: the control row
        ("40.10", "isk", "ISK is charged in whole units"),
        ("1000000", "usd", "more than Stripe handles"),
    ],
)
def test_an_amount_stripe_could_not_refund_is_refused_in_words(typed, currency, why):
    if why is None:
        assert parse_amount(typed, currency) == 5000
        return
    with pytest.raises(PriceError, match=why):
        parse_amount(typed, currency)


def test_a_zero_decimal_example_says_so():
    with pytest.raises(PriceError, match="for example 500"):
        parse_amount("lots", "jpy")


# --- the console's two steps ------------------------------------------------------------------


def test_the_question_names_the_amount_the_charge_and_the_card(as_ben, stripe_api):
    order = fulfilled_order(stripe_api)
    page = as_ben.get(act_url(order, "refund"))
    assert page.context["form"]["amount"].value() == "249.00"
    assert "Amount to refund, in USD" in text(page) and "50 or 50.00 is $50.00" in text(page)
    assert "Continue" in text(page)

    question = as_ben.post(act_url(order, "refund"), form_data("50.00"))
    assert question.status_code == 200
    assert "Refund $50.00 of $249.00 to the card ending 4242?" in text(question)
    assert "Reason, for the timeline: Customer asked" in text(question)
    assert stripe_api.refunds == [] and not RefundRequest.objects.exists()


def test_without_the_cards_digits_the_question_still_names_the_card(as_ben, stripe_api):
    order = fulfilled_order(stripe_api)
    stripe_api.card_digits[order.stripe_payment_intent_id] = None  # Stripe does not say (localstripe)
    question = as_ben.post(act_url(order, "refund"), form_data("50"))
    assert "Refund $50.00 of $249.00 to the card it was paid with?" in text(question)
    stripe_api.fail("retrieve", "conn", times=None)  # Stripe cannot be asked: the question does not wait for it
    question = as_ben.post(act_url(order, "refund"), form_data("50"))
    assert question.status_code == 200 and "to the card it was paid with?" in text(question)


def test_change_brings_the_form_back_as_typed(as_ben, stripe_api):
    order = fulfilled_order(stripe_api)
    response = as_ben.post(act_url(order, "refund"), form_data("50", edit="1", confirmed="yes"))
    assert response.status_code == 200 and response.context["question"] is None
    assert response.context["form"]["amount"].value() == "50"
    assert stripe_api.refunds == []


def test_yes_refunds_the_amount_and_every_record_reads_it_as_money(
    as_ben, stripe_api, django_capture_on_commit_callbacks
):
    order = fulfilled_order(stripe_api)
    data = form_data("50")
    as_ben.post(act_url(order, "refund"), data)
    with django_capture_on_commit_callbacks(execute=True):
        response = as_ben.post(act_url(order, "refund"), {**data, "confirmed": "yes"})
    assert response.status_code == 302
    order.refresh_from_db()
    assert order.refunded_cents == 5000 and order.state == Order.State.FULFILLED  # stored in cents
    assert [r.amount for r in stripe_api.refunds] == [5000]
    refund = Refund.objects.get(order=order)
    timeline = order.events.get(kind="refund").message
    assert timeline == f"Refund {refund.stripe_refund_id} of $50.00 recorded, refunded (Customer asked)."
    email = OutboundEmail.objects.get(order=order, kind="refund")
    assert "We've refunded $50.00 of your $249.00 payment" in email.body_text
    assert "We've refunded <strong>$50.00</strong> of your $249.00 payment" in email.body_html
    # The console's order page reads money too, never raw cents.
    page = text(as_ben.get(f"/admin/billing/order/{order.pk}/change/"))
    assert "Refunded: $50.00" in page and "Amount: $249.00" in page
    assert "5000" not in page and "24900" not in page


def test_a_yen_order_is_refunded_in_yen(as_ben, stripe_api):
    order = fulfilled_order(stripe_api, plan=PlanFactory(slug="jp", amount_cents=24900, currency="jpy"))
    assert as_ben.get(act_url(order, "refund")).context["form"]["amount"].value() == "24900"
    question = as_ben.post(act_url(order, "refund"), form_data("500"))
    assert "Refund ¥500 of ¥24,900 to the card ending 4242?" in text(question)
    refused = as_ben.post(act_url(order, "refund"), form_data("500.50", confirmed="yes"))
    assert refused.status_code == 400 and "JPY amounts have no decimals" in text(refused)
    as_ben.post(act_url(order, "refund"), form_data("500", confirmed="yes"))
    order.refresh_from_db()
    assert order.refunded_cents == 500 and [r.amount for r in stripe_api.refunds] == [500]


@pytest.mark.parametrize(
    ("typed", "why"),
    [
        ("-50", "can't be negative"),
        ("0", "more than zero"),
        ("50.005", "at most 2 decimals"),
        ("fifty dollars", "Type the amount in USD as digits"),
        ("", "Type the amount to refund"),
        ("9" * 40, "That is not an amount"),
        ("249.01", "That is more than is left to refund: at most $249.00 ($249.00 charged, $0.00 already refunded)"),
    ],
)
@pytest.mark.parametrize("step", ["first", "confirmed"])
def test_a_bad_amount_is_refused_next_to_its_field_and_changes_nothing(as_ben, stripe_api, typed, why, step):
    order = fulfilled_order(stripe_api)
    before = snapshot(order)
    extra = {"confirmed": "yes"} if step == "confirmed" else {}
    response = as_ben.post(act_url(order, "refund"), form_data(typed, **extra))
    html = response.content.decode()
    assert response.status_code == 400
    error = re.search(r'<div class="pu-error" id="id_amount_error">(.*?)</div>', html, re.S)
    assert error and why in error.group(1).replace("&#x27;", "'")
    assert re.search(r'<input[^>]*name="amount"[^>]*aria-invalid="true"', html)
    assert snapshot(order) == before and stripe_api.refunds == []


def test_more_than_is_left_after_a_partial_refund_is_refused(as_ben, stripe_api):
    order = fulfilled_order(stripe_api)
    as_ben.post(act_url(order, "refund"), form_data("50", confirmed="yes"))
    response = as_ben.post(act_url(order, "refund"), form_data("199.01", confirmed="yes"))
    assert "at most $199.00 ($249.00 charged, $50.00 already refunded)" in text(response)
    assert as_ben.get(act_url(order, "refund")).context["form"]["amount"].value() == "199.00"


def test_every_field_description_the_page_points_at_exists(as_ben, stripe_api):
    order = fulfilled_order(stripe_api)
    for response in (
        as_ben.get(act_url(order, "refund")),
        as_ben.post(act_url(order, "refund"), form_data("nonsense")),
        as_ben.get(act_url(order, "extend")),
    ):
        html = response.content.decode()
        pointed = {i for value in re.findall(r'aria-describedby="([^"]+)"', html) for i in value.split()}
        assert pointed, "the page's fields name their help text"
        missing = [i for i in pointed if f'id="{i}"' not in html]
        assert missing == []


def test_the_dry_run_reads_money_as_money(fake_stripe, capsys, plan):
    fake_stripe.pay_elsewhere(email="dry@example.com")
    call_command("reconcile", "--dry-run")
    out = capsys.readouterr().out
    assert "$249.00 succeeded in Stripe" in out and "24900" not in out


def test_the_question_uses_the_recorded_card_digits_without_asking_stripe(stripe_api, monkeypatch):
    """charge.refunded records the card's digits on the order: the question reads them there."""
    from support import action_forms, mirror

    order = fulfilled_order(stripe_api)
    Order.objects.filter(pk=order.pk).update(card_last4="1881")
    order.refresh_from_db()
    monkeypatch.setattr(mirror.gateway, "card_last4", lambda pi: pytest.fail("asked Stripe again"))
    question, _ = action_forms.refund_question(order, {"amount": 5000})
    assert question == f"Refund $50.00 of {order.price} to the card ending 1881?"
