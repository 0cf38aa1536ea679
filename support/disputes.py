"""The console's dispute and early-fraud-warning actions: forms and the work, for admin_views.

Submitting evidence is `billing.disputes.submit_evidence` (the core's rule: once, row lock,
Stripe through the gateway); refunding at a warning is the console's refund action
(support.actions.refund → billing.refunds.refund_payment). This module adds the forms and
who may (the admin checks the permission; admin_views writes the LogEntry).
"""

import uuid

from django import forms

from billing import disputes, evidence
from billing.models import Order

from .actions import ActionRefused, Done, actor, refund


class EvidenceForm(forms.Form):
    """The evidence pack for review: one text box per Stripe evidence field, prefilled."""

    confirm = forms.BooleanField(
        label="I have read this evidence; send it to Stripe now (it can be sent only once)", required=True
    )
    token = forms.UUIDField(widget=forms.HiddenInput)

    def __init__(self, *args, order: Order | None = None, claimed_by_other: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.order = order
        dispute = disputes.open_dispute_needing_evidence(order) if order is not None else None
        pack = evidence.pack(dispute) if dispute is not None else {}
        names = list(pack) or ["uncategorized_text"]
        for name in names:
            self.fields[name] = forms.CharField(
                label=name,
                required=False,
                initial=pack.get(name, ""),
                max_length=20_000,  # Stripe: 150,000 characters across all text fields
                widget=forms.Textarea(attrs={"rows": 3 if name != "access_activity_log" else 6}),
            )
        self.evidence_names = names
        if claimed_by_other:
            self.fields["act_anyway"] = forms.BooleanField(required=False, label="I know, act anyway")
        self.order_fields(names + ["confirm", "token"] + (["act_anyway"] if claimed_by_other else []))

    def evidence(self) -> dict[str, str]:
        """The evidence fields the person filled in, by Stripe's evidence field name ("" for an
        empty one). Call after is_valid(): before it there is no cleaned_data (AttributeError)."""
        return {name: self.cleaned_data.get(name, "") for name in self.evidence_names}


class WarningRefundForm(forms.Form):
    """One click: the whole remaining amount, refunded under a fresh key per form."""

    token = forms.UUIDField(widget=forms.HiddenInput)

    def __init__(self, *args, order: Order | None = None, claimed_by_other: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.order = order
        if claimed_by_other:
            self.fields["act_anyway"] = forms.BooleanField(required=False, label="I know, act anyway")


def submit_evidence(order: Order, user, *, evidence_fields: dict[str, str], token: uuid.UUID) -> Done:
    """Submit the reviewed evidence of `order`'s open dispute for `user` (who needs
    billing.submit_dispute_evidence); returns Done. Raises ActionRefused without the permission,
    without an open dispute, and when the core refuses (Stripe's message included)."""
    if not user.has_perm("billing.submit_dispute_evidence"):
        raise ActionRefused("You do not have permission to submit dispute evidence.")
    dispute = disputes.open_dispute_needing_evidence(order)
    if dispute is None:
        latest = order.disputes.order_by("-created_at").first()
        if latest is not None and latest.evidence_submitted_at:
            return Done(f"The evidence for {latest} was already submitted; nothing more sent.", order)
        raise ActionRefused("This order has no dispute waiting for evidence.")
    try:
        submitted = disputes.submit_evidence(
            dispute, evidence_fields, actor=actor(user), idempotency_key=f"dispute-{dispute}-evidence-{token}"
        )
    except disputes.EvidenceRefused as refused:
        raise ActionRefused(str(refused)) from refused
    if not submitted:
        return Done(f"The evidence for {dispute} was already submitted; nothing more sent.", order)
    return Done(f"Evidence for {dispute} submitted to Stripe; the bank decides, usually within 60-75 days.", order)


def refund_for_warning(order: Order, user, *, token: uuid.UUID) -> Done:
    """ "Refund in full and end access" at an early fraud warning: the whole remaining amount,
    through the console's refund action (billing.refund_order, the core's refund rule; a full
    refund ends access today). Returns Done; raises ActionRefused as `refund` does."""
    warning = order.fraud_warnings.order_by("-created_at").first()
    if warning is None:
        raise ActionRefused("This order has no early fraud warning.")
    return refund(
        order,
        user,
        amount_cents=order.amount_cents - order.refunded_cents,
        reason=f"Early fraud warning {warning}: refunded in full and access ended, before a dispute.",
        token=token,
    )
