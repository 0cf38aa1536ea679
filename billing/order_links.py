"""Who sees an order's details on its page, and the signed link that lets them.

`/orders/<reference>/` shows the email, amount, plan and times only to the browser that holds
the order's reference cookie (billing/refcookie.py) or that opened a link from one of the
order's emails. Everyone else sees where the order stands and what to do next, nothing more:
references are short enough to guess and to read over a shoulder.

The link is the order page's address with `?k=<timestamp>:<signature>`: Django's
TimestampSigner over the reference (keyed by SECRET_KEY, its own salt), so it names one order,
cannot be forged or moved to another order, and says when it was made.

Why LINK_MAX_AGE is 30 days: the page is where a worried customer checks an order while it
still moves (a refund shows on a statement within 5 to 10 business days; a question about a
charge comes within weeks), and it is the lifetime of the reference cookie the link sets, so an
old email never renews access for longer than a fresh checkout would. An email can be forwarded,
pasted into a forum, or kept by an ESP that rewrites links for click tracking: a link that
stops working bounds what a leaked one shows. Past 30 days the page still shows the state and
the next step, and the email itself keeps every detail the page would have shown.
"""

from django.conf import settings
from django.core import signing
from django.urls import reverse

SALT = "billing.order-link"
LINK_MAX_AGE = 30 * 24 * 3600  # seconds; see the module docstring
PARAM = "k"

VALID, EXPIRED, INVALID = "valid", "expired", "invalid"


def _signer() -> signing.TimestampSigner:
    return signing.TimestampSigner(salt=SALT)


def token(reference: str) -> str:
    """The link's token for `reference` ("<timestamp>:<signature>", URL-safe, 35 characters or so)."""
    return _signer().sign(reference).removeprefix(f"{reference}:")


def order_path(reference: str) -> str:
    """The order page's path with a fresh signed token: `/orders/PU-ABC234/?k=…`."""
    return f"{reverse('billing:order', args=[reference])}?{PARAM}={token(reference)}"


def order_url(order) -> str:
    """The absolute signed link to `order`'s page (settings.SITE_URL + order_path), for the
    order's emails (confirmation, recovery, refund)."""
    return settings.SITE_URL + order_path(order.reference)


def check(reference: str, value: str) -> str:
    """Whether `value` (the `k` parameter as received, any string) is a link token for
    `reference`: VALID, EXPIRED (signed by us for this reference, older than LINK_MAX_AGE) or
    INVALID (empty, malformed, forged, or made for another order). Never raises."""
    if not value or len(value) > 100:
        return INVALID
    try:
        _signer().unsign(f"{reference}:{value}", max_age=LINK_MAX_AGE)
    except signing.SignatureExpired:
        return EXPIRED
    except signing.BadSignature:
        return INVALID
    return VALID
