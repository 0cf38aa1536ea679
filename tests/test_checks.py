"""With DEBUG off, PaidUp refuses to start on unsafe or missing settings (billing/checks.py)."""

import pytest
from django.core.checks import WARNING, run_checks
from djstripe.models import WebhookEndpoint

from billing.checks import (
    check_production_settings,
    check_reconcile_interval,
    check_webhook_endpoint,
    check_webhook_events,
)
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
    settings.SHOW_DEV_EMAILS = False  # tests/settings.py turns the outbox page on
    return settings


def error_ids() -> list[str]:
    return [error.id for error in check_production_settings() + check_webhook_endpoint()]


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
    assert check_production_settings() == []
    errors = check_webhook_endpoint()
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


CONSOLE_BACKENDS = [
    "anymail.backends.console.EmailBackend",
    "django.core.mail.backends.console.EmailBackend",
    "django.core.mail.backends.filebased.EmailBackend",
]


@pytest.mark.parametrize("backend", CONSOLE_BACKENDS)
def test_it_refuses_a_mailer_that_writes_sign_in_links_into_the_logs(production, backend):
    production.EMAIL_BACKEND = backend
    errors = check_production_settings()
    assert [e.id for e in errors] == ["paidup.E006"]
    assert "sign-in links" in errors[0].msg and "ALLOW_CONSOLE_EMAIL=1" in errors[0].hint


def test_the_operator_may_allow_the_console_mailer_explicitly(production):
    production.EMAIL_BACKEND = CONSOLE_BACKENDS[0]
    production.ALLOW_CONSOLE_EMAIL = True
    assert error_ids() == []


def test_with_debug_on_the_console_mailer_is_fine(production):
    production.DEBUG, production.EMAIL_BACKEND = True, CONSOLE_BACKENDS[0]
    assert error_ids() == []


@pytest.mark.parametrize("minutes, expected", [(1, []), (15, []), (0, ["paidup.E007"]), (-5, ["paidup.E007"])])
def test_the_reconcile_interval_must_be_a_minute_or_more_even_in_debug(settings, minutes, expected):
    settings.DEBUG = True
    settings.RECONCILE_INTERVAL_MINUTES = minutes
    assert [e.id for e in check_reconcile_interval()] == expected


def test_it_refuses_the_public_outbox_page_in_production(production):
    production.SHOW_DEV_EMAILS = True
    errors = check_production_settings()
    assert [e.id for e in errors] == ["paidup.E008"]
    assert "/dev/emails/" in errors[0].msg


def test_left_over_failpoints_are_refused_in_production(production):
    # Before: only a warning (paidup.W001), and the server started, ready to die after a real charge.
    production.FAILPOINTS = "after_charge=exit"
    [error] = check_production_settings()
    assert error.id == "paidup.E012" and error.is_serious()
    assert "after_charge=exit" in error.msg and "ALLOW_FAILPOINTS=1" in error.hint


def test_failpoints_for_a_crash_drill_are_a_warning_when_allowed(production):
    production.FAILPOINTS = "after_charge=exit"
    production.ALLOW_FAILPOINTS = True
    [warning] = check_production_settings()
    assert warning.id == "paidup.W001" and not warning.is_serious()


@pytest.mark.parametrize("name, value", [("SHOW_DEV_EMAILS", True), ("FAILPOINTS", "after_charge=exit")])
def test_dev_switches_are_fine_with_debug_on(production, name, value):
    production.DEBUG = True
    setattr(production, name, value)
    assert check_production_settings() == []


