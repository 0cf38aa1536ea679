from django.db import models
from django.utils import timezone


class Dispute(models.Model):
    """A customer's bank disputes a charge (Stripe `du_…`), as Stripe last told us.

    Kept even when no order is known for its charge yet (`order` empty): billing.disputes links
    it when the order appears. The rules live in billing/disputes.py."""

    # Stripe's statuses (https://docs.stripe.com/api/disputes/object#dispute_object-status).
    OPEN = ("warning_needs_response", "needs_response", "warning_under_review", "under_review")
    NEEDS_RESPONSE = ("warning_needs_response", "needs_response")
    CLOSED = ("won", "lost", "warning_closed", "prevented")

    stripe_dispute_id = models.CharField(max_length=255, unique=True)
    order = models.ForeignKey("billing.Order", on_delete=models.PROTECT, null=True, blank=True, related_name="disputes")
    charge_id = models.CharField(max_length=255, blank=True, db_index=True)
    payment_intent_id = models.CharField(max_length=255, blank=True, db_index=True)
    amount_cents = models.PositiveIntegerField(default=0)
    currency = models.CharField(max_length=3, blank=True)
    reason = models.CharField(max_length=40, blank=True)
    status = models.CharField(max_length=40, blank=True)
    evidence_due_by = models.DateTimeField(null=True, blank=True)
    # `created` of the last event applied (Stripe's clock): an older event never overwrites it.
    stripe_updated = models.PositiveBigIntegerField(default=0)
    # The evidence pack as support last saved it (Stripe's evidence field names); empty: not reviewed.
    evidence_draft = models.JSONField(default=dict, blank=True)
    evidence_submitted_at = models.DateTimeField(null=True, blank=True)
    evidence_submitted_by = models.CharField(max_length=100, blank=True)
    reminder_sent_at = models.DateTimeField(null=True, blank=True)
    # What the access policy did on close: "" / "ended" / "restored".
    access_action = models.CharField(max_length=10, blank=True)
    # The subscription's end before DISPUTE_ACCESS=suspend cut it: where a won dispute puts it back.
    access_ends_before = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["evidence_due_by", "created_at"]
        permissions = [("submit_dispute_evidence", "Can submit dispute evidence to Stripe")]

    def __str__(self) -> str:
        return self.stripe_dispute_id

    @property
    def price(self) -> str:
        """The disputed amount worded, e.g. "$249.00" (format_money of `amount_cents`; "usd" when
        Stripe sent no currency)."""
        from billing.money import format_money

        return format_money(self.amount_cents, self.currency or "usd")

    @property
    def is_open(self) -> bool:
        """Whether Stripe may still decide the dispute (its status is not one of CLOSED)."""
        return self.status not in self.CLOSED

    @property
    def needs_response(self) -> bool:
        """Whether support must act: Stripe awaits evidence (NEEDS_RESPONSE) and none was
        submitted from here yet."""
        return self.status in self.NEEDS_RESPONSE and self.evidence_submitted_at is None


class EarlyFraudWarning(models.Model):
    """A card issuer's early fraud warning about a charge (Stripe `issfr_…`)."""

    stripe_warning_id = models.CharField(max_length=255, unique=True)
    order = models.ForeignKey(
        "billing.Order", on_delete=models.PROTECT, null=True, blank=True, related_name="fraud_warnings"
    )
    charge_id = models.CharField(max_length=255, blank=True, db_index=True)
    payment_intent_id = models.CharField(max_length=255, blank=True, db_index=True)
    fraud_type = models.CharField(max_length=40, blank=True)
    actionable = models.BooleanField(default=True)
    stripe_updated = models.PositiveBigIntegerField(default=0)
    # Set once, under the row lock, when the EFW_AUTO_REFUND policy refunded the charge.
    auto_refunded_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return self.stripe_warning_id
