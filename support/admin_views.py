"""The console's actions as admin views: GET shows a confirmation page, POST (with CSRF) acts.

The work itself is support.actions; this module adds what the admin owes (I7): the
permission check, the claim check, and an admin LogEntry written in the same transaction as
the action, so that an action and its audit row commit together or not at all.
"""

import uuid
from collections.abc import Callable
from dataclasses import dataclass

from django import forms
from django.contrib import messages
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from billing.models import Order
from billing.models.orders import format_money

from . import actions
from .actions import ActionRefused, Done

# --- forms ------------------------------------------------------------------------------


class ActionForm(forms.Form):
    """Every confirmation form. `act_anyway` appears when someone else is on the order."""

    act_anyway = forms.BooleanField(required=False, label="I know, act anyway")

    def __init__(self, *args, order: Order | None = None, claimed_by_other: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.order = order
        if not claimed_by_other:
            del self.fields["act_anyway"]


class RefundForm(ActionForm):
    amount_cents = forms.IntegerField(
        label="Amount in cents", min_value=1, help_text="2490 is $24.90. The full refundable amount is filled in."
    )
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}), help_text="Required. Goes to the timeline and Stripe's metadata."
    )
    # A fresh one per form: Stripe's idempotency key, so a double submit refunds once.
    token = forms.UUIDField(widget=forms.HiddenInput)


class ExtendForm(ActionForm):
    days = forms.IntegerField(min_value=1, max_value=366, initial=30, help_text="1 to 366 days.")
    reason = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))


class NoteForm(ActionForm):
    text = forms.CharField(label="Note", widget=forms.Textarea(attrs={"rows": 4}))


class ResolveForm(ActionForm):
    note_text = forms.CharField(
        label="What was done", required=False, widget=forms.Textarea(attrs={"rows": 2}), help_text="Optional."
    )


class AttachForm(forms.Form):
    stripe_id = forms.CharField(label="Stripe payment id", max_length=255, help_text="pi_… or ch_…, from Stripe.")
    email = forms.EmailField(
        required=False, help_text="Optional: the customer's email if Stripe has none (or it is wrong)."
    )


# --- the actions ------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsoleAction:
    key: str
    label: str
    permission: str
    explain: Callable[[Order], str]  # what pressing the button will do, for this order
    unavailable: Callable[[Order], str]  # "" when it can be done now, else why not
    run: Callable[..., Done]  # (order, user, cleaned_data) -> Done
    form: type[ActionForm] = ActionForm
    danger: bool = False


def _fulfilled_only(what: str) -> Callable[[Order], str]:
    return lambda o: "" if o.state == Order.State.FULFILLED else f"Only a fulfilled order {what}."


ACTIONS = {
    a.key: a
    for a in [
        ConsoleAction(
            "fulfil",
            "Fulfil",
            "billing.fulfil_order",
            lambda o: (
                f"Ask Stripe whether {o.stripe_payment_intent_id or 'the payment'} succeeded for {o.price}; "
                f"if it did, give {o.email or 'the customer'} access and send the recovery email (once)."
            ),
            lambda o: (
                ""
                if o.state in (Order.State.PENDING, Order.State.PAID)
                else f"The order is {o.get_state_display().lower()}."
            ),
            lambda o, user, data: actions.fulfil_verified(o, user),
        ),
        ConsoleAction(
            "resend",
            "Resend access email",
            "billing.resend_access",
            lambda o: f"Email a fresh sign-in link to {o.email}. Earlier links stop mattering; nothing else changes.",
            _fulfilled_only("has access to resend"),
            lambda o, user, data: actions.resend_access(o, user),
        ),
        ConsoleAction(
            "refund",
            "Refund",
            "billing.refund_order",
            lambda o: (
                f"Refund money to the card in Stripe, then record it here. Charged {o.price}, "
                f"refunded so far {format_money(o.refunded_cents, o.currency)}. A full refund ends access today "
                "and the customer gets the refund email."
            ),
            lambda o: (
                ""
                if o.state in (Order.State.PAID, Order.State.FULFILLED) and o.refunded_cents < o.amount_cents
                else "There is no payment left to refund."
            ),
            lambda o, user, data: actions.refund(
                o, user, amount_cents=data["amount_cents"], reason=data["reason"], token=data["token"]
            ),
            RefundForm,
            danger=True,
        ),
        ConsoleAction(
            "extend",
            "Extend",
            "billing.extend_subscription",
            lambda o: "Goodwill: push the end of the customer's access out by the number of days below.",
            _fulfilled_only("has a subscription to extend"),
            lambda o, user, data: actions.extend(o, user, days=data["days"], reason=data["reason"]),
            ExtendForm,
        ),
        ConsoleAction(
            "note",
            "Add a note",
            "billing.view_order",
            lambda o: "Add a note to the order's timeline, for your colleague and for later.",
            lambda o: "",
            lambda o, user, data: actions.note(o, user, data["text"]),
            NoteForm,
        ),
        ConsoleAction(
            "claim",
            "I'm on it",
            "billing.view_order",
            lambda o: f"Tell your colleague you are handling this order, for the next {actions.CLAIM_MINUTES} minutes.",
            lambda o: "",
            lambda o, user, data: actions.claim(o, user),
        ),
        ConsoleAction(
            "resolve",
            "Resolved",
            "billing.view_order",
            lambda o: (
                "Close it: clears \u201cneeds attention\u201d and the claim, resolves its alerts and open "
                "support cases. Changes nothing about the payment or access."
            ),
            lambda o: "",
            lambda o, user, data: actions.resolve(o, user, note_text=data["note_text"]),
            ResolveForm,
        ),
    ]
}

