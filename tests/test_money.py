"""Money shown one way: Stripe's minor units, CLDR's symbols, in every place a person reads an amount."""

import uuid
from decimal import Decimal

import pytest
from django.urls import reverse

from billing.fulfilment import fulfil
from billing.models import Order, OutboundEmail, Refund
from billing.models.orders import format_money
from billing.money import minor_unit_exponent, stripe_amount_problem, to_major
from support.action_forms import RefundForm
from support.diagnosis import diagnose
from support.plan_admin import PlanForm
from support.replies import replies_for
from tests.factories import OrderFactory, PlanFactory, payment_intent
from tests.fixtures.console import client_for
from tests.fixtures.services import give_cookie

NBSP = "\u00a0"


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        (24900, "usd", "$249.00"),
        (24900, "eur", "€249.00"),
        (24900, "gbp", "£249.00"),
        (5, "usd", "$0.05"),
        (123456789, "usd", "$1,234,567.89"),
        # Zero-decimal: Stripe's 24900 is 24,900 yen, not 249.00.
        (24900, "jpy", "¥24,900"),
        (24900, "JPY", "¥24,900"),
        (35000, "krw", "₩35,000"),
        # Three-decimal: thousandths.
        (1234560, "kwd", f"KWD{NBSP}1,234.560"),
        (24900, "bhd", f"BHD{NBSP}24.900"),
        # ISK and UGX: two-decimal in Stripe's API, shown in whole units like CLDR does...
        (500000, "isk", f"ISK{NBSP}5,000"),
        (370000, "ugx", f"UGX{NBSP}3,700"),
        # ...unless that would hide money (a fractional ISK charge from before 2023).
        (4010, "isk", f"ISK{NBSP}40.10"),
        # CLDR shows no decimals for ALL, Stripe counts hundredths: 1050 is 10.50, never 1,050.
        (1050, "all", f"ALL{NBSP}10.50"),
        # A code nobody knows: Stripe's default of two decimals, the code as its symbol.
        (12345, "zzz", f"ZZZ{NBSP}123.45"),
    ],
)
def test_it_shows_each_amount_as_stripe_counts_it(amount, currency, shown):
    assert format_money(amount, currency) == shown


@pytest.mark.parametrize(("currency", "exponent"), [("usd", 2), ("jpy", 0), ("krw", 0), ("kwd", 3), ("isk", 2)])
def test_it_knows_how_stripe_counts_minor_units(currency, exponent):
    assert minor_unit_exponent(currency) == exponent


def test_it_converts_to_major_units_exactly():
    assert to_major(24900, "usd") == Decimal("249.00")
    assert to_major(24900, "jpy") == Decimal("24900")
    assert to_major(1234560, "kwd") == Decimal("1234.560")


@pytest.mark.parametrize("bad", ["", "us", "usdd", "u$d", "1us", "ÜSD", None])
def test_it_refuses_a_malformed_currency_code(bad):
    with pytest.raises(ValueError, match="not a currency code"):
        format_money(100, bad)


@pytest.mark.parametrize(
    ("amount", "currency", "refused"),
    [
        (24900, "usd", False),
        (24901, "jpy", False),
        (500000, "isk", False),
        (4010, "isk", True),
        (370050, "ugx", True),
        (24900, "kwd", False),
        (24905, "kwd", True),
    ],
)
def test_it_knows_which_amounts_stripe_refuses(amount, currency, refused):
    assert (stripe_amount_problem(amount, currency) is not None) == refused


# --- every place a person reads an amount --------------------------------------------


@pytest.fixture
def yen_order(db, django_capture_on_commit_callbacks):
    plan = PlanFactory(slug="pro-year-jp", amount_cents=24900, currency="jpy")
    order = OrderFactory(plan=plan)
    with django_capture_on_commit_callbacks(execute=True):
        fulfil(order, via="webhook", payment_intent=payment_intent(order))
    order.refresh_from_db()
    return order


