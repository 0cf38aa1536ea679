"""Refuse to start in production on unsafe defaults (DEBUG off).

Two kinds of check, because Django runs them at different times:

- `check_production_settings` (E001-E004, E006, E008, E012), `check_reconcile_interval` (E007),
  `check_dispute_policies` (E009-E011) and `check_metrics_token` (E013) are about
  the environment. Django runs them before every management command that asks for checks
  (`migrate`, `stripe_setup`, `qcluster`, `runserver`...), so nothing runs on a placeholder key
  or a console mailer.
- `check_webhook_endpoint` (E005) is about the database: the endpoint row that `stripe_setup`
  creates. It is registered as a *deployment* check (`deploy=True`), which Django runs only for
  `manage.py check --deploy`, so `migrate` and `stripe_setup` (the commands that make it true)
  are not blocked by it. The web server and the q cluster run every check, deployment checks
  included, through `refuse_unsafe_start()`: they never serve without an endpoint.
  `check_webhook_events` (W002, also a deployment check) warns when that endpoint misses event
  types PaidUp handles; warnings do not stop a server.
"""

import logging
import re

from django.conf import settings
from django.core.checks import ERROR, CheckMessage, Error, Tags, Warning, register, run_checks
from django.core.management.base import SystemCheckError

logger = logging.getLogger(__name__)

# The shape Stripe's keys have (and dj-stripe accepts): a placeholder such as "sk_live_TODO"
# would pass a prefix test and fail at the first payment.
SECRET_KEY_RE = re.compile(r"^(sk|rk)_(live|test)_[A-Za-z0-9]{24,}$")
PUBLISHABLE_KEY_RE = re.compile(r"^pk_(live|test)_[A-Za-z0-9]{24,}$")

# Backends that do not deliver mail but write it where an operator's logs or disk keep it:
# every sign-in link (a working login) would sit in the worker's journal.
LEAKING_EMAIL_BACKENDS = {
    "anymail.backends.console.EmailBackend": "prints every email",
    "django.core.mail.backends.console.EmailBackend": "prints every email",
    "django.core.mail.backends.filebased.EmailBackend": "writes every email to a file",
}


@register(Tags.security)
def check_production_settings(app_configs=None, **kwargs) -> list[CheckMessage]:
    """Errors for settings that must not reach production; [] when DEBUG is on.

    Takes Django's check arguments (ignored). Returns a list of `Error`, one per problem, each
    with its own id (paidup.E001-E004, E006, E008, E012) so an operator can find it in
    docs/deploy.md. Dev-only switches are refused: SHOW_DEV_EMAILS (E008: /dev/emails/ publishes
    every sign-in link) and FAILPOINTS (E012: deliberate crashes after real charges), the latter
    unless ALLOW_FAILPOINTS says a crash drill means it (then the warning paidup.W001).
    """
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
    leak = LEAKING_EMAIL_BACKENDS.get(settings.EMAIL_BACKEND)
    if leak and not settings.ALLOW_CONSOLE_EMAIL:
        errors.append(
            Error(
                f"EMAIL_BACKEND {settings.EMAIL_BACKEND} {leak}, working sign-in links included, "
                "instead of delivering it, and DEBUG is off.",
                hint="Set EMAIL_BACKEND to an anymail ESP backend (and ANYMAIL to its settings), "
                "or set ALLOW_CONSOLE_EMAIL=1 if you really mean it.",
                id="paidup.E006",
            )
        )
    return errors + dev_switches()


def dev_switches() -> list[CheckMessage]:
    """With DEBUG off (the caller checks): paidup.E008 for SHOW_DEV_EMAILS, paidup.E012 for FAILPOINTS,
    or the warning paidup.W001 for FAILPOINTS when ALLOW_FAILPOINTS says a crash drill means them."""
    errors = []
    if settings.SHOW_DEV_EMAILS:
        errors.append(
            Error(
                "SHOW_DEV_EMAILS is on with DEBUG off: /dev/emails/ would show anyone every email, "
                "working sign-in links included.",
                hint="Unset SHOW_DEV_EMAILS (it follows DEBUG).",
                id="paidup.E008",
            )
        )
    if settings.FAILPOINTS and not settings.ALLOW_FAILPOINTS:
        errors.append(
            Error(
                f"FAILPOINTS is set ({settings.FAILPOINTS}) with DEBUG off: those steps would crash or break "
                "the server on purpose, after real charges.",
                hint="Unset FAILPOINTS. For a crash drill on a production-like server, set ALLOW_FAILPOINTS=1 too.",
                id="paidup.E012",
            )
        )
    elif settings.FAILPOINTS:
        errors.append(
            Warning(
                f"FAILPOINTS is set ({settings.FAILPOINTS}): those steps crash on purpose (ALLOW_FAILPOINTS=1).",
                hint="Unset both once the crash drill is over.",
                id="paidup.W001",
            )
        )
    return errors


