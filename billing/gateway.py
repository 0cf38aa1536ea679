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
    """The StripeClient for the current settings (STRIPE_SECRET_KEY, STRIPE_API_BASE,
    STRIPE_MAX_NETWORK_RETRIES), cached per configuration. Makes no request, raises nothing."""
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
        """Count one request, first sleeping as long as `per_second` requires (seconds, through
        `sleep`). Raises `BudgetExhausted` when `limit` requests are already spent."""
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
    """Within the block, every `call` spends from a new Budget of `limit` requests at most
    `per_second` per second, which it yields (read `.used` for the count). Stripe's rate limit
    (100 requests/s live, 25 in test mode) is why; DESIGN.md "Reconciliation" budgets each run."""
    spent = Budget(limit=limit, per_second=per_second)
    token = _budget.set(spent)
    try:
        yield spent
    finally:
        _budget.reset(token)


def _retryable(error: Exception, *, keyed: bool) -> bool:
    """Whether the same request may be sent again.

    A 429 (rate limit or `lock_timeout`) and a connection error saved nothing at Stripe, so the
    same request, under the same idempotency key, is worth another try. A 5xx is retried only
    without a key: Stripe saves a keyed request's 500 and replays it for 24 hours
    (https://docs.stripe.com/api/idempotent_requests), so sending it again under the same key
    can only get the same 500. The caller decides what a fresh key should do.
    """
    if isinstance(error, stripe.RateLimitError | stripe.APIConnectionError):
        return True
    return not keyed and isinstance(error, stripe.APIError) and (error.http_status or 500) >= 500


def _sleep(seconds: float) -> None:
    time.sleep(seconds)  # a seam: tests replace it so that retries cost no wall time


def _has_key(args: tuple, kwargs: dict) -> bool:
    options = [*args, *kwargs.values()]
    return any(isinstance(value, dict) and value.get("idempotency_key") for value in options)


def call(fn: Callable, *args, **kwargs):
    """Call Stripe's `fn(*args, **kwargs)` within the current budget and return its answer.

    Retries 429s and connection errors (and 5xx of requests without an idempotency key) with
    exponential backoff, 0.5 s doubling up to 8 s, at most `RETRIES` times: stripe-python itself
    does not retry 429. Raises the last `stripe.StripeError` when the retries are spent or the
    error is not worth retrying, and `BudgetExhausted` when the run's budget is spent.
    """
    spent = _budget.get()
    keyed = _has_key(args, kwargs)
    for attempt in range(RETRIES + 1):
        if spent is not None:
            spent.spend()
        try:
            return fn(*args, **kwargs)
        except stripe.StripeError as error:
            if attempt == RETRIES or not _retryable(error, keyed=keyed):
                raise
            delay = min(0.5 * 2**attempt, 8.0)
            logger.warning("Stripe %s; retrying in %.1fs", type(error).__name__, delay)
            (spent.sleep if spent is not None else _sleep)(delay)


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

    Takes the order (its `payment_attempts`, committed by the caller before this request, names
    the idempotency keys `order-<id>-customer-<n>` and `order-<id>-pi-<n>`) and a `pm_…` id
    (Stripe.js) or a `tok_…` card token (localstripe's fake Stripe.js, which needs a customer to
    hold the card). Returns the PaymentIntent, status `requires_confirmation`. No money moves.
    Raises `stripe.CardError` when the card is refused at once, and any other
    `stripe.StripeError` (400 `idempotency_error` included) when Stripe refuses or cannot be
    reached: nothing was charged either way.
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
    """Confirm the PaymentIntent (`pi_…`): this is where money moves.

    The idempotency key `order-<id>-pi-<attempt>-confirm-<n>` counts the order's confirm
    requests (`confirm_attempts`, committed by the caller before this request): a confirm that
    failed is retried under a fresh key, because Stripe would replay a saved 500 for 24 hours.
    Returns a `Charge`; a declined card comes back as status "declined", not as an exception.
    Raises any other `stripe.StripeError` (429, 5xx, connection error, 400 for a PaymentIntent
    that cannot be confirmed): whether money moved is then unknown, and the caller must
    retrieve the PaymentIntent to learn it.
    """
    key = order.idempotency_key(f"pi-{order.payment_attempts}-confirm-{order.confirm_attempts}")
    try:
        pi = call(client().v1.payment_intents.confirm, payment_intent_id, options={"idempotency_key": key})
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
    """The PaymentIntent as Stripe knows it now. Raises `stripe.StripeError` when Stripe cannot
    be reached or does not know the id (404 `InvalidRequestError`)."""
    return call(client().v1.payment_intents.retrieve, payment_intent_id)


