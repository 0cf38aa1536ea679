"""Issue 10, item 7: the rough edges a new customer and a new support person hit, each with
the test that would have caught it. (The browser-only ones, and focus and announcements, are
in tests/test_a11y.py; the help page's rate limit and the case row in tests/test_selfservice.py.)
"""

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from django.utils.formats import date_format

from billing.models import Order
from support.templatetags.support_console import confirm_label
from tests.factories import OrderFactory
from tests.fixtures.console import act_url, client_for, fulfilled_order, staff
from tests.fixtures.services import CARD, cookie_reference, give_cookie

pytestmark = pytest.mark.django_db

DJANGO_DEFAULT = "Ensure this value has at most"
TOO_LONG = "ada@" + ".".join(["a" * 60] * 4) + ".example"  # well-formed, 255 characters


@pytest.mark.parametrize(
    ("url", "data"),
    [
        ("/checkout/", {"email": TOO_LONG, "payment_method": CARD}),
        ("/account/sign-in/", {"email": TOO_LONG}),
        ("/help/charged/", {"email": TOO_LONG}),
    ],
)
def test_a_too_long_email_is_refused_in_the_house_voice_next_to_its_field(client, plan, fake_stripe, url, data):
    client.get(url)
    page = client.post(url, data).content.decode()
    assert DJANGO_DEFAULT not in page
    assert "That email address is too long to be real (254 characters at most). Please check it." in page
    # Next to the field, and the field points at it.
    field = re.search(r"<input[^>]*type=\"email\"[^>]*>", page).group(0)
    assert 'aria-invalid="true"' in field
    described = re.search(r'aria-describedby="([^"]+)"', field).group(1).split()
    error_id = next(i for i in described if i.endswith("error"))
    assert re.search(rf'id="{error_id}"[^>]*>[^<]*too long to be real', page)
    assert not Order.objects.exists()


def test_the_checkout_scripts_json_names_the_field_at_fault(client, plan, fake_stripe):
    client.get("/checkout/")
    answer = client.post("/checkout/", {"email": "ada@", "payment_method": "xyz"}, HTTP_ACCEPT="application/json")
    data = answer.json()
    assert answer.status_code == 400
    assert data["field_errors"] == {"email": "That doesn't look like an email address. Please check it."}
    assert data["form_error"].startswith("We couldn't read your card details.")
    assert data["field_errors"]["email"] in data["error"] and data["form_error"] in data["error"]
    assert not fake_stripe.created


def test_after_a_recovery_the_order_page_shows_when_the_card_was_charged(client, stripe_api):
    """Recorded paid (and fulfilled) two hours after the charge: "Paid" is the charge's time."""
    order = fulfilled_order(stripe_api)
    charged = timezone.now() - timedelta(hours=2)
    Order.objects.filter(pk=order.pk).update(charged_at=charged, paid_at=timezone.now())
    give_cookie(client, order.reference)  # the browser that paid (strangers: test_order_privacy.py)
    page = client.get(f"/orders/{order.reference}/").content.decode()
    shown = re.search(r"<dt>Paid</dt><dd>([^<]+)</dd>", page).group(1)
    assert shown == date_format(timezone.localtime(charged), "j F Y, H:i T")


def test_an_order_paid_before_charged_at_existed_still_shows_its_paid_time(client, stripe_api):
    order = fulfilled_order(stripe_api)
    Order.objects.filter(pk=order.pk).update(charged_at=None)
    order.refresh_from_db()
    give_cookie(client, order.reference)  # the browser that paid (strangers: test_order_privacy.py)
    page = client.get(f"/orders/{order.reference}/").content.decode()
    assert f"<dt>Paid</dt><dd>{date_format(timezone.localtime(order.paid_at), 'j F Y, H:i T')}</dd>" in page


@pytest.mark.parametrize("state", ["pending", "paid", "fulfilled", "failed", "refunded"])
def test_the_order_page_offers_one_line_to_a_person(client, plan, state):
    order = OrderFactory(plan=plan, state=state, paid_at=timezone.now() if state != "pending" else None)
    give_cookie(client, order.reference)  # the browser that paid (strangers: test_order_privacy.py)
    page = client.get(f"/orders/{order.reference}/").content.decode()
    assert page.count("mailto:") == 1
    assert page.count("Questions?") + page.count("Something not right?") == 1
    assert f"subject=Order%20{order.reference}" in page  # the one that carries the reference


