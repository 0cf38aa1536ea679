"""Refuse to start in production on unsafe defaults (DEBUG off)."""

import re

from django.conf import settings
from django.core.checks import Error, Tags, register

# The shape Stripe's keys have (and dj-stripe accepts): a placeholder such as "sk_live_TODO"
# would pass a prefix test and fail at the first payment.
SECRET_KEY_RE = re.compile(r"^(sk|rk)_(live|test)_[A-Za-z0-9]{24,}$")
PUBLISHABLE_KEY_RE = re.compile(r"^pk_(live|test)_[A-Za-z0-9]{24,}$")


@register(Tags.security, deploy=False)
def check_production_settings(app_configs=None, **kwargs) -> list[Error]:
    if settings.DEBUG:
        return []
    from config.settings import DEV_SECRET_KEY

    errors = []
    if not settings.SECRET_KEY or settings.SECRET_KEY == DEV_SECRET_KEY or len(settings.SECRET_KEY) < 32:
        errors.append(Error("SECRET_KEY must be set to a long random value when DEBUG is off.", id="paidup.E001"))
    if not settings.ALLOWED_HOSTS:
        errors.append(Error("ALLOWED_HOSTS must list this site's host names when DEBUG is off.", id="paidup.E002"))
    if not SECRET_KEY_RE.match(settings.STRIPE_SECRET_KEY):
        errors.append(Error("STRIPE_SECRET_KEY must be a Stripe secret key when DEBUG is off.", id="paidup.E003"))
    if not PUBLISHABLE_KEY_RE.match(settings.STRIPE_PUBLISHABLE_KEY):
        errors.append(
            Error("STRIPE_PUBLISHABLE_KEY must be a Stripe publishable key when DEBUG is off.", id="paidup.E004")
        )
    if not _webhook_endpoint_configured():
        errors.append(
            Error(
                "No Stripe webhook endpoint is configured.",
                hint="Run `manage.py stripe_setup` to create it and store its signing secret.",
                id="paidup.E005",
            )
        )
    return errors


def _webhook_endpoint_configured() -> bool:
    from django.db import DatabaseError
    from djstripe.models import WebhookEndpoint

    try:
        return WebhookEndpoint.objects.exclude(secret="").exists()
    except DatabaseError:
        # Before the first migration the table does not exist; `migrate` must still run.
        return True
