"""What Stripe holds, read once for the invariant checker (support/invariants.py).

A `StripeView` is a snapshot: PaymentIntents, charges and refunds by id. `read_stripe()` fills
one through the gateway's client (stripe-python, so localstripe over HTTP in dev and the chaos
run, real Stripe in production), a page of 100 at a time following stripe-python's
`next_page()`, every request counted against one read budget (`gateway.budget`) and retried on
429/5xx by `gateway.call`. When the budget runs out the view says it is incomplete, and the
checker refuses to call an incomplete read clean.

localstripe cannot filter lists by `created` (see DESIGN.md): with a stand-in Stripe
(`STRIPE_API_BASE` set) the lists are read whole and filtered here; real Stripe filters them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import stripe
from django.conf import settings

from billing import gateway

# Refund statuses whose money went back to the balance: not refunded to the customer.
NOT_REFUNDED = ("failed", "canceled")
# Objects per list request (Stripe's maximum).
PAGE_SIZE = 100


def id_of(value) -> str:
    """The id of a Stripe reference that may be expanded (an object) or not (a string); "" for None."""
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value.get("id") or "")


@dataclass
class StripeView:
    """Stripe's objects as read at one moment. Dict-like objects with Stripe's fields (amounts
    in integer minor units, `created` in Unix seconds). `complete` is False when the read budget
    ran out before every list was read; `requests` counts the requests it took."""

    payment_intents: dict[str, Mapping] = field(default_factory=dict)
    charges: dict[str, Mapping] = field(default_factory=dict)
    refunds: dict[str, Mapping] = field(default_factory=dict)
    complete: bool = True
    requests: int = 0

    @classmethod
    def of(cls, payment_intents: Iterable = (), charges: Iterable = (), refunds: Iterable = ()) -> StripeView:
        """A view of the given objects (each with an `id`), e.g. a test's fake Stripe."""
        return cls(
            payment_intents={o["id"]: o for o in payment_intents},
            charges={o["id"]: o for o in charges},
            refunds={o["id"]: o for o in refunds},
        )

    def intent_of_refund(self, refund: Mapping) -> str:
        """The PaymentIntent id a refund returns money from: its own `payment_intent`, else its
        charge's; "" when neither is known."""
        if pi := id_of(refund.get("payment_intent")):
            return pi
        charge = self.charges.get(id_of(refund.get("charge"))) or {}
        return id_of(charge.get("payment_intent"))

    def refunds_of(self, payment_intent_id: str) -> list[Mapping]:
        """Every refund Stripe holds for the PaymentIntent, whatever its status."""
        return [r for r in self.refunds.values() if self.intent_of_refund(r) == payment_intent_id]

    def refunded_cents(self, payment_intent_id: str) -> int:
        """What Stripe counts as refunded on the PaymentIntent (integer minor units): its refunds
        that did not fail or get cancelled."""
        return sum(int(r["amount"]) for r in self.refunds_of(payment_intent_id) if r.get("status") not in NOT_REFUNDED)


def _list_all(list_fn: Callable, since: int, into: dict, *, filter_here: bool) -> None:
    """Every object of a Stripe list created at or after `since` (Unix seconds), into `into` by id.
    One request per page of PAGE_SIZE (`gateway.call`, so budgeted and retried). Raises what
    `gateway.call` raises (`BudgetExhausted`, `stripe.StripeError`)."""
    params: dict = {"limit": PAGE_SIZE} if filter_here else {"limit": PAGE_SIZE, "created": {"gte": since}}
    page = gateway.call(list_fn, params)
    while True:
        for obj in page.data:
            if obj.get("created", since) >= since:
                into[obj["id"]] = obj
        if not page.has_more or not page.data:
            return
        page = gateway.call(page.next_page)


def read_stripe(since: int, *, budget: int = 500, per_second: float = 20.0, also: Iterable[str] = ()) -> StripeView:
    """Read Stripe's PaymentIntents, charges and refunds created at or after `since` (Unix
    seconds), and the PaymentIntents named in `also` (ids our orders record, perhaps created
    before `since`) that the lists did not bring. At most `budget` requests, `per_second` at a
    time. Returns a StripeView, `complete=False` when the budget ran out. Raises
    `stripe.StripeError` when Stripe cannot be reached (after gateway.call's retries); an id in
    `also` that Stripe does not know (404) is left out of the view."""
    view = StripeView()
    api = gateway.client()
    filter_here = bool(settings.STRIPE_API_BASE)
    with gateway.budget(budget, per_second) as spent:
        try:
            _list_all(api.v1.payment_intents.list, since, view.payment_intents, filter_here=filter_here)
            _list_all(api.v1.charges.list, since, view.charges, filter_here=filter_here)
            _list_all(api.v1.refunds.list, since, view.refunds, filter_here=filter_here)
            for pi_id in sorted(set(also) - set(view.payment_intents)):
                try:
                    view.payment_intents[pi_id] = gateway.call(api.v1.payment_intents.retrieve, pi_id)
                except stripe.InvalidRequestError as error:
                    if error.http_status != 404:
                        raise
                    # Stripe has no such PaymentIntent: the checker reports the order (I1).
        except gateway.BudgetExhausted:
            view.complete = False
        view.requests = spent.used
    return view
