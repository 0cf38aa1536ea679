"""PaidUp settings: one module, read from the environment.

Every variable is listed, with its default, in `.env.example`. With DEBUG off, the system
checks in `billing/checks.py` refuse to start without real secrets (see DESIGN.md).
"""

from pathlib import Path

from environs import Env

BASE_DIR = Path(__file__).resolve().parent.parent

env = Env()
env.read_env(BASE_DIR / ".env", recurse=False)

DEV_SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production"

DEBUG = env.bool("DEBUG", False)
SECRET_KEY = env.str("SECRET_KEY", DEV_SECRET_KEY)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
SITE_URL = env.str("SITE_URL", "http://127.0.0.1:8000").rstrip("/")
CSRF_TRUSTED_ORIGINS = [SITE_URL]
CSRF_FAILURE_VIEW = "billing.errors.csrf_failure"

INSTALLED_APPS = [
    "accounts",
    "billing",
    "support",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "djstripe",
    "django_q",
    "anymail",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
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
    "default": env.dj_db_url(
        "DATABASE_URL",
        f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=env.int("CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"].setdefault("OPTIONS", {}).update(SQLITE_OPTIONS)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "accounts.User"
LOGIN_URL = "accounts:signin"
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
STRIPE_SECRET_KEY = env.str("STRIPE_SECRET_KEY", "")
STRIPE_PUBLISHABLE_KEY = env.str("STRIPE_PUBLISHABLE_KEY", "")
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
ALERT_FOLLOWUP_HOURS = env.float("ALERT_FOLLOWUP_HOURS", 4)
# Health: unhealthy when a paid order has waited longer than this for fulfilment.
HEALTH_MAX_STUCK_SECONDS = env.int("HEALTH_MAX_STUCK_SECONDS", 15 * 60)

# --- Support (support/selfservice.py) -----------------------------------------------
# What the "charged but no access?" page and the case email promise: a person replies within this.
SUPPORT_REPLY_HOURS = env.int("SUPPORT_REPLY_HOURS", 24)
# Reverse proxies in front of the site that append to X-Forwarded-For (0: none, use the
# connection's address). Rate limits per client address read the address this many from the end.
NUM_PROXIES = env.int("NUM_PROXIES", 0)

# --- Email ----------------------------------------------------------------------------
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", "PaidUp <hello@paidup.example>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
SUPPORT_EMAILS = env.list("SUPPORT_EMAILS", ["support@paidup.example"])
# Any anymail ESP in production (e.g. anymail.backends.postmark.EmailBackend + ANYMAIL JSON).
# The default prints each email on the console; with SHOW_DEV_EMAILS every rendered email
# (the outbox) is also readable at /dev/emails/.
EMAIL_BACKEND = env.str("EMAIL_BACKEND", "anymail.backends.console.EmailBackend")
ANYMAIL = env.json("ANYMAIL", {})
SHOW_DEV_EMAILS = env.bool("SHOW_DEV_EMAILS", DEBUG)
EMAIL_MAX_ATTEMPTS = env.int("EMAIL_MAX_ATTEMPTS", 6)

# --- Failpoints (see billing/failpoints.py) -------------------------------------------
FAILPOINTS = env.str("FAILPOINTS", "")

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
}
if env.str("Q_REDIS_URL", ""):
    Q_CLUSTER.pop("orm")
    Q_CLUSTER["redis"] = env.str("Q_REDIS_URL")

# --- Security -------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = SITE_URL.startswith("https://")
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
if SITE_URL.startswith("https://"):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}
