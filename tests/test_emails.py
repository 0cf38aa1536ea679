"""The outbox: exactly-once sends, retries with backoff, and what the ESP is told."""

from datetime import timedelta

import pytest
from anymail.backends.test import EmailBackend as AnymailTestBackend
from anymail.exceptions import AnymailAPIError
from django.utils import timezone

from accounts.signin import send_signin_link, user_for_token
from billing.fulfilment import fulfil
from billing.models import OutboundEmail
from outbox import sending
from tests.factories import OrderFactory, UserFactory, payment_intent

pytestmark = pytest.mark.django_db

NOW = "2026-03-02 09:00:00+00:00"


@pytest.fixture
def fulfil_order(plan, django_capture_on_commit_callbacks):
    """Fulfil an order as the webhook would; its access email is handed off on commit."""

    def _fulfil():
        order = OrderFactory(plan=plan)
        with django_capture_on_commit_callbacks(execute=True):
            fulfil(order, via="webhook", payment_intent=payment_intent(order))
        return OutboundEmail.objects.get(order=order)

    return _fulfil


@pytest.fixture
def clock(time_machine):
    time_machine.move_to(NOW, tick=False)
    return time_machine


def later(clock, seconds: float) -> None:
    clock.shift(timedelta(seconds=seconds))


def test_a_failed_send_is_kept_and_retried_after_its_backoff(fulfil_order, clock, settings, mailoutbox):
    settings.FAILPOINTS = "email_send=raise"
    email = fulfil_order()
    assert email.status == "retry" and email.attempts == 1
    assert email.last_error == "FailpointError: failpoint email_send"
    assert email.next_attempt_at == timezone.now() + timedelta(seconds=30)
    assert not mailoutbox

    settings.FAILPOINTS = ""
    later(clock, 10)
    assert sending.send_due_emails() == 0  # not due yet
    later(clock, 21)
    assert sending.send_due_emails() == 1
    email.refresh_from_db()
    assert email.status == "sent" and email.attempts == 2 and email.last_error == ""
    assert email.sent_at == timezone.now()
    assert sending.send_due_emails() == 0
    assert len(mailoutbox) == 1
    assert list(email.order.events.filter(kind__startswith="email:").values_list("kind", flat=True)) == [
        "email:queued",
        "email:retry",
        "email:sent",
    ]


def test_an_esp_error_is_a_retry_too(fulfil_order, clock, monkeypatch):
    def esp_down(self, payload, message):
        raise AnymailAPIError("Postmark API response 503: Service Unavailable")

    monkeypatch.setattr(AnymailTestBackend, "post_to_esp", esp_down)
    email = fulfil_order()
    assert email.status == "retry" and "503" in email.last_error


def test_it_gives_up_after_the_last_attempt_and_says_so_on_the_timeline(fulfil_order, clock, settings, mailoutbox):
    settings.FAILPOINTS = "email_send=raise"
    settings.EMAIL_MAX_ATTEMPTS = 3
    email = fulfil_order()
    waits = []
    for _ in range(4):
        waits.append((email.next_attempt_at - timezone.now()).total_seconds())
        later(clock, 3600)
        sending.send_due_emails()
        email.refresh_from_db()
    assert waits[:2] == [30, 60]
    assert email.status == "failed" and email.attempts == 3
    assert not mailoutbox
    failed = email.order.events.get(kind="email:failed")
    assert "attempt 3" in failed.message and failed.actor == "system:email"


def test_claim_lets_exactly_one_worker_send(fulfil_order, clock, settings):
    settings.FAILPOINTS = "email_send=raise"
    email = fulfil_order()
    later(clock, 30)
    assert sending.claim(email.pk) is True
    assert sending.claim(email.pk) is False
    assert sending.send_outbound_email(email.pk).startswith("not claimable")
    email.refresh_from_db()
    assert email.status == "sending" and email.attempts == 2  # the failed send, then this claim


def test_a_send_interrupted_mid_way_is_claimed_again_later(fulfil_order, clock, settings):
    settings.FAILPOINTS = "email_send=raise"
    email = fulfil_order()
    later(clock, 30)
    assert sending.claim(email.pk)  # then the worker is killed
    later(clock, 9 * 60)
    assert not sending.claim(email.pk)
    later(clock, 61 + 1)
    assert sending.claim(email.pk)


def test_a_sent_email_is_never_sent_again(fulfil_order, mailoutbox):
    email = fulfil_order()
    assert email.status == "sent"
    assert sending.claim(email.pk) is False
    assert sending.send_outbound_email(email.pk).startswith("not claimable")
    assert sending.send_due_emails() == 0
    assert len(mailoutbox) == 1


def test_the_esp_gets_tags_and_the_order_reference(fulfil_order, mailoutbox, settings):
    email = fulfil_order()
    message = mailoutbox[0]
    params = message.anymail_test_params
    assert params["tags"] == ["confirmation"]
    assert params["metadata"] == {"outbound_email_id": str(email.pk), "order_reference": email.order.reference}
    assert message.reply_to == [settings.SUPPORT_EMAILS[0]]
    assert message.alternatives[0][1] == "text/html"


def test_no_email_exists_when_its_cause_rolled_back(plan, settings, django_capture_on_commit_callbacks, mailoutbox):
    from config.failpoints import FailpointError

    settings.FAILPOINTS = "fulfil_before_commit=raise"
    order = OrderFactory(plan=plan)
    with pytest.raises(FailpointError), django_capture_on_commit_callbacks(execute=True):
        fulfil(order, via="webhook", payment_intent=payment_intent(order))
    assert not OutboundEmail.objects.exists() and not mailoutbox


def test_the_sign_in_link_email(mailoutbox, django_capture_on_commit_callbacks, settings):
    user = UserFactory(email="ada@example.com")
    with django_capture_on_commit_callbacks(execute=True):
        email = send_signin_link(user)
    email.refresh_from_db()
    assert email.status == "sent" and email.kind == "signin" and email.order is None
    message = mailoutbox[0]
    assert message.to == ["ada@example.com"] and message.subject == "Your PaidUp sign-in link"
    assert message.anymail_test_params["tags"] == ["signin"]
    assert "order_reference" not in message.anymail_test_params["metadata"]
    link = next(line for line in message.body.splitlines() if "/account/sign-in/" in line)
    assert link.startswith(settings.SITE_URL)
    assert user_for_token(link.rstrip("/").rsplit("/", 1)[1]) == user


def test_a_send_that_kills_its_worker_every_time_gives_up(fulfil_order, clock, settings):
    settings.FAILPOINTS = "email_send=raise"
    settings.EMAIL_MAX_ATTEMPTS = 3
    email = fulfil_order()  # attempt 1 failed
    for _ in range(2):  # attempts 2 and 3: claimed, then the worker dies mid-send
        later(clock, 11 * 60)
        assert sending.claim(email.pk)
    later(clock, 11 * 60)
    settings.FAILPOINTS = ""
    assert sending.send_due_emails() == 0
    email.refresh_from_db()
    assert email.status == "failed" and "died while sending" in email.last_error
