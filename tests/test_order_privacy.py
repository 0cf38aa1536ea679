"""The order page shows nothing to strangers (issue 10, item 5).

Without the order's reference cookie or a signed link from one of its emails, /orders/<ref>/
shows where the order stands and what to do next, never the email, amount, plan or times;
such lookups are rate-limited per client address; made-up references all get the same 404.
"""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from billing import order_links, refcookie
from billing.fulfilment import fulfil
from billing.models import Order, OutboundEmail, RateLimit
from billing.order_views import LOOKUPS_PER_WINDOW
from billing.refunds import record_refund
from tests.factories import OrderFactory, payment_intent
from tests.fixtures.gateway import _Obj
from tests.fixtures.services import CARD, cookie_reference, give_cookie
from tests.test_checkout_views import VIEWS

pytestmark = pytest.mark.django_db

JSON = {"HTTP_ACCEPT": "application/json"}
YEAR = str(timezone.now().year)  # a reference cannot hold it: its alphabet has no 0 or 1


@pytest.fixture
def fulfilled(plan, django_capture_on_commit_callbacks):
    order = OrderFactory(plan=plan, email="ada@example.com")
    with django_capture_on_commit_callbacks(execute=True):
        fulfil(order, via="webhook", payment_intent=payment_intent(order))
    order.refresh_from_db()
    return order


def details_shown(page: str, order: Order) -> list[str]:
    """Which of the order's details a page shows."""
    details = {"email": order.email, "amount": "249", "plan": order.plan.name, "a date or time": YEAR}
    return [name for name, value in details.items() if value in page]


# --- what a stranger sees ---------------------------------------------------------------


@pytest.mark.parametrize("view", VIEWS)
def test_a_stranger_sees_where_every_kind_of_order_stands_and_nothing_else(view, client, plan, fake_stripe, settings):
    make, _ = VIEWS[view]
    order = make(plan, fake_stripe, settings)
    Order.objects.filter(pk=order.pk).update(paid_at=timezone.now(), charged_at=timezone.now())
    response = client.get(f"/orders/{order.reference}/")
    page = response.content.decode()
    assert response.status_code == 200 and f'data-view="{view}"' in page and 'data-public="1"' in page
    assert order.reference in page and "open the link in any email we sent" in page
    assert details_shown(page, order) == []
    assert 'http-equiv="refresh"' not in page  # each load is a counted lookup
    assert refcookie.COOKIE not in response.cookies  # a look gives no cookie


def test_a_stranger_is_told_what_to_do_next(client, fulfilled):
    page = client.get(f"/orders/{fulfilled.reference}/").content.decode()
    assert "paid and its access is ready" in page and "Send me a new sign-in link" in page


def test_the_browser_that_placed_the_order_sees_its_details(client, fulfilled):
    give_cookie(client, fulfilled.reference)
    page = client.get(f"/orders/{fulfilled.reference}/").content.decode()
    assert "You're all set" in page
    assert details_shown(page, fulfilled) == ["email", "amount", "plan", "a date or time"]
    assert not RateLimit.objects.exists()  # the owner's looks are not counted


def test_a_cookie_for_another_order_is_a_stranger(client, fulfilled, plan):
    give_cookie(client, OrderFactory(plan=plan).reference)
    page = client.get(f"/orders/{fulfilled.reference}/").content.decode()
    assert details_shown(page, fulfilled) == []


def test_the_json_stays_three_keys_for_everyone(client, fulfilled):
    expected = {"reference": fulfilled.reference, "state": "fulfilled", "fulfilled": True}
    assert client.get(f"/orders/{fulfilled.reference}/", **JSON).json() == expected
    give_cookie(client, fulfilled.reference)
    assert client.get(f"/orders/{fulfilled.reference}/", **JSON).json() == expected


# --- the signed link from the order's emails -----------------------------------------------


