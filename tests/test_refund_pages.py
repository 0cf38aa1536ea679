"""Truth after a refund: the order page, the account page and the console tell partial, full
and failed refunds as they are (Order.refund_story), never "we received $249" alone; support
has replies for "where is my refund?" and for a refund that failed."""

import html
import re

import pytest
from django.utils import dateformat, timezone

from billing import refunds
from tests.factories import stripe_paid_order
from tests.fixtures import stripe_objects as so
from tests.fixtures.console import change_url, client_for, staff
from tests.fixtures.services import give_cookie

pytestmark = pytest.mark.django_db


@pytest.fixture
def order(fake_stripe, django_capture_on_commit_callbacks):
    """A fulfilled $249.00 order, paid with the card ending in 4242."""
    order = stripe_paid_order(fake_stripe, state="fulfilled")
    refunds.note_card(order, "4242")
    return order


def refund(order, amount: int, refund_id: str, status: str = "succeeded") -> None:
    """Stripe tells PaidUp about a refund (as the webhook or reconciliation would)."""
    refunds.record_refund(order, so.refund(order.stripe_payment_intent_id, amount, refund_id=refund_id, status=status),
                          actor="stripe:webhook")  # fmt: skip
    order.refresh_from_db()


def day(value) -> str:
    return dateformat.format(timezone.localtime(value), "j M Y")


def text(response) -> str:
    """The page's words, tags stripped, spaces collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", response.content.decode())).split())


def test_the_order_page_tells_a_partial_refund_and_that_access_continues(client, order):
    refund(order, 5000, "re_part")

    give_cookie(client, order.reference)  # the browser that paid (strangers: test_order_privacy.py)

    page = text(client.get(f"/orders/{order.reference}/"))

    assert "We received your payment of $249.00" in page
    assert f"$50.00 refunded on {day(timezone.now())}." in page
    assert f"Your access continues until {day(order.subscription.ends_at)}." in page
    assert "Refunded $50.00 of $249.00" in page and "card ending in 4242" in page


def test_the_order_page_of_a_fully_refunded_order_lists_each_refund_and_the_end_of_access(client, order):
    refund(order, 5000, "re_one")
    refund(order, 19900, "re_two")

    give_cookie(client, order.reference)  # the browser that paid (strangers: test_order_privacy.py)

    page = text(client.get(f"/orders/{order.reference}/"))

    assert "This order was refunded" in page
    assert page.count(f"refunded on {day(timezone.now())}.") == 2 and "$199.00 refunded" in page
    assert "Your access ended on" in page and "refunded in full" in page
    assert "Refunded $249.00 of $249.00" in page


def test_a_failed_refund_is_told_as_it_is(client, order):
    refund(order, 5000, "re_gone", status="pending")
    refund(order, 5000, "re_gone", status="failed")

    give_cookie(client, order.reference)  # the browser that paid (strangers: test_order_privacy.py)

    page = text(client.get(f"/orders/{order.reference}/"))

    assert "refund made on" in page and "didn't reach your card" in page and "pay it back another way" in page
    assert "Refunded $" not in page  # nothing is counted as refunded any more


def test_the_account_page_tells_the_refund_beside_the_order(order):
    refund(order, 5000, "re_acct")
    user = order.subscription.user

    page = text(client_for(user).get("/account/"))

    assert order.reference in page and "$50.00 refunded on" in page and "Your access continues until" in page


def test_the_console_shows_each_refund_with_its_status_and_what_the_customer_sees(order):
    refund(order, 5000, "re_c1")
    refund(order, 2000, "re_c2", status="pending")
    refund(order, 2000, "re_c2", status="canceled")
    ana = staff("ana@paidup.example", "Support")

    page = text(client_for(ana).get(change_url(order)))

    assert "Refunded $50.00 of $249.00" in page
    assert "$50.00 refunded on" in page and "re_c1" in page and "$20.00 cancelled on" in page
    assert "A refund failed after the customer was told it was coming" in page  # the diagnosis
    assert "Your refund didn't go through" in page and "Where is my refund?" in page  # the replies


def test_where_is_my_refund_names_every_refund_its_date_and_the_card(order):
    from support.replies import replies_for

    refund(order, 5000, "re_w1")
    reply = {r.key: r for r in replies_for(order)}["where_is_refund"]

    assert "$50.00 on" in reply.body and "re_w1" in reply.body and "card ending in 4242" in reply.body
    assert "5 to 10 business days" in reply.body and order.reference in reply.subject
    assert "screenshot" not in reply.body and "pay again" not in reply.body
