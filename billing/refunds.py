"""Refunds: the one place where money goes back and where a refund is recorded.

Two ways in, one rule each:

- `refund_payment()`: a person asked for a refund (the console's refund action). Under the
  order's row lock it checks that there is a payment and that the amount fits, asks Stripe with
  the caller's idempotency key (so a replayed request refunds once), then records the refund.
- `record_refund()`: a refund Stripe made or changed, whoever made it (ours above; the Stripe
  dashboard or API, told by a webhook or found by reconciliation's refund scan), is recorded
  here, keyed by Stripe's refund id (re_…), under the order's row lock:

  - first heard of, sent or on its way (pending, requires_action, succeeded): one `Refund` row,
    the order's total goes up, a full refund moves the order to `refunded` and ends access
    today, and the customer gets **one email for this refund** (outbox key `refund:<id>`;
    DESIGN.md, "Stripe's answers": one customer email per refund);
  - later failed or cancelled (Stripe's final statuses): the row says so, the money leaves the
    order's total again, and support is alerted, because the customer was told money is coming.
    An older event arriving late (pending after failed) changes nothing: a refund only moves
    forward (pending → succeeded → failed);
  - what cannot be true (another currency, more than the charge, an unknown status, a payment
    we have no order for, missing fields) is refused: a log line, a timeline row when there is
    an order, one alert per refund id, and nothing counted. Never an exception to a webhook,
    which Stripe would retry for days.

  The order's `refunded_cents` is always the sum of its counted refunds, recomputed under the
  lock, so it can be neither negative nor above the charge.

Invariant I4: refunds never exceed the charge, and local refunds equal Stripe's. Permissions,
confirmation and the audit of who asked stay with the console (support/actions.py).
"""

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import stripe
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone

from outbox import emails

from . import access, gateway, order_links
from .alerts import raise_alert
from .models import Alert, Order, Refund
from .models.orders import format_money

logger = logging.getLogger(__name__)

# How far along a refund is. Stripe moves a refund forward only (pending → succeeded, either
# → failed or canceled; https://docs.stripe.com/refunds#failed-refunds), so an event with a
# lower rank than the stored status is an older snapshot delivered late.
RANK = {"pending": 0, "requires_action": 0, "succeeded": 1, "failed": 2, "canceled": 2}

# What record_refund did: the webhook and reconciliation count and log these.
RECORDED, UPDATED, UNCHANGED, REFUSED = "recorded", "updated", "unchanged", "refused"


class RefundRefused(Exception):
    """The refund cannot be made; the message says why, in words for a support person."""


def refund_payment(
    order: Order, *, amount_cents: int, reason: str, idempotency_key: str, actor: str, metadata: dict | None = None
):
    """Refund `amount_cents` (integer minor units, in the order's currency) of `order`'s payment
    in Stripe, then record it (`record_refund`). Returns Stripe's Refund object.

    Locks the order row (`select_for_update`) inside a transaction, so two refunds at once cannot
    both pass the amount check; call it inside the caller's own `transaction.atomic()` when the
    caller writes rows that must roll back with a refused refund. `idempotency_key` is sent to
    Stripe: the same key with the same amount refunds once (Stripe replays its saved answer).

    Raises RefundRefused when the order has no payment to refund (not paid or fulfilled, or no
    PaymentIntent), when `amount_cents` is not positive or is more than what is left to refund,
    and when Stripe refuses the request (any `stripe.StripeError`; nothing is recorded then).
    """
    if amount_cents <= 0:
        raise RefundRefused("The refund amount must be more than zero.")
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order.pk)
        if order.state not in (Order.State.PAID, Order.State.FULFILLED) or not order.stripe_payment_intent_id:
            raise RefundRefused(f"{order.reference} is {order.state}: there is no payment to refund.")
        refundable = order.refundable_cents
        if amount_cents > refundable:
            raise RefundRefused(
                f"At most {format_money(refundable, order.currency)} can be refunded "
                f"({order.price} charged, {format_money(order.refunded_cents, order.currency)} already refunded)."
            )
        try:
            stripe_refund = gateway.create_refund(
                order.stripe_payment_intent_id, amount_cents, idempotency_key=idempotency_key, metadata=metadata or {}
            )
        except stripe.StripeError as error:
            raise RefundRefused(f"Stripe refused the refund: {error.user_message or error}") from error
        record_refund(order, stripe_refund, actor=actor, reason=reason)
    return stripe_refund