def test_other_pages_keep_the_footer_line(client, plan):
    assert "Questions? A person answers at" in client.get("/checkout/").content.decode()


@pytest.mark.parametrize(
    ("view", "waiting"),
    [({"state": "pending"}, True), ({"state": "paid"}, True), ({"state": "failed"}, False)],
)
def test_the_order_page_never_reloads_itself_for_a_script_browser(client, plan, view, waiting):
    """WCAG 2.2.1: no meta refresh outside <noscript>; the polling script only while waiting."""
    order = OrderFactory(plan=plan, **view)
    give_cookie(client, order.reference)  # the browser that paid (strangers: test_order_privacy.py)
    page = client.get(f"/orders/{order.reference}/").content.decode()
    outside_noscript = re.sub(r"<noscript>.*?</noscript>", "", page, flags=re.S)
    assert "http-equiv" not in outside_noscript
    assert ('<noscript><meta http-equiv="refresh" content="30"></noscript>' in page) is waiting
    assert ("js/order.js" in page) is waiting
    assert ('data-poll="/orders/' in page) is waiting
    assert 'id="order-live" class="visually-hidden" role="status"' in page


@pytest.mark.parametrize(
    ("state", "title"),
    [
        ("pending", "Waiting for your payment"),
        ("paid", "Payment received, setting up your access"),
        ("failed", "Order not completed, not charged"),
    ],
)
def test_the_outcome_leads_the_order_pages_title(client, plan, state, title):
    order = OrderFactory(plan=plan, state=state, paid_at=timezone.now())
    give_cookie(client, order.reference)  # the browser that paid (strangers: test_order_privacy.py)
    page = client.get(f"/orders/{order.reference}/").content.decode()
    assert f"<title>{title} · Order {order.reference} · PaidUp</title>" in page.replace("&#x27;", "'")


def test_the_claim_button_says_i_with_a_capital(stripe_api):
    order = fulfilled_order(stripe_api)
    page = client_for(staff("sue@paidup.example", "Support")).get(act_url(order, "claim")).content.decode()
    assert "Yes, I&#x27;m on it" in page or "Yes, I'm on it" in page
    assert "i&#x27;m on it" not in page and "i'm on it" not in page


@pytest.mark.parametrize(
    ("label", "button"),
    [
        ("Refund", "Yes, refund"),
        ("I'm on it", "Yes, I'm on it"),
        ("Refresh from Stripe", "Yes, refresh from Stripe"),
        ("Resend access email", "Yes, resend access email"),
    ],
)
def test_confirm_labels_lower_only_the_first_letter(label, button):
    assert confirm_label(label) == button


def test_a_console_action_error_is_linked_to_its_field(stripe_api):
    order = fulfilled_order(stripe_api)
    page = client_for(staff("sue@paidup.example", "Support")).post(act_url(order, "extend"), {"days": "999"})
    html = page.content.decode()
    field = re.search(r'<input[^>]*name="days"[^>]*>', html).group(0)
    assert 'aria-invalid="true"' in field
    for target in re.search(r'aria-describedby="([^"]+)"', field).group(1).split():
        assert f'id="{target}"' in html, target  # every id the field points at exists
    assert re.search(r'id="id_days_error">A whole number of days from 1 to 366\.<', html)
    assert "Ensure this value" not in html


def test_the_custom_error_pages_can_be_seen_in_dev(client, plan):
    """README: with DEBUG on, Django shows its technical pages; /dev/errors/ shows ours."""
    not_found = client.get("/dev/errors/404/")
    assert not_found.status_code == 404 and "We couldn't find that page" in not_found.content.decode()
    client.get("/checkout/")  # the reference cookie: the 500 page names the checkout
    reference = cookie_reference(client)
    crashed = client.get("/dev/errors/500/")
    assert crashed.status_code == 500 and reference in crashed.content.decode()


def test_no_template_has_a_comment_django_would_print():
    """`{# … #}` is a one-line comment in Django: spread over two lines it is printed to the
    customer as text (the checkout once showed a developer's note under the email field)."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "templates"
    printed = [
        f"{path.relative_to(root)}:{number}"
        for path in sorted(root.rglob("*.*"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if line.count("{#") > line.count("#}")
    ]
    assert printed == []


def test_the_checkout_shows_no_template_comment(client, plan):
    page = client.get("/checkout/").content.decode()
    assert "{#" not in page and "#}" not in page
