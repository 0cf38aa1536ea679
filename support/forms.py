import re
from datetime import timedelta

from django import forms
from django.utils import timezone

from accounts.addresses import NormalizedEmailFormField

LAST4 = "The last four digits are 4 numbers, for example 4242. Or leave this empty."


class ChargedForm(forms.Form):
    """What a customer who was charged but has no access can tell us. Only the email is needed."""

    email = NormalizedEmailFormField(
        max_length=254,
        error_messages={
            "required": "Please enter the email address you paid with.",
            "invalid": "That doesn't look like an email address. Please check it.",
        },
    )
    card_last4 = forms.CharField(required=False, max_length=20, error_messages={"max_length": LAST4})
    paid_on = forms.DateField(
        required=False,
        error_messages={"invalid": "We couldn't read that date. Please write it like 2026-11-20, or leave it empty."},
    )

    def clean_card_last4(self) -> str:
        value = re.sub(r"[\s-]", "", self.cleaned_data["card_last4"])
        if value and not re.fullmatch(r"[0-9]{4}", value):
            raise forms.ValidationError(LAST4)
        return value

    def clean_paid_on(self):
        value = self.cleaned_data["paid_on"]
        # A day of slack: the customer's today can be ours tomorrow.
        if value and value > timezone.localdate() + timedelta(days=1):
            raise forms.ValidationError("That date is in the future. Please check it, or leave it empty.")
        return value
