"""Plans in the console: the one core row a person types, so its form checks the price as
Stripe will charge it (billing/money.py holds the rule)."""

from django import forms
from django.contrib import admin

from billing.models import Plan
from billing.money import is_known_currency, stripe_amount_problem


class PlanForm(forms.ModelForm):
    """A price as Stripe will charge it: a known currency (stored lowercase, as Stripe wants it)
    and an amount in Stripe's minor unit that Stripe accepts for that currency."""

    class Meta:
        model = Plan
        fields = ["slug", "name", "amount_cents", "currency", "duration_days", "active"]
        labels = {"amount_cents": "Amount in the currency's smallest unit"}
        help_texts = {
            "amount_cents": "As Stripe counts it: 24900 is $249.00 in usd, ¥24,900 in jpy, KWD 24.900 in kwd.",
            "currency": "ISO 4217 code, e.g. usd, eur, jpy.",
        }

    def clean_currency(self) -> str:
        currency = self.cleaned_data["currency"].strip().lower()
        if len(currency) != 3 or not is_known_currency(currency):
            raise forms.ValidationError("Not a currency code we know. Use the three letters, e.g. usd.")
        return currency

    def clean(self) -> dict:
        data = super().clean()
        amount, currency = data.get("amount_cents"), data.get("currency")
        if amount is not None and currency and (problem := stripe_amount_problem(amount, currency)):
            self.add_error("amount_cents", problem)
        return data


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    form = PlanForm
    list_display = ["name", "slug", "price", "duration_days", "active"]