# What the diagnosis suggests, as an action button.
SUGGESTED = {
    "paid_not_fulfilled": "fulfil",
    "missed_webhook": "fulfil",
    "email_not_delivered": "resend",
    "two_payments": "refund",
    "unknown_payment": "resolve",
}


def claim_holder(order: Order, user):
    """The other person on this order right now, or None."""
    if (
        order.claimed_by_id
        and order.claimed_by_id != user.pk
        and order.claimed_until
        and order.claimed_until > timezone.now()
    ):
        return order.claimed_by
    return None


def available_actions(order: Order, user, suggested: str | None) -> list[dict]:
    """The action buttons for the order page: only those this user may use."""
    buttons = []
    for action in ACTIONS.values():
        if not user.has_perm(action.permission):
            continue
        buttons.append(
            {
                "key": action.key,
                "label": action.label,
                "url": reverse("admin:billing_order_act", args=[order.pk, action.key]),
                "unavailable": action.unavailable(order),
                "suggested": action.key == suggested,
                "danger": action.danger,
            }
        )
    return buttons


def _initial(action: ConsoleAction, order: Order) -> dict:
    if action.key == "refund":
        return {"amount_cents": order.amount_cents - order.refunded_cents, "token": uuid.uuid4()}
    return {}


def order_action(model_admin, request, object_id: str, action_key: str):
    action = ACTIONS.get(action_key)
    if action is None or request.method not in ("GET", "POST"):
        raise Http404
    order = model_admin.get_object(request, object_id)
    if order is None:
        raise Http404
    if not model_admin.has_view_permission(request, order) or not request.user.has_perm(action.permission):
        raise PermissionDenied
    holder = claim_holder(order, request.user)
    form_kwargs = {"order": order, "claimed_by_other": holder is not None}
    error = ""
    if request.method == "POST":
        form = action.form(request.POST, **form_kwargs)
        if form.is_valid():
            if holder is not None and not form.cleaned_data.get("act_anyway"):
                error = (
                    f"{holder} is on this order until {timezone.localtime(order.claimed_until):%H:%M}. "
                    "Talk to them first, or tick \u201cI know, act anyway\u201d."
                )
            else:
                try:
                    with transaction.atomic():
                        done = action.run(order, request.user, form.cleaned_data)
                        _log(request, done.order or order, CHANGE, f"{action.label}: {done.message}")
                except ActionRefused as refused:
                    error = str(refused)
                else:
                    messages.success(request, done.message)
                    return HttpResponseRedirect(reverse("admin:billing_order_change", args=[order.pk]))
        if action.key == "refund" and error:
            # A refused refund made nothing here; a new key keeps Stripe from replaying its answer.
            data = request.POST.copy()
            data["token"] = str(uuid.uuid4())
            form = action.form(data, **form_kwargs)
            form.is_valid()
    else:
        form = action.form(initial=_initial(action, order), **form_kwargs)
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "title": f"{action.label}: {order.reference}",
        "order": order,
        "action": action,
        "explain": action.explain(order),
        "unavailable": action.unavailable(order),
        "holder": holder,
        "form": form,
        "error": error,
        "back_url": reverse("admin:billing_order_change", args=[order.pk]),
    }
    status = 400 if request.method == "POST" else 200  # a POST that gets here did nothing
    return TemplateResponse(request, "admin/billing/order/action_confirm.html", context, status=status)


def attach_payment(model_admin, request):
    """A bare Stripe payment becomes a fulfilled order. Its own page, linked from the queue."""
    if request.method not in ("GET", "POST"):
        raise Http404
    if not request.user.has_perm("billing.attach_payment"):
        raise PermissionDenied
    form = AttachForm(request.POST or None, initial={"stripe_id": request.GET.get("id", "")})
    error = ""
    if request.method == "POST" and form.is_valid():
        try:
            with transaction.atomic():
                done = actions.attach_payment(
                    form.cleaned_data["stripe_id"], request.user, email=form.cleaned_data["email"]
                )
                _log(request, done.order, ADDITION, f"Attach payment: {done.message}")
        except ActionRefused as refused:
            error = str(refused)
        else:
            messages.success(request, done.message)
            return HttpResponseRedirect(reverse("admin:billing_order_change", args=[done.order.pk]))
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.model._meta,
        "title": "Attach a Stripe payment",
        "form": form,
        "error": error,
    }
    status = 400 if request.method == "POST" else 200
    return TemplateResponse(request, "admin/billing/order/attach.html", context, status=status)


def refresh_from_stripe(model_admin, request, object_id: str):
    """POST only: re-sync this order's Stripe objects into dj-stripe's tables."""
    if request.method != "POST":
        return HttpResponseRedirect(reverse("admin:billing_order_change", args=[object_id]))
    order = model_admin.get_object(request, object_id)
    if order is None:
        raise Http404
    if not model_admin.has_view_permission(request, order):
        raise PermissionDenied
    from .mirror import refresh

    for ok, sentence in refresh(order):
        messages.add_message(request, messages.SUCCESS if ok else messages.WARNING, sentence)
    return HttpResponseRedirect(reverse("admin:billing_order_change", args=[order.pk]) + "#stripe")


def _log(request, order: Order, flag: int, message: str) -> None:
    LogEntry.objects.log_actions(
        user_id=request.user.pk, queryset=[order], action_flag=flag, change_message=message, single_object=True
    )
