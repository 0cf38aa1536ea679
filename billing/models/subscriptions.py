from django.conf import settings
from django.db import models
from django.utils import timezone


class Subscription(models.Model):
    """Access bought by one order. One-to-one with the order: a second one cannot exist."""

    order = models.OneToOneField("billing.Order", on_delete=models.PROTECT, related_name="subscription")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="subscriptions")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-ends_at"]

    def __str__(self) -> str:
        return f"{self.user} until {self.ends_at:%Y-%m-%d}"

    @property
    def is_active(self) -> bool:
        """Whether it gives access now: its order is fulfilled (not refunded) and now lies in
        [starts_at, ends_at). One query for the order unless it is already loaded."""
        from billing.models import Order

        return self.order.state == Order.State.FULFILLED and self.starts_at <= timezone.now() < self.ends_at


class Refund(models.Model):
    """Money returned to the customer, as Stripe recorded it. Local refunds equal Stripe's (I4).

    One row per Stripe refund id, whatever told us (the console, a webhook, reconciliation), with
    Stripe's status. Only a refund that is on its way or done (`Status.counts`) is in the order's
    `refunded_cents`; a failed or cancelled one stays here as history (billing/refunds.py).
    """

    class Status(models.TextChoices):
        # Stripe's refund statuses (https://docs.stripe.com/api/refunds/object#refund_object-status).
        PENDING = "pending", "On its way"
        REQUIRES_ACTION = "requires_action", "Waiting for the customer"
        SUCCEEDED = "succeeded", "Refunded"
        FAILED = "failed", "Failed: the money came back to us"
        CANCELED = "canceled", "Cancelled"

    # Money sent or on its way: counted in Order.refunded_cents.
    COUNTED = (Status.PENDING, Status.REQUIRES_ACTION, Status.SUCCEEDED)
    # Final: Stripe never moves a refund out of these, so an older event cannot undo them.
    FINAL = (Status.FAILED, Status.CANCELED)

    order = models.ForeignKey("billing.Order", on_delete=models.PROTECT, related_name="refunds")
    stripe_refund_id = models.CharField(max_length=255, unique=True)
    amount_cents = models.PositiveIntegerField()
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.SUCCEEDED)
    # Stripe's failure_reason when the refund failed (e.g. "expired_or_canceled_card").
    failure_reason = models.CharField(max_length=100, blank=True)
    reason = models.TextField(blank=True)
    actor = models.CharField(max_length=100)
    # When Stripe created the refund (its `created`), else when we recorded it.
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"{self.stripe_refund_id} ({self.price})"

    @property
    def price(self) -> str:
        """The refunded amount worded, e.g. "$50.00" (format_money of `amount_cents`)."""
        from billing.money import format_money

        return format_money(self.amount_cents, self.currency)

    @property
    def counts(self) -> bool:
        """True when this refund is money sent or on its way (in the order's refunded total)."""
        return self.status in self.COUNTED
