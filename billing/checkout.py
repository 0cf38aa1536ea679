"""Checkout as a service: the order is committed before any money moves."""

# size: pay(), its three transactions and the status sync read as one story about one order's
# idempotency keys; split apart, the rules about which key may be sent when would be scattered.

import hashlib
import ipaddress
import logging
from dataclasses import dataclass

import stripe
from django.db import transaction
from django.utils import timezone

from config.failpoints import failpoint

from . import gateway, payment_status
from .fulfilment import fulfil
from .models import Order, Plan

logger = logging.getLogger(__name__)


@dataclass
class Outcome:
    order: Order
    # "done": show the order page. "action": hand the 3-D Secure check to the page.
    # "declined": the card was refused. "retry": Stripe failed us and said nothing was
    # charged; the customer may press Pay again. `message` says so in the customer's words.
    kind: str
    client_secret: str = ""
    message: str = ""


RETRY_MESSAGE = (
    "We couldn't complete your payment with the bank just now. You have not been charged. "
    "Please press Pay again in a moment."
)


def open_order(reference: str, email: str, plan: Plan, *, client_ip: str = "", user_agent: str = "") -> Order:
    """The pending order for this checkout (`reference`, "PU-…"), created and committed if new.

    Returns the order. While nothing has been charged, a resubmit may change its email and plan.
    `client_ip` and `user_agent` (billing/client.py) are kept as of the latest submit: dispute
    evidence (billing/evidence.py). An address that is not an IP address is not kept.
    """
    with transaction.atomic():
        order, created = Order.objects.select_for_update().get_or_create(
            reference=reference,
            defaults={
                "email": email,
                "plan": plan,
                "amount_cents": plan.amount_cents,
                "currency": plan.currency,
            },
        )
        if created:
            order.log("order:created", f"Checkout started for {email}: {plan.name}, {order.price}.", actor="customer")
        elif order.state == Order.State.PENDING and payment_status.nothing_charged(order.stripe_payment_status):
            _change_details(order, email, plan)
        _record_client(order, client_ip, user_agent)
    failpoint("after_order_commit")
    return order


def _record_client(order: Order, client_ip: str, user_agent: str) -> None:
    """Keep who submitted the checkout on a pending order (caller holds the row lock)."""
    try:
        ip = str(ipaddress.ip_address(client_ip)) if client_ip else None
    except ValueError:
        ip = None
    if order.state != Order.State.PENDING or (order.checkout_ip, order.checkout_user_agent) == (ip, user_agent):
        return
    order.checkout_ip, order.checkout_user_agent = ip, user_agent[:500]
    order.save(update_fields=["checkout_ip", "checkout_user_agent", "updated_at"])


def _change_details(order: Order, email: str, plan: Plan) -> None:
    """Nothing charged yet: the customer may correct their email or choose another plan.
    Caller holds the row lock. A PaymentIntent made for the old details is never confirmed:
    the attempt's fingerprint no longer matches, so `pay()` cancels it and starts afresh."""
    changes = {"email": email, "plan": plan, "amount_cents": plan.amount_cents, "currency": plan.currency}
    if any(getattr(order, field) != value for field, value in changes.items()):
        for field, value in changes.items():
            setattr(order, field, value)
        order.save(update_fields=[*changes, "updated_at"])
        order.log("order:updated", f"Customer changed the order details before paying ({email}).", actor="customer")


def fingerprint(order: Order, payment_method: str) -> str:
    """What an attempt sends to Stripe, as a hash: a key may be replayed only for the same."""
    parts = [payment_method, order.email, str(order.amount_cents), order.currency]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def _locked(order: Order) -> Order:
    """The order re-read under its row lock. Only the order's row (`of=("self",)`): PostgreSQL
    would otherwise also lock the joined plan row, and every checkout of that plan would wait
    for this one's Stripe requests."""
    return Order.objects.select_for_update(of=("self",)).select_related("plan").get(pk=order.pk)