def cancel_payment_intent(payment_intent_id: str) -> stripe.PaymentIntent:
    """Cancel an unfinished PaymentIntent so that it can never charge; returns it, `canceled`.

    No idempotency key of ours: cancelling is idempotent by nature, and a saved 500 replayed for
    a day would keep a customer from paying again. Raises `stripe.InvalidRequestError` (400
    `payment_intent_unexpected_state`) when it already succeeded, is processing or was
    cancelled: retrieve it and act on its status. Other `stripe.StripeError`s: not cancelled.
    """
    return call(client().v1.payment_intents.cancel, payment_intent_id)


def retrieve_customer(customer_id: str) -> stripe.Customer:
    """The Stripe Customer `customer_id` ("cus_…"), one request. Raises what `call` raises
    (`stripe.InvalidRequestError` when no such customer, `BudgetExhausted`)."""
    return call(client().v1.customers.retrieve, customer_id)


def _pages(list_fn: Callable, params: dict) -> Iterator[list]:
    """Every page of a Stripe list call (`list_fn` with `params`), following `starting_after`:
    one request per page, one when the list is empty. Raises what `call` raises."""
    while True:
        page = call(list_fn, params)
        if page.data:
            yield list(page.data)
        if not page.has_more or not page.data:
            return
        params = {**params, "starting_after": page.data[-1].id}


def succeeded_payment_pages(since: int, until: int | None = None) -> Iterator[list]:
    """Pages (up to 100) of `payment_intent.succeeded` events created at or after `since` and,
    with `until`, at or before it (Unix seconds, inclusive both ends).

    Events rather than a PaymentIntent list: listing events by type and time works on real
    Stripe (30 days of history) and on localstripe, which cannot filter PaymentIntents by time.
    Real Stripe lists them newest first, localstripe oldest first: the caller must not assume
    either (billing/scan_state.py).
    """
    created = {"gte": since} if until is None else {"gte": since, "lte": until}
    params = {"type": "payment_intent.succeeded", "created": created, "limit": 100}
    yield from _pages(client().v1.events.list, params)


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


def refund_event_pages(since: int) -> Iterator[list]:
    """Pages of refund events (`refund.created`, `.updated`, `.failed`: Stripe's `type`
    wildcard "refund.*") created at or after `since`, one request per page. Reconciliation reads
    the refunds they carry for status changes its refund list cannot see: a refund that fails
    days after it was made. localstripe matches the type literally and sends no refund events,
    so it answers an empty list."""
    params = {"type": "refund.*", "created": {"gte": since}, "limit": 100}
    yield from _pages(client().v1.events.list, params)


def create_refund(payment_intent_id: str, amount_cents: int, *, idempotency_key: str, metadata: dict) -> stripe.Refund:
    """Refund part or all of a payment. The key makes a retried request refund once."""
    return call(
        client().v1.refunds.create,
        {"payment_intent": payment_intent_id, "amount": amount_cents, "metadata": metadata},
        {"idempotency_key": idempotency_key},
    )


def retrieve_charge(charge_id: str) -> stripe.Charge:
    """The Stripe Charge `charge_id` ("ch_…"), one request. Raises what `call` raises
    (`stripe.InvalidRequestError` when no such charge, `BudgetExhausted`)."""
    return call(client().v1.charges.retrieve, charge_id)


