"""Password guesses at the admin login, throttled by django-axes (config/settings.py "Login
throttling"): the hooks axes calls, and the operator's unlock.

The rule: after AXES_FAILURE_LIMIT failed sign-ins an email address is locked, and separately so
is the client address, for AXES_COOLOFF_MINUTES. Axes counts the email as typed, whether or not an
account has it, so an unknown email is locked after the same number of guesses and gets the same
page with the same status as a real one: the lock-out tells a guesser nothing about who exists.
"""

import ipaddress
from dataclasses import dataclass

from axes.utils import reset
from django.conf import settings
from django.contrib import admin
from django.http import HttpResponse
from django.shortcuts import render

from accounts.addresses import normalize_email


def username(request, credentials: dict | None) -> str:
    """AXES_USERNAME_CALLABLE: the email a sign-in tried, in the one normal form
    (accounts.addresses), so `Ann@X.example` and `ann@x.example` share one count. Takes the
    request and the credentials axes got from authenticate() (None when axes reads the form);
    returns "" when no email was given."""
    field = settings.AXES_USERNAME_FORM_FIELD
    raw = (credentials or {}).get(field) if credentials else request.POST.get(field)
    return normalize_email(raw if isinstance(raw, str) else "")[:254]


def lockout_response(request, original_response=None, credentials: dict | None = None) -> HttpResponse:
    """AXES_LOCKOUT_CALLABLE: the lock-out page, status 429. The same words and status whichever
    email was typed (nothing about whether it exists, nothing echoed back)."""
    context = {
        **admin.site.each_context(request),
        "is_nav_sidebar_enabled": False,  # no "You don't have permission to view or edit anything"
        "title": "Too many sign-in attempts",
        "minutes": settings.AXES_COOLOFF_MINUTES,
    }
    # Rendered now: axes' middleware swaps it in after the view's response was rendered.
    return render(request, "admin/locked_out.html", context, status=429)


class UnlockError(ValueError):
    """The operator's input is neither an email address nor an IP address; nothing was changed."""


@dataclass(frozen=True)
class Unlocked:
    target: str
    kind: str  # "email" or "address"
    removed: int  # the axes AccessAttempt rows deleted


def unlock(target: str) -> Unlocked:
    """Forget the failed sign-ins of an email address or of a client (IP) address, which lifts its
    lock-out at once. Takes what the operator typed; returns what was removed (0: there was
    nothing to lift). Raises UnlockError for anything that is neither an email nor an address."""
    value = (target or "").strip()
    if "@" in value:
        email = normalize_email(value)
        local, _, domain = email.rpartition("@")
        if not local or not domain or len(email) > 254 or any(c.isspace() for c in email):
            raise UnlockError(f"{target!r} is not an email address.")
        return Unlocked(email, "email", reset(username=email))
    try:
        address = str(ipaddress.ip_address(value))
    except ValueError as error:
        raise UnlockError(
            f"{target!r} is neither an email address nor an IP address (e.g. ann@example.com or 203.0.113.7)."
        ) from error
    return Unlocked(address, "address", reset(ip=address))
