"""PaidUp settings: one module, read from the environment.

Every variable is listed, with its default, in `.env.example`. With DEBUG off, the system
checks in `billing/checks.py` refuse to start without real secrets (see DESIGN.md).
"""

# size: every variable the project reads, one section per part, in one place an operator greps.

import json
import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONCE, NONE, SELF, UNSAFE_INLINE
from django.core.exceptions import ImproperlyConfigured
from environs import Env

from config.passkeys import relying_party

BASE_DIR = Path(__file__).resolve().parent.parent


class EmptyMeansDefault(Env):
    """environs' Env, where a variable set to nothing (`CONN_MAX_AGE=`) counts as not set.

    `.env.example` lists every variable, empty where the default applies, and is meant to be
    copied to `.env` as it is; plain environs would refuse `DATABASE_URL=` or `SHOW_DEV_EMAILS=`
    as invalid values. `_get_value` is environs' one lookup of a raw value (environs 15).
    """

    def _get_value(self, env_key, default):
        value = super()._get_value(env_key, default)
        return default if value == "" else value

    def secret(self, name: str, default: str = "") -> str:
        """The value of `name`, or the content of the file that `NAME_FILE` names.

        For systemd credentials (`LoadCredential=` + `NAME_FILE=%d/name`: the unit's credentials
        directory) and container secrets (`NAME_FILE=/run/secrets/name`). A relative path is read
        from `$CREDENTIALS_DIRECTORY` when systemd sets it. One trailing newline (what `echo` and
        editors add) is dropped. Returns `default` when neither variable is set.

        Raises ImproperlyConfigured when both are set (which one would win is a guess) or when the
        file cannot be read; the message names the variable and the path, never the content.
        """
        file_name = f"{name}_FILE"
        path = self.str(file_name, "")
        value = self.str(name, "")
        if not path:
            return value or default
        if value:
            raise ImproperlyConfigured(f"Both {name} and {file_name} are set: set only one of them.")
        full = Path(os.environ.get("CREDENTIALS_DIRECTORY", ""), path)
        try:
            content = full.read_text(encoding="utf-8")
        except (OSError, UnicodeError) as error:
            reason = getattr(error, "strerror", None) or type(error).__name__
            raise ImproperlyConfigured(f"{file_name}: cannot read {full} ({reason}).") from None
        return content.removesuffix("\n").removesuffix("\r")


env = EmptyMeansDefault()
env.read_env(BASE_DIR / ".env", recurse=False)

# bandit B105: the dev placeholder is public on purpose; with DEBUG off it is refused (paidup.E001).
DEV_SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production"  # nosec B105

DEBUG = env.bool("DEBUG", False)
# SECRET_KEY, STRIPE_*_KEY, DATABASE_URL, ANYMAIL and Q_REDIS_URL may also come from a file
# (NAME_FILE, see `EmptyMeansDefault.secret` and docs/deploy.md "Security settings checklist").
SECRET_KEY = env.secret("SECRET_KEY", DEV_SECRET_KEY)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
SITE_URL = env.str("SITE_URL", "http://127.0.0.1:8000").rstrip("/")
CSRF_TRUSTED_ORIGINS = [SITE_URL]
CSRF_FAILURE_VIEW = "billing.errors.csrf_failure"

INSTALLED_APPS = [
    "accounts",
    "billing",
    "outbox",
    "support",
    # The admin with the console's AdminSite: a second factor for every page (support/admin_site.py).
    "support.admin_config.StaffAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "djstripe",
    "django_q",
    "anymail",
    "axes",  # login throttling (the "Login throttling" section below)
    # Staff second factors: django-otp, its authenticator-app (TOTP) and backup-code (static) devices.
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "csp",  # django-csp's system checks and template tags
    # Staff passkeys: a django-otp device checked by py_webauthn (support/passkeys.py).
    "django_otp_webauthn",
]

MIDDLEWARE = [
    # First, so that it counts and times every request, refusals by the others included (config/metrics.py).
    "config.metrics.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # request.user.is_verified(), then the staff session's limits (support/staff_session.py).
    "django_otp.middleware.OTPMiddleware",
    "support.staff_session.StaffSessionMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",  # Content-Security-Policy with a nonce per response
    "django_permissions_policy.PermissionsPolicyMiddleware",  # Permissions-Policy
    # The staff events' actor, address and browser (support/staff_events.py).
    "support.staff_events.RequestContextMiddleware",
    # Turns a lock-out into the lock-out page; axes wants it last.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "billing.context_processors.support",
            ],
        },
    },
]

