"""Who did what at the door of the console (issue 12, item 6): the StaffEvent rows.

Written from signals, so that every way in is covered without each view remembering to:
Django's user_logged_in (the password step: "Password accepted", not yet in the console) /
user_logged_out (staff accounts only: a customer signing in by link is not a staff event),
user_login_failed (every failed password sign-in, the email as typed and the address; never the
password), axes' user_locked_out (once per lock-out), and django-otp's devices
(a confirmed factor added, a confirmed factor deleted: enrolment, removal, reset). The request in
progress (RequestContextMiddleware) tells a device event who did it; outside a request it was a
command ("manage.py"). The second step is written by its one door, support.staff_session.verified
("Second factor verified"), and a code refused by the verify page ("Code refused", never the code).
"""

from contextvars import ContextVar

from django.apps import apps
from django.conf import settings
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models.signals import post_delete, post_init, post_save
from django.urls import reverse

from accounts.addresses import normalize_email
from accounts.models import User
from billing.client import client_address, user_agent

from .models import StaffEvent

_request: ContextVar = ContextVar("staff_event_request", default=None)
COMMAND = "manage.py"


class RequestContextMiddleware:
    """Keeps the request in progress where the device receivers can read it (a ContextVar, so
    threads and async requests never see each other's)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = _request.set(request)
        try:
            return self.get_response(request)
        finally:
            _request.reset(token)


def record(
    kind: str, *, user=None, email: str = "", request=None, address: str = "", actor: str = "", detail: str = ""
):
    """Write one StaffEvent and return it. `request`, when given, supplies the client's address
    (billing.client, the house's one rule) and browser; `email` defaults to the user's. Raises only
    database errors."""
    return StaffEvent.objects.create(
        kind=kind,
        user=user,
        email=(email or (user.email if user is not None else ""))[:254],
        actor=actor[:254],
        client_address=(client_address(request) if request is not None else address)[:64],
        user_agent=user_agent(request) if request is not None else "",
        detail=detail[:500],
    )


def _staff(email: str):
    return User.objects.filter(email=email, is_staff=True).first() if email else None


def _safe_path(path: str) -> str:
    """`path` without any secret in it: an invite link's token is cut off (/admin/welcome/…)."""
    welcome = reverse("admin:staff_invite", args=["-"]).removesuffix("-/")
    return welcome + "…" if path.startswith(welcome) else path


def on_logged_in(sender, request, user, **kwargs) -> None:
    """user_logged_in: a staff account's password was accepted (or a link, a test's force_login):
    the first step only; `factor_verified` says when the person got into the console."""
    if user is not None and user.is_staff:
        path = _safe_path(getattr(request, "path", ""))
        record(StaffEvent.Kind.LOGIN, user=user, request=request, actor=user.email, detail=f"at {path}" if path else "")


def factor_verified(request, device) -> None:
    """The person signed in `request` passed their second factor with `device` (support.staff_session.verified)."""
    user = request.user
    record(StaffEvent.Kind.FACTOR_VERIFIED, user=user, request=request, actor=user.email, detail=_device_detail(device))


def code_refused(request, why: str) -> None:
    """The verify page refused a code (wrong, replayed, a used backup code, too many tries): `why`
    is the message the person saw, never the code typed."""
    user = request.user
    record(StaffEvent.Kind.CODE_REFUSED, user=user, request=request, actor=user.email, detail=why)


def on_logged_out(sender, request, user, **kwargs) -> None:
    """user_logged_out: a staff account signed out (its session is deleted by Django)."""
    if user is not None and user.is_staff:
        record(StaffEvent.Kind.LOGOUT, user=user, request=request, actor=user.email)


def on_login_failed(sender, credentials: dict, request=None, **kwargs) -> None:
    """Every failed password sign-in (the admin login is the only password form): the email as
    typed, linked to the staff account when it is one. Django has already masked the password in
    `credentials`; only the email is read from it."""
    raw = credentials.get(settings.AXES_USERNAME_FORM_FIELD) or credentials.get("email") or ""
    email = normalize_email(raw if isinstance(raw, str) else "")[:254]
    locked = bool(getattr(request, "axes_locked_out", False))
    detail = "Refused without checking the password: locked out." if locked else "Wrong password or unknown email."
    record(StaffEvent.Kind.LOGIN_FAILED, user=_staff(email), email=email, request=request, detail=detail)


def on_locked_out(sender, request, username: str, ip_address: str, **kwargs) -> None:
    """Axes sends user_locked_out for the attempt that reached the limit and again for each try
    during the lock-out; only the first is an event (axes counted failures only for that one)."""
    if request is None or not getattr(request, "axes_failures_since_start", None):
        return
    email = username or ""
    record(
        StaffEvent.Kind.LOCKED_OUT,
        user=_staff(email),
        email=email,
        request=request,
        detail=(
            f"{request.axes_failures_since_start} failed sign-ins for this email or from this address: both wait "
            f"{settings.AXES_COOLOFF_MINUTES} minutes (or manage.py unlock_login)."
        ),
    )


def _device_actor() -> str:
    request = _request.get()
    if request is None:
        return COMMAND
    person = getattr(request, "user", None)
    return person.email if person is not None and person.is_authenticated else ""


def _device_detail(device) -> str:
    return f"{device._meta.verbose_name} “{device.name}”"[:500]


def on_device_init(sender, instance, **kwargs) -> None:
    """post_init of a device: remember whether it was stored confirmed, to tell enrolment from a later save."""
    if "confirmed" in instance.get_deferred_fields():  # loaded with only(): reading it would query
        return
    instance._staff_event_confirmed = bool(instance.pk) and instance.confirmed


def on_device_saved(sender, instance, created: bool, **kwargs) -> None:
    """A factor counts as added when it is saved confirmed for the first time (TOTP devices are
    saved again at every code checked: those saves are not events)."""
    was_confirmed = getattr(instance, "_staff_event_confirmed", None)  # None: not known (loaded deferred)
    if instance.confirmed and (created or was_confirmed is False):
        record(
            StaffEvent.Kind.FACTOR_ADDED,
            user=instance.user,
            request=_request.get(),
            actor=_device_actor(),
            detail=_device_detail(instance),
        )
    instance._staff_event_confirmed = instance.confirmed


def on_device_deleted(sender, instance, **kwargs) -> None:
    """post_delete of a device: a confirmed factor removed (by its owner, the other person, or a reset command)."""
    if instance.confirmed:
        record(
            StaffEvent.Kind.FACTOR_REMOVED,
            user=instance.user,
            request=_request.get(),
            actor=_device_actor(),
            detail=_device_detail(instance),
        )


def connect() -> None:
    """Connect the receivers (support.apps ready()). Every concrete django-otp Device model
    installed counts as a second factor: TOTP, backup codes, and passkeys when that app is in."""
    from axes.signals import user_locked_out
    from django_otp.models import Device

    user_logged_in.connect(on_logged_in, dispatch_uid="support.staff_events.login")
    user_logged_out.connect(on_logged_out, dispatch_uid="support.staff_events.logout")
    user_login_failed.connect(on_login_failed, dispatch_uid="support.staff_events.failed")
    user_locked_out.connect(on_locked_out, dispatch_uid="support.staff_events.locked")
    for model in apps.get_models():
        if issubclass(model, Device):
            post_init.connect(on_device_init, sender=model, dispatch_uid=f"staff_events.init.{model._meta.label}")
            post_save.connect(on_device_saved, sender=model, dispatch_uid=f"staff_events.save.{model._meta.label}")
            post_delete.connect(on_device_deleted, sender=model, dispatch_uid=f"staff_events.del.{model._meta.label}")
