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
        from billing.models import Order

        return self.order.state == Order.State.FULFILLED and self.starts_at <= timezone.now() < self.ends_at


class Refund(models.Model):
    """Money returned to the customer, as Stripe recorded it. Local refunds equal Stripe's (I4)."""

    order = models.ForeignKey("billing.Order", on_delete=models.PROTECT, related_name="refunds")
    stripe_refund_id = models.CharField(max_length=255, unique=True)
    amount_cents = models.PositiveIntegerField()
    currency = models.CharField(max_length=3)
    reason = models.TextField(blank=True)
    actor = models.CharField(max_length=100)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"{self.stripe_refund_id} ({self.amount_cents} {self.currency})"
