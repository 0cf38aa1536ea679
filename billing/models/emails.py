from django.db import models
from django.db.models import Q
from django.utils import timezone


class OutboundEmail(models.Model):
    """The outbox: one row per email we mean to send, rendered once, sent by a q task.

    Unique on (order, kind), and at most one access email (confirmation or recovery) per
    order: exactly-once is the database's job.
    """

    class Kind(models.TextChoices):
        CONFIRMATION = "confirmation", "Confirmation"
        RECOVERY = "recovery", "Recovery"
        REFUND = "refund", "Refund"
        SIGNIN = "signin", "Sign-in link"
        ALERT = "alert", "Support alert"
        CASE_OPENED = "case_opened", "Support case opened"

    ACCESS_KINDS = (Kind.CONFIRMATION, Kind.RECOVERY)

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        SENDING = "sending", "Sending"
        RETRY = "retry", "Waiting to retry"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed"

    order = models.ForeignKey("billing.Order", on_delete=models.CASCADE, related_name="emails", null=True, blank=True)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    to = models.EmailField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    subject = models.CharField(max_length=255)
    body_text = models.TextField()
    body_html = models.TextField()
    provider_message_id = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["order", "kind"],
                condition=Q(order__isnull=False),
                name="one_email_per_order_and_kind",
            ),
            models.UniqueConstraint(
                fields=["order"],
                condition=Q(kind__in=["confirmation", "recovery"]),
                name="one_access_email_per_order",
            ),
        ]
        indexes = [models.Index(fields=["status", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"{self.kind} to {self.to} ({self.status})"
