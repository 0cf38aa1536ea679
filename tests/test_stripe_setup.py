"""`manage.py stripe_setup`: against a real localstripe, and against Stripe faked at the stripe
module's boundary (stripe.Account / stripe.WebhookEndpoint, autospec'd)."""

import itertools
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest import mock

import pytest
import stripe
from django.core.management import CommandError, call_command
from djstripe.enums import WebhookEndpointStatus
from djstripe.models import Account, APIKey, WebhookEndpoint

from billing import stripe_setup
from billing.stripe_events import PAYMENT_INTENT_EVENTS, REFUND_EVENTS, WEBHOOK_EVENTS
from tests.fixtures.localstripe import _free_port
from tests.test_webhook_events import paidup_receiver_types


def setup(*args) -> str:
    from io import StringIO

    out = StringIO()
    call_command("stripe_setup", *args, stdout=out)
    return out.getvalue()


def assert_nothing_stored() -> None:
    assert not Account.objects.exists()
    assert not APIKey.objects.exists()
    assert not WebhookEndpoint.objects.exists()


# --- localstripe ----------------------------------------------------------------------


class Listener(ThreadingHTTPServer):
    """Stands in for the site: records what localstripe POSTs to it."""

    def __init__(self):
        self.received: list[dict] = []
        self.arrived = threading.Condition()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(handler):
                body = handler.rfile.read(int(handler.headers["Content-Length"]))
                ok = handler.path.startswith("/stripe/webhook/")
                handler.send_response(200 if ok else 404)
                handler.end_headers()
                with self.arrived:
                    self.received.append({"path": handler.path, "headers": dict(handler.headers), "body": body})
                    self.arrived.notify_all()

            def log_message(handler, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def wait_for(self, event_type: str, timeout: float = 10.0) -> dict:
        def find():
            return next((r for r in self.received if json.loads(r["body"])["type"] == event_type), None)

        with self.arrived:
            assert self.arrived.wait_for(find, timeout), f"no {event_type} delivery"
            return find()


@pytest.fixture
def listener():
    server = Listener()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def local(settings, localstripe):
    settings.STRIPE_API_BASE = localstripe
    return stripe.StripeClient(settings.STRIPE_SECRET_KEY, base_addresses={"api": localstripe})


@pytest.mark.localstripe
def test_it_seeds_the_rows_and_registers_the_endpoint_with_localstripe(db, local, listener):
    output = setup("--site-url", listener.url)

    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.url == f"{listener.url}/stripe/webhook/{endpoint.djstripe_uuid}/"
    assert endpoint.secret.startswith("whsec_")
    assert endpoint.enabled_events == list(WEBHOOK_EVENTS)
    assert APIKey.objects.get().djstripe_owner_account == endpoint.djstripe_owner_account == Account.objects.get()
    assert endpoint.url in output

    # localstripe now signs this endpoint's events with its secret and sends only those events.
    local.v1.customers.create({"email": "ann@example.com"})  # customer.created: not asked for
    local.v1.payment_intents.create(
        {"amount": 24900, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}
    )
    delivery = listener.wait_for("payment_intent.succeeded")
    assert delivery["path"] == f"/stripe/webhook/{endpoint.djstripe_uuid}/"
    stripe.WebhookSignature.verify_header(
        delivery["body"].decode(), delivery["headers"]["Stripe-Signature"], endpoint.secret, 300
    )
    assert {json.loads(r["body"])["type"] for r in listener.received} <= set(WEBHOOK_EVENTS)


@pytest.mark.localstripe
def test_a_rerun_keeps_the_endpoint_and_follows_the_site_url(db, local):
    setup("--site-url", "http://127.0.0.1:8000")
    first = WebhookEndpoint.objects.get()

    setup("--site-url", "http://127.0.0.1:8001/")

    endpoint = WebhookEndpoint.objects.get()
    assert (endpoint.djstripe_uuid, endpoint.secret) == (first.djstripe_uuid, first.secret)
    assert endpoint.url == f"http://127.0.0.1:8001/stripe/webhook/{endpoint.djstripe_uuid}/"
    assert (Account.objects.count(), APIKey.objects.count()) == (1, 1)


def test_it_says_when_localstripe_is_not_running_and_changes_nothing(db, settings):
    settings.STRIPE_API_BASE = f"http://127.0.0.1:{_free_port()}"

    with pytest.raises(CommandError) as error:
        setup()

    assert "localstripe is not answering" in str(error.value)
    assert "make run" in str(error.value)
    assert "Nothing was changed" in str(error.value)
    assert_nothing_stored()


def test_it_says_when_the_api_base_is_not_localstripe(db, settings, listener):
    settings.STRIPE_API_BASE = listener.url  # answers 404 to /_config/webhooks/…

    with pytest.raises(CommandError, match="refused the webhook registration .HTTP 404"):
        setup()

    assert_nothing_stored()


def test_it_refuses_a_site_url_that_is_not_one(db, settings):
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"

    with pytest.raises(CommandError, match="must look like https://"):
        setup("--site-url", "paidup.example")


# --- real Stripe, faked at the boundary -----------------------------------------------

SECRET_KEY = "sk_test_" + "realStripeFake0123456789ab"
ACCOUNT = {"id": "acct_1PaidUp", "object": "account", "country": "US", "default_currency": "usd", "settings": {}}


class FakeStripeEndpoints:
    """Stripe's webhook endpoint API as far as stripe_setup uses it."""

    def __init__(self):
        self.endpoints: dict[str, dict] = {}
        self.ids = itertools.count(1)

    def create(self, *, api_key, stripe_version, **params):
        assert api_key == SECRET_KEY
        data = {
            "id": f"we_fake{next(self.ids)}",
            "object": "webhook_endpoint",
            "status": "enabled",
            "livemode": False,
            "application": None,
            "description": None,
            "created": 1_790_000_000,
            **params,
        }
        self.endpoints[data["id"]] = data
        return stripe.WebhookEndpoint.construct_from({**data, "secret": f"whsec_{data['id']}"}, api_key)

    def modify(self, id, *, api_key, stripe_version, disabled=None, **params):
        if id not in self.endpoints:
            raise stripe.InvalidRequestError(f"No such webhook endpoint: '{id}'", "id", code="resource_missing")
        self.endpoints[id].update(params, status="disabled" if disabled else "enabled")
        return stripe.WebhookEndpoint.construct_from(self.endpoints[id], api_key)  # no secret


@pytest.fixture
def fake_stripe_api(settings, monkeypatch):
    settings.STRIPE_API_BASE = ""
    settings.STRIPE_SECRET_KEY = settings.STRIPE_TEST_SECRET_KEY = SECRET_KEY
    fake = FakeStripeEndpoints()
    patches = {
        (stripe.Account, "retrieve"): lambda **kw: stripe.Account.construct_from(ACCOUNT, kw["api_key"]),
        (stripe.WebhookEndpoint, "create"): fake.create,
        (stripe.WebhookEndpoint, "modify"): fake.modify,
    }
    for (cls, name), side_effect in patches.items():
        spy = mock.create_autospec(getattr(cls, name), side_effect=side_effect)
        monkeypatch.setattr(cls, name, spy)
        setattr(fake, f"{name}_spy", spy)
    return fake


def test_it_creates_the_endpoint_in_stripe_and_keeps_its_secret(db, fake_stripe_api):
    output = setup("--site-url", "https://paidup.example")

    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.id == "we_fake1"
    assert endpoint.secret == "whsec_we_fake1"
    assert endpoint.url == f"https://paidup.example/stripe/webhook/{endpoint.djstripe_uuid}/"
    assert endpoint.enabled_events == list(WEBHOOK_EVENTS)
    assert endpoint.djstripe_owner_account.id == "acct_1PaidUp"
    assert APIKey.objects.get(secret=SECRET_KEY).djstripe_owner_account.id == "acct_1PaidUp"
    params = fake_stripe_api.create_spy.call_args.kwargs
    assert params["url"] == endpoint.url
    assert params["enabled_events"] == list(WEBHOOK_EVENTS)
    assert params["metadata"]["djstripe_uuid"] == str(endpoint.djstripe_uuid)
    assert "created" in output


def test_a_rerun_updates_the_endpoint_in_stripe_instead_of_creating_another(db, fake_stripe_api, settings):
    setup("--site-url", "https://paidup.example")
    first = WebhookEndpoint.objects.get()
    settings.SITE_URL = "https://www.paidup.example"

    output = setup()

    assert fake_stripe_api.create_spy.call_count == 1
    fake_stripe_api.modify_spy.assert_called_once()
    assert fake_stripe_api.modify_spy.call_args.args == ("we_fake1",)
    assert fake_stripe_api.modify_spy.call_args.kwargs["enabled_events"] == list(WEBHOOK_EVENTS)
    endpoint = WebhookEndpoint.objects.get()
    assert (endpoint.id, endpoint.djstripe_uuid, endpoint.secret) == (first.id, first.djstripe_uuid, first.secret)
    assert endpoint.url == f"https://www.paidup.example/stripe/webhook/{endpoint.djstripe_uuid}/"
    assert fake_stripe_api.endpoints["we_fake1"]["url"] == endpoint.url
    assert "updated" in output


def test_it_recreates_an_endpoint_deleted_in_the_dashboard(db, fake_stripe_api):
    setup("--site-url", "https://paidup.example")
    fake_stripe_api.endpoints.clear()

    setup("--site-url", "https://paidup.example")

    old, new = WebhookEndpoint.objects.order_by("djstripe_created")
    assert old.status == WebhookEndpointStatus.disabled  # kept: the inbox's triggers point at it
    assert (new.id, new.status, new.secret) == ("we_fake2", WebhookEndpointStatus.enabled, "whsec_we_fake2")
    assert stripe_setup.managed_endpoint(new.djstripe_owner_account) == new


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (stripe.AuthenticationError("Invalid API Key provided"), "Stripe refused STRIPE_SECRET_KEY"),
        (stripe.APIConnectionError("Network is unreachable"), "Could not reach Stripe"),
    ],
)
def test_it_explains_stripe_errors_and_changes_nothing(db, fake_stripe_api, error, message):
    fake_stripe_api.retrieve_spy.side_effect = error

    with pytest.raises(CommandError, match=message):
        setup("--site-url", "https://paidup.example")

    assert_nothing_stored()