@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("DISPUTE_ACCESS", "keep", []),
        ("DISPUTE_ACCESS", "suspend", []),
        ("DISPUTE_ACCESS", "Suspend", ["paidup.E009"]),
        ("DISPUTE_ACCESS", "", ["paidup.E009"]),
        ("EFW_AUTO_REFUND", "off", []),
        ("EFW_AUTO_REFUND", "below_fee", []),
        ("EFW_AUTO_REFUND", "always", []),
        ("EFW_AUTO_REFUND", "yes", ["paidup.E010"]),
        ("DISPUTE_FEE_CENTS", 1500, []),
        ("DISPUTE_FEE_CENTS", 0, ["paidup.E011"]),
        ("DISPUTE_FEE_CENTS", -15, ["paidup.E011"]),
    ],
)
def test_the_dispute_policies_are_checked_at_start_even_in_debug(settings, name, value, expected):
    from billing.checks import check_dispute_policies

    settings.DEBUG = True
    setattr(settings, name, value)
    assert [error.id for error in check_dispute_policies()] == expected
    assert {e.id for e in run_checks() if e.id in ("paidup.E009", "paidup.E010", "paidup.E011")} == set(expected)


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("", []),  # no token: /metrics is off (a 404 with DEBUG off), nothing to guess
        ("a" * 32, []),
        ("0123456789abcdef" * 4, []),  # `openssl rand -hex 32`
        ("a" * 31, ["paidup.E013"]),
        ("secret", ["paidup.E013"]),
        ("  " + "a" * 30 + "  ", ["paidup.E013"]),  # spaces around it add nothing to guess
    ],
)
@pytest.mark.parametrize("debug", [False, True])
def test_a_short_metrics_token_is_refused_at_start_even_in_debug(production, token, expected, debug):
    from billing.checks import check_metrics_token

    production.DEBUG = debug
    production.METRICS_TOKEN = token
    assert [error.id for error in check_metrics_token()] == expected
    assert [e.id for e in run_checks() if e.id == "paidup.E013"] == expected  # registered: start-up runs it


def test_the_metrics_token_error_says_how_long_and_how_to_make_one(production):
    from billing.checks import check_metrics_token

    production.METRICS_TOKEN = "hunter2"
    (error,) = check_metrics_token()
    assert error.is_serious()
    assert "at least 32 characters" in error.msg and "(it has 7)" in error.msg
    assert "openssl rand -hex 32" in error.hint


# --- paidup.W002: the endpoint misses event types PaidUp handles ------------------------------

OLD_EVENTS = ["payment_intent.succeeded", "payment_intent.payment_failed", "payment_intent.canceled", "refund.created"]


def test_an_endpoint_subscribed_to_every_handled_event_passes(production):
    assert check_webhook_events() == []


def test_an_endpoint_set_up_by_an_older_release_is_warned_about(production, webhook_endpoint):
    WebhookEndpoint.objects.update(enabled_events=OLD_EVENTS)

    [warning] = check_webhook_events()

    assert warning.id == "paidup.W002" and warning.level == WARNING
    assert "charge.dispute.created" in warning.msg and "radar.early_fraud_warning.created" in warning.msg
    assert "payment_intent.succeeded" not in warning.msg
    assert "stripe_setup" in warning.hint
    assert check_production_settings() + check_webhook_endpoint() == []  # a warning: servers still start


def test_stripe_setup_clears_the_warning(production, webhook_endpoint):
    from billing.stripe_setup import seed_local

    WebhookEndpoint.objects.update(enabled_events=OLD_EVENTS)
    seed_local()

    assert check_webhook_events() == []


@pytest.mark.parametrize("case", ["debug", "disabled endpoint", "all events", "no secret"])
def test_it_does_not_warn_when_stripe_delivers_nothing_it_misses(production, webhook_endpoint, case):
    WebhookEndpoint.objects.update(enabled_events=OLD_EVENTS)
    if case == "debug":
        production.DEBUG = True
    elif case == "disabled endpoint":  # retired by stripe_setup after a deletion in the Dashboard
        WebhookEndpoint.objects.update(status="disabled")
    elif case == "all events":
        WebhookEndpoint.objects.update(enabled_events=["*"])
    else:  # E005 says that one
        WebhookEndpoint.objects.update(secret="")

    assert check_webhook_events() == []
