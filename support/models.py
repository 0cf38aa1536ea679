from django.db import models
from django.utils import timezone


class Alert(models.Model):
    """Something a person must look at. One per (order, reason): never a storm of emails."""

    class Reason(models.TextChoices):
        UNKNOWN_PAYMENT = "unknown_payment", "Unknown payment recovered"
        NO_EMAIL = "no_email", "Payment with no email address"
        PAYMENT_MISMATCH = "payment_mismatch", "Payment does not match its order"
        FULFIL_FAILED = "fulfil_failed", "Fulfilment keeps failing"
        PAID_AFTER_FAILED = "paid_after_failed", "Paid after the order had failed"
        STALE_HEARTBEAT = "stale_heartbeat", "Reconciliation has stopped running"
        WEBHOOK_FAILED = "webhook_failed", "Webhook event keeps failing"
        CUSTOMER_CASE = "customer_case", "Customer says: charged, no access"
        DUPLICATE_PAYMENT = "duplicate_payment", "Second payment for one order"

    key = models.CharField(max_length=200, unique=True)
    reason = models.CharField(max_length=30, choices=Reason.choices)
    order = models.ForeignKey("billing.Order", on_delete=models.CASCADE, null=True, blank=True, related_name="alerts")
    message = models.TextField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    followup_sent_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"{self.get_reason_display()}: {self.order or 'system'}"


class SupportCase(models.Model):
    """A customer's "charged but no access" that the machine could not settle alone."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        RESOLVED = "resolved", "Resolved"

    email = models.EmailField(db_index=True)
    order = models.ForeignKey("billing.Order", on_delete=models.SET_NULL, null=True, blank=True, related_name="cases")
    card_last4 = models.CharField(max_length=4, blank=True)
    paid_on = models.DateField(null=True, blank=True)
    message = models.TextField(blank=True)
    diagnosis = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN, db_index=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"case {self.pk} from {self.email} ({self.status})"


class RefundRequest(models.Model):
    """One refund as a support person asked for it: its token is the Stripe idempotency key,
    so a double submit or a retry can never refund twice."""

    token = models.UUIDField(unique=True)
    order = models.ForeignKey("billing.Order", on_delete=models.PROTECT, related_name="refund_requests")
    amount_cents = models.PositiveIntegerField()
    reason = models.TextField()
    requested_by = models.CharField(max_length=100)
    stripe_refund_id = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"refund request {self.token} ({self.amount_cents})"


class RateLimit(models.Model):
    """Hits per key and fixed time window, counted in the database so that every web process
    shares one count. The key holds a keyed hash of the client address or email, never the
    value itself; rows outlive their window by nothing and are swept (support/selfservice.py)."""

    key = models.CharField(max_length=100, primary_key=True)
    hits = models.PositiveIntegerField(default=0)
    expires_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.key}: {self.hits}"