@pytest.mark.parametrize("site_url", ["http://127.0.0.1:8000", "http://localhost:8000", "http://10.0.0.5"])
def test_it_refuses_an_address_stripe_cannot_reach(db, fake_stripe_api, site_url):
    with pytest.raises(CommandError, match="Stripe cannot reach"):
        setup("--site-url", site_url)

    fake_stripe_api.retrieve_spy.assert_not_called()
    fake_stripe_api.create_spy.assert_not_called()


# --- the events the endpoint is subscribed to -----------------------------------------

# What stripe_setup subscribed endpoints to before disputes and fraud warnings were listed.
OLD_EVENTS = [*PAYMENT_INTENT_EVENTS, *REFUND_EVENTS]


def test_stripe_delivers_every_event_type_paidup_has_a_receiver_for(db, fake_stripe_api):
    setup("--site-url", "https://paidup.example")

    (subscribed,) = (e["enabled_events"] for e in fake_stripe_api.endpoints.values())
    assert paidup_receiver_types() <= set(subscribed)
    assert {"charge.dispute.created", "radar.early_fraud_warning.created"} <= set(subscribed)
    assert set(WebhookEndpoint.objects.get().enabled_events) == set(subscribed)


def test_a_rerun_subscribes_an_older_endpoint_to_the_event_types_it_lacks(db, fake_stripe_api, monkeypatch):
    with monkeypatch.context() as old_release:
        old_release.setattr(stripe_setup, "EVENTS", OLD_EVENTS)
        setup("--site-url", "https://paidup.example")
    assert fake_stripe_api.endpoints["we_fake1"]["enabled_events"] == OLD_EVENTS

    output = setup("--site-url", "https://paidup.example")

    assert fake_stripe_api.create_spy.call_count == 1  # the same endpoint, updated
    assert fake_stripe_api.endpoints["we_fake1"]["enabled_events"] == list(WEBHOOK_EVENTS)
    assert WebhookEndpoint.objects.get().enabled_events == list(WEBHOOK_EVENTS)
    assert "now also charge.dispute.created" in output
    assert "radar.early_fraud_warning.updated" in output.split("now also")[1]
    assert "no longer" not in output


