"""Passwordless sign-in links: signed, expiring, single-use.

The token signs the user id and the user's last_login; signing in changes last_login, so a
used link stops working. No server-side token table is needed.

Links are for customers only: a staff account is never signed in by a link (a link is one
factor, the mailbox; the console needs a password and a second factor). No link is sent to a
staff address, and a link made for one before it became staff stops working.
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
    """The customer the token signs in, or None when it is forged, expired, already used, or the
    account is staff (staff sign in with a password and a second factor, never by link)."""
    from accounts.models import User

    try:
        payload = signing.loads(token, salt=SALT, max_age=settings.SIGNIN_LINK_MAX_AGE)
        user = User.objects.get(pk=payload["u"], is_active=True, is_staff=False)
    except (signing.BadSignature, User.DoesNotExist, KeyError, TypeError):
        return None
    if payload.get("l") != _login_stamp(user):
        return None
    return user


def send_signin_link(user):
    """Email `user` a fresh sign-in link (outbox kind "signin", sent after the caller's commit).
    Returns the OutboundEmail row, or None for a staff account (a link would not work for it).
    The one way every part (sign-in page, console, self-service) sends a link."""
    from outbox import emails

    if user.is_staff:
        return None
    return emails.send_signin(user, signin_url=signin_url(user))