@register()
def check_reconcile_interval(app_configs=None, **kwargs) -> list[Error]:
    """paidup.E007 when RECONCILE_INTERVAL_MINUTES is below 1, whatever DEBUG says: django-q2
    would run the schedule on every poll, and health would always be stale."""
    if settings.RECONCILE_INTERVAL_MINUTES >= 1:
        return []
    return [
        Error(
            "RECONCILE_INTERVAL_MINUTES must be a whole number of minutes, 1 or more "
            f"(it is {settings.RECONCILE_INTERVAL_MINUTES}).",
            id="paidup.E007",
        )
    ]


DISPUTE_ACCESS_CHOICES = ("keep", "suspend")
EFW_AUTO_REFUND_CHOICES = ("off", "below_fee", "always")


@register()
def check_dispute_policies(app_configs=None, **kwargs) -> list[Error]:
    """paidup.E009 for a DISPUTE_ACCESS other than keep|suspend, paidup.E010 for an
    EFW_AUTO_REFUND other than off|below_fee|always, paidup.E011 for a DISPUTE_FEE_CENTS below 1,
    whatever DEBUG says: a typo must not silently mean another policy for customers' money."""
    errors = []
    if settings.DISPUTE_ACCESS not in DISPUTE_ACCESS_CHOICES:
        errors.append(
            Error(f"DISPUTE_ACCESS must be keep or suspend (it is {settings.DISPUTE_ACCESS!r}).", id="paidup.E009")
        )
    if settings.EFW_AUTO_REFUND not in EFW_AUTO_REFUND_CHOICES:
        errors.append(
            Error(
                f"EFW_AUTO_REFUND must be off, below_fee or always (it is {settings.EFW_AUTO_REFUND!r}).",
                id="paidup.E010",
            )
        )
    if not isinstance(settings.DISPUTE_FEE_CENTS, int) or settings.DISPUTE_FEE_CENTS < 1:
        errors.append(
            Error(
                f"DISPUTE_FEE_CENTS must be a whole number of minor units, 1 or more (it is "
                f"{settings.DISPUTE_FEE_CENTS!r}).",
                id="paidup.E011",
            )
        )
    return errors


# A bearer token is all that guards /metrics (config/metrics.py): as long as SECRET_KEY's minimum,
# so that `openssl rand -hex 16` (32 characters) or longer passes and a memorable word does not.
METRICS_TOKEN_MIN_LENGTH = 32


@register(Tags.security)
def check_metrics_token(app_configs=None, **kwargs) -> list[Error]:
    """paidup.E013 when METRICS_TOKEN is set and shorter than METRICS_TOKEN_MIN_LENGTH characters,
    whatever DEBUG says: the token is the only thing between the internet and the business gauges
    (order counts, ages, disputes), and a short one can be guessed. Empty is allowed: /metrics is
    then a 404 with DEBUG off (config/metrics.py). Spaces around the token do not count: they add
    nothing to guess."""
    token = settings.METRICS_TOKEN or ""
    if not token or len(token.strip()) >= METRICS_TOKEN_MIN_LENGTH:
        return []
    return [
        Error(
            f"METRICS_TOKEN must be at least {METRICS_TOKEN_MIN_LENGTH} characters when set "
            f"(it has {len(token.strip())}).",
            hint="Generate one with `openssl rand -hex 32`, or leave it empty to turn /metrics off.",
            id="paidup.E013",
        )
    ]