def test_a_rerun_drops_event_types_paidup_has_no_receiver_for(db, fake_stripe_api, monkeypatch):
    with monkeypatch.context() as edited:
        edited.setattr(stripe_setup, "EVENTS", ["*"])  # as if someone picked "all events" in the Dashboard
        setup("--site-url", "https://paidup.example")

    output = setup("--site-url", "https://paidup.example")

    assert fake_stripe_api.endpoints["we_fake1"]["enabled_events"] == list(WEBHOOK_EVENTS)
    assert "no longer *" in output


def test_a_rerun_with_nothing_to_change_says_no_change(db, fake_stripe_api):
    setup("--site-url", "https://paidup.example")

    output = setup("--site-url", "https://paidup.example")

    assert "updated" in output
    assert "now also" not in output and "no longer" not in output


def test_when_stripe_refuses_the_event_list_nothing_changes(db, fake_stripe_api, monkeypatch):
    with monkeypatch.context() as old_release:
        old_release.setattr(stripe_setup, "EVENTS", OLD_EVENTS)
        setup("--site-url", "https://paidup.example")
    fake_stripe_api.modify_spy.side_effect = stripe.InvalidRequestError(
        "Invalid enabled_events[12]: must be one of …", "enabled_events"
    )

    with pytest.raises(CommandError, match="Stripe refused: Invalid enabled_events"):
        setup("--site-url", "https://paidup.example")

    assert WebhookEndpoint.objects.get().enabled_events == OLD_EVENTS  # not claimed before Stripe agreed


def test_a_localstripe_endpoint_row_follows_the_list_too(db):
    old = stripe_setup.seed_local("http://127.0.0.1:8000")
    WebhookEndpoint.objects.filter(pk=old.pk).update(enabled_events=OLD_EVENTS)

    endpoint = stripe_setup.seed_local("http://127.0.0.1:8000")

    assert endpoint.enabled_events == list(WEBHOOK_EVENTS)
    assert (endpoint.djstripe_uuid, endpoint.secret) == (old.djstripe_uuid, old.secret)
