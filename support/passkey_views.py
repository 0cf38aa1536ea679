"""Staff passkeys on the web: django-otp-webauthn's four JSON views, narrowed to the console's
rules, and the "Your sign-in methods" page (add, name, remove).

The library's views stay in charge of the WebAuthn ceremony (challenge kept in the session and
used once, origin, RP ID, signature and sign count checked by py_webauthn). Narrowed here:

- only a staff member who signed in with a password in this session may begin or complete a
  ceremony (a customer, a sign-in-link session or nobody gets 403 and a JSON `detail`;
  passwordless sign-in is off in settings, so a passkey is always the second step);
- a passkey that verifies the session counts like any factor (support/staff_session.py
  `verified`): the session key is rotated (ASVS 3.2.1) and the time recorded, so a passkey
  is also the fresh verification a large refund asks for;
- the JSON answers say nothing about other people's passkeys: the library answers
  "does not belong to the currently logged-in user" only for a credential signed by the right
  authenticator, which a stranger cannot have.
"""

import json

from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.shortcuts import render, resolve_url
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST
from django_otp import devices_for_user
from django_otp_webauthn import exceptions, views
from django_otp_webauthn.models import WebAuthnCredential

from accounts import factors

from . import passkeys, staff_session
from .staff_session import password_signed_in
from .staff_views import backup_codes_page


class NotStaff(exceptions.OTPWebAuthnApiError):
    status_code = 403
    default_detail = "Passkeys here are for the support team. Sign in to the console with your password first."
    default_code = "not_staff"


def _require_staff(request) -> None:
    user = request.user
    if not (user.is_authenticated and user.is_active and user.is_staff and password_signed_in(request)):
        raise NotStaff()


class BeginRegistration(views.BeginCredentialRegistrationView):
    def check_can_register(self):
        _require_staff(self.request)


class CompleteRegistration(views.CompleteCredentialRegistrationView):
    def check_can_register(self):
        _require_staff(self.request)

    def post(self, *args, **kwargs):
        was_verified = self.request.user.is_verified()
        response = super().post(*args, **kwargs)
        device = getattr(self.request.user, "otp_device", None)
        if response.status_code == 200:
            passkey = WebAuthnCredential.objects.get(pk=json.loads(response.content)["id"])
            passkeys.log_enrolment(self.request.user, passkey)
            if not was_verified and device is not None:
                staff_session.verified(self.request, device)
        return response


class BeginAuthentication(views.BeginCredentialAuthenticationView):
    def check_can_authenticate(self):
        super().check_can_authenticate()
        _require_staff(self.request)


class CompleteAuthentication(views.CompleteCredentialAuthenticationView):
    def check_can_authenticate(self):
        super().check_can_authenticate()
        _require_staff(self.request)

    def complete_auth(self, device):
        """The person is signed in already (passwordless is off): the passkey verifies them."""
        staff_session.verified(self.request, device)

    def get_success_url(self):
        return self.get_redirect_url() or reverse("admin:index")


def safe_next(request, fallback: str = "support-sign-in-methods") -> str:
    """The `next` of the request if it stays on this site, else the fallback URL."""
    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return target
    return resolve_url(fallback)


def sign_in_methods(request):
    """GET: the person's factors (passkeys with their names and last use; authenticator apps;
    backup codes left) and the "Add a passkey" button."""
    others = [d for d in devices_for_user(request.user, confirmed=True) if not isinstance(d, WebAuthnCredential)]
    context = {
        **admin.site.each_context(request),
        "title": "Your sign-in methods",
        "passkeys": passkeys.passkeys_of(request.user),
        "others": others,
        "factor_count": passkeys.factor_count(request.user),
        "codes_left": factors.backup_codes_left(request.user),
        "next": request.path,
    }
    return render(request, "support/sign_in_methods.html", context)


@require_POST
def rename(request):
    """POST passkey, name[, next]: names one of the person's passkeys, then goes to `next`."""
    try:
        passkey = passkeys.rename_passkey(request.user, request.POST.get("passkey"), request.POST.get("name"))
    except passkeys.PasskeyError as error:
        messages.error(request, str(error))
        return HttpResponseRedirect(reverse("support-sign-in-methods"))
    messages.success(request, f"Your passkey is now called “{passkey.name}”.")
    return HttpResponseRedirect(safe_next(request))


@require_POST
def added(request):
    """POST passkey, name, next: right after "Add a passkey". Saves the typed name (none typed:
    the passkey keeps "Passkey added <date>"); on the first day (no backup codes yet) shows the
    ten new backup codes, as the authenticator app's enrolment does; else goes to `next`."""
    try:
        passkey = passkeys.own_passkey_now(request.user, request.POST.get("passkey"), request.POST.get("name"))
    except passkeys.PasskeyError as error:
        messages.error(request, str(error))
        return HttpResponseRedirect(reverse("support-sign-in-methods"))
    if factors.backup_codes_left(request.user) == 0:
        return backup_codes_page(request, factors.new_backup_codes(request.user))
    messages.success(request, f"Your passkey “{passkey.name}” is ready: use it next time you sign in.")
    return HttpResponseRedirect(safe_next(request))


@require_POST
def remove(request):
    """POST passkey: removes one of the person's passkeys unless it is their last factor."""
    try:
        name = passkeys.remove_passkey(request.user, request.POST.get("passkey"))
    except passkeys.PasskeyError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"“{name}” is removed: it no longer signs you in here.")
    return HttpResponseRedirect(reverse("support-sign-in-methods"))


def console_urls():
    """The page and its two forms, behind the admin site's own guard (staff, and the second
    factor once the console requires it); mounted under /admin/ by config/urls.py."""
    from django.urls import path

    guard = admin.site.admin_view
    return [
        path("", guard(sign_in_methods), name="support-sign-in-methods"),
        path("passkeys/rename/", guard(rename), name="support-passkey-rename"),
        path("passkeys/added/", guard(added), name="support-passkey-added"),
        path("passkeys/remove/", guard(remove), name="support-passkey-remove"),
    ]
