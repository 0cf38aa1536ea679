"""The customer's sign-in-link form is limited per email and per client address (issue 12 item 2):
never more links than the limit, and always the same "check your email" page, whether the link
was sent, the email is unknown, or a limit was reached."""

from datetime import timedelta

import pytest
from django.test import Client

from billing.models import RateLimit
from outbox.models import OutboundEmail
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
FORM = "/account/sign-in/"


def ask(email: str, address: str = "198.51.100.1", **headers) -> str:
    response = Client(REMOTE_ADDR=address, **headers).post(FORM, {"email": email})
    assert response.status_code == 200
    return response.content.decode()


def links_to(email: str) -> int:
    return OutboundEmail.objects.filter(kind="signin", to=email).count()


@pytest.fixture
def limits(settings):
    settings.SIGNIN_LINKS_PER_EMAIL = 3
    settings.SIGNIN_LINKS_PER_ADDRESS = 5
    settings.SIGNIN_LINKS_WINDOW = 3600
    return settings


def test_an_email_gets_no_more_links_than_its_limit_from_any_address(limits):
    UserFactory(email="ada@example.com")
    pages = {ask("ada@example.com", f"203.0.113.{n}") for n in range(6)}
    assert links_to("ada@example.com") == 3
    assert len(pages) == 1  # the same words when sent and when limited
    assert "Check your email" in pages.pop()


def test_an_address_gets_no_more_links_than_its_limit_whatever_the_emails(limits):
    emails = [f"c{n}@example.com" for n in range(7)]
    for email in emails:
        UserFactory(email=email)
    for email in emails:
        ask(email, "203.0.113.9")
    assert OutboundEmail.objects.filter(kind="signin").count() == 5
    ask("c6@example.com", "203.0.113.10")  # the limit was the address's, not the email's
    assert links_to("c6@example.com") == 1


def test_limited_unknown_and_sent_read_the_same(limits):
    UserFactory(email="ada@example.com")
    for _ in range(3):
        ask("ada@example.com")
    limited = ask("ada@example.com").replace("ada@example.com", "EMAIL")
    unknown = ask("nobody@example.com", "203.0.113.77").replace("nobody@example.com", "EMAIL")
    sent = ask("bea@example.com", "203.0.113.78").replace("bea@example.com", "EMAIL")
    assert limited == unknown == sent


def test_unknown_emails_use_up_the_address_too(limits):
    """A guesser cannot spray unknown emails for free: each counts against the address."""
    for n in range(5):
        ask(f"nobody{n}@example.com", "203.0.113.20")
    UserFactory(email="ada@example.com")
    ask("ada@example.com", "203.0.113.20")
    assert links_to("ada@example.com") == 0


def test_the_limits_start_again_in_the_next_window(limits, time_machine):
    UserFactory(email="ada@example.com")
    for _ in range(4):
        ask("ada@example.com")
    assert links_to("ada@example.com") == 3
    time_machine.move_to(timedelta(seconds=3600))
    ask("ada@example.com")
    assert links_to("ada@example.com") == 4


def test_spellings_of_one_email_share_its_limit(limits):
    UserFactory(email="ada@example.com")
    for n, typed in enumerate(["Ada@example.com", "ADA@EXAMPLE.COM", " ada@Example.com", "ada@example.com"]):
        ask(typed, f"203.0.113.{n}")
    assert links_to("ada@example.com") == 3


def test_behind_a_proxy_the_address_is_the_one_the_proxy_saw(limits):
    limits.NUM_PROXIES = 1
    emails = [f"c{n}@example.com" for n in range(6)]
    for n, email in enumerate(emails):
        UserFactory(email=email)
        # A forged first entry changes each time; the proxy's own entry is the real address.
        ask(email, "10.0.0.1", HTTP_X_FORWARDED_FOR=f"1.1.1.{n}, 203.0.113.30")
    assert OutboundEmail.objects.filter(kind="signin").count() == 5


@pytest.mark.parametrize("bad", ["", "ada@", "not an email", "a" * 250 + "@example.com", "<script>@x.example"])
def test_bad_input_is_answered_on_the_form_and_counts_nothing(limits, bad):
    response = Client().post(FORM, {"email": bad})
    assert response.status_code == 200 and "Check your email" not in response.content.decode()
    assert "<script>@" not in response.content.decode()
    assert not RateLimit.objects.exists() and not OutboundEmail.objects.exists()


def test_the_stored_counts_hold_no_email_or_address(limits):
    ask("ada@example.com", "203.0.113.44")
    keys = " ".join(RateLimit.objects.values_list("key", flat=True))
    assert RateLimit.objects.count() == 2 and "ada" not in keys and "203.0.113.44" not in keys
