"""The README's production outline runs in order, and no server starts on unsafe settings.

- `migrate` and `stripe_setup` are not blocked by the webhook-endpoint check (paidup.E005):
  it is a deployment check, which they do not run.
- The WSGI/ASGI application and `manage.py qcluster` run every check, deployment checks
  included, and refuse to start on any error (billing.checks.refuse_unsafe_start).
"""

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from djstripe.models import WebhookEndpoint

from billing.checks import refuse_unsafe_start
from config.settings import DEV_SECRET_KEY
from tests.test_checks import LIVE_PUBLISHABLE, LIVE_SECRET
from tests.test_stripe_setup import SECRET_KEY as FAKE_STRIPE_SECRET
from tests.test_stripe_setup import fake_stripe_api  # noqa: F401  (fixture: Stripe's endpoint API, faked)

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.django_db


@pytest.fixture
def fresh_production(settings, monkeypatch):
    """DEBUG off and correct settings, on a database where `stripe_setup` has not run yet."""
    # Set for Playwright by tests/fixtures/browser.py; Django's deployment check async.E001
    # rightly refuses it in production.
    monkeypatch.delenv("DJANGO_ALLOW_ASYNC_UNSAFE", raising=False)
    settings.DEBUG = False
    settings.SECRET_KEY = "q8v!2mZ@x7" * 5
    settings.ALLOWED_HOSTS = ["paidup.example"]
    settings.STRIPE_SECRET_KEY = LIVE_SECRET
    settings.STRIPE_PUBLISHABLE_KEY = LIVE_PUBLISHABLE
    settings.EMAIL_BACKEND = "anymail.backends.postmark.EmailBackend"
    settings.SHOW_DEV_EMAILS = False  # tests/settings.py turns the outbox page on
    assert not WebhookEndpoint.objects.exists()
    return settings


def ids(messages) -> list[str]:
    return [m.id for m in messages if m.id.startswith("paidup.")]


# --- item 1: the outline's commands run in order on a fresh deploy ------------------------


def test_the_endpoint_check_is_left_to_the_servers_not_to_the_commands_that_fix_it(fresh_production):
    assert ids(run_checks()) == []  # what migrate, stripe_setup and the other commands run
    assert ids(run_checks(include_deployment_checks=True)) == ["paidup.E005"]  # what servers run


def test_migrate_twice_then_stripe_setup_then_the_servers_start(fresh_production, fake_stripe_api):  # noqa: F811
    fresh_production.STRIPE_SECRET_KEY = FAKE_STRIPE_SECRET
    call_command("migrate", skip_checks=False, verbosity=0)
    call_command("migrate", skip_checks=False, verbosity=0)
    with pytest.raises(SystemCheckError, match="paidup.E005"):
        refuse_unsafe_start("wsgi")

    out = StringIO()
    call_command("stripe_setup", "--site-url", "https://paidup.example", skip_checks=False, stdout=out)

    assert "created" in out.getvalue()
    refuse_unsafe_start("wsgi")  # no error: the web server and the q cluster may start


def test_the_commands_still_refuse_unsafe_settings(fresh_production):
    fresh_production.STRIPE_SECRET_KEY = "sk_live_TODO"
    with pytest.raises(SystemCheckError, match="paidup.E003"):
        call_command("stripe_setup", "--site-url", "https://paidup.example", skip_checks=False)
    assert not WebhookEndpoint.objects.exists()


# --- item 5: servers refuse what the checks report ------------------------------------


@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("SECRET_KEY", DEV_SECRET_KEY, "paidup.E001"),
        ("ALLOWED_HOSTS", [], "paidup.E002"),
        ("STRIPE_SECRET_KEY", "sk_live_TODO", "paidup.E003"),
        ("STRIPE_PUBLISHABLE_KEY", "", "paidup.E004"),
        ("EMAIL_BACKEND", "anymail.backends.console.EmailBackend", "paidup.E006"),
        ("RECONCILE_INTERVAL_MINUTES", 0, "paidup.E007"),
        ("SHOW_DEV_EMAILS", True, "paidup.E008"),
        ("FAILPOINTS", "after_charge=exit", "paidup.E012"),
    ],
)
def test_a_server_refuses_each_error_the_checks_report(fresh_production, webhook_endpoint, name, value, expected):
    setattr(fresh_production, name, value)
    with pytest.raises(SystemCheckError) as refused:
        refuse_unsafe_start("wsgi")
    assert f"({expected})" in str(refused.value)
    assert "PaidUp refuses to start (wsgi)" in str(refused.value)


