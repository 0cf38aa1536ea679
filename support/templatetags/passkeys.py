"""The passkey buttons, for any console page: `{% load passkeys %}` then
`{% passkey_register next_url %}` (enrol page, "Your sign-in methods") or
`{% passkey_verify next_url %}` ("Confirm it's you", and its re-verification).

Each renders django-otp-webauthn's markup (the ids its scripts look for) with the console's words,
and loads its scripts as same-origin files carrying the page's CSP nonce when django-csp set one
(`request.csp_nonce`): no inline script, so they run under a strict Content-Security-Policy.
"""

from django import template
from django.conf import settings
from django.urls import reverse
from django_otp_webauthn.templatetags.otp_webauthn import get_configuration

register = template.Library()


def passkey_place(request) -> dict:
    """Whether passkeys work on the page's own address; if not, the address where they do.

    A browser makes and uses a passkey only where the page's host is the relying party ID (the
    settings', from SITE_URL). In dev that is http://localhost:<port>, not http://127.0.0.1:<port>."""
    origin = settings.OTP_WEBAUTHN_ALLOWED_ORIGINS[0]
    here = f"{request.scheme}://{request.get_host()}" in settings.OTP_WEBAUTHN_ALLOWED_ORIGINS
    return {"here": here, "url": origin + request.get_full_path()}


def _context(context, next_url: str) -> dict:
    request = context["request"]
    config = get_configuration(request, {"nextFieldSelector": "#pu-passkey-next"})
    return {"request": request, "config": config, "place": passkey_place(request), "next": next_url}


@register.inclusion_tag("support/passkeys/register.html", takes_context=True)
def passkey_register(context, next_url: str = ""):
    """ "Add a passkey" with a name field; after the authenticator made it, the name is saved
    and the browser goes to `next_url` (default: "Your sign-in methods")."""
    return _context(context, next_url or reverse("support-sign-in-methods"))


@register.inclusion_tag("support/passkeys/verify.html", takes_context=True)
def passkey_verify(context, next_url: str = ""):
    """ "Use a passkey": verifies the session, then the browser goes to `next_url` (a page of this
    site; default: the console's landing page)."""
    return _context(context, next_url)


@register.filter
def device_kind(device) -> str:
    """Words for a django-otp device's kind: "authenticator app", "backup codes", "passkey"."""
    kinds = {"totpdevice": "authenticator app", "staticdevice": "backup codes", "webauthncredential": "passkey"}
    return kinds.get(device._meta.model_name, device._meta.verbose_name)


@register.filter
def has_passkey(user) -> bool:
    """True when the person has a confirmed passkey (the verify page offers it then)."""
    from django_otp_webauthn.models import WebAuthnCredential

    return WebAuthnCredential.objects.filter(user_id=user.pk, confirmed=True).exists()
