"""The console's AdminSite: every admin page, action, JSON and autocomplete view needs a staff
person who signed in with a password in this session *and* verified a second factor in it.

Installed as the default admin site (support/admin_config.py), so every ModelAdmin and every
`admin_site.admin_view(...)` wrapper (support/order_admin.py's action URLs included) goes
through `has_permission` below: a refused request, GET or POST, is redirected to the login
page before the view runs. The login page sends a signed-in person on to "Confirm it's you"
(the verify page) or, with no factor yet, to the enrol page. Like django-otp's OTPAdminSite,
with the password-in-this-session rule and the staff session's limits (support/staff_session.py).
"""

from django.contrib import admin
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.http import HttpResponseRedirect
from django.urls import path, reverse
from django.utils.http import url_has_allowed_host_and_scheme

from . import staff_session

# What a second factor's admin page may show: never a secret (TOTP key, backup-code tokens, a
# passkey's public key or credential id), only which factor a person has and when it was used.
DEVICE_FIELDS = ("user", "name", "confirmed", "created_at", "last_used_at")


class DeviceAdmin(admin.ModelAdmin):
    """Every django-otp Device (authenticator app, backup codes, passkey), whatever admin its app
    registered: view and delete only. Deleting removes a factor (a staff event); nobody adds,
    edits or reads one here (enrolment is the person's own, on the enrol page)."""

    list_display = ("name", "user", "confirmed")
    search_fields = ("user__email", "name")

    def get_fields(self, request, obj=None):
        present = {field.name for field in self.model._meta.get_fields()}
        return [name for name in DEVICE_FIELDS if name in present]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class StaffAdminSite(admin.AdminSite):
    site_header = "PaidUp support"
    site_title = "PaidUp support"

    def register(self, model_or_iterable, admin_class=None, **options):
        """As AdminSite.register, except that a django-otp Device gets DeviceAdmin (read-only, no
        secret) in place of the admin its app brought (django-otp's shows and edits the TOTP key
        and the backup codes)."""
        from django.db.models.base import ModelBase
        from django_otp.models import Device

        models = [model_or_iterable] if isinstance(model_or_iterable, ModelBase) else list(model_or_iterable)
        devices = [model for model in models if issubclass(model, Device)]
        others = [model for model in models if model not in devices]
        if devices:
            super().register(devices, DeviceAdmin)
        if others:
            super().register(others, admin_class, **options)

    def has_permission(self, request) -> bool:
        """Active staff, signed in with a password in this session, factor verified in it."""
        return (
            super().has_permission(request) and staff_session.password_signed_in(request) and request.user.is_verified()
        )

    def login(self, request, extra_context=None):
        """The admin's password page; a staff person already past it goes to the factor pages."""
        user = request.user
        if user.is_authenticated and user.is_active and user.is_staff and staff_session.password_signed_in(request):
            if not self.has_permission(request):
                return self.factor_redirect(request)
        response = super().login(request, extra_context)
        if request.method == "POST" and response.status_code == 302 and request.user.is_authenticated:
            # django.contrib.auth.login() ran (and rotated the session key): a password sign-in.
            staff_session.start(request)
            return self.factor_redirect(request)
        return response

    def factor_redirect(self, request) -> HttpResponseRedirect:
        """To the verify page, or the enrol page when the person has no factor yet; `next` kept."""
        from accounts.factors import is_enrolled

        target = request.POST.get(REDIRECT_FIELD_NAME) or request.GET.get(REDIRECT_FIELD_NAME) or ""
        if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=False):
            target = ""
        name = "admin:staff_verify" if is_enrolled(request.user) else "admin:staff_enrol"
        url = reverse(name, current_app=self.name)
        if target:
            from urllib.parse import urlencode

            url += "?" + urlencode({REDIRECT_FIELD_NAME: target})
        return HttpResponseRedirect(url)

    def get_urls(self):
        from . import staff_views

        return [
            path("confirm/", staff_views.verify, name="staff_verify"),
            path("enrol/", staff_views.enrol, name="staff_enrol"),
            path("sign-out/", staff_views.sign_out, name="staff_sign_out"),
            *staff_views.extra_urls(self),
            *super().get_urls(),
        ]