def test_a_silenced_check_does_not_stop_a_server(fresh_production, webhook_endpoint):
    fresh_production.EMAIL_BACKEND = "anymail.backends.console.EmailBackend"
    fresh_production.SILENCED_SYSTEM_CHECKS = ["paidup.E006"]
    refuse_unsafe_start("wsgi")


def test_warnings_do_not_stop_a_server(fresh_production, webhook_endpoint):
    fresh_production.SECURE_HSTS_SECONDS = 0  # security.W004, a warning
    fresh_production.FAILPOINTS = "email_send=raise"
    fresh_production.ALLOW_FAILPOINTS = True  # a crash drill: paidup.W001
    assert "security.W004" in [m.id for m in run_checks(include_deployment_checks=True)]
    refuse_unsafe_start("wsgi")


class FakeCluster:
    started = 0

    def start(self):
        FakeCluster.started += 1

    def stop(self):
        pass


@pytest.fixture
def cluster(monkeypatch):
    """django-q2's Cluster, replaced: the test sees whether the command would have started it."""
    FakeCluster.started = 0
    monkeypatch.setattr("django_q.management.commands.qcluster.Cluster", FakeCluster)
    return FakeCluster


def test_the_q_cluster_refuses_to_start_without_a_webhook_endpoint(fresh_production, cluster):
    with pytest.raises(SystemCheckError, match="paidup.E005"):
        call_command("qcluster", "--run-once")
    assert cluster.started == 0


def test_the_q_cluster_refuses_to_start_on_unsafe_settings(fresh_production, webhook_endpoint, cluster):
    fresh_production.SECRET_KEY = DEV_SECRET_KEY
    with pytest.raises(SystemCheckError, match="paidup.E001"):
        call_command("qcluster", "--run-once")
    assert cluster.started == 0


def test_the_q_cluster_starts_on_safe_settings(fresh_production, webhook_endpoint, cluster):
    call_command("qcluster", "--run-once", stdout=StringIO())
    assert cluster.started == 1


# --- the real entry points, imported in a fresh process --------------------------------

GOOD_ENV = {
    "DEBUG": "0",
    "SECRET_KEY": "q8v!2mZ@x7" * 5,
    "ALLOWED_HOSTS": "paidup.example",
    "STRIPE_SECRET_KEY": LIVE_SECRET,
    "STRIPE_PUBLISHABLE_KEY": LIVE_PUBLISHABLE,
    "EMAIL_BACKEND": "anymail.backends.postmark.EmailBackend",
    "ANYMAIL": '{"POSTMARK_SERVER_TOKEN": "x"}',
}


def import_app(module: str, tmp_path, **overrides) -> subprocess.CompletedProcess:
    """`import config.wsgi` (what gunicorn does) in a fresh process with only these variables.

    The database is an empty SQLite file: the endpoint check cannot look (no table yet) and lets
    it pass, so only the settings decide here; the endpoint is tested above.
    """
    env = {
        "PATH": os.environ["PATH"],
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'empty.sqlite3'}",
        **GOOD_ENV,
        **overrides,
    }
    return subprocess.run(
        [sys.executable, "-c", f"import {module}; print('served', {module}.application is not None)"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("module", ["config.wsgi", "config.asgi"])
def test_the_application_loads_on_safe_settings(module, tmp_path):
    done = import_app(module, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "served True\n"


@pytest.mark.parametrize("module", ["config.wsgi", "config.asgi"])
def test_the_application_refuses_the_dev_secret_key_and_a_placeholder_stripe_key(module, tmp_path):
    done = import_app(module, tmp_path, SECRET_KEY="", STRIPE_SECRET_KEY="sk_live_TODO")
    assert done.returncode != 0
    assert "served" not in done.stdout
    assert "PaidUp refuses to start" in done.stderr
    assert "(paidup.E001)" in done.stderr and "(paidup.E003)" in done.stderr


def test_the_application_refuses_the_console_mailer_unless_the_operator_says_so(tmp_path):
    console = "anymail.backends.console.EmailBackend"
    refused = import_app("config.wsgi", tmp_path, EMAIL_BACKEND=console)
    assert refused.returncode != 0 and "(paidup.E006)" in refused.stderr
    allowed = import_app("config.wsgi", tmp_path, EMAIL_BACKEND=console, ALLOW_CONSOLE_EMAIL="1")
    assert allowed.returncode == 0, allowed.stderr
