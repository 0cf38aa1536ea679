"""Deploy settings (issue 12 item 5): what `manage.py check --deploy` says with production settings,
HSTS and the https redirect, secrets read from files, and dev-only switches refused.

The checks run in a fresh process with a production-like environment, as an operator runs them:
settings such as HSTS are derived from SITE_URL when config.settings is imported.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client

from config.settings import EmptyMeansDefault
from tests.test_checks import LIVE_PUBLISHABLE, LIVE_SECRET
from tests.test_settings_env import load_settings

ROOT = Path(__file__).resolve().parent.parent
SECRET_KEY = "q8v!2mZ@x7" * 5


def production_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a correct production deploy (DEBUG off, https SITE_URL, an ESP)."""
    keep = {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR"}
    return {
        **{k: v for k, v in os.environ.items() if k in keep},
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'deploy.sqlite3'}",
        "DEBUG": "0",
        "SECRET_KEY": SECRET_KEY,
        "ALLOWED_HOSTS": "paidup.example",
        "SITE_URL": "https://paidup.example",
        "STRIPE_SECRET_KEY": LIVE_SECRET,
        "STRIPE_PUBLISHABLE_KEY": LIVE_PUBLISHABLE,
        "EMAIL_BACKEND": "anymail.backends.postmark.EmailBackend",
        "ANYMAIL": '{"POSTMARK_SERVER_TOKEN": "server-token", "WEBHOOK_SECRET": "user:password"}',
        **extra,
    }


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def deployed(tmp_path) -> Path:
    """A folder for a fresh database. The webhook endpoint check (paidup.E005, tests/test_start_refusal.py)
    passes before the first `migrate`, which must be able to run; everything else is settings."""
    return tmp_path


def check_deploy(folder: Path, **extra: str) -> subprocess.CompletedProcess:
    return run([sys.executable, str(ROOT / "manage.py"), "check", "--deploy"], production_env(folder, **extra), folder)


# --- check --deploy ------------------------------------------------------------------------


def test_check_deploy_reports_nothing_with_production_settings(deployed):
    # Before: security.W004 (no HSTS) and security.W008 (no SSL redirect) with these settings.
    done = check_deploy(deployed)
    assert done.returncode == 0, done.stderr
    # Silenced: security.W005 and W021 (subdomains and preload stay off until asked, docs/deploy.md).
    assert done.stdout.strip() == "System check identified no issues (2 silenced)."
    assert done.stderr == ""


