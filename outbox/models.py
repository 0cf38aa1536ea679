from django.db import models
from django.db.models import Q
from django.utils import timezone


class Kind(models.TextChoices):
    """What an email is; one function per kind in `outbox.emails`."""

    CONFIRMATION = "confirmation", "Confirmation"
    RECOVERY = "recovery", "Recovery"
    REFUND = "refund", "Refund"
    SIGNIN = "signin", "Sign-in link"
    ALERT = "alert", "Support alert"
    CASE_OPENED = "case_opened", "Support case opened"
    # The watchdog's alerts (and their "recovered" notices): sent by the health check itself,
    # in its own process, because the q cluster that normally sends emails may be what died.
    WATCHDOG = "watchdog", "Watchdog alert"


# The emails that give access: at most one of them per order (invariant I3), enforced by the
# constraint "one_access_email_per_order" below. Adding a kind here changes that constraint
# (makemigrations writes the migration).
ACCESS_KINDS = (Kind.CONFIRMATION, Kind.RECOVERY)


class Delivery(models.TextChoices):
    """What the ESP's tracking webhook last told us about a sent email (anymail's normalised
    event types, the ones that say whether it reached the mailbox)."""

    DEFERRED = "deferred", "Deferred (the mailbox server asked to try later)"
    DELIVERED = "delivered", "Delivered"
    BOUNCED = "bounced", "Bounced"
    REJECTED = "rejected", "Rejected by the email provider"
    COMPLAINED = "complained", "Marked as spam"


# Outcomes that mean the mailbox never got it: the address could not be reached.
UNREACHABLE = (Delivery.BOUNCED, Delivery.REJECTED)


class OutboundEmail(models.Model):
    """The outbox: one row per email we mean to send, rendered once, sent by a q task.

    Unique on (order, kind) unless it has a `key` (then unique on the key: one refund email per
    Stripe refund), and at most one access email (ACCESS_KINDS) per order:
    exactly-once is the database's job. The table keeps its first name, billing_outboundemail
    (the model moved here from billing; outbox/migrations/0001_initial.py).
    """

    Kind = Kind
    ACCESS_KINDS = ACCESS_KINDS
    Delivery = Delivery
    UNREACHABLE = UNREACHABLE

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
    # The RFC 5322 Message-ID every attempt carries, set and committed before the first request:
    # a retry that follows an unanswered request is the same message to a mail client, and
    # its idempotency key (`idempotency_key`) is the same to an ESP that honours one.
    message_id = models.CharField(max_length=255, blank=True)
    # Attempts whose outcome we could not know (the request went out, no answer came back, or
    # the worker died mid-send): when > 0 and the row is sent, the customer may have two copies.
    uncertain_attempts = models.PositiveSmallIntegerField(default=0)
    # For an order's email that may be sent more than once (one refund email per Stripe refund):
    # unique when set, instead of (order, kind). "" for every other email.
    key = models.CharField(max_length=100, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    # The ESP's last word on delivery (its tracking webhook, billing/delivery.py): "" until one came.
    delivery = models.CharField(max_length=12, choices=Delivery.choices, blank=True)
    delivery_at = models.DateTimeField(null=True, blank=True)
    delivery_detail = models.CharField(max_length=500, blank=True)

    class Meta:
        db_table = "billing_outboundemail"
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["order", "kind"],
                condition=Q(order__isnull=False, key=""),
                name="one_email_per_order_and_kind",
            ),
            models.UniqueConstraint(fields=["key"], condition=~Q(key=""), name="one_email_per_key"),
            models.UniqueConstraint(
                fields=["order"],
                condition=Q(kind__in=ACCESS_KINDS),
                name="one_access_email_per_order",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "next_attempt_at"]),
            # Tracking webhooks find their email by the ESP's message id.
            models.Index(fields=["provider_message_id"], name="outbox_provider_msgid_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} to {self.to} ({self.status})"

    def record_delivery(self, delivery: str, at, detail: str = "") -> bool:
        """Store the ESP's word `delivery` (a Delivery value) at `at` (aware datetime) with
        `detail` (the mailbox server's answer, cut to 500 characters), unless it is older news:
        an event older than the one stored is ignored (webhooks arrive out of order), and
        "deferred" never replaces a final word (delivered, bounced, rejected, complained).
        Returns whether the row changed. The caller holds the row lock (select_for_update)."""
        delivery = Delivery(delivery)
        if self.delivery and delivery == Delivery.DEFERRED and self.delivery != Delivery.DEFERRED:
            return False
        if self.delivery_at and at < self.delivery_at and self.delivery != Delivery.DEFERRED:
            return False
        self.delivery, self.delivery_at, self.delivery_detail = delivery, at, (detail or "")[:500]
        self.save(update_fields=["delivery", "delivery_at", "delivery_detail"])
        return True

    @property
    def idempotency_key(self) -> str:
        """The key an ESP that de-duplicates requests gets on every attempt (Resend: header
        `Idempotency-Key`, remembered 24 hours). Derived from the Message-ID, so it is stable
        across attempts and unique across databases; "" until the Message-ID is set."""
        return f"paidup-outbox-{self.pk}-{self.message_id.strip('<>').split('@')[0]}" if self.message_id else ""
