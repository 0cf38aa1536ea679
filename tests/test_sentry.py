"""Sentry: started only with SENTRY_DSN, and no event leaves with an email, a link token, a
Stripe secret or card digits in it, wherever they hide."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core import signing

from billing import order_links
from config.sentry import scrub_event

ROOT = Path(__file__).resolve().parent.parent

EMAIL = "worried.customer+pu@example.co.uk"
SK_LIVE = "sk_live_51HxYzABCdefGHIjklMNOpqr0123456789"
CARD = "4242 4242 4242 4242"
CARD_PLAIN = "4000002500003155"
ORDER_TOKEN = order_links.token("PU-ABC234")
SIGNIN_TOKEN = signing.dumps({"u": 7, "l": "2026-11-30T12:00:00"}, salt="accounts.signin", compress=True)
SECRETS = [EMAIL, SK_LIVE, CARD, CARD_PLAIN, ORDER_TOKEN, SIGNIN_TOKEN, "whsec_abcDEF123"]

TEXT = (
    f"order PU-ABC234 for {EMAIL}: key {SK_LIVE}, card {CARD} / {CARD_PLAIN}, "
    f"link https://paidup.example/orders/PU-ABC234/?k={ORDER_TOKEN}, "
    f"sign-in https://paidup.example/account/sign-in/{SIGNIN_TOKEN}/, secret whsec_abcDEF123"
)


def event() -> dict:
    """A Sentry event as the Django integration builds one, carrying TEXT in each place."""
    return {
        "message": TEXT,
        "logentry": {"message": "payment failed for %s", "params": [EMAIL, CARD], "formatted": TEXT},
        "exception": {
            "values": [
                {
                    "type": "CardError",
                    "value": TEXT,
                    "stacktrace": {"frames": [{"function": "charge", "vars": {"email": EMAIL, "card": CARD_PLAIN}}]},
                }
            ]
        },
        "breadcrumbs": {"values": [{"category": "query", "message": TEXT, "data": {"to": EMAIL}}]},
        "request": {
            "url": f"https://paidup.example/account/sign-in/{SIGNIN_TOKEN}/",
            "query_string": f"k={ORDER_TOKEN}",
            "data": {"email": EMAIL, "payment_method": "pm_card", "note": TEXT, "number": CARD_PLAIN},
            "headers": {
                "Authorization": f"Bearer {SK_LIVE}",
                "Cookie": f"sessionid=abc; email={EMAIL}",
                "Stripe-Signature": "t=1,v1=deadbeef",
                "Referer": f"https://paidup.example/orders/PU-ABC234/?k={ORDER_TOKEN}",
                "User-Agent": "Mozilla/5.0",
            },
            "cookies": {"sessionid": "abc", "paidup_ref": "PU-ABC234", "note": EMAIL},
            "env": {"REMOTE_ADDR": "203.0.113.9"},
        },
        "extra": {"customer": EMAIL, "secret_key": SK_LIVE, EMAIL: "keyed by email"},
        "tags": {"order": "PU-ABC234"},
    }


def test_the_scrubber_removes_every_secret_from_every_place():
    scrubbed = json.dumps(scrub_event(event(), {}))
    for secret in SECRETS:
        assert secret not in scrubbed
    assert "4242" not in scrubbed and "deadbeef" not in scrubbed
    for marker in ("<email>", "sk_<redacted>", "<card>", "k=<token>", "/sign-in/<token>/", "whsec_<redacted>"):
        assert marker in scrubbed


def test_the_scrubber_keeps_what_helps_and_replaces_credential_headers_whole():
    scrubbed = scrub_event(event(), {})
    request = scrubbed["request"]
    assert request["headers"]["Authorization"] == "[Filtered]"
    assert request["headers"]["Cookie"] == "[Filtered]"
    assert request["headers"]["Stripe-Signature"] == "[Filtered]"
    assert request["headers"]["User-Agent"] == "Mozilla/5.0"
    assert request["cookies"] == "[Filtered]"
    assert request["data"]["number"] == "[Filtered]" and request["data"]["payment_method"] == "pm_card"
    assert scrubbed["exception"]["values"][0]["type"] == "CardError"
    assert scrubbed["exception"]["values"][0]["value"].startswith("order PU-ABC234 for <email>: key sk_<redacted>")
    assert scrubbed["tags"] == {"order": "PU-ABC234"}
    assert scrubbed["extra"]["<email>"] == "keyed by email"


def test_headers_as_name_value_pairs_are_scrubbed_by_name():
    scrubbed = scrub_event({"request": {"headers": [["Authorization", "Bearer x"], ["Accept", f"{EMAIL}"]]}})
    assert scrubbed["request"]["headers"] == [["Authorization", "[Filtered]"], ["Accept", "<email>"]]


def test_numbers_that_are_not_cards_stay():
    scrubbed = scrub_event({"message": "amount 24900 cents, order 123456789012, took 0.25 s, at 1764504000"})
    assert scrubbed["message"] == "amount 24900 cents, order 123456789012, took 0.25 s, at 1764504000"


# Loads config.settings in a fresh process with the given environment, then (when Sentry started)
# swaps its transport for one that keeps envelopes, captures an error carrying TEXT after a
# breadcrumb carrying it, and prints what Sentry would have sent.
PROBE = """
import json, sys, sentry_sdk
from sentry_sdk.transport import Transport
import config.settings

class Keep(Transport):
    sent = []
    def capture_envelope(self, envelope):
        self.sent.extend(item.payload.json for item in envelope.items if item.payload.json)

client = sentry_sdk.get_client()
out = {"active": client.is_active()}
if out["active"]:
    client.transport = Keep(client.options)
    text = sys.stdin.read()
    sentry_sdk.add_breadcrumb(category="billing", message=text)
    try:
        card = "4242424242424242"
        raise ValueError(text)
    except ValueError:
        sentry_sdk.capture_exception()
    o = client.options
    out.update(pii=o["send_default_pii"], env=o["environment"], rate=o["traces_sample_rate"], sent=Keep.sent,
               before_send=getattr(o["before_send"], "__qualname__", None), integrations=sorted(client.integrations))
print(json.dumps(out))
"""


def probe(variables: dict[str, str]) -> dict:
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), **variables}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], input=TEXT, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_sentry_is_not_started_without_a_dsn():
    assert probe({}) == {"active": False}
    assert probe({"SENTRY_DSN": ""}) == {"active": False}


@pytest.mark.timeout(120)
def test_with_a_dsn_sentry_starts_and_what_it_sends_is_scrubbed():
    result = probe(
        {
            "SENTRY_DSN": "https://public@sentry.example.invalid/1",
            "SENTRY_ENVIRONMENT": "staging",
            "SENTRY_TRACES_SAMPLE_RATE": "0.25",
        }
    )
    assert result["active"] and result["pii"] is False
    [sent] = result["sent"]
    assert sent["exception"]["values"][0]["type"] == "ValueError"
    assert sent["breadcrumbs"]["values"][-1]["category"] == "billing"
    text = json.dumps(sent)
    for secret in SECRETS:
        assert secret not in text
    assert "4242424242424242" not in text  # a local variable in the frame
    assert "<email>" in text and "sk_<redacted>" in text
    assert (result["env"], result["rate"], result["before_send"]) == ("staging", 0.25, "scrub_event")
    assert "django" in result["integrations"]


def test_a_malformed_sample_rate_is_refused_at_start():
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "SENTRY_TRACES_SAMPLE_RATE": "often"}
    done = subprocess.run(
        [sys.executable, "-c", "import config.settings"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0 and "SENTRY_TRACES_SAMPLE_RATE" in done.stderr
