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
        UNMATCHED_PAYMENT = "unmatched_payment", "Payment that matches no plan"
        OUTBOX_STUCK = "outbox_stuck", "Emails are not being sent"
        ACCESS_BOUNCED = "access_bounced", "Access email bounced"
        DOUBLE_PURCHASE = "double_purchase", "Possible double purchase"
        REFUND_FAILED = "refund_failed", "A refund failed or was cancelled"
        REFUND_PROBLEM = "refund_problem", "A Stripe refund PaidUp could not record"
        DISPUTE = "dispute", "URGENT: dispute opened"
        DISPUTE_DUE = "dispute_due", "URGENT: dispute evidence due soon"
        DISPUTE_CLOSED = "dispute_closed", "Dispute closed"
        FRAUD_WARNING = "fraud_warning", "Early fraud warning"
        FRAUD_REFUNDED = "fraud_refunded", "Early fraud warning: refunded automatically"

    key = models.CharField(max_length=200, unique=True)
    reason = models.CharField(max_length=30, choices=Reason.choices)
    order = models.ForeignKey("Order", on_delete=models.CASCADE, null=True, blank=True, related_name="alerts")
    message = models.TextField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    followup_sent_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        # Born in the support app (support/migrations/0001_alerts.py); the table kept its name
        # when the model moved to the core (billing/migrations/0013_alert_moves_to_core.py).
        db_table = "support_alert"

    def __str__(self) -> str:
        return f"{self.get_reason_display()}: {self.order or 'system'}"