def test_the_link_shows_the_details_and_gives_the_cookie_so_a_reload_keeps_them(client, fulfilled):
    response = client.get(order_links.order_path(fulfilled.reference))
    assert details_shown(response.content.decode(), fulfilled) == ["email", "amount", "plan", "a date or time"]
    assert cookie_reference(client) == fulfilled.reference
    reload = client.get(f"/orders/{fulfilled.reference}/").content.decode()
    assert "ada@example.com" in reload
    assert not RateLimit.objects.exists()


@pytest.mark.parametrize(
    "token",
    [
        "",
        "nonsense",
        "x" * 500,
        "1abcde:0123456789abcdefghijklmnopqrstuvwxyzABC",  # the shape, not our signature
    ],
)
def test_a_bad_link_is_a_strangers_look(client, fulfilled, token):
    response = client.get(f"/orders/{fulfilled.reference}/", {"k": token})
    assert response.status_code == 200
    assert details_shown(response.content.decode(), fulfilled) == []
    assert refcookie.COOKIE not in response.cookies
    assert RateLimit.objects.get().hits == 1


def test_a_link_made_for_one_order_opens_no_other(client, fulfilled, plan):
    other = OrderFactory(plan=plan, state="fulfilled", email="grace@example.com")
    response = client.get(f"/orders/{other.reference}/", {"k": order_links.token(fulfilled.reference)})
    assert details_shown(response.content.decode(), other) == []
    assert refcookie.COOKIE not in response.cookies


def test_an_old_link_shows_the_state_and_says_why(client, fulfilled, time_machine):
    path = order_links.order_path(fulfilled.reference)
    time_machine.move_to(timezone.now() + timedelta(seconds=order_links.LINK_MAX_AGE + 60))
    response = client.get(path)
    page = response.content.decode()
    assert "more than 30 days old" in page and details_shown(page, fulfilled) == []
    assert refcookie.COOKIE not in response.cookies


def test_a_link_still_works_on_its_last_day(client, fulfilled, time_machine):
    path = order_links.order_path(fulfilled.reference)
    time_machine.move_to(timezone.now() + timedelta(seconds=order_links.LINK_MAX_AGE - 60))
    assert "ada@example.com" in client.get(path).content.decode()


def test_a_link_does_not_take_the_cookie_of_a_checkout_under_way(client, fulfilled, plan):
    checkout = OrderFactory(plan=plan)  # pending: this browser is paying for it in another tab
    give_cookie(client, checkout.reference)
    response = client.get(order_links.order_path(fulfilled.reference))
    assert "ada@example.com" in response.content.decode()
    assert refcookie.COOKIE not in response.cookies and cookie_reference(client) == checkout.reference


def test_every_email_of_the_order_carries_a_link_that_opens_it(client, fulfilled, settings):
    refund = _Obj(id="re_1", amount=5000, currency="usd")
    record_refund(fulfilled, refund, actor="test", reason="asked")
    emails = {e.kind: e for e in OutboundEmail.objects.filter(order=fulfilled)}
    assert set(emails) == {"confirmation", "refund"}
    for email in emails.values():
        prefix = f"{settings.SITE_URL}/orders/{fulfilled.reference}/?k="
        link = next(word for word in email.body_text.split() if word.startswith(prefix))
        assert f'href="{link}"' in email.body_html
        stranger = Client()
        assert "ada@example.com" in stranger.get(link.removeprefix(settings.SITE_URL)).content.decode()


def test_the_recovery_email_carries_the_link_too(client, plan, settings, django_capture_on_commit_callbacks):
    order = OrderFactory(plan=plan)
    late = int((timezone.now() - timedelta(hours=1)).timestamp())
    with django_capture_on_commit_callbacks(execute=True):
        fulfil(order, via="reconciliation", payment_intent=payment_intent(order, created=late))
    email = OutboundEmail.objects.get(order=order)
    assert email.kind == "recovery"
    assert f"{settings.SITE_URL}/orders/{order.reference}/?k=" in email.body_text


