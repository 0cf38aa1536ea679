"""Make dj-stripe's account, key and webhook endpoint rows exist, against localstripe or Stripe.

`manage.py stripe_setup` calls `run()`; tests call the functions directly.

- localstripe (settings.STRIPE_API_BASE set): it has no /v1/account and no
  /v1/webhook_endpoints, so the rows are seeded by hand (`seed_local`) and the endpoint is
  registered with localstripe's own `POST /_config/webhooks/<id>` (`register_local`).
  Registrations live in localstripe's memory only: this must run after every start.
- Stripe (STRIPE_API_BASE empty): the account and key rows come from dj-stripe
  (`Account.get_or_retrieve_for_api_key`), the endpoint is created through the API the first
  time and updated (url, events) on every later run (`sync_stripe_endpoint`); the signing
  secret, which Stripe returns only on creation, is kept in the WebhookEndpoint row.

Either way the endpoint is subscribed to exactly `billing.stripe_events.WEBHOOK_EVENTS`, the
event types PaidUp has receivers for: Stripe delivers nothing else. An endpoint set up by an
older release (before disputes and fraud warnings had receivers) gains the missing types on the
next run; the result says which.

Everything here is idempotent, and a failure leaves the database as it was.
"""

import ipaddress
import json
import secrets
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

import stripe
from django.conf import settings
from django.db import transaction
from django.urls import reverse
from djstripe.enums import APIKeyType, WebhookEndpointStatus
from djstripe.models import Account, APIKey, WebhookEndpoint
from djstripe.settings import djstripe_settings

from .stripe_events import WEBHOOK_EVENTS

EVENTS = list(WEBHOOK_EVENTS)  # Stripe's API and dj-stripe's JSON field want a list

LOCAL_ACCOUNT_ID = "acct_localstripe"
LOCAL_ENDPOINT_ID = "we_localstripe"
# Marks, in Stripe's metadata and in our row, the endpoint this command manages.
MANAGED_BY = {"managed_by": "paidup.stripe_setup"}
LOCALSTRIPE_HELP = (
    "Start it with `make run` (which starts everything), or on its own with "
    "`.venv/bin/python tools/localstripe_server.py --port 8420 --state-dir var/localstripe`, "
    "or point STRIPE_API_BASE at where it runs (empty means real Stripe)."
)


class SetupError(Exception):
    """Something the operator must fix; the message says what. Nothing was changed."""


@dataclass
class SetupResult:
    endpoint: WebhookEndpoint
    action: str  # "registered with localstripe", "created", "updated", "recreated"
    target: str  # localstripe's address, or "Stripe"
    # Event types the endpoint was not subscribed to before this run, and ones it no longer is.
    added: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line for the operator: which endpoint, where, for which events, and what changed."""
        changes = [("now also", self.added), ("no longer", self.dropped)]
        changed = "".join(f"; {word} {', '.join(names)}" for word, names in changes if names)
        return (
            f"Webhook endpoint {self.endpoint.id} {self.action} ({self.target}): {self.endpoint.url} "
            f"for {', '.join(self.endpoint.enabled_events)}{changed}"
        )


def event_changes(before: list[str] | None) -> dict[str, tuple[str, ...]]:
    """`added` and `dropped` event types between an endpoint's stored `enabled_events` and ours."""
    before = list(before or [])
    return {
        "added": tuple(name for name in EVENTS if name not in before),
        "dropped": tuple(name for name in before if name not in EVENTS),
    }


def run(site_url: str | None = None) -> SetupResult:
    """What `manage.py stripe_setup` does: localstripe when STRIPE_API_BASE is set, else Stripe.

    Takes the site's public address (default SITE_URL); returns what was set up. Raises
    SetupError, with a sentence for the operator, for a malformed address or whatever
    setup_local / setup_stripe refuse.
    """
    site_url = clean_site_url(site_url or settings.SITE_URL)
    if settings.STRIPE_API_BASE:
        return setup_local(site_url, settings.STRIPE_API_BASE)
    return setup_stripe(site_url)


