"""Logs an operator can read: one line per meaningful event, with the order reference, no personal
data and no secrets, third-party chatter only from WARNING up."""

import io
import logging
import re

import pytest
from django.core.management import call_command

from billing import tasks
from billing.models import Order
from config.logs import RedactingFormatter, not_healthz_503, redact

VISA = "4242424242424242"
EMAIL = "Worried.Customer+paidup@example.org"


class Captured:
    """Every record the configured loggers let through, as written by the project's formatter
    (`.text`) and unredacted (`.raw`), so that a clean `.raw` shows our lines never held the data."""

    def __init__(self):
        self.formatted, self.unredacted = io.StringIO(), io.StringIO()
        self.handlers = [logging.StreamHandler(self.formatted), logging.StreamHandler(self.unredacted)]
        self.handlers[0].setFormatter(RedactingFormatter("%(levelname)s %(name)s %(message)s"))
        self.handlers[1].setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    @property
    def text(self) -> str:
        return self.formatted.getvalue()

    @property
    def raw(self) -> str:
        return self.unredacted.getvalue()


@pytest.fixture
def logs():
    captured = Captured()
    root = logging.getLogger()
    for handler in captured.handlers:
        root.addHandler(handler)
    yield captured
    for handler in captured.handlers:
        root.removeHandler(handler)


@pytest.mark.localstripe
def test_a_whole_purchase_logs_its_events_by_reference_without_personal_data_or_secrets(
    stripe_site, plan, logs, settings, client
):
    response = stripe_site.pay(EMAIL, VISA)
    assert response.status_code == 200, response.text
    order = Order.objects.get(reference=response.checkout.reference)
    stripe_site.wait_for_webhook(order.stripe_payment_intent_id)
    tasks.reconcile()
    client.get("/healthz")
    order.refresh_from_db()
    assert order.state == "fulfilled"

    secrets = {
        "the customer's email": EMAIL,
        "its lower-case form": EMAIL.lower(),
        "the Stripe secret key": settings.STRIPE_SECRET_KEY,
        "the webhook secret": stripe_site.endpoint.secret,
    }
    for text in (logs.raw, logs.text):
        leaked = [what for what, value in secrets.items() if value in text]
        assert not leaked, f"the logs hold {leaked}:\n{text}"

    lines = logs.text.splitlines()
    ours = [line for line in lines if order.reference in line]
    assert any(f"order {order.reference} fulfilled via" in line for line in ours), lines
    assert any(f"order {order.reference}: confirmation email handed to" in line for line in ours), lines
    assert any(re.match(r"INFO billing.reconciliation reconciliation run \d+: checked=", line) for line in lines)
    # stripe-python's "Request to Stripe api" / "Stripe API response" pair, per call, stays out.
    assert not [line for line in lines if line.split(" ")[1:2] == ["stripe"]], lines


@pytest.mark.django_db
def test_a_failed_email_names_its_order_and_not_its_address(logs, settings, plan, django_capture_on_commit_callbacks):
    from tests.factories import OrderFactory

    settings.FAILPOINTS = "email_send=raise"
    order = OrderFactory(email=EMAIL)
    order.transition(Order.State.PAID, actor="test")
    from billing.fulfilment import fulfil

    with django_capture_on_commit_callbacks(execute=True):
        fulfil(order, via="webhook")
    failed = [line for line in logs.text.splitlines() if "attempt 1 failed" in line]
    assert failed == [
        f"WARNING outbox order {order.reference}: confirmation email attempt 1 failed (unknown, will retry): "
        "FailpointError: failpoint email_send"
    ]
    assert EMAIL not in logs.raw


@pytest.mark.django_db
def test_an_unhealthy_healthz_is_not_an_error_line_per_probe(client, logs):
    for _ in range(3):
        assert client.get("/healthz").status_code == 503
    assert "ERROR" not in logs.text and "Service Unavailable" not in logs.text


def record(path: str, status: int) -> logging.LogRecord:
    from django.test import RequestFactory

    entry = logging.LogRecord("django.request", logging.ERROR, __file__, 1, "%s: %s", ("Error", path), None)
    entry.status_code, entry.request = status, RequestFactory().get(path)
    return entry


def test_other_server_errors_are_still_logged():
    assert not not_healthz_503(record("/healthz", 503))
    assert not_healthz_503(record("/checkout/", 503))
    assert not_healthz_503(record("/healthz", 500))


@pytest.mark.parametrize(
    "text, shown",
    [
        ("sending to Jo.Doe+x@Example.co.uk failed", "sending to <email> failed"),
        ("Invalid API Key provided: sk_live_51HxYzAbC", "Invalid API Key provided: sk_<redacted>"),
        ("key rk_test_abc123 and whsec_0fe1", "key rk_<redacted> and whsec_<redacted>"),
        ("order PU-AB12CD fulfilled via webhook", "order PU-AB12CD fulfilled via webhook"),
        ("pi_3Nabc succeeded, 249.00 USD", "pi_3Nabc succeeded, 249.00 USD"),
    ],
)
def test_the_formatter_redacts_addresses_and_secrets_and_nothing_else(text, shown):
    assert redact(text) == shown


def test_the_reconcile_command_prints_its_summary_and_the_schedule_logs_it(db, fake_stripe, logs, capsys):
    call_command("reconcile")
    assert capsys.readouterr().out.startswith("checked=")
    tasks.reconcile()
    assert re.search(r"^INFO billing.reconciliation reconciliation run \d+: checked=0 ", logs.text, re.M)


@pytest.mark.parametrize(
    "level, message, kept",
    [
        (logging.INFO, "Q Cluster oscar-april-chicken-seven [paidup] running.", True),
        (logging.INFO, "Q Cluster oscar-april-chicken-seven has stopped.", True),
        (logging.INFO, "Processed 'billing.tasks.reconcile' (reconcile)", False),
        (logging.INFO, "Process-1f2e ready for work at 8693", False),
        (logging.ERROR, "Failed 'outbox.sending.send_outbound_email' (email-12) - boom", True),
    ],
)
def test_django_q_says_when_the_cluster_starts_and_stops_but_not_each_task(logs, level, message, kept):
    logging.getLogger("django-q").log(level, message)
    assert (message in logs.text) is kept
