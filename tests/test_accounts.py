"""Passwordless sign-in: the link from the email, single use, expiring; no account enumeration."""

import html
import re
from datetime import timedelta

import pytest

from billing.fulfilment import fulfil
from tests.factories import OrderFactory, UserFactory, payment_intent

pytestmark = pytest.mark.django_db

INVALID = "This sign-in link has expired or was already used"


@pytest.fixture
def paid(plan, django_capture_on_commit_callbacks, mailoutbox):
    """A customer who paid; returns (order, the sign-in path from their confirmation email)."""
    order = OrderFactory(plan=plan, email="ada@example.com")
    with django_capture_on_commit_callbacks(execute=True):
        fulfil(order, via="webhook", payment_intent=payment_intent(order))
    path = re.search(r"https?://[^/\s]+(/account/sign-in/[^\s]+/)", mailoutbox[-1].body).group(1)
    order.refresh_from_db()
    return order, path


def test_the_link_shows_a_button_and_only_a_post_signs_in(client, paid):
    order, link = paid
    for _ in range(2):  # a mail scanner prefetching the link must not use it up
        response = client.get(link)
        assert response.status_code == 200
        assert 'id="signin-button"' in response.content.decode() and order.email in response.content.decode()
    assert client.get("/account/").status_code == 302

    assert client.post(link).url == "/account/"
    page = client.get("/account/").content.decode()
    assert "is <strong>active</strong> until" in page
    assert order.subscription.ends_at.strftime("%-d %B %Y") in page
    assert order.reference in page


def test_the_link_works_once(client, paid):
    _, link = paid
    client.post(link)
    client.post("/account/sign-out/")
    for method in (client.get, client.post):
        response = method(link)
        assert response.status_code == 400 and INVALID in html.unescape(response.content.decode())
    assert client.get("/account/").status_code == 302


def test_the_link_expires(client, paid, settings, time_machine):
    _, link = paid
    time_machine.move_to(timedelta(seconds=settings.SIGNIN_LINK_MAX_AGE + 60))
    response = client.post(link)
    assert response.status_code == 400 and INVALID in html.unescape(response.content.decode())
    assert client.get("/account/").status_code == 302


@pytest.mark.parametrize("token", ["garbage", "eyJ1IjoxLCJsIjoiIn0:1vZZZZ:forgedsignature", "a" * 300])
def test_a_forged_link_signs_nobody_in(client, paid, token):
    response = client.post(f"/account/sign-in/{token}/")
    assert response.status_code == 400 and INVALID in html.unescape(response.content.decode())
    assert client.get("/account/").status_code == 302


def test_the_account_page_sends_strangers_to_sign_in(client):
    response = client.get("/account/")
    assert response.status_code == 302 and response.url == "/account/sign-in/?next=/account/"


def test_asking_for_a_link_says_the_same_for_known_and_unknown_emails(
    client, django_capture_on_commit_callbacks, mailoutbox
):
    UserFactory(email="ada@example.com")
    pages = []
    for email in ("Ada@Example.com", "nobody@example.com"):
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post("/account/sign-in/", {"email": email})
        assert response.status_code == 200
        # The page names the address in its normal form (accounts.addresses): ada@example.com.
        pages.append(response.content.decode().replace(email.lower(), "EMAIL"))
    assert pages[0] == pages[1]
    assert "a sign-in link is on its way" in pages[0]
    assert [m.to for m in mailoutbox] == [["ada@example.com"]]


@pytest.mark.parametrize(("email", "words"), [("", "Please enter the email address"), ("ada@", "look like an email")])
def test_asking_for_a_link_with_a_bad_email_says_what_is_wrong(client, mailoutbox, email, words):
    response = client.post("/account/sign-in/", {"email": email})
    assert response.status_code == 200
    assert words in html.unescape(response.content.decode())
    assert not mailoutbox