def clean_site_url(site_url: str) -> str:
    """`site_url` trimmed, without query, fragment or trailing slash ("https://paidup.example").
    Raises SetupError unless it is an http(s) address with a host."""
    parts = urlsplit(site_url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SetupError(f"The site URL must look like https://paidup.example, not {site_url!r}.")
    return f"{parts.scheme}://{parts.netloc}{parts.path}".rstrip("/")


def webhook_url(endpoint: WebhookEndpoint, site_url: str | None = None) -> str:
    """Where Stripe must post `endpoint`'s events: `site_url` (default SITE_URL) + dj-stripe's
    /stripe/webhook/<djstripe_uuid>/ (trailing slash: DESIGN.md "Dev stack facts")."""
    path = reverse("stripe_webhook", kwargs={"uuid": endpoint.djstripe_uuid})
    return (site_url or settings.SITE_URL).rstrip("/") + path


# --- localstripe ----------------------------------------------------------------------


def setup_local(site_url: str, api_base: str) -> SetupResult:
    """Seed the rows and register the endpoint; if localstripe refuses, roll the seed back."""
    with transaction.atomic():
        before = WebhookEndpoint.objects.filter(id=LOCAL_ENDPOINT_ID).values_list("enabled_events", flat=True).first()
        endpoint = seed_local(site_url)
        register_local(endpoint, api_base)
    changes = event_changes(before) if before is not None else {}
    return SetupResult(endpoint, "registered with localstripe", api_base, **changes)


@transaction.atomic
def seed_local(site_url: str | None = None) -> WebhookEndpoint:
    """The account, API key and webhook endpoint rows for a fake Stripe. Keeps the endpoint's
    uuid and secret across runs, so a registered URL stays valid."""
    account, _ = Account.objects.get_or_create(
        id=LOCAL_ACCOUNT_ID, defaults={"livemode": False, "stripe_data": {"id": LOCAL_ACCOUNT_ID}}
    )
    APIKey.objects.update_or_create(
        secret=settings.STRIPE_SECRET_KEY,
        defaults={
            "type": APIKeyType.secret,
            "livemode": False,
            "name": "localstripe",
            "djstripe_owner_account": account,
        },
    )
    endpoint = WebhookEndpoint.objects.filter(id=LOCAL_ENDPOINT_ID).first()
    if endpoint is None:
        endpoint = WebhookEndpoint(
            id=LOCAL_ENDPOINT_ID,
            djstripe_uuid=uuid.uuid4(),
            secret="whsec_" + secrets.token_hex(24),
            livemode=False,
            api_version=djstripe_settings.STRIPE_API_VERSION,
            status=WebhookEndpointStatus.enabled,
            djstripe_owner_account=account,
            stripe_data={},
        )
    endpoint.enabled_events = list(EVENTS)
    endpoint.url = webhook_url(endpoint, site_url)
    endpoint.save()
    return endpoint


def register_local(endpoint: WebhookEndpoint, api_base: str, *, url: str | None = None) -> None:
    """Tell localstripe where to send this endpoint's events, signed with its secret.

    Registering the same id again replaces the registration (there is no delete route: to
    silence an endpoint, register it with a `url` nobody listens on). Raises SetupError when
    `api_base` is not http(s), localstripe answers an HTTP error, or nothing answers (10 s).
    """
    if urlsplit(api_base).scheme not in ("http", "https"):
        raise SetupError(f"STRIPE_API_BASE must be an http(s) address (it is {api_base!r}). {LOCALSTRIPE_HELP}")
    payload = {"url": url or endpoint.url, "secret": endpoint.secret, "events": list(endpoint.enabled_events)}
    request = urllib.request.Request(
        f"{api_base.rstrip('/')}/_config/webhooks/{endpoint.id}",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        # bandit B310 (file:/ and custom schemes): only http(s) gets here, checked above.
        with urllib.request.urlopen(request, timeout=10):  # nosec B310
            pass
    except urllib.error.HTTPError as error:
        raise SetupError(
            f"{api_base} refused the webhook registration (HTTP {error.code}). "
            f"Is STRIPE_API_BASE really localstripe? {LOCALSTRIPE_HELP}"
        ) from error
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise SetupError(f"localstripe is not answering at {api_base} ({reason}). {LOCALSTRIPE_HELP}") from error


# --- real Stripe ----------------------------------------------------------------------


def setup_stripe(site_url: str) -> SetupResult:
    """Create or update this site's webhook endpoint in Stripe and keep its signing secret.

    Raises SetupError, with a sentence for the operator, when `site_url` is not public
    (check_public), STRIPE_SECRET_KEY is not a secret key, or Stripe refuses (authentication,
    permission, connection or any other StripeError); nothing is saved then.
    """
    check_public(site_url)
    api_key = settings.STRIPE_SECRET_KEY
    if not api_key.startswith(("sk_", "rk_")):
        raise SetupError("STRIPE_SECRET_KEY is not set to a Stripe secret key (sk_test_… or sk_live_…).")
    try:
        with transaction.atomic():
            account = Account.get_or_retrieve_for_api_key(api_key)
            return sync_stripe_endpoint(account, site_url, api_key)
    except stripe.AuthenticationError as error:
        raise SetupError(f"Stripe refused STRIPE_SECRET_KEY: {error.user_message or error}") from error
    except stripe.PermissionError as error:
        raise SetupError(
            f"STRIPE_SECRET_KEY may not manage webhook endpoints: {error.user_message or error}"
        ) from error
    except stripe.APIConnectionError as error:
        raise SetupError(f"Could not reach Stripe ({error.user_message or error}). Try again.") from error
    except stripe.StripeError as error:
        raise SetupError(f"Stripe refused: {error.user_message or error}") from error


def check_public(site_url: str) -> None:
    """Stripe must be able to reach the endpoint: raise SetupError for loopback, private and
    link-local addresses and for localhost/.local/.internal names."""
    host = urlsplit(site_url).hostname or ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        private = host == "localhost" or host.endswith((".localhost", ".local", ".internal"))
    else:
        private = address.is_loopback or address.is_private or address.is_link_local
    if private:
        raise SetupError(
            f"Stripe cannot reach {site_url}. Pass the public address with --site-url (or set SITE_URL); "
            "for local development set STRIPE_API_BASE to localstripe instead."
        )


def managed_endpoint(account: Account) -> WebhookEndpoint | None:
    """The endpoint row an earlier run created for this account and mode, if any."""
    return (
        WebhookEndpoint.objects.filter(
            djstripe_owner_account=account,
            livemode=settings.STRIPE_LIVE_MODE,
            metadata__managed_by=MANAGED_BY["managed_by"],
        )
        .order_by("djstripe_created")
        .first()
    )


def sync_stripe_endpoint(account: Account, site_url: str, api_key: str) -> SetupResult:
    """Update the endpoint an earlier run created (url, events), or create it.

    Stripe's update replaces `enabled_events` as a whole (docs.stripe.com/api/webhook_endpoints/update),
    so an endpoint missing some of ours gains them and one with more (or "*") is narrowed to ours;
    the result's `added`/`dropped` say which, compared with what our row last recorded. The uuid in
    the URL is kept across runs, so Stripe's deliveries in flight still land. Raises
    stripe.StripeError (setup_stripe turns it into SetupError, and rolls the row back).
    """
    endpoint = managed_endpoint(account)
    if endpoint is not None:
        changes = event_changes(endpoint.enabled_events)
        url = webhook_url(endpoint, site_url)
        try:
            data = stripe.WebhookEndpoint.modify(
                endpoint.id,
                url=url,
                enabled_events=EVENTS,
                disabled=False,
                api_key=api_key,
                stripe_version=djstripe_settings.STRIPE_API_VERSION,
            )
        except stripe.InvalidRequestError as error:
            if error.code != "resource_missing":
                raise
            # Deleted in the Dashboard. Keep the row (the inbox's triggers point at it), retire it.
            retire(endpoint)
            return _create_stripe_endpoint(site_url, api_key, action="recreated")
        data = {**data.to_dict(), "secret": endpoint.secret}  # Stripe returns the secret only once
        return SetupResult(WebhookEndpoint.sync_from_stripe_data(data, api_key=api_key), "updated", "Stripe", **changes)
    return _create_stripe_endpoint(site_url, api_key, action="created")


def retire(endpoint: WebhookEndpoint) -> None:
    """Mark the row disabled and no longer ours (drops MANAGED_BY from its metadata), keeping it
    because the webhook inbox's triggers point at it. Saves; makes no Stripe request."""
    endpoint.status = WebhookEndpointStatus.disabled
    endpoint.metadata = {k: v for k, v in (endpoint.metadata or {}).items() if k not in MANAGED_BY}
    endpoint.save(update_fields=["status", "metadata", "djstripe_updated"])


def _create_stripe_endpoint(site_url: str, api_key: str, *, action: str) -> SetupResult:
    endpoint_uuid = uuid.uuid4()
    path = reverse("stripe_webhook", kwargs={"uuid": endpoint_uuid})
    data = stripe.WebhookEndpoint.create(
        url=site_url + path,
        enabled_events=EVENTS,
        api_version=djstripe_settings.STRIPE_API_VERSION,
        # dj-stripe adopts djstripe_uuid from the metadata when it syncs the row.
        metadata={"djstripe_uuid": str(endpoint_uuid), **MANAGED_BY},
        api_key=api_key,
        stripe_version=djstripe_settings.STRIPE_API_VERSION,
    )
    if not data.get("secret"):
        raise SetupError(f"Stripe created {data['id']} without a signing secret; delete it and run this again.")
    return SetupResult(WebhookEndpoint.sync_from_stripe_data(data, api_key=api_key), action, "Stripe")