@dataclass(frozen=True)
class Facts:
    """What PaidUp reads from a Stripe Refund: id (re_…), amount (minor units), currency,
    status, failure_reason, created (datetime or None), and the payment it refunds."""

    id: str
    amount: int
    currency: str
    status: str
    failure_reason: str
    created: datetime | None
    payment_intent: str
    charge: str


class RefundProblem(Exception):
    """A Stripe refund that cannot be recorded as it is; the message says why."""


def id_of(value) -> str:
    """An expandable field (an id, or the expanded object) as its id; "" when absent."""
    if isinstance(value, str):
        return value
    return (value.get("id") or "") if hasattr(value, "get") else ""


def facts(refund) -> Facts:
    """Read a Stripe Refund (stripe.Refund, StripeObject, dict, or the test fake) into Facts.
    Raises RefundProblem when a field PaidUp needs is missing or malformed (id, amount,
    currency); a missing status is Stripe's default for a new card refund, succeeded."""
    get = refund.get if hasattr(refund, "get") else lambda name, default=None: getattr(refund, name, default)
    refund_id, amount, currency = get("id"), get("amount"), get("currency")
    if not isinstance(refund_id, str) or not refund_id:
        raise RefundProblem("the refund has no id")
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise RefundProblem(f"refund {refund_id} has no positive amount ({amount!r})")
    if not isinstance(currency, str) or not currency:
        raise RefundProblem(f"refund {refund_id} has no currency")
    created = get("created")
    return Facts(
        id=refund_id,
        amount=amount,
        currency=currency.lower(),
        status=str(get("status") or "succeeded"),
        failure_reason=str(get("failure_reason") or ""),
        created=datetime.fromtimestamp(created, UTC) if isinstance(created, int) else None,
        payment_intent=id_of(get("payment_intent")),
        charge=id_of(get("charge")),
    )


def order_for_payment(payment_intent: str, charge: str = "") -> Order | None:
    """The order paid by PaymentIntent `payment_intent` (an id, "" when unknown), else by charge
    `charge` through dj-stripe's Charge mirror (filled by "Refresh from Stripe"). None when
    PaidUp has no order for that payment. No Stripe request."""
    if payment_intent:
        return Order.objects.filter(stripe_payment_intent_id=payment_intent).first()
    if charge:
        from djstripe.models import Charge

        pi = Charge.objects.filter(id=charge).values_list("payment_intent_id", flat=True).first()
        if pi:
            return Order.objects.filter(stripe_payment_intent_id=pi).first()
    return None


def record_stripe_refund(refund, *, actor: str, source: str) -> str:
    """Record a Stripe Refund that came without its order (a webhook's `refund.*` or
    `charge.refund.updated` event): find the order (`order_for_payment`), then `record_refund`.
    `source` names what told us, for the log and the alert ("event evt_…").

    Returns RECORDED, UPDATED, UNCHANGED or REFUSED. A refund PaidUp cannot read, or for a
    payment it has no order for, is REFUSED with a log line and one alert per refund id
    (reconciliation's refund scan records it if the order appears within its window). Raises
    only database errors."""
    try:
        found = facts(refund)
    except RefundProblem as problem:
        return refuse(None, str(problem), key=f"refund_problem:{source}", source=source)
    order = order_for_payment(found.payment_intent, found.charge)
    if order is None:
        return refuse(
            None,
            f"Stripe refund {found.id} of {format_money(found.amount, found.currency)} ({found.status}) is for "
            f"{found.payment_intent or found.charge or 'no payment named'}, which has no order here. Nothing recorded.",
            key=f"refund_problem:{found.id}",
            source=source,
        )
    return record_refund(order, refund, actor=actor)