def pay(order: Order, payment_method: str, *, email: str | None = None, plan: Plan | None = None) -> Outcome:
    """Charge the order once, whatever Stripe answers and wherever we crash.

    Takes the pending order, the card (`pm_…` or `tok_…`) and what the customer submitted
    (`email`, `plan`: a new attempt charges those). Returns an `Outcome`. Raises only what
    fulfilment raises after a success; Stripe's errors become outcomes.

    The rules (Stripe's idempotency docs and `billing.payment_status`):

    - Every idempotency key is committed before the request that uses it: the attempt number
      (keys `…-customer-<n>`, `…-pi-<n>`) and the confirm count (`…-pi-<n>-confirm-<m>`).
    - A key is replayed only with the same parameters (the attempt's fingerprint), and only
      when its request got no answer at all; a key that got an error is never sent again,
      because Stripe replays a saved 500 for 24 hours and refuses other parameters (400).
    - Before anything is sent again for a PaymentIntent, Stripe is asked for its status, and
      the table decides: fulfil, authenticate, wait, confirm again, or a new attempt. A
      PaymentIntent is cancelled before a new attempt replaces it, so it can never charge.

    Three short transactions, each under the order's row lock: decide and write the keys
    down; create the PaymentIntent and write the confirm key down; confirm.
    """
    with transaction.atomic():
        order = _locked(order)
        if order.state != Order.State.PENDING:
            return Outcome(order, "done")
        step, payment_intent = _next_step(order, payment_method)
        if payment_intent is not None:
            return outcome_of(order, payment_intent)
        if step == payment_status.PAY:
            if email is not None and plan is not None:
                _change_details(order, email, plan)
            _write_attempt_keys(order, payment_method)
        elif step == payment_status.CONFIRM:
            _write_confirm_key(order)
        else:  # Stripe could not be reached: nothing is sent without knowing
            return _unsure(order)
    keys = (order.payment_attempts, order.confirm_attempts)

    if step == payment_status.PAY:
        order, outcome = _create_attempt(order, payment_method, attempt=keys[0])
        if outcome is not None:
            return outcome
        keys = (order.payment_attempts, order.confirm_attempts)

    with transaction.atomic():
        order = _locked(order)
        if order.state != Order.State.PENDING or (order.payment_attempts, order.confirm_attempts) != keys:
            return Outcome(order, "done")
        charge = _confirm(order)
    failpoint("after_charge")
    if charge.status == "declined":
        return Outcome(order, "declined", message=charge.decline_message)
    if charge.payment_intent is None:
        return _unsure(order)
    return outcome_of(order, charge.payment_intent)


def _create_attempt(order: Order, payment_method: str, *, attempt: int) -> tuple[Order, Outcome | None]:
    """Transaction 2 of `pay()`: create the PaymentIntent of attempt number `attempt`.

    Returns the re-read order and None to go on to confirm, or an `Outcome` to answer with.
    Only the status "creating" means nobody made this attempt's PaymentIntent yet (only `pay()`
    writes it): a concurrent submit of the same card must not make a second one.
    """
    with transaction.atomic():
        order = _locked(order)
        taken = order.payment_attempts != attempt or order.stripe_payment_status != "creating"
        if order.state != Order.State.PENDING or taken:
            return order, Outcome(order, "done")  # another request took this checkout over
        return order, _create_payment_intent(order, payment_method)


def _next_step(order: Order, payment_method: str) -> tuple[str, object]:
    """Under the row lock: what this submit may do, from the table and, when a PaymentIntent
    may still move money, from Stripe. Returns (step, PaymentIntent to act on or None)."""
    step = payment_status.status(order.stripe_payment_status).next_step
    if step == payment_status.PAY or not order.stripe_payment_intent_id:
        return payment_status.PAY, None
    try:
        payment_intent = gateway.retrieve_payment_intent(order.stripe_payment_intent_id)
    except stripe.StripeError:
        logger.warning("order %s: could not ask Stripe about %s", order.reference, order.stripe_payment_intent_id)
        return payment_status.ASK, None
    _record_status(order, payment_intent["status"])
    step = payment_status.status(payment_intent["status"]).next_step
    if step == payment_status.CONFIRM and order.payment_fingerprint != fingerprint(order, payment_method):
        # Another card or other details: this PaymentIntent must never charge. Cancel it first.
        return _cancel_for_new_attempt(order)
    if step in (payment_status.PAY, payment_status.CONFIRM):
        return step, None
    return step, payment_intent


def _cancel_for_new_attempt(order: Order) -> tuple[str, object]:
    try:
        cancelled = gateway.cancel_payment_intent(order.stripe_payment_intent_id)
    except stripe.InvalidRequestError:
        # It moved on meanwhile (succeeded, processing): Stripe's answer decides.
        try:
            cancelled = gateway.retrieve_payment_intent(order.stripe_payment_intent_id)
        except stripe.StripeError:
            return payment_status.ASK, None
    except stripe.StripeError:
        return payment_status.ASK, None
    _record_status(order, cancelled["status"])
    if cancelled["status"] == "canceled":
        order.log(
            "payment:canceled",
            f"PaymentIntent {cancelled['id']} cancelled before a new attempt with other card details.",
            actor="customer",
        )
        return payment_status.PAY, None
    step = payment_status.status(cancelled["status"]).next_step
    return step, (None if step == payment_status.PAY else cancelled)


