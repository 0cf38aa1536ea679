"""With DEBUG off, PaidUp refuses to start on unsafe or missing settings (billing/checks.py)."""

import pytest
from django.core.checks import run_checks
from djstripe.models import WebhookEndpoint

from billing.checks import check_production_settings
from config.settings import DEV_SECRET_KEY

pytestmark = pytest.mark.django_db

LIVE_SECRET = "sk_live_" + "51AbCdEfGhIjKlMnOpQrStUv"
LIVE_PUBLISHABLE = "pk_live_" + "51AbCdEfGhIjKlMnOpQrStUv"


@pytest.fixture
def production(settings, webhook_endpoint):
    """Settings as a correct production deploy has them."""
    settings.DEBUG = False
    settings.SECRET_KEY = "q8v!2mZ@x7" * 5
    settings.ALLOWED_HOSTS = ["paidup.example"]
    settings.STRIPE_SECRET_KEY = LIVE_SECRET
    settings.STRIPE_PUBLISHABLE_KEY = LIVE_PUBLISHABLE
    return settings


def error_ids() -> list[str]:
    return [error.id for error in check_production_settings()]


def test_a_correct_production_deploy_passes(production):
    assert error_ids() == []


BREAKAGES = {
    "dev secret key": ("SECRET_KEY", DEV_SECRET_KEY, "paidup.E001"),
    "short secret key": ("SECRET_KEY", "tooshort", "paidup.E001"),
    "no allowed hosts": ("ALLOWED_HOSTS", [], "paidup.E002"),
    "no stripe secret key": ("STRIPE_SECRET_KEY", "", "paidup.E003"),
    "publishable key as secret": ("STRIPE_SECRET_KEY", LIVE_PUBLISHABLE, "paidup.E003"),
    "placeholder secret key": ("STRIPE_SECRET_KEY", "sk_live_TODO", "paidup.E003"),
    "no publishable key": ("STRIPE_PUBLISHABLE_KEY", "", "paidup.E004"),
    "secret key as publishable": ("STRIPE_PUBLISHABLE_KEY", LIVE_SECRET, "paidup.E004"),
    "placeholder publishable key": ("STRIPE_PUBLISHABLE_KEY", "pk_live_xxx", "paidup.E004"),
}


@pytest.mark.parametrize("case", BREAKAGES)
def test_it_refuses_each_unsafe_setting_with_its_own_error(production, case):
    name, value, expected = BREAKAGES[case]
    setattr(production, name, value)
    assert error_ids() == [expected]


@pytest.mark.parametrize("secret", [None, ""])
def test_it_refuses_to_start_without_a_webhook_endpoint_and_its_secret(production, secret):
    if secret is None:
        WebhookEndpoint.objects.all().delete()
    else:
        WebhookEndpoint.objects.update(secret=secret)
    errors = check_production_settings()
    assert [e.id for e in errors] == ["paidup.E005"]
    assert "stripe_setup" in errors[0].hint


def test_every_error_has_its_own_id(production):
    production.SECRET_KEY, production.ALLOWED_HOSTS = DEV_SECRET_KEY, []
    production.STRIPE_SECRET_KEY = production.STRIPE_PUBLISHABLE_KEY = ""
    WebhookEndpoint.objects.all().delete()
    assert error_ids() == ["paidup.E001", "paidup.E002", "paidup.E003", "paidup.E004", "paidup.E005"]


def test_it_is_registered_so_start_up_runs_it(production):
    production.SECRET_KEY = DEV_SECRET_KEY
    assert "paidup.E001" in [error.id for error in run_checks()]


def test_with_debug_on_nothing_is_required(production):
    production.DEBUG = True
    production.SECRET_KEY, production.ALLOWED_HOSTS = DEV_SECRET_KEY, []
    production.STRIPE_SECRET_KEY = production.STRIPE_PUBLISHABLE_KEY = ""
    WebhookEndpoint.objects.all().delete()
    assert error_ids() == []