def refuse(order: Order | None, message: str, *, key: str, source: str = "") -> str:
    """Log `message`; alert support and put it on the order's timeline (when there is an order)
    once per `key`. Returns REFUSED."""
    logger.error("refund not recorded (%s): %s", source or "no source", message)
    if raise_alert(Alert.Reason.REFUND_PROBLEM, message, order=order, key=key) and order is not None:
        # Once per key: reconciliation meets the same refund every minute.
        order.log("refund:refused", message, actor="system:refunds", data={"source": source})
    return REFUSED


def record_refund(order: Order, refund, *, actor: str, reason: str = "") -> str:
    """Record Stripe's `refund` (stripe.Refund, StripeObject or dict with Stripe's fields: `id`,
    `amount` in minor units, `currency`, `status`, `failure_reason`, `created`) on `order`, as
    the module docstring says. `actor` goes in the timeline; `reason` on a new row.

    Returns RECORDED (a new refund), UPDATED (its status moved on), UNCHANGED (already known, or
    an older snapshot) or REFUSED (logged and alerted, nothing counted). Raises only database
    errors."""
    try:
        found = facts(refund)
    except RefundProblem as problem:
        return refuse(order, f"Stripe sent a refund PaidUp cannot read: {problem}.", key=f"refund_problem:{order.pk}")
    with transaction.atomic():
        order = Order.objects.select_for_update().select_related("plan").get(pk=order.pk)
        row = Refund.objects.filter(stripe_refund_id=found.id).first()
        if row is None:
            return _record_new(order, found, actor=actor, reason=reason)
        if row.order_id != order.pk:
            message = f"Stripe refund {found.id} is already recorded on another order."
            return refuse(order, message, key=f"refund_problem:{found.id}")
        return _move_on(order, row, found, actor=actor)


def _record_new(order: Order, found: Facts, *, actor: str, reason: str) -> str:
    money = format_money(found.amount, found.currency)
    key = f"refund_problem:{found.id}"
    if found.status not in RANK:
        return refuse(
            order,
            f"Stripe refund {found.id} of {money} has a status PaidUp does not know: {found.status!r}. "
            "Nothing recorded; check it in the Stripe dashboard.",
            key=key,
        )
    if found.currency != order.currency:
        return refuse(
            order, f"Stripe refund {found.id} is in {found.currency}, the order in {order.currency}.", key=key
        )
    counted = found.status in Refund.COUNTED
    if counted and _counted_total(order) + found.amount > order.amount_cents:
        return refuse(
            order,
            f"Stripe refund {found.id} of {money} would make {format_money(_counted_total(order), order.currency)} "
            f"already refunded more than the {order.price} charged. Nothing recorded.",
            key=key,
        )
    try:
        with transaction.atomic():
            row = Refund.objects.create(
                order=order,
                stripe_refund_id=found.id,
                amount_cents=found.amount,
                currency=found.currency,
                status=found.status,
                failure_reason=found.failure_reason,
                reason=reason,
                actor=actor,
                created_at=found.created or timezone.now(),
            )
    except IntegrityError:  # recorded meanwhile on another order's lock: that one wins
        return UNCHANGED
    _set_total(order)
    order.log(
        "refund",
        f"Refund {found.id} of {money} recorded, {row.get_status_display().lower()} ({reason or 'no reason'}).",
        actor=actor,
        data={"refund": found.id, "amount": found.amount, "status": found.status},
    )
    if not counted:  # first heard of after it failed: the customer was never told by us
        _alert_failed(order, row, told=False)
        return RECORDED
    if order.refunded_cents >= order.amount_cents and order.state in (Order.State.PAID, Order.State.FULFILLED):
        order.transition(Order.State.REFUNDED, actor=actor, message="Fully refunded; access ends today.")
        access.close_double_purchases(order)  # one payment is left of the pair: nothing to decide
        if hasattr(order, "subscription"):
            customer = access.customer_for_update(order.subscription.user.email)
            order.subscription.ends_at = min(order.subscription.ends_at, timezone.now())
            order.subscription.save(update_fields=["ends_at"])
            access.rechain(customer, actor=actor)  # a year bought on top now starts today, not after a gap
    _email(order, row)
    return RECORDED