def test_a_browser_that_refuses_cookies_is_sent_to_its_order_with_the_link(plan, fake_stripe):
    browser = Client()
    page = browser.get("/checkout/").context
    browser.cookies.clear()
    data = {"email": "ada@example.com", "payment_method": CARD, "checkout_ref": page["signed_reference"]}
    response = browser.post("/checkout/", data, **JSON)
    url = response.json()["redirect"]
    assert url.startswith(f"/orders/{page['reference']}/?k=")
    browser.cookies.clear()
    assert "ada@example.com" in browser.get(url).content.decode()


# --- rate limit and made-up references --------------------------------------------------


def test_lookups_without_the_cookie_are_limited_per_client_address(client, fulfilled, plan, settings):
    made_up = [f"PU-{c * 6}" for c in "23456789ABCDEFGHJKMNPQRSTVWXYZ"]
    assert not Order.objects.filter(reference__in=made_up).exists()
    answers = [client.get(f"/orders/{reference}/").status_code for reference in made_up[: LOOKUPS_PER_WINDOW - 1]]
    assert set(answers) == {404}
    assert client.get(f"/orders/{fulfilled.reference}/").status_code == 200  # the last one of the window
    limited = client.get(f"/orders/{fulfilled.reference}/")
    page = limited.content.decode()
    assert limited.status_code == 429 and int(limited["Retry-After"]) <= 600
    assert "Please wait a few minutes" in page and settings.SUPPORT_EMAILS[0] in page
    assert fulfilled.reference not in page
    assert client.get(f"/orders/{made_up[-1]}/").status_code == 429  # same answer, real or made up
    assert client.get(f"/orders/{fulfilled.reference}/", **JSON).status_code == 429
    # Another address is not held back; the owner's browser and a link never are.
    assert Client(REMOTE_ADDR="10.0.0.2").get(f"/orders/{fulfilled.reference}/").status_code == 200
    give_cookie(client, fulfilled.reference)
    assert client.get(f"/orders/{fulfilled.reference}/").status_code == 200
    assert Client().get(order_links.order_path(fulfilled.reference)).status_code == 200


def test_the_window_ends(client, fulfilled, time_machine):
    for _ in range(LOOKUPS_PER_WINDOW):
        client.get(f"/orders/{fulfilled.reference}/")
    assert client.get(f"/orders/{fulfilled.reference}/").status_code == 429
    time_machine.move_to(timezone.now() + timedelta(minutes=11))
    assert client.get(f"/orders/{fulfilled.reference}/").status_code == 200


@pytest.mark.parametrize("forwarded", ["203.0.113.7", "1.1.1.1, 203.0.113.7"])
def test_behind_a_proxy_the_limit_follows_the_address_the_proxy_saw(plan, settings, forwarded):
    settings.NUM_PROXIES = 1
    proxy = {"REMOTE_ADDR": "10.0.0.1"}
    for _ in range(LOOKUPS_PER_WINDOW):
        Client(HTTP_X_FORWARDED_FOR=forwarded, **proxy).get("/orders/PU-222222/")
    assert Client(HTTP_X_FORWARDED_FOR=forwarded, **proxy).get("/orders/PU-222222/").status_code == 429
    # Another customer behind the same proxy (and a client writing a fake address on the left) is not.
    other = Client(HTTP_X_FORWARDED_FOR="203.0.113.7, 198.51.100.9", **proxy)
    assert other.get("/orders/PU-222222/").status_code == 404


def test_made_up_references_of_any_shape_get_the_same_page(client, plan):
    pages = {client.get(f"/orders/{ref}/").content for ref in ["PU-ABCDEF", "PU-0OOOOO", "nonsense", "PU-" + "A" * 40]}
    assert len(pages) == 1
    assert RateLimit.objects.get().hits == 4  # every shape counted alike
