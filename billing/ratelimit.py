"""The house's one rate limit: a fixed window counted in the database (every web process and
node shares one count), and the client's address as the outermost proxy saw it.

Used by the self-service page (support/selfservice.py: per address and per email) and by the
order page (billing/order_views.py: per address, for lookups without the order's cookie or link), and
the customer's sign-in-link form (signin_link_allowed: per address and per email).
"""

from datetime import UTC, datetime

from django.conf import settings
from django.db.models import F
from django.utils import timezone
from django.utils.crypto import salted_hmac

from .client import client_address
from .models import RateLimit

# The keyed hash's salt. It kept its first name when the limiter moved here from the support app,
# so the counts of the window in progress survive the deployment.
SALT = "support.selfservice.ratelimit"


def allow(scope: str, value: str, *, limit: int, window: int) -> bool:
    """Count one hit for `value` (any string: an address, an email) under `scope` in the current
    fixed window of `window` seconds; returns False once `limit` hits were counted in it.

    One row per (scope, value, window), incremented with a conditional UPDATE: exactly one of any
    number of concurrent requests from any number of processes gets the last hit. Always the same
    two statements (an INSERT that ignores an existing row, then the UPDATE), so the time taken
    does not tell whether someone else asked about the same value. The row holds a keyed hash of
    `value` (settings.SECRET_KEY), never the value. Raises only database errors.
    """
    now = timezone.now().timestamp()
    number = int(now // window)
    digest = salted_hmac(SALT, f"{scope}:{value}").hexdigest()[:40]
    key = f"{scope}:{digest}:{number}"
    expires_at = datetime.fromtimestamp((number + 1) * window, tz=UTC)
    RateLimit.objects.bulk_create([RateLimit(key=key, expires_at=expires_at)], ignore_conflicts=True)
    return RateLimit.objects.filter(key=key, hits__lt=limit).update(hits=F("hits") + 1) == 1


def seconds_left(window: int) -> int:
    """Seconds until the current fixed window of `window` seconds ends (for Retry-After)."""
    return max(1, window - int(timezone.now().timestamp()) % window)


def sweep() -> int:
    """Delete the rows of windows that are over; returns how many. Called by the self-service
    task and by every reconciliation run (billing/tasks.py), so the table stays small."""
    deleted, _ = RateLimit.objects.filter(expires_at__lt=timezone.now()).delete()
    return deleted


def signin_link_allowed(request, email: str) -> bool:
    """May the customer's sign-in form send `email` (normal form) a link now? Counts one request
    against the client's address (billing.client, NUM_PROXIES honoured) and one against the email,
    each in its own window of SIGNIN_LINKS_WINDOW seconds (SIGNIN_LINKS_PER_ADDRESS,
    SIGNIN_LINKS_PER_EMAIL); False once either is spent. Both are always counted, known email or
    not, so the work done tells nothing. Wired into accounts/views.py by SIGNIN_LINK_LIMITER
    (accounts may not import the core). Raises only database errors."""
    window = settings.SIGNIN_LINKS_WINDOW
    by_address = allow(
        "signin-address", client_address(request), limit=settings.SIGNIN_LINKS_PER_ADDRESS, window=window
    )
    by_email = allow("signin-email", email, limit=settings.SIGNIN_LINKS_PER_EMAIL, window=window)
    return by_address and by_email