def _move_on(order: Order, row: Refund, found: Facts, *, actor: str) -> str:
    if found.status == row.status:
        return UNCHANGED
    if found.status not in RANK:
        return refuse(
            order,
            f"Stripe says refund {found.id} is now {found.status!r}, a status PaidUp does not know; it stays "
            f"{row.status} here. Check it in the Stripe dashboard.",
            key=f"refund_problem:{found.id}:{found.status}"[:200],
        )
    if RANK[found.status] < RANK[row.status]:
        logger.info("refund %s: %s is older than the %s recorded; ignored", found.id, found.status, row.status)
        return UNCHANGED
    was_counted = row.counts
    row.status, row.failure_reason = found.status, found.failure_reason or row.failure_reason
    row.save(update_fields=["status", "failure_reason"])
    _set_total(order)
    order.log(
        "refund:status",
        f"Refund {row.stripe_refund_id} of {row.price} is now {row.get_status_display().lower()}"
        + (f" ({row.failure_reason})." if row.failure_reason else "."),
        actor=actor,
        data={"refund": row.stripe_refund_id, "status": row.status, "refunded_cents": order.refunded_cents},
    )
    if was_counted and not row.counts:
        _alert_failed(order, row, told=True)
    return UPDATED


def _counted_total(order: Order) -> int:
    return Refund.objects.filter(order=order, status__in=Refund.COUNTED).aggregate(t=Sum("amount_cents"))["t"] or 0


def _set_total(order: Order) -> None:
    """The order's refunded total is the sum of its counted refunds: never negative, and never
    above the charge, since a refund that would pass it is refused before it is counted."""
    total = _counted_total(order)
    if total != order.refunded_cents:
        order.refunded_cents = total
        order.save(update_fields=["refunded_cents", "updated_at"])


def _alert_failed(order: Order, row: Refund, *, told: bool) -> None:
    ended = " The order stays refunded and its access stays ended." if order.state == Order.State.REFUNDED else ""
    raise_alert(
        Alert.Reason.REFUND_FAILED,
        f"Refund {row.stripe_refund_id} of {row.price} on {order.reference} {row.status}"
        + (f" ({row.failure_reason})" if row.failure_reason else "")
        + ": the money is back in our Stripe balance and the customer did not get it. "
        + ("They were emailed that it was on its way. " if told else "We never told them about it. ")
        + f"Refunded total now {format_money(order.refunded_cents, order.currency)}.{ended}",
        order=order,
        key=f"refund_failed:{row.stripe_refund_id}",
    )


def _email(order: Order, row: Refund) -> None:
    """The customer's email for this refund (one per refund id, by the outbox key)."""
    subscription = getattr(order, "subscription", None)
    emails.send_refund(
        order,
        key=f"refund:{row.stripe_refund_id}",
        amount=row.price,
        refunded=format_money(order.refunded_cents, order.currency),
        card_last4=order.card_last4,
        full=order.refunded_cents >= order.amount_cents,
        had_access=subscription is not None,
        access_until=subscription.ends_at if subscription and order.state == Order.State.FULFILLED else None,
        order_url=order_links.order_url(order),
    )


def note_card(order: Order, last4) -> None:
    """Remember the last four digits of the card that paid `order` (from a Stripe charge), for
    the refund email. Ignores anything but four digits; never overwrites a known value."""
    if isinstance(last4, str) and len(last4) == 4 and last4.isdigit() and not order.card_last4:
        Order.objects.filter(pk=order.pk, card_last4="").update(card_last4=last4)
        order.card_last4 = last4