def test_check_deploy_reports_nothing_with_subdomains_and_preload_switched_on(deployed):
    done = check_deploy(
        deployed, SECURE_HSTS_SECONDS="31536000", SECURE_HSTS_INCLUDE_SUBDOMAINS="1", SECURE_HSTS_PRELOAD="1"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "System check identified no issues (0 silenced)."


@pytest.mark.parametrize(
    "variable, value, refusal",
    [
        ("SHOW_DEV_EMAILS", "1", "paidup.E008"),
        ("FAILPOINTS", "after_charge=exit", "paidup.E012"),
    ],
)
def test_the_server_refuses_dev_switches_with_debug_off_and_starts_with_debug_on(deployed, variable, value, refusal):
    refused = check_deploy(deployed, **{variable: value})
    assert refused.returncode == 1
    assert f"({refusal})" in refused.stderr

    dev = check_deploy(deployed, **{variable: value, "DEBUG": "1"})
    assert f"({refusal})" not in dev.stderr + dev.stdout


# --- HSTS and the https redirect -------------------------------------------------------


def test_hsts_starts_at_an_hour_with_an_https_site_and_is_off_without(tmp_path):
    https = load_settings(tmp_path, {"SITE_URL": "https://paidup.example"})
    assert https["SECURE_HSTS_SECONDS"] == "3600"
    assert https["SECURE_HSTS_INCLUDE_SUBDOMAINS"] == "False" and https["SECURE_HSTS_PRELOAD"] == "False"
    assert https["SECURE_SSL_REDIRECT"] == "True"
    assert https["SESSION_COOKIE_SECURE"] == "True" and https["CSRF_COOKIE_SECURE"] == "True"

    http = load_settings(tmp_path, {"SITE_URL": "http://127.0.0.1:8000", "DEBUG": "1"})  # make run
    assert http["SECURE_HSTS_SECONDS"] == "0" and http["SECURE_SSL_REDIRECT"] == "False"
    assert http["SESSION_COOKIE_SECURE"] == "False"


def test_hsts_and_the_redirect_follow_their_variables(tmp_path):
    raised = load_settings(
        tmp_path,
        {"SITE_URL": "https://paidup.example", "SECURE_HSTS_SECONDS": "31536000", "SECURE_SSL_REDIRECT": "0"},
    )
    assert raised["SECURE_HSTS_SECONDS"] == "31536000" and raised["SECURE_SSL_REDIRECT"] == "False"


@pytest.fixture
def https_site(settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 3600
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.ALLOWED_HOSTS = ["paidup.example"]
    return Client(HTTP_HOST="paidup.example")


@pytest.mark.django_db
def test_plain_http_is_redirected_to_https_except_the_health_check(https_site):
    redirected = https_site.get("/checkout/")
    assert redirected.status_code == 301 and redirected["Location"] == "https://paidup.example/checkout/"

    health = https_site.get("/healthz")  # a local monitor asks without TLS
    assert health.status_code in (200, 503) and "Location" not in health


@pytest.mark.django_db
def test_https_through_the_proxy_gets_hsts_and_the_security_headers(https_site, plan):
    page = https_site.get("/checkout/", HTTP_X_FORWARDED_PROTO="https")
    assert page.status_code == 200
    assert page["Strict-Transport-Security"] == "max-age=3600"
    assert page["Referrer-Policy"] == "same-origin"
    assert page["X-Frame-Options"] == "DENY"
    assert page["X-Content-Type-Options"] == "nosniff"
    policy = page["Permissions-Policy"]
    assert 'payment=(self "https://js.stripe.com"' in policy
    for feature in ("camera", "microphone", "geolocation"):
        assert f"{feature}=()" in policy


# --- secrets from files ----------------------------------------------------------------


@pytest.fixture
def env(monkeypatch):
    for name in ("SECRET_KEY", "SECRET_KEY_FILE", "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    return EmptyMeansDefault()


def test_a_secret_is_read_from_its_file_without_the_trailing_newline(env, monkeypatch, tmp_path):
    (tmp_path / "key").write_text("s3cret value\n")
    monkeypatch.setenv("SECRET_KEY_FILE", str(tmp_path / "key"))
    assert env.secret("SECRET_KEY", "default") == "s3cret value"


def test_a_relative_file_is_read_from_the_systemd_credentials_directory(env, monkeypatch, tmp_path):
    (tmp_path / "secret_key").write_text("from systemd")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    monkeypatch.setenv("SECRET_KEY_FILE", "secret_key")
    assert env.secret("SECRET_KEY") == "from systemd"


def test_without_either_variable_the_default_applies(env, monkeypatch):
    assert env.secret("SECRET_KEY", "default") == "default"
    monkeypatch.setenv("SECRET_KEY", "direct")
    assert env.secret("SECRET_KEY", "default") == "direct"


def test_both_the_value_and_the_file_are_refused(env, monkeypatch, tmp_path):
    (tmp_path / "key").write_text("in the file")
    monkeypatch.setenv("SECRET_KEY", "in the environment")
    monkeypatch.setenv("SECRET_KEY_FILE", str(tmp_path / "key"))
    with pytest.raises(ImproperlyConfigured, match="Both SECRET_KEY and SECRET_KEY_FILE are set") as refused:
        env.secret("SECRET_KEY")
    assert "in the file" not in str(refused.value) and "in the environment" not in str(refused.value)


@pytest.mark.parametrize("problem", ["missing", "a folder", "not text"])
def test_an_unreadable_file_names_the_variable_and_path_never_the_content(env, monkeypatch, tmp_path, problem):
    path = tmp_path / "key"
    if problem == "a folder":
        path.mkdir()
    elif problem == "not text":
        path.write_bytes(b"secret-bytes \xff\xfe")
    monkeypatch.setenv("SECRET_KEY_FILE", str(path))
    with pytest.raises(ImproperlyConfigured) as refused:
        env.secret("SECRET_KEY")
    message = str(refused.value)
    assert message.startswith(f"SECRET_KEY_FILE: cannot read {path} (")
    assert "secret-bytes" not in message and refused.value.__cause__ is None


def test_the_settings_take_every_secret_from_files(tmp_path):
    files = {
        "SECRET_KEY": SECRET_KEY,
        "STRIPE_SECRET_KEY": LIVE_SECRET,
        "STRIPE_PUBLISHABLE_KEY": LIVE_PUBLISHABLE,
        "DATABASE_URL": "postgres://paidup:pw@db.internal:5432/paidup",
        "ANYMAIL": '{"POSTMARK_SERVER_TOKEN": "token", "WEBHOOK_SECRET": "a:b"}',
        "Q_REDIS_URL": "redis://:pw@cache.internal:6379/0",
    }
    for name, value in files.items():
        (tmp_path / name.lower()).write_text(value + "\n")
    loaded = load_settings(
        tmp_path, {f"{name}_FILE": name.lower() for name in files} | {"CREDENTIALS_DIRECTORY": str(tmp_path)}
    )
    assert loaded["SECRET_KEY"] == repr(SECRET_KEY)
    assert loaded["STRIPE_SECRET_KEY"] == repr(LIVE_SECRET) and loaded["STRIPE_LIVE_MODE"] == "True"
    assert loaded["STRIPE_PUBLISHABLE_KEY"] == repr(LIVE_PUBLISHABLE)
    assert "'HOST': 'db.internal'" in loaded["DATABASES"] and "'PASSWORD': 'pw'" in loaded["DATABASES"]
    assert loaded["ANYMAIL"] == repr({"POSTMARK_SERVER_TOKEN": "token", "WEBHOOK_SECRET": "a:b"})
    assert "'redis': 'redis://:pw@cache.internal:6379/0'" in loaded["Q_CLUSTER"]


def test_a_start_with_both_set_fails_with_a_message_that_names_them(tmp_path):
    (tmp_path / "stripe").write_text(LIVE_SECRET)
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)}
    env |= {"STRIPE_SECRET_KEY": LIVE_SECRET, "STRIPE_SECRET_KEY_FILE": str(tmp_path / "stripe")}
    done = run([sys.executable, "-c", "import config.settings"], env, tmp_path)
    assert done.returncode != 0
    assert "Both STRIPE_SECRET_KEY and STRIPE_SECRET_KEY_FILE are set" in done.stderr
    assert LIVE_SECRET not in done.stderr


# --- bandit's findings, fixed ----------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("api_base", ["file:///etc/passwd", "ftp://127.0.0.1:8420", "127.0.0.1:8420"])
def test_the_fake_stripe_registration_opens_only_http_addresses(api_base, tmp_path):
    from billing import stripe_setup

    endpoint = stripe_setup.seed_local("http://127.0.0.1:8000")
    with pytest.raises(stripe_setup.SetupError, match="must be an http"):
        stripe_setup.register_local(endpoint, api_base)


def test_the_permissions_policy_names_only_features_chromium_recognises(settings):
    # Chromium's names (third_party/blink/renderer/core/permissions_policy/permissions_policy_features.json5);
    # an unknown one ("bluetooth") is an "Unrecognized feature" console error on every page.
    chromium = {
        "payment", "camera", "microphone", "geolocation", "usb", "serial", "midi", "magnetometer",
        "gyroscope", "accelerometer", "display-capture", "browsing-topics", "fullscreen", "hid",
    }  # fmt: skip
    assert set(settings.PERMISSIONS_POLICY) <= chromium
    assert "bluetooth" not in settings.PERMISSIONS_POLICY
