"""Staff passkeys: the rules (enrol, name, remove) around django-otp-webauthn's credential.

A passkey is a django-otp device (`WebAuthnCredential`), so a session verified with it passes
the console's second-factor check like a TOTP code does. What this module adds to the library:

- only staff enrol passkeys, and never as a first factor (settings: no passwordless login);
- a passkey gets a name its owner recognises ("Work laptop"), checked and trimmed here;
- a person never removes their last factor (a passkey or an authenticator app: accounts/factors.py
  `primary_devices`): removing it would lock them out of the console until the other person
  resets their factors. Backup codes are not a factor of their own (they run out);
- every enrolment and removal is an admin LogEntry on the person's account, which the other
  person sees next to the money actions (issue 12, item 6; support/staff_views.py).

A person acts only on their own passkeys: another person's id is answered like an unknown one
(`PasskeyNotFound`), so nothing tells whether it exists.
"""

from django.db import transaction
from django.utils import timezone
from django_otp_webauthn.helpers import WebAuthnHelper
from django_otp_webauthn.models import WebAuthnCredential

from accounts.factors import primary_devices
from accounts.models import User

from .staff_views import record_factor_change

NAME_MAX_LENGTH = 64  # django_otp.models.Device.name is 64 characters


class PasskeyError(ValueError):
    """A request the person must change; the message is theirs to read. Nothing was changed."""


class PasskeyNotFound(PasskeyError):
    """No passkey of this person has that id (it never existed, or it is someone else's)."""


class PasskeyHelper(WebAuthnHelper):
    """django-otp-webauthn's helper (settings.OTP_WEBAUTHN_HELPER_CLASS) with a default name
    for a new passkey, which its owner can change at once ("Name this passkey")."""

    def create_credential(self, user, response, parsed_credential, original_data):
        """The library's unsaved credential, named "Passkey added <date>"."""
        device = super().create_credential(user, response, parsed_credential, original_data)
        device.name = f"Passkey added {timezone.localdate():%d %b %Y}"
        return device


def passkeys_of(user: User):
    """The person's confirmed passkeys, the most recently used first."""
    return WebAuthnCredential.objects.filter(user=user, confirmed=True).order_by("-last_used_at", "-created_at")


def factor_count(user: User) -> int:
    """How many confirmed factors (passkeys, authenticator apps) the person has; backup codes
    are not counted (see the module docstring)."""
    return len(primary_devices(user))


def own_passkey(user: User, passkey_id) -> WebAuthnCredential:
    """The person's passkey with that id, locked for the change. Raises PasskeyNotFound for a
    malformed id, an unknown one, or another person's (the same words for all three)."""
    try:
        pk = int(passkey_id)
    except (TypeError, ValueError):
        raise PasskeyNotFound("That passkey is not one of yours.") from None
    passkey = WebAuthnCredential.objects.select_for_update().filter(user=user, pk=pk).first()
    if passkey is None:
        raise PasskeyNotFound("That passkey is not one of yours.")
    return passkey


def clean_name(value: str | None) -> str:
    """The name as stored: whitespace collapsed. Raises PasskeyError when empty or too long."""
    name = " ".join((value or "").split())
    if not name:
        raise PasskeyError("Type a name for this passkey, for example “Work laptop”.")
    if len(name) > NAME_MAX_LENGTH:
        raise PasskeyError(f"That name is too long: {NAME_MAX_LENGTH} characters at most.")
    return name


@transaction.atomic
def rename_passkey(user: User, passkey_id, name: str | None) -> WebAuthnCredential:
    """Give the person's passkey a new name. Raises PasskeyNotFound or PasskeyError (bad name);
    nothing changes then."""
    passkey = own_passkey(user, passkey_id)
    passkey.name = clean_name(name)
    passkey.save(update_fields=["name"])
    return passkey


@transaction.atomic
def own_passkey_now(user: User, passkey_id, name: str | None) -> WebAuthnCredential:
    """The person's passkey just added, renamed when a name was typed (blank: it keeps its
    default name). Raises PasskeyNotFound, or PasskeyError for a name too long."""
    if " ".join((name or "").split()):
        return rename_passkey(user, passkey_id, name)
    return own_passkey(user, passkey_id)


@transaction.atomic
def remove_passkey(user: User, passkey_id) -> str:
    """Delete the person's passkey unless it is their last factor; returns its name. Raises
    PasskeyNotFound, or PasskeyError for the last factor; nothing changes then.

    The person's row is locked first, so two removals at once cannot both see "one left"."""
    User.objects.select_for_update().filter(pk=user.pk).first()
    passkey = own_passkey(user, passkey_id)
    if factor_count(user) <= 1:
        raise PasskeyError(
            f"“{passkey.name}” is your only way to confirm it's you, so it stays. Add another passkey or "
            "an authenticator app first, then remove this one."
        )
    name = passkey.name
    passkey.delete()
    record_factor_change(user, user, f"Removed a passkey (“{name}”).")
    return name


def log_enrolment(user: User, passkey: WebAuthnCredential) -> None:
    """The admin LogEntry for a new passkey, on its owner's account, by its owner."""
    record_factor_change(user, user, f"Added a passkey (“{passkey.name}”).")