def _record_status(order: Order, status: str) -> None:
    if order.stripe_payment_status != status:
        order.stripe_payment_status = status
        order.save(update_fields=["stripe_payment_status", "updated_at"])


def _write_attempt_keys(order: Order, payment_method: str) -> None:
    """Commit the attempt (hence its keys) before any request uses them. A checkout whose last
    attempt never got an answer, resubmitted with the same card and details, replays that
    attempt's keys with the same parameters, and Stripe hands back what it made."""
    new = fingerprint(order, payment_method)
    replay = order.stripe_payment_status == "creating" and order.payment_fingerprint == new
    if not replay:
        order.payment_attempts += 1
        order.payment_fingerprint = new
    order.confirm_attempts = 0
    order.stripe_payment_status = "creating"
    order.save(
        update_fields=[
            "payment_attempts",
            "payment_fingerprint",
            "confirm_attempts",
            "stripe_payment_status",
            "updated_at",
        ]
    )


def _write_confirm_key(order: Order) -> None:
    """Commit the next confirm key before the confirm request uses it."""
    order.confirm_attempts += 1
    order.stripe_payment_status = "confirming"
    order.save(update_fields=["confirm_attempts", "stripe_payment_status", "updated_at"])


def _create_payment_intent(order: Order, payment_method: str) -> Outcome | None:
    """Step two, under the caller's row lock: create the PaymentIntent under the committed
    keys. Returns None when it is ready to confirm (its id and the confirm key are written),
    else the outcome to show: a refused card, or Stripe failing us (nothing was charged)."""
    try:
        payment_intent = gateway.create_payment_intent(order, payment_method)
    except stripe.CardError as error:  # the card was refused before any charge
        message = error.user_message or "Your card was declined."
        _record_status(order, "declined")
        order.log("payment:declined", f"Card refused: {message}", actor="customer")
        return Outcome(order, "declined", message=message)
    except stripe.StripeError as error:
        # No confirm was sent, so nothing was charged. The keys that got this answer are
        # spent: the next submit is a new attempt with new keys.
        _record_status(order, "")
        order.log(
            "payment:error",
            f"Stripe refused or failed to create the PaymentIntent ({_error_name(error)}); nothing was charged.",
            actor="customer",
            data={"attempt": order.payment_attempts, "error": _error_name(error)},
        )
        return Outcome(order, "retry", message=RETRY_MESSAGE)
    failpoint("after_create_answer")
    order.stripe_payment_intent_id = payment_intent.id
    order.stripe_customer_id = payment_intent.customer or ""
    order.stripe_payment_status = payment_intent.status
    order.save()
    order.log(
        "payment:created",
        f"PaymentIntent {payment_intent.id} created (attempt {order.payment_attempts}).",
        actor="customer",
        data={"payment_intent": payment_intent.id, "attempt": order.payment_attempts},
    )
    if payment_intent.status != "requires_confirmation":
        return outcome_of(order, payment_intent)
    _write_confirm_key(order)
    return None


def _confirm(order: Order) -> gateway.Charge:
    """Step three, under the caller's row lock: confirm, and record what Stripe said. When
    Stripe gives no clear answer (429, 5xx, lost connection), ask it for the PaymentIntent:
    its status, not the error, says whether money moved. If even that fails, the order stays
    `confirming` and the order page keeps asking."""
    pi_id = order.stripe_payment_intent_id
    try:
        charge = gateway.confirm(order, pi_id)
    except stripe.StripeError as error:
        logger.warning("order %s: confirm of %s failed (%s)", order.reference, pi_id, _error_name(error))
        try:
            payment_intent = gateway.retrieve_payment_intent(pi_id)
        except stripe.StripeError:
            order.log(
                "payment:unknown",
                f"Confirm failed ({_error_name(error)}) and Stripe could not be asked; checking again shortly.",
                actor="customer",
                data={"payment_intent": pi_id, "error": _error_name(error)},
            )
            return gateway.Charge(payment_intent_id=pi_id, status="confirming")
        charge = gateway.Charge(
            payment_intent_id=pi_id,
            status=payment_intent["status"],
            client_secret=payment_intent.get("client_secret") or "",
            payment_intent=payment_intent,
        )
    failpoint("after_confirm_answer")
    _record_status(order, charge.status)
    order.log(
        f"payment:{charge.status}",
        _describe(charge),
        actor="customer",
        data={"payment_intent": pi_id, "attempt": order.payment_attempts, "confirm": order.confirm_attempts},
    )
    return charge


