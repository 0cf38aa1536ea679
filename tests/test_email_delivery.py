"""What the outbox does when the ESP's answer is lost, refused or "not now".

The ESP is anymail's test backend; its post_to_esp is replaced to play each answer, and the
errors are built the way anymail's requests backends raise them (AnymailRequestsAPIError mixed
with the requests exception, or carrying the HTTP response).
"""

from datetime import timedelta

import pytest
import requests
from anymail.backends.test import EmailBackend as AnymailTestBackend
from anymail.exceptions import AnymailRecipientsRefused, AnymailRequestsAPIError
from django.core.mail import EmailMultiAlternatives

from billing.fulfilment import fulfil
from billing.mail_backends import ResendEmailBackend
from billing.models import OutboundEmail
from outbox import sending
from tests.factories import OrderFactory, payment_intent

pytestmark = pytest.mark.django_db

NOW = "2026-03-02 09:00:00+00:00"
ORIGINAL_POST = AnymailTestBackend.post_to_esp


def lost_answer(kind=requests.ReadTimeout):
    """What anymail raises when the request went out and no answer came back."""
    error_class = type("AnymailRequestsAPIError", (AnymailRequestsAPIError, kind), {})
    try:
        raise kind("HTTPSConnectionPool(host='api.esp.example'): Read timed out. (read timeout=30)")
    except kind as cause:
        try:
            raise error_class("Error posting to https://api.esp.example/email:") from cause
        except error_class as error:
            return error


def answered(status: int, body: bytes = b'{"message": "no"}'):
    """What anymail raises when the ESP answered with an HTTP error."""
    response = requests.Response()
    response.status_code, response.reason, response._content = status, "Error", body
    return AnymailRequestsAPIError(response=response)


@pytest.fixture
def esp(monkeypatch):
    """Play the ESP: each queued answer is used once, then it accepts. "deliver+error" delivers
    the message (it lands in the outbox) and then raises the error, as a lost answer does."""
    answers = []

    def post_to_esp(self, payload, message):
        if answers:
            deliver, error = answers.pop(0)
            if deliver:
                ORIGINAL_POST(self, payload, message)
            raise error
        return ORIGINAL_POST(self, payload, message)

    monkeypatch.setattr(AnymailTestBackend, "post_to_esp", post_to_esp)
    return answers


@pytest.fixture
def access_email(plan, django_capture_on_commit_callbacks, time_machine):
    time_machine.move_to(NOW, tick=False)

    def _send():
        order = OrderFactory(plan=plan)
        with django_capture_on_commit_callbacks(execute=True):
            fulfil(order, via="webhook", payment_intent=payment_intent(order))
        return OutboundEmail.objects.get(order=order)

    return _send


def retry_later(time_machine, seconds=3600) -> int:
    time_machine.shift(timedelta(seconds=seconds))
    return sending.send_due_emails()


def test_a_send_delivered_then_timed_out_is_retried_as_the_same_message(access_email, esp, mailoutbox, time_machine):
    esp.append((True, lost_answer()))
    email = access_email()
    assert email.status == "retry" and email.uncertain_attempts == 1
    assert "ReadTimeout" in email.last_error or "Read timed out" in email.last_error
    retry = email.order.events.get(kind="email:retry")
    assert "may have delivered it anyway" in retry.message and retry.data["outcome"] == "unknown"

    assert retry_later(time_machine) == 1
    email.refresh_from_db()
    assert email.status == "sent" and email.attempts == 2 and email.uncertain_attempts == 1
    first, second = mailoutbox  # the customer got two copies...
    assert first.extra_headers["Message-ID"] == second.extra_headers["Message-ID"] == email.message_id
    assert first.anymail_test_params["extra_headers"]["Message-ID"] == email.message_id  # ...what the ESP got
    assert first.anymail_idempotency_key == second.anymail_idempotency_key == email.idempotency_key != ""
    sent = email.order.events.get(kind="email:sent")
    assert "An earlier attempt may also have reached them" in sent.message and email.message_id in sent.message


def test_every_row_has_its_own_message_id_at_the_senders_domain(access_email, mailoutbox):
    one, two = access_email(), access_email()
    assert one.message_id != two.message_id
    assert one.message_id.startswith("<") and one.message_id.endswith("@paidup.example>")
    assert one.idempotency_key != two.idempotency_key
    sent = one.order.events.get(kind="email:sent")
    assert "earlier attempt" not in sent.message and sent.data["uncertain_attempts"] == 0


@pytest.mark.parametrize(
    "error",
    [answered(422), answered(400), AnymailRecipientsRefused()],
    ids=["422-unprocessable", "400-bad-request", "all-recipients-refused"],
)
def test_a_refused_message_fails_at_once_and_is_not_retried(access_email, esp, mailoutbox, time_machine, error):
    esp.append((False, error))
    email = access_email()
    assert email.status == "failed" and email.attempts == 1 and email.uncertain_attempts == 0
    failed = email.order.events.get(kind="email:failed")
    assert "refused this message, so it is not retried" in failed.message
    assert retry_later(time_machine) == 0 and not mailoutbox


@pytest.mark.parametrize(
    ("error", "uncertain"),
    [
        (answered(429), 0),  # rate limited: not taken
        (answered(401), 0),  # our key is wrong: not taken, an operator can fix it
        (lost_answer(requests.ConnectTimeout), 0),  # never connected
        (answered(503), 1),  # a gateway may answer 5xx after the ESP took it
        (lost_answer(requests.ConnectionError), 1),  # reset after the request went out
    ],
    ids=["429", "401", "connect-timeout", "503", "connection-reset"],
)
def test_other_failures_are_retried_and_counted_as_uncertain_only_when_they_are(
    access_email, esp, mailoutbox, time_machine, error, uncertain
):
    esp.append((False, error))
    email = access_email()
    assert email.status == "retry" and email.uncertain_attempts == uncertain
    retry = email.order.events.get(kind="email:retry")
    assert ("may have delivered it anyway" in retry.message) == bool(uncertain)
    assert retry_later(time_machine) == 1 and len(mailoutbox) == 1


def test_a_worker_killed_mid_send_counts_as_uncertain(access_email, settings, time_machine, mailoutbox):
    settings.FAILPOINTS = "email_send=raise"
    email = access_email()
    settings.FAILPOINTS = ""
    time_machine.shift(timedelta(seconds=60))
    assert sending.claim(email.pk)  # then the worker is killed: the row stays "sending"
    time_machine.shift(sending.STALE_SENDING + timedelta(seconds=1))
    assert sending.send_due_emails() == 1
    email.refresh_from_db()
    assert email.status == "sent" and email.attempts == 3
    assert email.uncertain_attempts == 2  # the failpoint's crash and the killed worker


def test_resend_gets_the_idempotency_key_as_a_request_header():
    backend = ResendEmailBackend(api_key="re_test_key")
    message = EmailMultiAlternatives("Hi", "Body", "hello@paidup.example", ["jon@bücher.example"])
    message.anymail_idempotency_key = "paidup-outbox-7-abc"
    payload = backend.build_message_payload(message, backend.send_defaults)
    assert payload.headers["Idempotency-Key"] == "paidup-outbox-7-abc"
    assert payload.headers["Authorization"] == "Bearer re_test_key"

    plain = EmailMultiAlternatives("Hi", "Body", "hello@paidup.example", ["jon@example.com"])
    assert "Idempotency-Key" not in backend.build_message_payload(plain, backend.send_defaults).headers
