"""One spelling per email address, whichever way it came in.

The normal form is the whole address, trimmed, in Unicode NFKC, lower-cased with Python's
Unicode-aware `str.lower()`: `normalize_email(" Jon@BÜCHER.example ") == "jon@bücher.example"`.

Why this form:
- Checkout always stored `email.strip().lower()` (whole address, Unicode-aware), and the user
  manager did the same, so rows written by either are already normal: no customer's stored
  address changes meaning.
- Lower-casing the local part is, strictly, not RFC 5321's promise, but it is what every
  mailbox provider our customers use does, and a customer who types `Jon@` at checkout and
  `jon@` at sign-in is one person.
- NFKC, because a `ü` typed on one keyboard can arrive as `u` + combining diaeresis from
  another; NFKC rather than NFC because Django's `AbstractBaseUser.clean()` already applies NFKC
  to the login field (so the user admin would store NFKC anyway) and IDNA maps domain names
  through NFKC too. Django's EmailValidator accepts only ASCII local parts, so in practice this
  touches the domain alone.
- Not `casefold()`: it maps `ß` to `ss`, merging addresses that can be two people.
- The domain stays in Unicode (not punycode): it is what the customer typed and recognises.

Every way in (forms, fulfilment, reconciliation, support, commands) stores and looks up this
form, so lookups are exact (`email=`), indexed, and behave the same on SQLite and PostgreSQL.
`iexact` is not good enough: SQLite's case folding is ASCII-only, so `BÜCHER` never met `bücher`.
"""

import unicodedata

from django import forms
from django.db import models


def normalize_email(value: str | None) -> str:
    """The normal form of an email address (module docstring); "" for None or blank.

    Takes any string; never raises and never validates (forms and EmailField do that).
    """
    value = unicodedata.normalize("NFKC", (value or "").strip())
    return unicodedata.normalize("NFKC", value.lower())


EMAIL_TOO_LONG = "That email address is too long to be real (254 characters at most). Please check it."


class NormalizedEmailFormField(forms.EmailField):
    """A form's email field whose cleaned value is the normal form.

    254 characters at most (RFC 5321's limit, and the column's), refused in the house voice
    instead of Django's "Ensure this value has at most 254 characters".
    """

    default_error_messages = {"max_length": EMAIL_TOO_LONG}

    def __init__(self, *, max_length: int | None = 254, **kwargs):
        super().__init__(max_length=max_length, **kwargs)

    def to_python(self, value):
        return normalize_email(super().to_python(value))


class NormalizedEmailField(models.EmailField):
    """A model's email column that only ever holds the normal form.

    `get_prep_value` runs on every save and on exact and `in` lookups, so
    `User.objects.filter(email="Jon@BÜCHER.example")` finds `jon@bücher.example` whichever code
    asked. (`iexact`/`icontains` skip it: use exact lookups.)
    """

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        return normalize_email(value) if isinstance(value, str) else value

    def to_python(self, value):
        value = super().to_python(value)
        return normalize_email(value) if isinstance(value, str) else value

    def formfield(self, **kwargs):
        return super().formfield(**{"form_class": NormalizedEmailFormField, **kwargs})
