import re

from django import forms

from accounts.addresses import NormalizedEmailFormField, normalize_email

from .models import Plan

PAYMENT_METHOD_RE = re.compile(r"^(pm|tok)_[A-Za-z0-9]{6,200}$")
UNREADABLE_CARD = "We couldn't read your card details. Please enter them again. You have not been charged."


class CheckoutForm(forms.Form):
    # One spelling per customer (accounts.addresses), so every lookup is exact and indexed.
    email = NormalizedEmailFormField(
        max_length=254,
        error_messages={
            "required": "Please enter your email address: we send your access link there.",
            "invalid": "That doesn't look like an email address. Please check it.",
        },
    )
    payment_method = forms.CharField(
        max_length=255,
        error_messages={"required": "Please enter your card details.", "max_length": UNREADABLE_CARD},
    )
    plan = forms.SlugField(required=False)

    def confirms(self, answer: str) -> bool:
        """Whether the submitted `answer` ("email_checked": the customer kept or chose this
        address after a typo suggestion; "extend_access": they ticked "another year" for it)
        names this form's email, in its normal form. An answer given for one address never lets
        another through; a missing, garbled or oversized answer is no answer. Call after
        is_valid()."""
        value = self.data.get(answer, "")
        email = self.cleaned_data.get("email")
        return bool(email) and isinstance(value, str) and len(value) <= 254 and normalize_email(value) == email

    def clean_payment_method(self) -> str:
        value = self.cleaned_data["payment_method"].strip()
        if not PAYMENT_METHOD_RE.match(value):
            raise forms.ValidationError(UNREADABLE_CARD)
        return value

    def clean_plan(self) -> Plan:
        slug = self.cleaned_data.get("plan")
        plans = Plan.objects.filter(active=True)
        plan = plans.filter(slug=slug).first() if slug else plans.order_by("id").first()
        if plan is None:
            raise forms.ValidationError("That plan is not available. Please reload the page and try again.")
        return plan


class CorrectEmailForm(forms.Form):
    """The order page's one correction of an address whose access email bounced."""

    email = NormalizedEmailFormField(
        label="Your correct email address",
        max_length=254,
        error_messages={
            "required": "Please enter the email address you want your sign-in link sent to.",
            "invalid": "That doesn't look like an email address. Please check it.",
            "max_length": "That doesn't look like an email address. Please check it.",
        },
    )
