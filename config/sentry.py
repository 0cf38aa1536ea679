"""Errors to Sentry, with nothing personal and no secret in them.

`init_sentry()` is called by config/settings.py only when SENTRY_DSN is set. Sentry's own
`send_default_pii=False` keeps out users, IP addresses and cookies it knows of; `scrub_event`
is the net for everything else an event carries (an exception's text, a log message, a local
variable in a stack frame, a breadcrumb, a form field, a header): every string in the event
goes through config/logs.py's `redact()` (email addresses, Stripe secret and webhook keys) and
the rules below (sign-in and order link tokens, Stripe client secrets, card numbers), and the
values of credential-bearing keys (Authorization, Cookie, Stripe-Signature, cookies, CSRF
tokens, card fields) are replaced whole.
"""

import re
from typing import Any

from config.logs import redact

FILTERED = "[Filtered]"

# Keys (compared lowercased, "_" read as "-") whose values are replaced whole, wherever they are.
SENSITIVE_KEYS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "cookies",
        "set-cookie",
        "stripe-signature",
        "x-csrftoken",
        "csrfmiddlewaretoken",
        "csrftoken",
        "sessionid",
        "password",
        "secret",
        "token",
        "k",  # the order link's token parameter (billing/order_links.py)
        "card",
        "cvc",
        "cvv",
        "number",
        "client-secret",
    }
)

TOKENS = [
    # A sign-in link's token (accounts/urls.py: /account/sign-in/<token>/).
    (re.compile(r"(/sign-in/)[^/\s?#\"'<>]+"), r"\1<token>"),
    # An order link's token (billing/order_links.py: /orders/<reference>/?k=<token>).
    (re.compile(r"(\bk=)[^&\s#\"'<>]+"), r"\1<token>"),
    # Any Django-signed value ([payload:]timestamp:signature; the signature is 43 characters).
    (re.compile(r"(?:[\w.-]+:)?[0-9A-Za-z]{4,}:[\w-]{43}(?![\w-])"), "<token>"),
    # A Stripe client secret (pi_…_secret_…): it can confirm the payment.
    (re.compile(r"\b(?:pi|seti)_[0-9A-Za-z]+_secret_[0-9A-Za-z]+"), "<client_secret>"),
    # Card digits: 13 to 19 digits, with or without single spaces or dashes between them.
    (re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)"), "<card>"),
]


def scrub_text(text: str) -> str:
    """`text` with email addresses, Stripe secrets, link tokens and card numbers replaced by markers."""
    text = redact(text)
    for pattern, marker in TOKENS:
        text = pattern.sub(marker, text)
    return text


def scrub(value: Any, key: str = "") -> Any:
    """A copy of `value` (any JSON-like structure) with every string scrubbed by `scrub_text`, and
    the whole value of any SENSITIVE_KEYS key replaced by "[Filtered]"; keys are scrubbed too."""
    if key.lower().replace("_", "-") in SENSITIVE_KEYS and value not in (None, "", {}, []):
        return FILTERED
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {scrub_text(k) if isinstance(k, str) else k: scrub(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        # Sentry sends headers as [name, value] pairs in some places: the name keys the value.
        if len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], str):
            return [scrub_text(value[0]), scrub(value[1], value[0])]
        return [scrub(item) for item in value]
    return value


def scrub_event(event: dict, hint: dict | None = None) -> dict:
    """Sentry's before_send (and before_send_transaction): the event, scrubbed (see `scrub`).
    Never drops an event."""
    return scrub(event)


def scrub_breadcrumb(crumb: dict, hint: dict | None = None) -> dict:
    """Sentry's before_breadcrumb: the breadcrumb, scrubbed, as it is recorded."""
    return scrub(crumb)


def init_sentry(dsn: str, *, environment: str, traces_sample_rate: float) -> None:
    """Start sentry-sdk with the Django integration for `dsn`, tagged `environment`, tracing
    that share (0 to 1) of requests, never sending personal data (see the module docstring)."""
    import sentry_sdk
    from sentry_sdk.integrations.django import DjangoIntegration

    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        traces_sample_rate=traces_sample_rate,
        send_default_pii=False,
        integrations=[DjangoIntegration()],
        before_send=scrub_event,
        before_send_transaction=scrub_event,
        before_breadcrumb=scrub_breadcrumb,
    )
