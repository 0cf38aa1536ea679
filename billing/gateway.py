"""The one module that talks to Stripe. Tests fake Stripe here, or run localstripe.

Every call that can move money carries an idempotency key derived from the order, so a
retried request gets the same object back instead of a second charge.
"""

import functools
import logging
from dataclasses import dataclass

import stripe
from django.conf import settings

logger = logging.getLogger(__name__)

CardError = stripe.CardError
StripeError = stripe.StripeError


def client() -> stripe.StripeClient:
    return _client(settings.STRIPE_SECRET_KEY, settings.STRIPE_API_BASE, settings.STRIPE_MAX_NETWORK_RETRIES)


@functools.cache
def _client(secret_key: str, api_base: str, retries: int) -> stripe.StripeClient:
    # One client per configuration keeps its HTTP connection pool between calls.
    kwargs = {"max_network_retries": retries}
    if api_base:
        kwargs["base_addresses"] = {"api": api_base}
    return stripe.StripeClient(secret_key, **kwargs)


@dataclass
class Charge:
    """What checkout needs to know about a PaymentIntent after trying to confirm it."""

    payment_intent_id: str
    status: str  # a PaymentIntent status, or "declined"
    client_secret: str = ""
    decline_message: str = ""
    payment_intent: object = None  # the PaymentIntent as Stripe returned it


def _metadata(order) -> dict[str, str]:
    return {"order_id": str(order.id), "reference": order.reference, "email": order.email}


def create_payment_intent(order, payment_method: str) -> stripe.PaymentIntent:
    """Create, without confirming, the PaymentIntent for the order's current attempt.

    No money moves yet: the caller stores the id before `confirm()`. `payment_method` is a
    `pm_…` id (Stripe.js) or a `tok_…` card token (localstripe's fake Stripe.js), which needs
    a customer to hold the card.
    """
    attempt = order.payment_attempts
    api = client()
    customer_params = {"email": order.email, "metadata": _metadata(order)}
    customer_params["source" if payment_method.startswith("tok_") else "payment_method"] = payment_method
    customer = api.v1.customers.create(
        customer_params, {"idempotency_key": order.idempotency_key(f"customer-{attempt}")}
    )
    if payment_method.startswith("tok_"):
        payment_method = customer.default_source
    params = {
        "amount": order.amount_cents,
        "currency": order.currency,
        "customer": customer.id,
        "payment_method": payment_method,
        "payment_method_types": ["card"],
        "metadata": _metadata(order),
    }
    return api.v1.payment_intents.create(params, {"idempotency_key": order.idempotency_key(f"pi-{attempt}")})


def confirm(order, payment_intent_id: str) -> Charge:
    """Confirm the PaymentIntent: this is where money moves. A declined card comes back as
    status "declined", not as an exception."""
    try:
        pi = client().v1.payment_intents.confirm(
            payment_intent_id,
            options={"idempotency_key": order.idempotency_key(f"pi-{order.payment_attempts}-confirm")},
        )
    except stripe.CardError as error:
        logger.info("order %s: card declined (%s)", order.reference, error.code)
        return Charge(
            payment_intent_id=payment_intent_id,
            status="declined",
            decline_message=error.user_message or "Your card was declined.",
        )
    return Charge(
        payment_intent_id=pi.id,
        status=pi.status,
        client_secret=pi.client_secret or "",
        payment_intent=pi,
    )


def retrieve_payment_intent(payment_intent_id: str) -> stripe.PaymentIntent:
    return client().v1.payment_intents.retrieve(payment_intent_id)
