import time
from datetime import timedelta

import factory
from django.db import transaction
from django.utils import timezone

from accounts.models import User
from billing.models import Order, Plan


class PlanFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Plan
        django_get_or_create = ["slug"]

    slug = "pro-year"
    name = "PaidUp Pro, one year"
    amount_cents = 24900
    currency = "usd"
    duration_days = 365


class OrderFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Order

    email = factory.Sequence(lambda n: f"customer{n}@example.com")
    plan = factory.SubFactory(PlanFactory)
    amount_cents = factory.SelfAttribute("plan.amount_cents")
    currency = factory.SelfAttribute("plan.currency")


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ["email"]

    email = factory.Sequence(lambda n: f"user{n}@example.com")


def payment_intent(order: Order, *, status: str = "succeeded", pi_id: str | None = None, **overrides) -> dict:
    """A PaymentIntent as Stripe would describe one for this order."""
    data = {
        "id": pi_id or order.stripe_payment_intent_id or f"pi_test{order.reference[3:]}",
        "object": "payment_intent",
        "status": status,
        "amount": order.amount_cents,
        "currency": order.currency,
        "customer": "cus_test123",
        "client_secret": "pi_secret_test",
        "metadata": {"order_id": str(order.id), "reference": order.reference, "email": order.email},
        "created": int(time.time()),
    }
    data.update(overrides)
    return data


def stripe_paid_order(fake_stripe, *, state: str = "pending", charged_ago: int = 3600, **fields) -> Order:
    """An order whose payment succeeded in `fake_stripe` (FakeStripe) `charged_ago` seconds ago
    (a customer or support usually hears of it after a while), left in `state` here ("pending",
    "paid" or "fulfilled"); `fields` go to OrderFactory."""
    from billing.fulfilment import fulfil

    order = OrderFactory(**fields)
    charged = timezone.now() - timedelta(seconds=charged_ago)
    pi = fake_stripe.pay_elsewhere(
        email=order.email,
        metadata={"order_id": str(order.id), "reference": order.reference, "email": order.email},
        created=int(charged.timestamp()),
    )
    Order.objects.filter(pk=order.pk).update(stripe_payment_intent_id=pi.id, stripe_payment_status="succeeded")
    if state != "pending":  # recorded paid: with Stripe's charge time, as record_payment() keeps it
        Order.objects.filter(pk=order.pk).update(charged_at=charged)
    order.refresh_from_db()
    if state in ("paid", "fulfilled"):
        with transaction.atomic():
            order.transition(Order.State.PAID, actor="test")
    if state == "fulfilled":
        fulfil(order, via="webhook")
    order.refresh_from_db()
    return order