def customers_with_email(email: str) -> list:
    """Stripe Customers whose email is `email` (Stripe matches it exactly, case-sensitively),
    at most 10, newest first; [] when none. One request. Raises what `call` raises."""
    return list(call(client().v1.customers.list, {"email": email, "limit": 10}).data)


def customer_payment_intents(customer_id: str) -> list:
    """The customer's most recent PaymentIntents (up to 100). localstripe cannot filter
    PaymentIntents by customer and answers 400 (InvalidRequestError): callers fall back to
    succeeded_payment_pages()."""
    return list(call(client().v1.payment_intents.list, {"customer": customer_id, "limit": 100}).data)


def card_last4(payment_intent_id: str) -> str:
    """The last four digits of the card that paid PaymentIntent `payment_intent_id` ("4242"), as
    Stripe reports them on its charge (`payment_method_details.card.last4`); "" when Stripe does
    not say: no charge yet, not a card, or a stand-in Stripe (localstripe) that leaves out the
    charge's `payment_method_details`. One request (the PaymentIntent with `latest_charge`
    expanded; older API versions embed `charges`), two if the charge comes back as an id.
    Raises `stripe.StripeError` when Stripe cannot be asked."""
    payment_intent = call(client().v1.payment_intents.retrieve, payment_intent_id, {"expand": ["latest_charge"]})
    charge = payment_intent.get("latest_charge")
    if charge is None:
        embedded = (payment_intent.get("charges") or {}).get("data") or []
        charge = embedded[0] if embedded else None
    if isinstance(charge, str):
        charge = retrieve_charge(charge)
    details = (charge.get("payment_method_details") if charge is not None else None) or {}
    return str((details.get("card") or {}).get("last4") or "")


# Stand-in Stripes (STRIPE_API_BASE: localstripe) found to have no such list (localstripe has no
# disputes and no Radar): remembered per list for the process. Never for real Stripe.
_missing_lists: set[tuple[str, str]] = set()


def _created_pages(list_fn: Callable, since: int, *, name: str) -> Iterator[list]:
    """Pages (up to 100) of a Stripe list filtered by `created >= since` (Unix seconds): one
    request per page, one when there is nothing. A stand-in Stripe without the list (404 or 400
    from STRIPE_API_BASE) gives no pages, once logged; real Stripe's errors are raised."""
    api_base = settings.STRIPE_API_BASE
    if (api_base, name) in _missing_lists:
        return
    params = {"limit": 100, "created": {"gte": since}}
    while True:
        try:
            page = call(list_fn, params)
        except (stripe.InvalidRequestError, stripe.APIError) as error:
            if not api_base or (error.http_status or 0) not in (400, 404):
                raise
            logger.info("this Stripe (%s) has no %s list; skipping it", api_base, name)
            _missing_lists.add((api_base, name))
            return
        if page.data:
            yield list(page.data)
        if not page.has_more or not page.data:
            return
        params = {**params, "starting_after": page.data[-1].id}


def dispute_pages(since: int) -> Iterator[list]:
    """Pages of disputes (`du_…`) created at or after `since` (Unix seconds). Raises
    `stripe.StripeError` when Stripe cannot be reached (localstripe has no disputes: a 404)."""
    return _created_pages(client().v1.disputes.list, since, name="disputes")


def early_fraud_warning_pages(since: int) -> Iterator[list]:
    """Pages of Radar early fraud warnings (`issfr_…`) created at or after `since`."""
    return _created_pages(client().v1.radar.early_fraud_warnings.list, since, name="early_fraud_warnings")


def submit_dispute_evidence(dispute_id: str, evidence: dict[str, str], *, idempotency_key: str) -> stripe.Dispute:
    """Send `evidence` (Stripe's evidence field names → text) for dispute `du_…` and submit it
    (`submit=true`: Stripe forwards it to the bank; it can be sent only once). Returns the
    Dispute, status `under_review`. The key makes a double click submit once. Raises
    `stripe.StripeError` (e.g. 400 when the dispute was already submitted or is closed)."""
    return call(
        client().v1.disputes.update,
        dispute_id,
        {"evidence": evidence, "submit": True},
        {"idempotency_key": idempotency_key},
    )
