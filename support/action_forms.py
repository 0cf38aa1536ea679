"""The forms of the console's actions (support.admin_views): what support types, checked in
the house's words before anything moves; money typed as money in the order's currency."""

from django import forms

from accounts.addresses import NormalizedEmailFormField
from billing.currencies import PriceError, parse_amount
from billing.models import Order
from billing.models.orders import format_money
from billing.money import minor_unit_exponent

from . import mirror
from .email_form import ChangeEmailFields


class ActionForm(forms.Form):
    """Every confirmation form. `act_anyway` appears when someone else is on the order."""

    act_anyway = forms.BooleanField(required=False, label="I know, act anyway")

    def __init__(self, *args, order: Order | None = None, claimed_by_other: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.order = order
        if not claimed_by_other:
            del self.fields["act_anyway"]


class RefundForm(ActionForm):
    """The amount as a person writes money, in the order's currency ("50" or "50.00" is $50.00;
    "500" is ¥500), turned into minor units by billing.currencies.parse_amount; the stored unit
    stays Stripe's minor unit. `cleaned_data["amount"]` is that integer."""

    amount = forms.CharField(
        label="Amount to refund",
        max_length=32,
        error_messages={
            "required": "Type the amount to refund, for example 50.",
            "max_length": "That is not an amount. Type it as digits, for example 50.",
        },
    )
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Required. Goes to the timeline and Stripe's metadata.",
        error_messages={"required": "Say why, in a few words: it goes to the timeline for your colleague."},
    )
    # A fresh one per form: Stripe's idempotency key, so a double submit refunds once.
    token = forms.UUIDField(widget=forms.HiddenInput)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if order := self.order:  # in the order's own currency, as written on a receipt
            example = "500" if minor_unit_exponent(order.currency) == 0 else "50 or 50.00"
            shown = format_money(500 if example == "500" else 5000, order.currency)
            self.fields["amount"].label = f"Amount to refund, in {order.currency.upper()}"
            self.fields["amount"].help_text = (
                f"Written as money: {example} is {shown}. At most "
                f"{format_money(order.refundable_cents, order.currency)} is left to refund; that is filled in."
            )

    def clean_amount(self) -> int:
        if self.order is None:
            raise forms.ValidationError("There is no order to refund.")
        order = self.order
        try:
            amount = parse_amount(self.cleaned_data["amount"], order.currency)
        except PriceError as error:
            raise forms.ValidationError(str(error)) from error
        if amount > order.refundable_cents:
            raise forms.ValidationError(
                f"That is more than is left to refund: at most {format_money(order.refundable_cents, order.currency)} "
                f"({order.price} charged, {format_money(order.refunded_cents, order.currency)} already refunded)."
            )
        return amount


def refund_question(order: Order, data: dict) -> tuple[str, str]:
    """The refund's last question and its button, in money as the customer sees it:
    ("Refund $50.00 of $249.00 to the card ending 4242?", "Yes, refund $50.00"), for
    `data["amount"]` in minor units. The card's digits come from Stripe (support.mirror)."""
    last4 = mirror.card_last4(order)
    card = f"the card ending {last4}" if last4 else "the card it was paid with"
    amount = format_money(data["amount"], order.currency)
    return f"Refund {amount} of {order.price} to {card}?", f"Yes, refund {amount}"


class ExtendForm(ActionForm):
    days = forms.IntegerField(
        min_value=1,
        max_value=366,
        initial=30,
        help_text="1 to 366 days.",
        error_messages={k: "A whole number of days from 1 to 366." for k in ("min_value", "max_value", "invalid")},
    )
    reason = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))


class NoteForm(ActionForm):
    text = forms.CharField(label="Note", widget=forms.Textarea(attrs={"rows": 4}))


class ResolveForm(ActionForm):
    note_text = forms.CharField(
        label="What was done", required=False, widget=forms.Textarea(attrs={"rows": 2}), help_text="Optional."
    )


class ChangeEmailForm(ChangeEmailFields, ActionForm):
    pass


class AttachForm(forms.Form):
    stripe_id = forms.CharField(label="Stripe payment id", max_length=255, help_text="pi_… or ch_…, from Stripe.")
    email = NormalizedEmailFormField(
        required=False, help_text="Optional: the customer's email if Stripe has none (or it is wrong)."
    )