def _error_name(error: stripe.StripeError) -> str:
    """`CardError card_declined HTTP 402`: what the timeline and the log say about an error."""
    parts = [type(error).__name__, getattr(error, "code", None) or ""]
    if error.http_status:
        parts.append(f"HTTP {error.http_status}")
    return " ".join(part for part in parts if part)


def _unsure(order: Order) -> Outcome:
    """Stripe could not be asked. If the table says nothing can have been charged, the customer
    may try again; otherwise the order page says we are checking, and keeps asking."""
    if payment_status.nothing_charged(order.stripe_payment_status):
        return Outcome(order, "retry", message=RETRY_MESSAGE)
    return Outcome(order, "done")


def outcome_of(order: Order, payment_intent) -> Outcome:
    """What to show after Stripe reported `payment_intent` (a dict-like PaymentIntent): a
    succeeded one is fulfilled here (the return path)."""
    step = payment_status.status(payment_intent["status"]).next_step
    if step == payment_status.FULFIL:
        order = fulfil(order, via=Order.Via.RETURN, payment_intent=payment_intent).order
        return Outcome(order, "done")
    if step == payment_status.AUTHENTICATE:
        return Outcome(order, "action", client_secret=payment_intent["client_secret"])
    if payment_intent["status"] == "requires_payment_method":
        return Outcome(order, "declined", message="Your bank did not approve the payment.")
    if step in (payment_status.PAY, payment_status.CONFIRM):
        return Outcome(order, "retry", message=RETRY_MESSAGE)
    return Outcome(order, "done")


def _describe(charge: gateway.Charge) -> str:
    return {
        "succeeded": "Card charged.",
        "requires_action": "The bank asked for 3-D Secure authentication.",
        "processing": "The payment is processing.",
        "declined": f"Card declined: {charge.decline_message}",
    }.get(charge.status, f"PaymentIntent is {charge.status}.")


def sync_with_stripe(order: Order, *, min_interval: float = 3.0) -> Order:
    """The return path: ask Stripe about an unsettled order and act on the answer.

    Takes the order and the least number of seconds between two asks per order (the order
    page calls it on every load). Returns the order as it stands afterwards. Never raises for
    Stripe: an unreachable Stripe leaves the order as it was (the page says we are checking).
    The status is written only if nobody changed it meanwhile (a checkout request holding the
    row may be about to write a newer answer).
    """
    if order.is_settled or not order.stripe_payment_intent_id:
        return order
    if order.state == Order.State.PAID:
        return _fulfil_or_leave(order)
    if order.stripe_payment_status in ("", "creating"):
        return order  # the stored PaymentIntent is a replaced attempt's; nothing to learn from it
    now = timezone.now()
    claimed = (
        Order.objects.filter(pk=order.pk, state=Order.State.PENDING)
        .exclude(stripe_checked_at__gt=now - timezone.timedelta(seconds=min_interval))
        .update(stripe_checked_at=now)
    )
    if not claimed:
        # Not pending any more (the webhook fulfilled it while this waited on its row lock), or
        # asked a moment ago: the row as it stands, not the caller's copy from before.
        return Order.objects.select_related("plan").get(pk=order.pk)
    try:
        payment_intent = gateway.retrieve_payment_intent(order.stripe_payment_intent_id)
    except stripe.StripeError:
        logger.warning("order %s: could not reach Stripe", order.reference, exc_info=True)
        return order
    status = payment_intent["status"]
    if status != order.stripe_payment_status:
        # Recorded before fulfilling: if fulfilment fails, every page still knows the money moved.
        changed = Order.objects.filter(
            pk=order.pk,
            stripe_payment_intent_id=order.stripe_payment_intent_id,
            stripe_payment_status=order.stripe_payment_status,
        ).update(stripe_payment_status=status)
        if not changed and status != "succeeded":
            return Order.objects.select_related("plan").get(pk=order.pk)
        order.stripe_payment_status = status
    if status == "succeeded":
        return _fulfil_or_leave(order, payment_intent=payment_intent)
    if status == "canceled":
        order.close_unpaid(
            actor="system:return",
            message="The payment was cancelled; nothing was charged.",
            unless=lambda locked: locked.stripe_payment_status != "canceled",  # a checkout request moved on
        )
    return order


def _fulfil_or_leave(order: Order, *, payment_intent=None) -> Order:
    """Fulfil from the order page; if that fails, show the order as it stands ("payment
    received, setting up") instead of an error page. Reconciliation retries it."""
    try:
        return fulfil(order, via=Order.Via.RETURN, payment_intent=payment_intent).order
    except Exception:
        logger.exception("order %s: fulfilment from the order page failed; reconciliation will retry", order.reference)
        return Order.objects.select_related("plan").get(pk=order.pk)
