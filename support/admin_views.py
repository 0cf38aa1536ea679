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

from billing import email_change
from billing.disputes import open_dispute_needing_evidence
from billing.models import Order
from billing.models.orders import format_money
from billing.money import to_major

from . import actions, reverify
from . import disputes as dispute_actions
from .action_forms import (
    ActionForm,
    AttachForm,
    ChangeEmailForm,
    ExtendForm,
    NoteForm,
    RefundForm,
    ResolveForm,
    refund_question,
)
from .actions import ActionRefused, Done

# --- the actions ------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsoleAction:
    key: str
    label: str
    permission: str
    explain: Callable[[Order], str]  # what pressing the button will do, for this order
    unavailable: Callable[[Order], str]  # "" when it can be done now, else why not
    run: Callable[..., Done]  # (order, user, cleaned_data) -> Done
    form: type[forms.Form] = ActionForm
    danger: bool = False
    # A last question after the form, before acting: (order, cleaned_data) -> (question, yes-button label).
    question: Callable[[Order, dict], tuple[str, str]] | None = None


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
            "email",
            "Change email",
            "billing.change_order_email",
            lambda o: (
                f"Correct this order's email ({o.email or 'none'}): the access moves to the account of the new "
                "address (created, or joined if it exists) and a fresh sign-in link goes there. "
                "You see the change before it is made."
            ),
            lambda o: (
                ""
                if o.state in email_change.CHANGEABLE
                else f"The order is {o.get_state_display().lower()}: there is no access to move."
            ),
            lambda o, user, data: actions.change_email(o, user, new_email=data["new_email"], reason=data["reason"]),
            ChangeEmailForm,
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
                o, user, amount_cents=data["amount"], reason=data["reason"], token=data["token"]
            ),
            RefundForm,
            danger=True,
            question=refund_question,
        ),
        ConsoleAction(
            "evidence",
            "Submit dispute evidence",
            "billing.submit_dispute_evidence",
            lambda o: (
                "Review the evidence below (PaidUp assembled it from the order; edit anything), then send it to "
                "Stripe, which forwards it to the customer's bank. It can be sent only once."
            ),
            lambda o: "" if open_dispute_needing_evidence(o) else "No dispute waits for evidence.",
            lambda o, user, data: dispute_actions.submit_evidence(
                o, user, evidence_fields=data["evidence"], token=data["token"]
            ),
            dispute_actions.EvidenceForm,
        ),
        ConsoleAction(
            "refund_warning",
            "Refund in full and end access",
            "billing.refund_order",
            lambda o: (
                f"The card issuer warned that this payment may be fraudulent. Refund the whole "
                f"{format_money(o.refundable_cents, o.currency)} left to the card and end access today: "
                "a refunded charge cannot be disputed, so there is no dispute fee and no evidence deadline."
            ),
            lambda o: (
                ""
                if o.fraud_warnings.exists()
                and o.state in (Order.State.PAID, Order.State.FULFILLED)
                and o.refunded_cents < o.amount_cents
                else "No early fraud warning on a payment with money left to refund."
            ),
            lambda o, user, data: dispute_actions.refund_for_warning(o, user, token=data["token"]),
            dispute_actions.WarningRefundForm,
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
    "access_email_bounced": "email",
    "two_payments": "refund",
    "unknown_payment": "resolve",
    "disputed": "evidence",
    "fraud_warning": "refund_warning",
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
        return {"amount": str(to_major(order.refundable_cents, order.currency)), "token": uuid.uuid4()}
    if "token" in action.form.base_fields:
        return {"token": uuid.uuid4()}
    return {}


def _prefill(request, action: ConsoleAction, order: Order) -> dict:
    """The queue's "Refund PU-…" of a possible double purchase (`?why=double`) opens the refund
    page with the reason written; the amount is the full refundable rest as always. Anything
    else in the query is ignored: it only fills the form, the confirmation still decides."""
    if action.key == "refund" and request.GET.get("why") == "double":
        return {"reason": f"Double purchase: {order.email} paid twice within 24 hours; refunding {order.reference}."}
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
    if request.method == "GET":
        kept = reverify.resume(request)  # back from "Confirm it's you": the refund as typed
        if kept is not None:
            return _resumed_page(model_admin, request, order, action, action.form(kept, **form_kwargs), holder)
        form = action.form(initial={**_initial(action, order), **_prefill(request, action, order)}, **form_kwargs)
        return _action_page(model_admin, request, order, action, form, holder, status=200)
    form = action.form(request.POST, **form_kwargs)
    error = ""
    if form.is_valid():
        if holder is not None and not form.cleaned_data.get("act_anyway"):
            error = (
                f"{holder} is on this order until {timezone.localtime(order.claimed_until):%H:%M}. "
                "Talk to them first, or tick \u201cI know, act anyway\u201d."
            )
        elif getattr(form, "confirmation", None) is not None:  # the change shown; nothing done yet
            return _action_page(model_admin, request, order, action, form, holder, status=200)
        elif action.question and "edit" in request.POST:  # "Change": the form again, as typed
            return _action_page(model_admin, request, order, action, form, holder, status=200)
        elif action.question and request.POST.get("confirmed") != "yes":
            question = action.question(order, form.cleaned_data)
            return _action_page(model_admin, request, order, action, form, holder, status=200, question=question)
        elif reverify.needed(request, action.key, order, form.cleaned_data):  # a large refund: one code first
            return reverify.ask(request)
        else:
            try:
                with transaction.atomic():
                    data = {**form.cleaned_data}
                    if hasattr(form, "evidence"):
                        data["evidence"] = form.evidence()
                    done = action.run(order, request.user, data)
                    _log(request, done.order or order, CHANGE, f"{action.label}: {done.message}")
            except ActionRefused as refused:
                error = str(refused)
            else:
                messages.success(request, done.message)
                return HttpResponseRedirect(reverse("admin:billing_order_change", args=[order.pk]))
    if "token" in form.fields and error:
        # A refused refund or submission made nothing here; a new key keeps Stripe from replaying its answer.
        data = request.POST.copy()
        data["token"] = str(uuid.uuid4())
        form = action.form(data, **form_kwargs)
        form.is_valid()
    return _action_page(model_admin, request, order, action, form, holder, status=400, error=error)  # did nothing


def _resumed_page(model_admin, request, order, action, form, holder):
    """The kept refund after a fresh code: its last question again (one click to refund), or the
    form as typed when it no longer holds (the order changed meanwhile)."""
    if form.is_valid() and action.question:
        question = action.question(order, form.cleaned_data)
        return _action_page(model_admin, request, order, action, form, holder, status=200, question=question)
    return _action_page(model_admin, request, order, action, form, holder, status=200)


def _action_page(model_admin, request, order, action, form, holder, *, status: int, error: str = "", question=None):
    """The action's page: its form (GET, or a POST that did nothing: `error` says why), or with
    `question` = (question, yes-button label) the last question before acting."""
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
        "question": question,  # None, or (the question, the yes-button's label)
        "asks_first": action.question is not None,  # the first step's button says Continue
        "back_url": reverse("admin:billing_order_change", args=[order.pk]),
    }
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
