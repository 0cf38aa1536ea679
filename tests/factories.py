import factory

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
    }
    data.update(overrides)
    return data
