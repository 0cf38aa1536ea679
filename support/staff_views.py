"""The staff sign-in pages after the password: "Confirm it's you" (one code) and the first-day
enrolment (authenticator app with a QR code, then ten printed backup codes). Served by the admin
site (support/admin_site.py) outside its permission wrapper: these are the pages a session
without a verified factor may reach, and only with a password sign-in in the same session.
"""

from urllib.parse import urlencode

import segno
from django import forms
from django.conf import settings
from django.contrib import admin
from django.contrib.auth import REDIRECT_FIELD_NAME, logout
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from accounts import factors

from . import reverify, staff_events, staff_session

# Where the other factor kinds add themselves to the verify and enrol pages: a template per
# kind, included in order (the passkey helper adds "admin/staff/passkey_verify.html", …).
VERIFY_EXTRA_TEMPLATES: list[str] = ["admin/staff/passkey_verify.html"]  # "Use a passkey" (support/passkeys.py)
ENROL_EXTRA_TEMPLATES: list[str] = ["admin/staff/passkey_enrol.html"]  # "Add a passkey"


class CodeForm(forms.Form):
    code = forms.CharField(
        label="Code",
        max_length=40,
        error_messages={"required": "Please type the code: six digits from your app, or a backup code."},
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "autofocus": True, "autocapitalize": "off", "spellcheck": "false"}
        ),
    )


def next_url(request) -> str:
    """Where to go after the factor: the `next` of this request if it is on this site, else the
    console's front page. Another host's address is ignored."""
    target = request.POST.get(REDIRECT_FIELD_NAME) or request.GET.get(REDIRECT_FIELD_NAME) or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return reverse("admin:index")


def _with_next(name: str, request) -> str:
    target = request.POST.get(REDIRECT_FIELD_NAME) or request.GET.get(REDIRECT_FIELD_NAME)
    return reverse(name) + ("?" + urlencode({REDIRECT_FIELD_NAME: target}) if target else "")


def _signed_in_staff(request) -> bool:
    user = request.user
    return user.is_authenticated and user.is_active and user.is_staff and staff_session.password_signed_in(request)


def _page(request, template: str, context: dict, status: int = 200) -> TemplateResponse:
    context = {
        **admin.site.each_context(request),
        "next": request.POST.get(REDIRECT_FIELD_NAME) or request.GET.get(REDIRECT_FIELD_NAME) or "",
        **context,
    }
    return TemplateResponse(request, template, context, status=status)


@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def verify(request):
    """One page, one code: TOTP or a backup code. Success rotates the session key and goes on; a
    code refused is a staff event (why, never the code)."""
    if not _signed_in_staff(request):
        return HttpResponseRedirect(_with_next("admin:login", request))
    if not factors.is_enrolled(request.user):
        return HttpResponseRedirect(_with_next("admin:staff_enrol", request))
    form = CodeForm(request.POST or None)
    error = ""
    if request.method == "POST" and form.is_valid():
        result = factors.check_code(request.user, form.cleaned_data["code"])
        if result.device is not None:
            staff_session.verified(request, result.device)
            return HttpResponseRedirect(next_url(request))
        error = result.error
        staff_events.code_refused(request, error)
    context = {
        "title": "Confirm it's you",
        "form": form,
        "error": error,
        "refund_waiting": reverify.waiting(request),
        "extra_templates": VERIFY_EXTRA_TEMPLATES,
    }
    return _page(request, "admin/staff/verify.html", context, status=400 if request.method == "POST" else 200)


@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def enrol(request):
    """First day: scan the QR code (or type the key), confirm with a code, get backup codes."""
    if not _signed_in_staff(request):
        return HttpResponseRedirect(_with_next("admin:login", request))
    if factors.is_enrolled(request.user):
        return HttpResponseRedirect(_with_next("admin:staff_verify", request))
    device = factors.pending_app_device(request.user)
    form = CodeForm(request.POST or None)
    error = ""
    if request.method == "POST" and form.is_valid():
        error = factors.confirm_app_device(request.user, device, form.cleaned_data["code"])
        if not error:
            staff_session.verified(request, device)
            record_factor_change(request.user, request.user, "Set up an authenticator app (and new backup codes).")
            return backup_codes_page(request, factors.new_backup_codes(request.user))
    qr = segno.make(device.config_url, error="m")
    context = {
        "title": "Set up your second factor",
        "form": form,
        "error": error,
        "qr_svg": qr.svg_inline(scale=4, title="QR code for your authenticator app", dark="#000", light="#fff"),
        "secret": factors.secret_text(device),
        "issuer": settings.OTP_TOTP_ISSUER,
        "extra_templates": ENROL_EXTRA_TEMPLATES,
    }
    return _page(request, "admin/staff/enrol.html", context, status=400 if request.method == "POST" else 200)


def backup_codes_page(request, codes: list[str], *, replaced: bool = False) -> TemplateResponse:
    """The ten new backup codes, shown this once (every caller is never_cache: no-store).

    `replaced`: printed again from "Print new backup codes" (the old ones stopped working), not at
    enrolment (the page says which)."""
    context = {"title": "Your backup codes", "codes": codes, "go": next_url(request), "replaced": replaced}
    return _page(request, "admin/staff/backup_codes.html", context)


@never_cache
@require_POST
def new_backup_codes(request):
    """A verified person replaces their backup codes (the old ones stop working)."""
    codes = factors.new_backup_codes(request.user)
    record_factor_change(request.user, request.user, "Printed new backup codes (the old ones stopped working).")
    return backup_codes_page(request, codes, replaced=True)


@require_POST
def sign_out(request):
    """POST: end the session (also before a factor was verified, when the admin's own logout is
    out of reach) and go back to the password page."""
    logout(request)
    return HttpResponseRedirect(reverse("admin:login"))


def record_factor_change(person, actor, message: str) -> None:
    """An admin LogEntry on `person`'s account, by `actor`: the other support person sees it."""
    from django.contrib.admin.models import CHANGE, LogEntry

    LogEntry.objects.log_actions(
        user_id=actor.pk, queryset=[person], action_flag=CHANGE, change_message=message, single_object=True
    )


@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def accept_invite(request, token: str):
    """The invite link: GET shows the password form (a mail scanner's prefetch uses nothing up),
    POST sets the password, signs the person in with it and goes to the enrol page."""
    from django.contrib.auth import login
    from django.contrib.auth.forms import SetPasswordForm

    from .invites import user_for_invite

    person = user_for_invite(token)
    if person is None:
        return _page(request, "admin/staff/invite_invalid.html", {"title": "This invite link no longer works"}, 400)
    form = SetPasswordForm(person, request.POST or None)
    if request.method == "POST" and form.is_valid():
        form.save()  # the link's digest changes with the password: it works no more
        login(request, person, backend="django.contrib.auth.backends.ModelBackend")
        staff_session.start(request)
        return HttpResponseRedirect(reverse("admin:staff_enrol"))
    context = {"title": "Join PaidUp support", "form": form, "person": person}
    return _page(request, "admin/staff/invite.html", context, status=400 if request.method == "POST" else 200)


def extra_urls(site) -> list:
    """The site's other staff URLs: new backup codes (a verified person), the invite link (no
    session needed), the console's invite page and System page (permission-checked)."""
    from django.urls import path

    from . import invite_admin, system_page

    return [
        path("backup-codes/", site.admin_view(new_backup_codes), name="staff_backup_codes"),
        path("welcome/<str:token>/", accept_invite, name="staff_invite"),
        path("invite/", site.admin_view(invite_admin.invite_person), name="staff_invite_person"),
        path("system/", site.admin_view(system_page.system_page), name="system"),
    ]
