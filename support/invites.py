"""Invites to the support team: a one-time link to set a password, then enrol a second factor.

The link signs the person's id and a digest of their password hash, last sign-in and email, the
way Django's PasswordResetTokenGenerator does: setting the password (or signing in, or an email
change) changes the digest, so a used link stops working with no token table. It expires after
STAFF_INVITE_MAX_AGE. The person sets a password with Django's validators, is signed in with it
(a password sign-in of this session: support/staff_session.py) and goes straight to the enrol
page, so they see no order before they have a factor.
"""

from django.conf import settings
from django.core import signing
from django.urls import reverse
from django.utils.crypto import constant_time_compare, salted_hmac

from accounts.models import User

SALT = "support.invite"


def _digest(user: User) -> str:
    login = "" if user.last_login is None else user.last_login.replace(microsecond=0, tzinfo=None).isoformat()
    return salted_hmac(SALT, f"{user.pk}|{user.password}|{login}|{user.email}").hexdigest()[:32]


def make_token(user: User) -> str:
    """A signed invite token for `user`, valid until their password, last sign-in or email changes
    or STAFF_INVITE_MAX_AGE passes."""
    return signing.dumps({"u": user.pk, "d": _digest(user)}, salt=SALT, compress=True)


def invite_url(user: User) -> str:
    """The absolute invite link (SITE_URL + /admin/welcome/<token>/) for `user`."""
    return settings.SITE_URL + reverse("admin:staff_invite", args=[make_token(user)])


def user_for_invite(token: str) -> User | None:
    """The staff person the invite is for, or None when the link is forged, expired, already
    used (a password was set since), or the account is no longer active staff."""
    try:
        payload = signing.loads(token, salt=SALT, max_age=settings.STAFF_INVITE_MAX_AGE)
        user = User.objects.get(pk=payload["u"], is_active=True, is_staff=True)
    except (signing.BadSignature, User.DoesNotExist, KeyError, TypeError, ValueError):
        return None
    if not constant_time_compare(str(payload.get("d", "")), _digest(user)):
        return None
    return user


def send_invite(user: User, invited_by: str):
    """Email `user` a fresh invite link (sent after the caller's commit). `invited_by` names who
    asked, for the email ("Ana invited you"). Returns the OutboundEmail row."""
    from outbox import emails

    days = max(1, settings.STAFF_INVITE_MAX_AGE // 86400)
    return emails.send_staff_invite(user, invite_url=invite_url(user), invited_by=invited_by, days=days)