def test_a_yen_order_page_and_email_show_yen(yen_order, client, mailoutbox):
    give_cookie(client, yen_order.reference)  # the amount is for the browser that placed the order
    page = client.get(reverse("billing:order", args=[yen_order.reference])).content.decode()
    assert "¥24,900" in page and "249.00" not in page
    email = OutboundEmail.objects.get(order=yen_order)
    assert "¥24,900" in email.body_text and "¥24,900" in email.body_html and "249.00" not in email.body_text
    assert "¥24,900" in mailoutbox[0].body


def test_support_reads_yen_in_the_diagnosis_replies_and_refund_records(yen_order):
    Order.objects.filter(pk=yen_order.pk).update(
        state=Order.State.REFUNDED, refunded_cents=24900, refunded_at=yen_order.fulfilled_at
    )
    yen_order.refresh_from_db()
    assert diagnose(yen_order).sentence.startswith("Refunded ¥24,900 ")
    assert all("249.00" not in reply.body for reply in replies_for(yen_order))
    assert any("¥24,900" in reply.body for reply in replies_for(yen_order))
    refund = Refund(order=yen_order, stripe_refund_id="re_1", amount_cents=1000, currency="jpy", actor="test")
    assert str(refund) == "re_1 (¥1,000)"


def test_the_refund_form_speaks_the_orders_currency_and_refuses_what_stripe_would(db):
    yen = OrderFactory(plan=PlanFactory(slug="jp", amount_cents=24900, currency="jpy"))
    form = RefundForm(order=yen)
    assert form.fields["amount"].label == "Amount to refund, in JPY"
    assert "500 is ¥500" in form.fields["amount"].help_text

    krona = OrderFactory(plan=PlanFactory(slug="is", amount_cents=500000, currency="isk"))
    data = {"amount": "40.10", "reason": "Goodwill", "token": str(uuid.uuid4())}
    form = RefundForm(data, order=krona)
    assert not form.is_valid()
    assert form.errors["amount"] == [f"ISK is charged in whole units: ISK{NBSP}40.10 has a fraction."]
    form = RefundForm({**data, "amount": "40"}, order=krona)
    assert form.is_valid() and form.cleaned_data["amount"] == 4000


@pytest.mark.parametrize(
    ("currency", "amount", "error"),
    [
        ("xx", 100, "Not a currency code we know"),
        ("abc", 100, "Not a currency code we know"),
        ("$", 100, "Not a currency code we know"),
        ("isk", 4010, "ISK is charged in whole units"),
        ("kwd", 24905, "Stripe needs KWD amounts rounded to 0.010"),
    ],
)
def test_the_plan_form_refuses_a_price_stripe_would_refuse(db, currency, amount, error):
    form = PlanForm({"slug": "p", "name": "P", "amount_cents": amount, "currency": currency, "duration_days": 365})
    assert not form.is_valid()
    assert error in " ".join(sum(form.errors.values(), []))


def test_the_plan_form_stores_the_code_as_stripe_wants_it(db):
    form = PlanForm({"slug": "p", "name": "P", "amount_cents": 24900, "currency": " JPY ", "duration_days": 365})
    assert form.is_valid(), form.errors
    plan = form.save()
    assert plan.currency == "jpy" and plan.price == "¥24,900"


def test_the_console_order_page_shows_refunds_in_the_orders_currency(yen_order):
    from accounts.models import User

    staff = User.objects.create_superuser("ana@paidup.example")
    client = client_for(staff)  # signed in, second factor verified
    Refund.objects.create(order=yen_order, stripe_refund_id="re_1", amount_cents=1000, currency="jpy", actor="test")
    page = client.get(reverse("admin:billing_order_change", args=[yen_order.pk])).content.decode()
    assert "¥1,000 refunded on" in page and "re_1" in page and "1000 cents" not in page
