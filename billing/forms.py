import re

from django import forms

from .models import Plan

PAYMENT_METHOD_RE = re.compile(r"^(pm|tok)_[A-Za-z0-9]{6,200}$")
UNREADABLE_CARD = "We couldn't read your card details. Please enter them again. You have not been charged."


class CheckoutForm(forms.Form):
    email = forms.EmailField(
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

    def clean_email(self) -> str:
        # One spelling per customer, so support's email search is an exact, indexed lookup.
        return self.cleaned_data["email"].strip().lower()

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
