"""django-otp-webauthn's JSON endpoints with the console's narrowed views (support/passkey_views.py).

The namespace stays `otp_webauthn`: the library's template tags and its list of URLs exempt from
a second-factor check reverse these names. Mounted at /staff/passkeys/ by config/urls.py, outside
the admin, because a person who has not yet confirmed it's them must reach them.
"""

from django.urls import path
from django.views.i18n import JavaScriptCatalog

from . import passkey_views as views

app_name = "otp_webauthn"

urlpatterns = [
    path("registration/begin/", views.BeginRegistration.as_view(), name="credential-registration-begin"),
    path("registration/complete/", views.CompleteRegistration.as_view(), name="credential-registration-complete"),
    path("authentication/begin/", views.BeginAuthentication.as_view(), name="credential-authentication-begin"),
    path("authentication/complete/", views.CompleteAuthentication.as_view(), name="credential-authentication-complete"),
    # The library's script calls gettext() from Django's JavaScript catalog (a same-origin script).
    path("jsi18n/", JavaScriptCatalog.as_view(packages=["django_otp_webauthn"]), name="js-i18n-catalog"),
]
