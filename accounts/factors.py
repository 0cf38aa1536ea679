"""Staff second factors: an authenticator app (TOTP) and printed one-time backup codes.

django-otp keeps the devices and does the throttling (each failed code doubles the wait before
the next try on that device: 1 s, 2 s, 4 s, …) and TOTP replay protection (a code is accepted
once: `TOTPDevice.last_t`). This module adds the rules PaidUp owns:

- which device kinds count as "enrolled" (`PRIMARY_DEVICE_MODELS`; backup codes alone do not);
- backup codes are never stored in clear: django-otp's `StaticToken.token` stores what it is
  given and compares it as-is, so we give it a SHA-256 digest of the code (salted with the user
  id), and hash what the person types the same way before django-otp compares it. A code has
  60 random bits, so a stolen database does not give the codes back;
- one answer for a typed code (`check_code`), with an honest reason when it is refused.

The passkey kind (django-otp-webauthn, support/passkeys.py) is in `PRIMARY_DEVICE_MODELS` too. This module lives in
accounts (a person's account, like the sign-in link) so that seed_demo (billing) and the console
(support) both use it.
"""

import hashlib
import secrets
from base64 import b32encode
from dataclasses import dataclass

from django.apps import apps
from django.db import transaction
from django.utils import timezone
from django_otp import devices_for_user
from django_otp.models import Device
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

# Device models ("app_label.ModelName") that make a person "enrolled": a factor they carry.
# Backup codes are for a lost phone, not a factor of their own. Passkeys: support/passkeys.py.
PRIMARY_DEVICE_MODELS = ["otp_totp.TOTPDevice", "django_otp_webauthn.WebAuthnCredential"]

APP_DEVICE_NAME = "Authenticator app"
BACKUP_DEVICE_NAME = "Backup codes"
BACKUP_CODE_COUNT = 10
_BACKUP_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"  # no l/1/o/0 to misread on paper


def primary_devices(user) -> list[Device]:
    """The confirmed factors `user` carries (TOTP, passkeys): enrolment is having one."""
    found = []
    for label in PRIMARY_DEVICE_MODELS:
        model = apps.get_model(label)
        found.extend(model.objects.devices_for_user(user, confirmed=True))
    return found


def is_enrolled(user) -> bool:
    """True when `user` has a confirmed factor of a primary kind (not only backup codes)."""
    return bool(primary_devices(user))


