"""fulfil(): the only way an order becomes fulfilled.

Every path calls it — webhook, return page, reconciliation, support — and it is safe to
call any number of times, from any number of processes at once: it locks the order row,
returns early when the work is done, and the database refuses a second subscription or a
second access email even if the lock were somehow bypassed.

Which access email goes out depends only on how long the customer has waited since Stripe
charged the card: up to LATE_FULFILMENT_SECONDS the confirmation, after that the recovery
email ("sorry for the delay"). Never on which path got there first: reconciliation that
fulfils a checkout 5 s after its charge (the second between the charge and the return page)
sends the confirmation; a webhook that arrives an hour late sends the recovery email. The
charge time is Stripe's (`Order.charged_at`, see `charge_time()`), not when we noticed.
The timeline row still records the path.
"""

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.signin import signin_url
from config.failpoints import failpoint
from outbox import emails

from . import access, order_links
from .models import Order, OutboundEmail, Subscription
from .models.orders import format_money

logger = logging.getLogger(__name__)


class PaymentMismatch(Exception):
    """The PaymentIntent does not prove this order was paid (I1)."""


class NotFulfillable(Exception):
    pass


@dataclass
class FulfilResult:
    order: Order
    fulfilled_now: bool
    # The access email this call queued: OutboundEmail.Kind.CONFIRMATION or RECOVERY ("" if none).
    email_kind: str = ""


ACTORS = {
    Order.Via.WEBHOOK: "stripe:webhook",
    Order.Via.RETURN: "system:return",
    Order.Via.RECONCILIATION: "system:reconciliation",
}


def actor_for(via: str, actor: str | None = None) -> str:
    """The timeline's actor for a fulfilment path `via`: `actor` when given, else the path's."""
    return actor or ACTORS.get(via, f"system:{via}")


def check_payment(order: Order, payment_intent) -> None:
    """Refuse to call an order paid unless the PaymentIntent proves it (invariant I1): returns
    None when it does; raises PaymentMismatch naming every difference (status not succeeded,
    amount or currency not the order's, a PaymentIntent of another order)."""
    problems = []
    if payment_intent["status"] != "succeeded":
        problems.append(f"status is {payment_intent['status']}")
    if payment_intent["amount"] != order.amount_cents:
        problems.append(f"amount {format_money(payment_intent['amount'], payment_intent['currency'])} != {order.price}")
    if str(payment_intent["currency"]).lower() != order.currency.lower():
        problems.append(f"currency {payment_intent['currency']} != {order.currency}")
    if order.stripe_payment_intent_id and payment_intent["id"] != order.stripe_payment_intent_id:
        metadata_order = (payment_intent.get("metadata") or {}).get("order_id")
        if metadata_order != str(order.id):
            problems.append(f"PaymentIntent {payment_intent['id']} belongs to another order")
    if problems:
        raise PaymentMismatch(f"{order.reference}: " + "; ".join(problems))