@register(Tags.security, deploy=True)
def check_webhook_endpoint(app_configs=None, **kwargs) -> list[Error]:
    """paidup.E005 when DEBUG is off and no Stripe webhook endpoint with a secret is stored.

    A deployment check: `migrate` and `stripe_setup` must run before it can pass (see above).
    """
    if settings.DEBUG or _webhook_endpoint_configured():
        return []
    return [
        Error(
            "No Stripe webhook endpoint is configured.",
            hint="Run `manage.py stripe_setup` to create it and store its signing secret.",
            id="paidup.E005",
        )
    ]


@register(Tags.security, deploy=True)
def check_webhook_events(app_configs=None, **kwargs) -> list[Warning]:
    """paidup.W002 when DEBUG is off and a stored, enabled webhook endpoint is not subscribed to
    every event type PaidUp has a receiver for (`billing.stripe_events.WEBHOOK_EVENTS`).

    Stripe sends an endpoint only its `enabled_events`; one set up by an older release lacks the
    types added since, which then reach PaidUp only through reconciliation, minutes late.
    `stripe_setup` fixes it. A warning, not an error: the site works, only later than it should,
    and a server must not refuse to start after an upgrade for it. Compares with our row, which
    `stripe_setup` writes from Stripe's answer. Returns [] before the first migration.
    """
    from django.db import DatabaseError
    from djstripe.enums import WebhookEndpointStatus
    from djstripe.models import WebhookEndpoint

    from .stripe_events import WEBHOOK_EVENTS

    if settings.DEBUG:
        return []
    try:
        # Endpoints without a signing secret are E005's business.
        endpoints = [e for e in WebhookEndpoint.objects.filter(status=WebhookEndpointStatus.enabled) if e.secret]
    except DatabaseError:
        return []
    warnings = []
    for endpoint in endpoints:
        subscribed = endpoint.enabled_events or []
        missing = [name for name in WEBHOOK_EVENTS if name not in subscribed and "*" not in subscribed]
        if missing:
            warnings.append(
                Warning(
                    f"The Stripe webhook endpoint {endpoint.id} is not subscribed to {', '.join(missing)}: "
                    "Stripe does not send them, and PaidUp learns of them only through reconciliation.",
                    hint="Run `manage.py stripe_setup`; it subscribes the endpoint to every event PaidUp handles.",
                    id="paidup.W002",
                )
            )
    return warnings


def _webhook_endpoint_configured() -> bool:
    from django.db import DatabaseError
    from djstripe.models import WebhookEndpoint

    try:
        # bandit B106: secret="" filters out endpoints without a signing secret; it is no password.
        with_secret = WebhookEndpoint.objects.exclude(secret="")  # nosec B106
        return with_secret.exists()
    except DatabaseError:
        # Before the first migration the table does not exist; `migrate` must still run.
        return True


def refuse_unsafe_start(process: str) -> None:
    """Run every system check, deployment checks included; raise if any reports an error.

    Called where a long-running process starts serving: `config/wsgi.py`, `config/asgi.py`
    (gunicorn, uvicorn, runserver) and `manage.py qcluster`. `process` (e.g. "wsgi") only names
    the process in the message. Returns None when nothing is serious; warnings (Django's own
    deployment advice) are left to `manage.py check --deploy`.

    Raises `SystemCheckError` listing the errors, after logging them, so gunicorn's
    "Worker failed to boot" comes with the reason. Silenced checks (SILENCED_SYSTEM_CHECKS)
    stay silent, as in `manage.py check`.
    """
    messages = run_checks(include_deployment_checks=True)
    serious = [m for m in messages if m.level >= ERROR and not m.is_silenced()]
    if not serious:
        return
    text = describe(process, serious)
    logger.critical(text)
    raise SystemCheckError(text)


def describe(process: str, messages: list[CheckMessage]) -> str:
    """The refusal an operator reads in the log: which `process` (e.g. "gunicorn") refused to
    start, one line per check message, and where to look next (docs/deploy.md)."""
    lines = [f"PaidUp refuses to start ({process}): the system checks found {len(messages)} error(s)."]
    lines += [f"  {message}" for message in messages]
    lines.append("Fix them (see docs/deploy.md), then check with `manage.py check --deploy`.")
    return "\n".join(lines)
