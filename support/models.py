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
