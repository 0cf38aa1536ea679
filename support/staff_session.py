"""Staff sessions (ASVS 4.0 chapter 3): how a support person's session starts, lasts and ends.

A staff session reaches the console only when all of these hold (StaffAdminSite.has_permission):
- it began with a password sign-in in this very session (`SIGNED_IN_AT`, stamped by the admin
  login and the invite's set-password page; a customer sign-in link never stamps it);
- a second factor was verified in it (django-otp's `otp_device_id`; `VERIFIED_AT` says when).

This middleware then ends the session a working day after the password sign-in
(STAFF_SESSION_MAX_SECONDS, absolute) and forgets the factor after STAFF_REVERIFY_IDLE_SECONDS
without a request, so the next admin page asks for one code again. Staff sessions also end when
the browser closes (`set_expiry(0)` at sign-in). Customers' sessions are not touched.
"""

import time

from django.conf import settings
from django.contrib.auth import logout
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp import login as otp_login

from . import staff_events

SIGNED_IN_AT = "staff_signed_in_at"  # unix time of the password sign-in
VERIFIED_AT = "staff_verified_at"  # unix time of the last factor verification
SEEN_AT = "staff_seen_at"  # unix time of the last request (to the minute)


def start(request) -> None:
    """Stamp a password sign-in of a staff person in this session (call right after
    django.contrib.auth.login, which already rotated the session key)."""
    request.session[SIGNED_IN_AT] = int(time.time())
    request.session.set_expiry(0)  # ends with the browser


def password_signed_in(request) -> bool:
    """True when this session began with a password sign-in (not a link)."""
    return bool(request.session.get(SIGNED_IN_AT))


def verified(request, device) -> None:
    """Record that `device` verified the person: django-otp's session key, a fresh session key
    (so a session id seen before the code is worthless after it), the time, and a staff event
    ("Second factor verified": only now is the person in the console)."""
    otp_login(request, device)
    request.session.cycle_key()
    now = int(time.time())
    request.session[VERIFIED_AT] = now
    request.session[SEEN_AT] = now
    staff_events.factor_verified(request, device)


def verified_within(request, seconds: int) -> bool:
    """True when the factor was verified in this session less than `seconds` ago."""
    at = request.session.get(VERIFIED_AT)
    return bool(at) and time.time() - at < seconds and request.user.is_verified()


def forget_factor(request) -> None:
    """Drop the factor verified in this session (idle too long): the next admin page asks for a
    code again; the password sign-in stays."""
    request.session.pop(DEVICE_ID_SESSION_KEY, None)
    request.session.pop(VERIFIED_AT, None)
    if hasattr(request.user, "otp_device"):
        request.user.otp_device = None


class StaffSessionMiddleware:
    """Ends a staff session after STAFF_SESSION_MAX_SECONDS from its password sign-in, and drops
    its factor after STAFF_REVERIFY_IDLE_SECONDS idle. Goes after django-otp's OTPMiddleware."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and user.is_staff:
            self.check(request)
        return self.get_response(request)

    def check(self, request) -> None:
        """Apply the staff session's two clocks to signed-in staff `request`: past
        STAFF_SESSION_MAX_SECONDS since sign-in, sign out (a fresh sign-in needed); idle past
        STAFF_REVERIFY_IDLE_SECONDS, forget the verified second factor (asked again). Records the
        visit to the minute. Raises nothing."""
        now = time.time()
        signed_in_at = request.session.get(SIGNED_IN_AT)
        if signed_in_at and now - signed_in_at > settings.STAFF_SESSION_MAX_SECONDS:
            logout(request)  # flushes the session: sign in again tomorrow
            request.user.otp_device = None  # as django-otp's middleware leaves an anonymous user
            request.user.is_verified = lambda: False
            return
        seen_at = request.session.get(SEEN_AT)
        if seen_at and now - seen_at > settings.STAFF_REVERIFY_IDLE_SECONDS:
            forget_factor(request)
        if not seen_at or now - seen_at >= 60:
            request.session[SEEN_AT] = int(now)  # to the minute: not a session write per request