def pending_app_device(user) -> TOTPDevice:
    """The unconfirmed authenticator-app device being enrolled (created on first call, the same
    one after, so a QR code scanned on an earlier visit still matches). Its key never leaves the
    database but through the enrol page shown to this signed-in person."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("pk").first()
    return device or new_app_device(user)


def new_app_device(user, *, confirmed: bool = False) -> TOTPDevice:
    """A new authenticator-app device with a fresh random key (django-otp's default: 20 bytes)."""
    return TOTPDevice.objects.create(user=user, name=APP_DEVICE_NAME, confirmed=confirmed)


def secret_text(device: TOTPDevice) -> str:
    """The TOTP key as an authenticator app's "enter a key manually" wants it: base32, in fours."""
    secret = b32encode(device.bin_key).decode()
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


def _digest(user, code: str) -> str:
    # 16 hex characters: StaticToken.token is a CharField(max_length=16).
    return hashlib.sha256(f"paidup-backup:{user.pk}:{code}".encode()).hexdigest()[:16]


def normalize_code(typed: str) -> str:
    """What a person typed (str), as compared: no spaces or dashes, lowercase. Never raises."""
    return "".join(typed.split()).replace("-", "").lower()


@transaction.atomic
def new_backup_codes(user) -> list[str]:
    """Replace `user`'s backup codes with BACKUP_CODE_COUNT fresh ones and return them in clear,
    formatted "xxxx-xxxx-xxxx", to be shown once; only their digests are stored."""
    device, _ = StaticDevice.objects.get_or_create(user=user, name=BACKUP_DEVICE_NAME, defaults={"confirmed": True})
    device.token_set.all().delete()
    codes = ["".join(secrets.choice(_BACKUP_ALPHABET) for _ in range(12)) for _ in range(BACKUP_CODE_COUNT)]
    StaticToken.objects.bulk_create(StaticToken(device=device, token=_digest(user, code)) for code in codes)
    return [f"{c[:4]}-{c[4:8]}-{c[8:]}" for c in codes]


def backup_codes_left(user) -> int:
    """How many unused backup codes `user` has (an int, 0 when none were ever made)."""
    return StaticToken.objects.filter(device__user=user, device__confirmed=True).count()


@dataclass
class CodeResult:
    device: Device | None  # the device that accepted the code, or None
    error: str = ""  # why not, in words for the person typing


def _wait_error(devices) -> str:
    """Why the locked `devices` refuse a code now, counting the wrong codes (one is not "too many")."""
    waits = [d.verify_is_allowed()[1] for d in devices if not d.verify_is_allowed()[0]]
    until = max((w.get("locked_until") for w in waits if w and w.get("locked_until")), default=None)
    seconds = max(1, int((until - timezone.now()).total_seconds()) + 1) if until else 1
    wrong = max((w.get("failure_count", 1) for w in waits if w), default=1)
    said = "That was a wrong code." if wrong <= 1 else f"{wrong} wrong codes in a row."
    return f"{said} Please wait {seconds} second{'s' if seconds != 1 else ''} and type the code your app shows then."


def check_code(user, typed: str) -> CodeResult:
    """Check a code `user` typed: six digits from an authenticator app, or a backup code.

    Returns CodeResult(device) on success (a backup code is used up, a TOTP code cannot be used
    again), else CodeResult(None, error). Throttled by django-otp per device (ThrottlingMixin).
    """
    code = normalize_code(typed)
    app_code = code.isdigit() and len(code) <= 8
    if app_code:
        devices = list(TOTPDevice.objects.devices_for_user(user, confirmed=True))
        token, what = code, "That code didn't work. Type the six digits your app shows now (each code works once)."
    else:
        devices = list(StaticDevice.objects.devices_for_user(user, confirmed=True))
        token, what = (
            _digest(user, code),
            (
                "That backup code didn't work: it is used up, mistyped, or from a set you replaced "
                "(printing new codes stops the old ones)."
            ),
        )
    if not devices:
        kind = "an authenticator app" if app_code else "backup codes"
        return CodeResult(None, f"You have no {kind} set up. Use your other way to confirm.")
    with transaction.atomic():
        locked = [d for d in devices if not d.verify_is_allowed()[0]]
        if len(locked) == len(devices):
            return CodeResult(None, _wait_error(locked))
        for device in devices:
            device = type(device).objects.select_for_update().get(pk=device.pk)
            if device.verify_token(token):
                return CodeResult(device)
    return CodeResult(None, what)


def confirm_app_device(user, device: TOTPDevice, typed: str) -> str:
    """Confirm the pending authenticator app with a code it shows. Returns "" when it matched
    (the device is confirmed), else why not, in words for the person typing. Throttled like
    `check_code`; a code of the wrong shape is refused without counting as a try."""
    code = normalize_code(typed)
    if device.user_id != user.pk or device.confirmed:
        return "This set-up has already been done. Reload the page."
    if not code.isdigit() or len(code) != device.digits:
        return f"The app shows {device.digits} digits for PaidUp support. Type those {device.digits} digits."
    if not device.verify_is_allowed()[0]:
        return _wait_error([device])
    if not device.verify_token(code):
        return (
            "That code didn't match. Check that the app shows PaidUp support for this address, and type "
            "the six digits it shows now."
        )
    device.confirmed = True
    device.save(update_fields=["confirmed"])
    return ""


def reset_factors(user) -> int:
    """Delete every second-factor device of `user` (apps, backup codes, passkeys, pending ones);
    returns how many. Callers end the person's sessions and write the admin log."""
    removed = 0
    for device in list(devices_for_user(user, confirmed=None)):
        device.delete()
        removed += 1
    return removed


def end_sessions(user) -> int:
    """Delete every stored session signed in as `user` (database sessions, Django's default);
    returns how many. A stolen session cookie of theirs is worthless afterwards. Reads each live
    session: fine for a site whose staff is two people and whose customers rarely sign in."""
    from django.contrib.sessions.models import Session

    ended = 0
    for session in Session.objects.filter(expire_date__gt=timezone.now()).iterator():
        if str(session.get_decoded().get("_auth_user_id")) == str(user.pk):
            session.delete()
            ended += 1
    return ended


@transaction.atomic
def reset_and_log(person, actor) -> str:
    """Lost phone: delete `person`'s factors and sessions and write an admin LogEntry by `actor`
    (who did it, for the other person to see). Returns the logged sentence. The caller checks
    that `person` is active staff (support.staff.reset_factors, the user admin's action)."""
    from django.contrib.admin.models import CHANGE, LogEntry

    removed = reset_factors(person)
    ended = end_sessions(person)
    message = (
        f"Reset second factors: {removed} device(s) deleted, {ended} session(s) ended; "
        "enrols again at the next sign-in."
    )
    LogEntry.objects.log_actions(
        user_id=actor.pk, queryset=[person], action_flag=CHANGE, change_message=message, single_object=True
    )
    return message
