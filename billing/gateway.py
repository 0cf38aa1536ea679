"""The one module that talks to Stripe. Tests fake Stripe here, or run localstripe.

Every call that can move money carries an idempotency key derived from the order, so a
retried request gets the same object back instead of a second charge.
"""

import contextlib
import contextvars
import functools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

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


class BudgetExhausted(Exception):
    """The run has spent its Stripe requests; the rest waits for the next run."""


@dataclass
class Budget:
    """Counts and paces Stripe requests: at most `limit` in all, `per_second` at a time.

    Stripe allows 100 requests/s in live mode (25 in test mode); a background job stays well
    under that so that it never starves checkout.
    """

    limit: int
    per_second: float = 20.0
    used: int = 0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    _last: float = field(default=0.0, repr=False)

    def spend(self) -> None:
        if self.used >= self.limit:
            raise BudgetExhausted(f"Stripe request budget of {self.limit} spent")
        wait = self._last + 1.0 / self.per_second - time.monotonic()
        if wait > 0:
            self.sleep(wait)
        self._last = time.monotonic()
        self.used += 1


_budget: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("stripe_budget", default=None)
RETRIES = 4


@contextlib.contextmanager
def budget(limit: int, per_second: float = 20.0) -> Iterator[Budget]:
    spent = Budget(limit=limit, per_second=per_second)
    token = _budget.set(spent)
    try:
        yield spent
    finally:
        _budget.reset(token)


def _retryable(error: Exception) -> bool:
    if isinstance(error, stripe.RateLimitError | stripe.APIConnectionError):
        return True
    return isinstance(error, stripe.APIError) and (error.http_status or 500) >= 500


def call(fn: Callable, *args, **kwargs):
    """Call Stripe within the current budget; retry 429 and 5xx with exponential backoff.

    stripe-python itself retries connection errors and 5xx but not 429.
    """
    spent = _budget.get()
    for attempt in range(RETRIES + 1):
        if spent is not None:
            spent.spend()
        try:
            return fn(*args, **kwargs)
        except stripe.StripeError as error:
            if attempt == RETRIES or not _retryable(error):
                raise
            delay = min(0.5 * 2**attempt, 8.0)
            logger.warning("Stripe %s; retrying in %.1fs", type(error).__name__, delay)
            (spent.sleep if spent is not None else time.sleep)(delay)


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
    customer = call(
        api.v1.customers.create,
        customer_params,
        {"idempotency_key": order.idempotency_key(f"customer-{attempt}")},
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
    return call(api.v1.payment_intents.create, params, {"idempotency_key": order.idempotency_key(f"pi-{attempt}")})


def confirm(order, payment_intent_id: str) -> Charge:
    """Confirm the PaymentIntent: this is where money moves. A declined card comes back as
    status "declined", not as an exception."""
    try:
        pi = call(
            client().v1.payment_intents.confirm,
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
    return call(client().v1.payment_intents.retrieve, payment_intent_id)


def cancel_payment_intent(payment_intent_id: str) -> stripe.PaymentIntent:
    return call(
        client().v1.payment_intents.cancel,
        payment_intent_id,
        options={"idempotency_key": f"cancel-{payment_intent_id}"},
    )


def retrieve_customer(customer_id: str) -> stripe.Customer:
    return call(client().v1.customers.retrieve, customer_id)


def succeeded_payment_pages(since: int) -> Iterator[list]:
    """Pages (up to 100) of `payment_intent.succeeded` events created at or after `since`.

    Events rather than a PaymentIntent list: listing events by type and time works on real
    Stripe (30 days of history) and on localstripe, which cannot filter PaymentIntents by time.
    """
    params = {"type": "payment_intent.succeeded", "created": {"gte": since}, "limit": 100}
    while True:
        page = call(client().v1.events.list, params)
        if page.data:
            yield list(page.data)
        if not page.has_more or not page.data:
            return
        params = {**params, "starting_after": page.data[-1].id}


# Stand-in Stripes (STRIPE_API_BASE, e.g. localstripe) found unable to list refunds by time.
# Remembered for the process: each failed ask is retried with backoff (about 7.5 s per run).
# Never for real Stripe, where an error is an outage, not a missing feature.
_cannot_filter_refunds: set[str] = set()


def refund_pages(since: int) -> Iterator[list]:
    """Pages of refunds created at or after `since` (localstripe cannot filter by time: we
    filter those here)."""
    api_base = settings.STRIPE_API_BASE
    filter_here = api_base in _cannot_filter_refunds
    params = {"limit": 100} if filter_here else {"limit": 100, "created": {"gte": since}}
    while True:
        try:
            page = call(client().v1.refunds.list, params)
        except stripe.APIError:
            if filter_here or "created" not in params:
                raise
            logger.info("this Stripe cannot list refunds by time; filtering them here")
            if api_base:
                _cannot_filter_refunds.add(api_base)
            filter_here = True
            params = {"limit": 100}
            continue
        data = [r for r in page.data if r.created >= since] if filter_here else list(page.data)
        if data:
            yield data
        if not page.has_more or not page.data:
            return
        params = {**params, "starting_after": page.data[-1].id}


def create_refund(payment_intent_id: str, amount_cents: int, *, idempotency_key: str, metadata: dict) -> stripe.Refund:
    """Refund part or all of a payment. The key makes a retried request refund once."""
    return call(
        client().v1.refunds.create,
        {"payment_intent": payment_intent_id, "amount": amount_cents, "metadata": metadata},
        {"idempotency_key": idempotency_key},
    )


def retrieve_charge(charge_id: str) -> stripe.Charge:
    return call(client().v1.charges.retrieve, charge_id)


def customers_with_email(email: str) -> list:
    return list(call(client().v1.customers.list, {"email": email, "limit": 10}).data)


def customer_payment_intents(customer_id: str) -> list:
    """The customer's most recent PaymentIntents (up to 100). localstripe cannot filter
    PaymentIntents by customer and answers 400 (InvalidRequestError): callers fall back to
    succeeded_payment_pages()."""
    return list(call(client().v1.payment_intents.list, {"customer": customer_id, "limit": 100}).data)
