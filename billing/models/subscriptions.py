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