# SQLite is the embedded default. WAL + IMMEDIATE transactions + a generous busy timeout
# let concurrent webhooks and the q cluster write without "database is locked".
SQLITE_OPTIONS = {
    "timeout": 20,
    "transaction_mode": "IMMEDIATE",
    "init_command": "PRAGMA journal_mode=WAL;",
}
DATABASES = {
    "default": dj_database_url.parse(
        env.secret("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=env.int("CONN_MAX_AGE", 0),
        # A kept connection is checked (SELECT 1) before each request reuses it: after a
        # PostgreSQL restart, a worker's first request would otherwise fail on its dead connection
        # (a 500 on a checkout; the chaos run met one, docs/deploy.md "14. More than one node").
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"].setdefault("OPTIONS", {}).update(SQLITE_OPTIONS)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "accounts:signin"
# The admin login is the only password login; a `next` to another host is dropped and
# Django then falls back to this (its default, /accounts/profile/, is a 404 here).
LOGIN_REDIRECT_URL = "admin:index"
# Axes' backend first, so a locked-out login is refused before a password is checked.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# Webhook bodies above this are refused before parsing (Stripe events are a few KB).
WEBHOOK_MAX_BODY_BYTES = env.int("WEBHOOK_MAX_BODY_BYTES", 256 * 1024)

# --- Stripe ---------------------------------------------------------------------------
STRIPE_SECRET_KEY = env.secret("STRIPE_SECRET_KEY", "")
STRIPE_PUBLISHABLE_KEY = env.secret("STRIPE_PUBLISHABLE_KEY", "")
# Empty means real Stripe. In dev it is the localstripe address.
STRIPE_API_BASE = env.str("STRIPE_API_BASE", "").rstrip("/")
STRIPE_LIVE_MODE = STRIPE_SECRET_KEY.startswith("sk_live_")
STRIPE_TEST_SECRET_KEY = "" if STRIPE_LIVE_MODE else STRIPE_SECRET_KEY
STRIPE_LIVE_SECRET_KEY = STRIPE_SECRET_KEY if STRIPE_LIVE_MODE else ""
if STRIPE_API_BASE:
    STRIPE_API_HOST = STRIPE_API_BASE
# Real Stripe.js in production; localstripe's fake one when pointed at localstripe.
STRIPE_JS_URL = f"{STRIPE_API_BASE}/js.stripe.com/v3/" if STRIPE_API_BASE else "https://js.stripe.com/v3/"
DJSTRIPE_FOREIGN_KEY_TO_FIELD = "id"
DJSTRIPE_WEBHOOK_VALIDATION = "verify_signature"
DJSTRIPE_WEBHOOK_TOLERANCE = 300
# Retries on 429/5xx with backoff are done by stripe-python itself.
STRIPE_MAX_NETWORK_RETRIES = env.int("STRIPE_MAX_NETWORK_RETRIES", 2)

# --- Orders ---------------------------------------------------------------------------
# A fulfilment later than this after payment counts as a recovery (recovery email).
LATE_FULFILMENT_SECONDS = env.int("LATE_FULFILMENT_SECONDS", 300)
SIGNIN_LINK_MAX_AGE = env.int("SIGNIN_LINK_MAX_AGE", 3 * 24 * 3600)

# --- Reconciliation (billing/reconciliation.py) ---------------------------------------
RECONCILE_INTERVAL_MINUTES = env.int("RECONCILE_INTERVAL_MINUTES", 1)
# A paid or pending order younger than this is left to the webhook and the return page.
RECONCILE_GRACE_SECONDS = env.int("RECONCILE_GRACE_SECONDS", 60)
# A pending checkout older than this is closed (its unfinished PaymentIntent cancelled).
RECONCILE_ABANDON_AFTER_SECONDS = env.int("RECONCILE_ABANDON_AFTER_SECONDS", 24 * 3600)
# The Stripe scan re-reads this much before the last cursor, for events that arrive late.
RECONCILE_SCAN_OVERLAP_SECONDS = env.int("RECONCILE_SCAN_OVERLAP_SECONDS", 600)
# With no cursor yet (first run), scan this far back.
RECONCILE_FIRST_SCAN_SECONDS = env.int("RECONCILE_FIRST_SCAN_SECONDS", 3 * 24 * 3600)
# Stripe requests one run may make, and their pace (Stripe allows 100/s live, 25/s test).
RECONCILE_STRIPE_BUDGET = env.int("RECONCILE_STRIPE_BUDGET", 1000)
RECONCILE_STRIPE_PER_SECOND = env.float("RECONCILE_STRIPE_PER_SECOND", 20.0)
# An open support alert gets one follow-up email after this many hours.
ALERT_FOLLOWUP_HOURS = env.float("ALERT_FOLLOWUP_HOURS", 4.0)
# Health: unhealthy, and support alerted, when the last good reconciliation run finished longer
# ago than this (default: three intervals).
HEALTH_MAX_RECONCILE_AGE_SECONDS = env.int("HEALTH_MAX_RECONCILE_AGE_SECONDS", None)  # None: three intervals
# Health: unhealthy when a paid order has waited longer than this for fulfilment.
HEALTH_MAX_STUCK_SECONDS = env.int("HEALTH_MAX_STUCK_SECONDS", 15 * 60)
# Health: unhealthy, and support alerted, when an email has been due this long without being
# sent (the q cluster that sends them is down). The sweep runs every minute.
HEALTH_MAX_EMAIL_DELAY_SECONDS = env.int("HEALTH_MAX_EMAIL_DELAY_SECONDS", 10 * 60)

# --- Disputes and early fraud warnings (billing/disputes.py) ---------------------------
# What a dispute does to the customer's access: "keep" (nothing) or "suspend" (suspended while it
# is open, ended that day when lost, restored when won). Checked at start (paidup.E009).
DISPUTE_ACCESS = env.str("DISPUTE_ACCESS", "keep")
# An early fraud warning refunds the charge by itself: "off", "below_fee" (only a charge smaller
# than DISPUTE_FEE_CENTS) or "always" (within the dispute window). Checked at start (paidup.E010).
EFW_AUTO_REFUND = env.str("EFW_AUTO_REFUND", "off")
# What a dispute costs in fees, in the minor unit of the plans' currency (Stripe: $15 in the US).
DISPUTE_FEE_CENTS = env.int("DISPUTE_FEE_CENTS", 1500)

# --- Support (support/selfservice.py) -----------------------------------------------
# What the "charged but no access?" page and the case email promise: a person replies within this.
SUPPORT_REPLY_HOURS = env.int("SUPPORT_REPLY_HOURS", 24)
# A self-service request whose check has not answered this long after it was queued is queued
# again (support.selfservice.sweep, every minute): the broker lost it, or the task failed.
SELF_SERVICE_RETRY_SECONDS = env.int("SELF_SERVICE_RETRY_SECONDS", 120)
# Reverse proxies in front of the site that append to X-Forwarded-For (0: none, use the
# connection's address). Rate limits per client address read the address this many from the end.
NUM_PROXIES = env.int("NUM_PROXIES", 0)

# --- Staff sign-in: second factor and sessions (support/admin_site.py, support/staff_session.py) ---
# Every admin page needs a password sign-in and a verified second factor in the same session.
# A staff session ends when the browser closes, and this long after the password sign-in (absolute).
STAFF_SESSION_MAX_SECONDS = env.int("STAFF_SESSION_MAX_SECONDS", 8 * 3600)
# After this long without a request, the next admin page asks for one code again.
STAFF_REVERIFY_IDLE_SECONDS = env.int("STAFF_REVERIFY_IDLE_SECONDS", 15 * 60)
# A refund taking an order's refunded total to this much or more (minor units) needs a code typed
# within REFUND_REVERIFY_WINDOW_SECONDS.
# Empty: the price of the order's plan (one full plan price).
REFUND_REVERIFY_CENTS = env.int("REFUND_REVERIFY_CENTS", None)
REFUND_REVERIFY_WINDOW_SECONDS = env.int("REFUND_REVERIFY_WINDOW_SECONDS", 5 * 60)
# How long a "join the support team" invite link works (single use either way).
STAFF_INVITE_MAX_AGE = env.int("STAFF_INVITE_MAX_AGE", 3 * 24 * 3600)
# The name authenticator apps show next to the six digits.
OTP_TOTP_ISSUER = env.str("OTP_TOTP_ISSUER", "PaidUp support")

# --- Passkeys (django-otp-webauthn) ----------------------------------------------------
# Staff passkeys, a second factor after the password (support/passkeys.py). The relying party
# ID and the only accepted origin come from SITE_URL (config/passkeys.py): a passkey made here
# answers nowhere else. In dev (SITE_URL on 127.0.0.1) that is http://localhost:<port>, since
# browsers refuse passkeys on an IP address.
OTP_WEBAUTHN_RP_ID, OTP_WEBAUTHN_ALLOWED_ORIGINS = relying_party(SITE_URL)
OTP_WEBAUTHN_RP_NAME = "PaidUp support"
# Never a passkey alone: the password first, then the passkey as the second factor.
OTP_WEBAUTHN_ALLOW_PASSWORDLESS_LOGIN = False
OTP_WEBAUTHN_HELPER_CLASS = "support.passkeys.PasskeyHelper"
# How long the browser waits for the person to touch their authenticator.
OTP_WEBAUTHN_TIMEOUT_SECONDS = 120

# --- Login throttling (django-axes) ----------------------------------------------------
# Password guesses at the admin login: after AXES_FAILURE_LIMIT failures an email address is locked
# out, and, on its own count, so is the client address (either one locks), for AXES_COOLOFF minutes.
# Unknown emails count and lock exactly like real ones, so the lock-out says nothing about which
# accounts exist. Unlock: `manage.py unlock_login EMAIL|ADDRESS`, or delete the row under
# "Access attempts" in the admin (docs/support.md "Locked out?").
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", 5)
AXES_COOLOFF_MINUTES = env.int("AXES_COOLOFF", 30)
AXES_COOLOFF_TIME = timedelta(minutes=AXES_COOLOFF_MINUTES)
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
# The admin login form's field (it holds the email); axes would default to USERNAME_FIELD ("email").
AXES_USERNAME_FORM_FIELD = "username"
# The house's one rule for the client's address (honours NUM_PROXIES), and for an email's spelling.
AXES_CLIENT_IP_CALLABLE = "billing.client.client_address"
AXES_USERNAME_CALLABLE = "support.login_throttle.username"
AXES_LOCKOUT_CALLABLE = "support.login_throttle.lockout_response"
# The staff events (support.StaffEvent) are the log of sign-ins; axes keeps only the counts.
AXES_DISABLE_ACCESS_LOG = True
# Guesses during a lock-out are not counted, so "try again in 30 minutes" stays true.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
# A right password wipes no count: axes' reset deletes every row matching the email OR the address,
# so signing in to one account would clear the guesses at another from the same address, and a
# password alone is not yet a sign-in (the second factor is). Failures expire with the cool-off.
AXES_RESET_ON_SUCCESS = False
# The customer's sign-in-link form (accounts/views.py): links sent per email and per client address
# in each window of SIGNIN_LINKS_WINDOW seconds; past a limit the page says the same "check your inbox".
SIGNIN_LINKS_PER_EMAIL = env.int("SIGNIN_LINKS_PER_EMAIL", 3)
SIGNIN_LINKS_PER_ADDRESS = env.int("SIGNIN_LINKS_PER_ADDRESS", 10)
SIGNIN_LINKS_WINDOW = env.int("SIGNIN_LINKS_WINDOW", 3600)
# Accounts may not import the core (pyproject.toml); config wires the core's limiter in.
SIGNIN_LINK_LIMITER = "billing.ratelimit.signin_link_allowed"

# --- Email ----------------------------------------------------------------------------
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", "PaidUp <hello@paidup.example>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
SUPPORT_EMAILS = env.list("SUPPORT_EMAILS", ["support@paidup.example"])
# Any anymail ESP in production (e.g. anymail.backends.postmark.EmailBackend + ANYMAIL JSON).
# The default prints each email on the console; with SHOW_DEV_EMAILS every rendered email
# (the outbox) is also readable at /dev/emails/.
EMAIL_BACKEND = env.str("EMAIL_BACKEND", "anymail.backends.console.EmailBackend")
try:
    # The ESP's token and the tracking webhook's WEBHOOK_SECRET live here: a secret, file allowed.
    ANYMAIL = json.loads(env.secret("ANYMAIL", "{}"))
except json.JSONDecodeError as error:
    raise ImproperlyConfigured(f"ANYMAIL is not valid JSON (line {error.lineno}, column {error.colno}).") from None
# With DEBUG off a console (or file) backend is refused (paidup.E006): it writes every email,
# working sign-in links included, into the logs. Set this to 1 only if you really mean it.
ALLOW_CONSOLE_EMAIL = env.bool("ALLOW_CONSOLE_EMAIL", False)
SHOW_DEV_EMAILS = env.bool("SHOW_DEV_EMAILS", DEBUG)
EMAIL_MAX_ATTEMPTS = env.int("EMAIL_MAX_ATTEMPTS", 6)
# For django.core.mail.backends.filebased.EmailBackend (one file per email), e.g. in the deploy test.
EMAIL_FILE_PATH = env.str("EMAIL_FILE_PATH", "") or None

# --- Failpoints (see config/failpoints.py) -------------------------------------------
FAILPOINTS = env.str("FAILPOINTS", "")
# With DEBUG off, FAILPOINTS is refused at start (paidup.E012) unless this says a crash drill means it.
ALLOW_FAILPOINTS = env.bool("ALLOW_FAILPOINTS", False)

# --- django-q2 ------------------------------------------------------------------------
# ORM broker by default (no extra service); set Q_REDIS_URL to scale out on Redis.
Q_CLUSTER = {
    "name": "paidup",
    "workers": env.int("Q_WORKERS", 2),
    # A reconciliation run catching up on a backlog may take minutes (Stripe pacing: 20/s).
    "timeout": 600,
    "retry": 660,
    "max_attempts": 1,
    "catch_up": False,
    "orm": "default",
    "sync": env.bool("Q_SYNC", False),
    "poll": 0.5,
    # Every q cluster runs the scheduler by default: django-q2 claims a due schedule row with
    # SELECT ... FOR UPDATE and moves its next run in the same transaction, so two clusters on one
    # PostgreSQL database queue it once (docs/deploy.md, 14; tests/test_cluster.py). 0 turns it off
    # on a node, for an operator who wants one scheduler node anyway.
    "scheduler": env.bool("Q_SCHEDULER", True),
}
Q_REDIS_URL = env.secret("Q_REDIS_URL", "")
if Q_REDIS_URL:
    Q_CLUSTER.pop("orm")
    Q_CLUSTER["redis"] = Q_REDIS_URL

# --- Security -------------------------------------------------------------------------
# docs/deploy.md "Security settings checklist". With DEBUG off and an https SITE_URL,
# `manage.py check --deploy` reports nothing (tests/test_security_settings.py runs it).
HTTPS = SITE_URL.startswith("https://")
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# The TLS-terminating proxy must set X-Forwarded-Proto (and overwrite one sent by the client).
if HTTPS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# http -> https by Django too (the proxy usually does it first). /healthz stays reachable on plain
# http, so a monitor on the same machine can ask 127.0.0.1:8000/healthz without TLS.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", HTTPS)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^livez$"]
# HSTS only over https, and short at first: one hour (raise it once https works everywhere; a year
# and preloading are hard to undo, docs/deploy.md). Subdomains and preload only when asked.
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", 3600) if HTTPS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", False)
# check --deploy advises both (security.W005, W021); off is a decision here, not an oversight.
SILENCED_SYSTEM_CHECKS = [
    *([] if SECURE_HSTS_INCLUDE_SUBDOMAINS else ["security.W005"]),
    *([] if SECURE_HSTS_PRELOAD else ["security.W021"]),
]
# same-origin: another site (Stripe's frames and scripts included) gets no Referer at all. The
# order page's address is a signed link that opens the order, so it must not leave the site;
# strict-origin-when-cross-origin would still send our origin, which tells nothing useful.
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"

# Content-Security-Policy (django-csp 4, csp.middleware.CSPMiddleware). Stripe.js's needs, from
# Stripe's integration security guide (https://docs.stripe.com/security/guide#content-security-policy):
# scripts from js.stripe.com and *.js.stripe.com, frames from the same two and hooks.stripe.com
# (3-D Secure), requests to api.stripe.com. In dev and tests STRIPE_API_BASE (localstripe) serves
# the fake Stripe.js, answers its API calls and shows its 3-D Secure dialog in the page.
# No 'unsafe-inline' for scripts: a script runs only from our static files, Stripe, or with the
# response's nonce (`nonce="{{ request.csp_nonce }}"`). Styles keep 'unsafe-inline': templates and
# Django's admin use style attributes, which a nonce cannot cover, and injected CSS cannot run code.
CSP_REPORT_PATH = "/csp-report/"


def content_security_policy(stripe_api_base: str) -> dict:
    """django-csp's CONTENT_SECURITY_POLICY for this site; `stripe_api_base` is STRIPE_API_BASE
    (empty for real Stripe, else the fake Stripe's origin, allowed for scripts, requests and frames)."""
    fake = [stripe_api_base] if stripe_api_base else []
    stripe_js = ["https://js.stripe.com", "https://*.js.stripe.com"]
    return {
        "DIRECTIVES": {
            "default-src": [SELF],
            "script-src": [SELF, NONCE, *stripe_js, *fake],
            "style-src": [SELF, UNSAFE_INLINE],
            "img-src": [SELF, "data:"],
            "connect-src": [SELF, "https://api.stripe.com", *fake],
            "frame-src": [*stripe_js, "https://hooks.stripe.com", *fake],
            "frame-ancestors": [NONE],
            "object-src": [NONE],
            "base-uri": [SELF],
            "form-action": [SELF],
            "report-uri": [CSP_REPORT_PATH],
        },
    }


CONTENT_SECURITY_POLICY = content_security_policy(STRIPE_API_BASE)
# One WARNING line per violation report (config/csp_report.py); larger bodies are refused.
CSP_REPORT_MAX_BYTES = 8 * 1024

# Permissions-Policy (django-permissions-policy): the Payment Request API (wallets) for this site
# and Stripe's frames only, as Stripe.js uses it; the rest of what a page could ask for, nobody.
# Only features Chromium recognises: an unknown one ("bluetooth") is a console warning on every page.
PERMISSIONS_POLICY = {
    "payment": ["self", "https://js.stripe.com", "https://*.js.stripe.com"],
    "camera": [],
    "microphone": [],
    "geolocation": [],
    "usb": [],
    "serial": [],
    "midi": [],
    "magnetometer": [],
    "gyroscope": [],
    "accelerometer": [],
    "display-capture": [],
    "browsing-topics": [],
}

# One line per meaningful event, readable by the operator (journalctl -u paidup-web/paidup-qcluster):
# third-party chatter (stripe-python logs two INFO lines per API call, django-q several per task)
# only from WARNING up, except django-q's start and stop; email addresses and Stripe secrets redacted (config/logs.py).
LOG_LEVEL = env.str("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"class": "config.logs.RedactingFormatter", "format": "%(asctime)s %(levelname)s %(name)s %(message)s"}
    },
    "filters": {
        "not_healthz_503": {"()": "django.utils.log.CallbackFilter", "callback": "ext://config.logs.not_healthz_503"},
        "q_lifecycle_only": {"()": "django.utils.log.CallbackFilter", "callback": "ext://config.logs.q_lifecycle_only"},
        "not_csp_report_refusal": {
            "()": "django.utils.log.CallbackFilter",
            "callback": "ext://config.logs.not_csp_report_refusal",
        },
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "django.request": {"filters": ["not_healthz_503", "not_csp_report_refusal"]},
        "stripe": {"level": "WARNING"},
        "djstripe": {"level": "WARNING"},
        "django-q": {"filters": ["q_lifecycle_only"]},
        "urllib3": {"level": "WARNING"},
        "axes": {"level": "WARNING"},  # failures and lock-outs only, not three INFO lines per sign-in
    },
}

# --- Metrics and error reporting ------------------------------------------------------
# GET /metrics (Prometheus; config/metrics.py) answers only `Authorization: Bearer <METRICS_TOKEN>`.
# Empty: the endpoint does not exist (404) with DEBUG off, and is open with DEBUG on (development).
METRICS_TOKEN = env.str("METRICS_TOKEN", "")
# Errors (and, at SENTRY_TRACES_SAMPLE_RATE, traces) go to Sentry when this is set; nothing
# personal is sent (send_default_pii off, and config/sentry.py scrubs every event).
SENTRY_DSN = env.str("SENTRY_DSN", "")
SENTRY_ENVIRONMENT = env.str("SENTRY_ENVIRONMENT", "development" if DEBUG else "production")
SENTRY_TRACES_SAMPLE_RATE = env.float("SENTRY_TRACES_SAMPLE_RATE", 0.0)
if SENTRY_DSN:
    from config.sentry import init_sentry

    init_sentry(SENTRY_DSN, environment=SENTRY_ENVIRONMENT, traces_sample_rate=SENTRY_TRACES_SAMPLE_RATE)