def _moment(value) -> datetime | None:
    """A Stripe time (Unix seconds, as Stripe sends `created`) or a datetime, as an aware datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        return datetime.fromtimestamp(int(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def charge_time(payment_intent, charged_at=None) -> datetime | None:
    """When Stripe charged the card for this PaymentIntent, by Stripe's clock.

    Takes the PaymentIntent (dict-like) and, when the caller has it, `charged_at`: the
    `created` of its `payment_intent.succeeded` event (Unix seconds or a datetime), which is
    the moment it succeeded. Without it: the `created` of the PaymentIntent's charge
    (`latest_charge`, when Stripe expanded it), else of the PaymentIntent itself: PaidUp's
    checkout confirms right after creating it, so that is the charge's second, or earlier
    when 3-D Secure held the charge (then the estimate errs towards the recovery email,
    which is never wrong to send). Returns None when nothing says (never our own clock).
    """
    if (moment := _moment(charged_at)) is not None:
        return moment
    charge = payment_intent.get("latest_charge") if hasattr(payment_intent, "get") else None
    if charge is not None and not isinstance(charge, str) and hasattr(charge, "get"):
        if (moment := _moment(charge.get("created"))) is not None:
            return moment
    return _moment(payment_intent.get("created")) if hasattr(payment_intent, "get") else None


def record_payment(
    order: Order, payment_intent, *, via: str, actor: str | None = None, charged_at=None, save: bool = True
) -> Order:
    """pending → paid, given a succeeded PaymentIntent (dict-like); `charged_at` as for
    `charge_time()`. Stores Stripe's charge time on the order. Raises PaymentMismatch when the
    PaymentIntent does not prove this order paid (I1). Caller holds the row lock. `save=False`
    leaves the UPDATE to the caller's next transition (Order.transition)."""
    if order.state != Order.State.PENDING:
        return order
    check_payment(order, payment_intent)
    order.stripe_payment_intent_id = payment_intent["id"]
    order.stripe_payment_status = payment_intent["status"]
    order.charged_at = order.charged_at or charge_time(payment_intent, charged_at)
    order.transition(
        Order.State.PAID,
        actor=actor_for(via, actor),
        message=f"Stripe confirmed the payment of {order.price} ({payment_intent['id']}).",
        data={"payment_intent": payment_intent["id"], "via": via},
        also=("stripe_payment_intent_id", "stripe_payment_status", "charged_at"),
        save=save,
    )
    return order


def is_late(order: Order, now: datetime | None = None) -> tuple[bool, int | None]:
    """Whether the customer has waited longer than LATE_FULFILMENT_SECONDS since Stripe
    charged them (`order.charged_at`; for an order paid before that was recorded, when it was
    recorded paid). Returns (late, seconds waited or None when unknown; unknown is not late)."""
    since = order.charged_at or order.paid_at
    if since is None:
        return False, None
    waited = int(((now or timezone.now()) - since).total_seconds())
    return waited > settings.LATE_FULFILMENT_SECONDS, waited


def fulfil(order: Order, *, via: str, payment_intent=None, actor: str | None = None, charged_at=None) -> FulfilResult:
    """Make a paid order fulfilled: user, subscription, access email. Idempotent.

    With `payment_intent` (a succeeded PaymentIntent, dict-like), a pending order is first
    recorded as paid in the same transaction. `charged_at` is the `created` of the
    PaymentIntent's succeeded event when the caller has it (Unix seconds or a datetime; see
    `charge_time()`). The access email is the confirmation, or the recovery email when the
    customer waited more than LATE_FULFILMENT_SECONDS since the charge (`is_late()`),
    whichever path `via` is. A customer whose access still runs gets the new period after it
    (`billing.access.period_for`), and a second paid order for one email within 24 hours is
    flagged for support (`billing.access.flag_double_purchase`). Raises PaymentMismatch (the
    PaymentIntent does not prove the payment, I1) and NotFulfillable (the order is not paid).
    """
    via = Order.Via(via)
    with transaction.atomic():
        result = _fulfil_locked(
            _locking().get(pk=order.pk), via=via, payment_intent=payment_intent, actor=actor, charged_at=charged_at
        )
    if result.fulfilled_now:
        logger.info("order %s fulfilled via %s (%s email)", result.order.reference, via, result.email_kind)
    return result


def _locking():
    # of=("self",): lock the order, not the plan joined to it (PostgreSQL's FOR UPDATE locks
    # every joined row), so fulfilments of different customers never wait for each other.
    return Order.objects.select_for_update(of=("self",)).select_related("plan")


