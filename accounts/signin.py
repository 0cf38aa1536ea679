"""Passwordless sign-in links: signed, expiring, single-use.

The token signs the user id and the user's last_login; signing in changes last_login, so a
used link stops working. No server-side token table is needed.
"""

from django.conf import settings
from django.core import signing
from django.urls import reverse

SALT = "accounts.signin"


def _login_stamp(user) -> str:
    return user.last_login.isoformat() if user.last_login else ""


def make_token(user) -> str:
    return signing.dumps({"u": user.pk, "l": _login_stamp(user)}, salt=SALT, compress=True)


def signin_url(user) -> str:
    return settings.SITE_URL + reverse("accounts:signin_link", args=[make_token(user)])


def user_for_token(token: str):
    """The user the token signs in, or None when it is forged, expired or already used."""
    from accounts.models import User

    try:
        payload = signing.loads(token, salt=SALT, max_age=settings.SIGNIN_LINK_MAX_AGE)
        user = User.objects.get(pk=payload["u"], is_active=True)
    except (signing.BadSignature, User.DoesNotExist, KeyError, TypeError):
        return None
    if payload.get("l") != _login_stamp(user):
        return None
    return user
