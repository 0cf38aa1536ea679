"""Who is on the other end of a request: the client's address and browser.

The self-service page rate-limits by the address (support/selfservice.py); the checkout records
both on the order as dispute evidence (billing/evidence.py).
"""

from django.conf import settings


def client_address(request) -> str:
    """The client's address: behind NUM_PROXIES proxies, the one the outermost proxy saw
    (X-Forwarded-For read from the end); else the connection's REMOTE_ADDR. "" when unknown."""
    proxies = settings.NUM_PROXIES
    if proxies:
        forwarded = [a.strip() for a in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if a.strip()]
        if len(forwarded) >= proxies:
            return forwarded[-proxies]
    return request.META.get("REMOTE_ADDR", "")


def user_agent(request) -> str:
    """The browser's User-Agent header, at most 500 characters (Order.checkout_user_agent)."""
    return request.META.get("HTTP_USER_AGENT", "")[:500]