# size: one transaction read top to bottom (payment, user, subscription, email): the lock's reach shows.
def _fulfil_locked(order: Order, *, via: str, payment_intent, actor: str | None, charged_at) -> FulfilResult:
    """fulfil()'s work on `order`, freshly read under its row lock (`_locking()`) inside the
    caller's transaction."""
    if order.state == Order.State.FULFILLED:
        return FulfilResult(order, fulfilled_now=False)
    if order.state == Order.State.PENDING and payment_intent is not None:
        # Its UPDATE goes with the fulfilled (or refunded) one below: one statement for both.
        record_payment(order, payment_intent, via=via, actor=actor, charged_at=charged_at, save=False)
    elif order.charged_at is None and order.state == Order.State.PAID:
        # Paid before anyone knew Stripe's charge time (or by a path that had none). The
        # charge cannot have come after we recorded the payment: never later than paid_at.
        moment = charge_time(payment_intent, charged_at) if payment_intent is not None else _moment(charged_at)
        if moment is not None:
            order.charged_at = min(moment, order.paid_at) if order.paid_at else moment
            order.save(update_fields=["charged_at", "updated_at"])
    if order.state == Order.State.PAID and order.refunded_cents >= order.amount_cents:
        # Stripe refunded all of it before any fulfilment got through (reconciliation
        # records refunds even while fulfilment keeps failing): no access for money returned.
        order.transition(
            Order.State.REFUNDED,
            actor=actor_for(via, actor),
            message="Refunded in full before it could be fulfilled; no access was given.",
            data={"via": via},
        )
        return FulfilResult(order, fulfilled_now=False)
    if order.state != Order.State.PAID:
        raise NotFulfillable(f"{order.reference} is {order.state}, not paid")

    # The customer's row lock chains two fulfilments for one customer: a second year starts
    # where the first ends (billing.access), never beside it.
    user, new_customer = access.lock_customer(order.email)
    now = timezone.now()
    starts_at, ends_at = access.period_for(user, order.plan.duration_days, now, new_customer=new_customer)
    Subscription.objects.create(order=order, user=user, starts_at=starts_at, ends_at=ends_at)
    later = starts_at > now  # the customer's access already ran: this period comes after it
    is_recovery, waited = is_late(order)
    order.fulfilled_via = via
    order.transition(
        Order.State.FULFILLED,
        actor=actor_for(via, actor),
        message=f"Fulfilled via {via}"
        + (f", {waited} s after the charge" if waited is not None else "")
        + (" (late: recovery email)" if is_recovery else "")
        + (f"; access added after the current access, {starts_at:%d %b %Y} to {ends_at:%d %b %Y}" if later else "")
        + ".",
        data={"via": via, "recovery": is_recovery, "waited_seconds": waited},
    )
    access.flag_double_purchase(order)
    failpoint("fulfil_before_commit")
    kind = OutboundEmail.Kind.RECOVERY if is_recovery else OutboundEmail.Kind.CONFIRMATION
    send = emails.send_recovery if is_recovery else emails.send_confirmation
    send(
        order,
        signin_url=signin_url(user),
        subscription=getattr(order, "subscription", None),
        order_url=order_links.order_url(order),
    )
    return FulfilResult(order, fulfilled_now=True, email_kind=kind)


def find_order(payment_intent) -> Order | None:
    """The order a PaymentIntent pays for: by its id, else by the order id in its metadata."""
    metadata = payment_intent.get("metadata") or {}
    return (
        Order.objects.filter(stripe_payment_intent_id=payment_intent["id"]).first()
        or Order.objects.filter(pk=_uuid_or_none(metadata.get("order_id"))).first()
    )


def fulfil_from_payment_intent(payment_intent, *, via: str, charged_at=None) -> FulfilResult | None:
    """Fulfil the order a succeeded PaymentIntent pays for; `charged_at` as for `fulfil()`.

    Returns None when no order matches (an unknown payment: reconciliation's job). The same
    as `fulfil(find_order(payment_intent), …)`, with one query fewer: the order is found and
    locked in one statement (by PaymentIntent id, else by the order id in its metadata).
    """
    via = Order.Via(via)
    metadata = payment_intent.get("metadata") or {}
    with transaction.atomic():
        order = (
            _locking().filter(stripe_payment_intent_id=payment_intent["id"]).first()
            or _locking().filter(pk=_uuid_or_none(metadata.get("order_id"))).first()
        )
        if order is None:
            logger.warning("succeeded PaymentIntent %s matches no order", payment_intent["id"])
            return None
        result = _fulfil_locked(order, via=via, payment_intent=payment_intent, actor=None, charged_at=charged_at)
    if result.fulfilled_now:
        logger.info("order %s fulfilled via %s (%s email)", order.reference, via, result.email_kind)
    return result


def _uuid_or_none(value) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except (TypeError, ValueError):
        return None
