"""The checkout reference cookie: the future order's reference, in the browser before the
payment request (a request that crashes delivers neither its response nor its cookies)."""

from django.conf import settings
from django.core import signing

from .models.orders import is_valid_reference

COOKIE = "paidup_ref"
SALT = "billing.checkout-reference"
MAX_AGE = 30 * 24 * 3600


def read(request) -> str | None:
    """The checkout reference from the request's signed cookie; None when absent, tampered
    with, older than MAX_AGE (30 days) or not shaped like a reference. Raises nothing."""
    value = request.get_signed_cookie(COOKIE, default=None, salt=SALT, max_age=MAX_AGE)
    return value if value and is_valid_reference(value) else None


def read_signed(value: str) -> str | None:
    """The reference from the page's hidden field (used when cookies are blocked)."""
    try:
        reference = signing.loads(value, salt=SALT, max_age=MAX_AGE)
    except (signing.BadSignature, TypeError):
        return None
    return reference if isinstance(reference, str) and is_valid_reference(reference) else None


def sign(reference: str) -> str:
    """`reference` signed (with SALT) for the page's hidden field: read_signed() reads it back."""
    return signing.dumps(reference, salt=SALT)


def store(response, reference: str) -> None:
    """Set the signed reference cookie on `response`: HttpOnly, SameSite=Lax, Secure as
    SESSION_COOKIE_SECURE, kept MAX_AGE (30 days). It must reach the browser before the payment
    request (DESIGN.md "The paid path", step 1)."""
    response.set_signed_cookie(
        COOKIE,
        reference,
        salt=SALT,
        max_age=MAX_AGE,
        httponly=True,
        samesite="Lax",
        secure=settings.SESSION_COOKIE_SECURE,
    )
