"""Make dj-stripe's account, key and webhook endpoint rows exist, against localstripe or Stripe.

localstripe has no /v1/account and no /v1/webhook_endpoints, so in dev the rows are seeded
by hand and the endpoint is registered with localstripe's own `/_config/webhooks/<id>`.
Against real Stripe the endpoint is created (or updated) through the API and its signing
secret stored. Everything here is idempotent.
"""

import secrets
import uuid

from django.conf import settings
from django.db import transaction
from django.urls import reverse
from djstripe.enums import APIKeyType, WebhookEndpointStatus
from djstripe.models import Account, APIKey, WebhookEndpoint
from djstripe.settings import djstripe_settings

from .webhooks import PAYMENT_INTENT_EVENTS as EVENTS

LOCAL_ACCOUNT_ID = "acct_localstripe"
LOCAL_ENDPOINT_ID = "we_localstripe"


def webhook_url(endpoint: WebhookEndpoint, site_url: str | None = None) -> str:
    path = reverse("stripe_webhook", kwargs={"uuid": endpoint.djstripe_uuid})
    return (site_url or settings.SITE_URL).rstrip("/") + path


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
            enabled_events=EVENTS,
            djstripe_owner_account=account,
            stripe_data={},
        )
    endpoint.url = webhook_url(endpoint, site_url)
    endpoint.save()
    return endpoint
