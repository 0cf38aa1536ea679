"""The Stripe side of an order, for the console: dj-stripe's local mirror, its refresh, and
the live PaymentIntent status when the diagnosis needs it.

Nothing here may break the order page. Stripe can be down or slow, and dj-stripe's sync can
refuse an object (against localstripe it fails on card-token payments: "Trying to fit 'card'
into 'PaymentMethod'"); each problem becomes a sentence for the support person.
"""

import logging
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from django.db import transaction
from django.urls import NoReverseMatch, reverse

from billing import gateway
from billing.models import Order

logger = logging.getLogger(__name__)

# The order page waits this long for Stripe's answer, then shows the page without it.
LIVE_STATUS_TIMEOUT = 4.0
_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="support-stripe")


@dataclass
class MirrorRow:
    kind: str  # "PaymentIntent", "Charge", "Refund", "Customer"
    id: str
    status: str
    amount: str
    created: object
    admin_url: str | None


@dataclass
class LiveStatus:
    status: str | None  # the PaymentIntent's status, or None when not asked / not known
    problem: str = ""  # why it is not known, for the page


def _money(cents, currency) -> str:
    from billing.models.orders import format_money

    if cents is None or not currency:
        return ""
    return format_money(int(cents), currency)


def _admin_url(user, obj) -> str | None:
    opts = obj._meta
    if not user.has_perm(f"{opts.app_label}.view_{opts.model_name}"):
        return None
    try:
        return reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
    except NoReverseMatch:
        return None


def mirrored(order: Order, user) -> list[MirrorRow]:
    """dj-stripe's rows for this order's PaymentIntent, charges, refunds and customer.

    Four indexed queries; an order never mirrored yet shows nothing (the page offers Refresh).
    """
    from djstripe.models import Charge, Customer, PaymentIntent, Refund

    pi_id = order.stripe_payment_intent_id
    rows: list[MirrorRow] = []
    customer_ids = {order.stripe_customer_id} - {""}
    if pi_id:
        for pi in PaymentIntent.objects.filter(id=pi_id):
            data = pi.stripe_data or {}
            rows.append(
                MirrorRow(
                    "PaymentIntent",
                    pi.id,
                    data.get("status", ""),
                    _money(data.get("amount"), data.get("currency")),
                    pi.created,
                    _admin_url(user, pi),
                )
            )
            if pi.customer_id:
                customer_ids.add(pi.customer_id)
        for charge in Charge.objects.filter(payment_intent_id=pi_id).order_by("created"):
            data = charge.stripe_data or {}
            rows.append(
                MirrorRow(
                    "Charge",
                    charge.id,
                    data.get("status", ""),
                    _money(data.get("amount"), data.get("currency")),
                    charge.created,
                    _admin_url(user, charge),
                )
            )
        refund_ids = list(order.refunds.values_list("stripe_refund_id", flat=True))
        for refund in Refund.objects.filter(id__in=refund_ids).order_by("created"):
            data = refund.stripe_data or {}
            rows.append(
                MirrorRow(
                    "Refund",
                    refund.id,
                    data.get("status", ""),
                    _money(data.get("amount"), data.get("currency")),
                    refund.created,
                    _admin_url(user, refund),
                )
            )
    for customer in Customer.objects.filter(id__in=customer_ids):
        data = customer.stripe_data or {}
        rows.append(
            MirrorRow(
                "Customer", customer.id, data.get("email") or "", "", customer.created, _admin_url(user, customer)
            )
        )
    return rows


def live_status(order: Order) -> LiveStatus:
    """Ask Stripe for the PaymentIntent's status, only when the diagnosis depends on it.

    A paid, fulfilled or refunded order is settled by our own records; a pending or failed
    one with a PaymentIntent may have succeeded in Stripe without us hearing of it.
    """
    if order.state not in (Order.State.PENDING, Order.State.FAILED) or not order.stripe_payment_intent_id:
        return LiveStatus(None)
    future = _pool.submit(gateway.retrieve_payment_intent, order.stripe_payment_intent_id)
    try:
        return LiveStatus(future.result(timeout=LIVE_STATUS_TIMEOUT)["status"])
    except FutureTimeout:
        return LiveStatus(None, f"Stripe did not answer within {LIVE_STATUS_TIMEOUT:.0f} s.")
    except Exception as error:  # noqa: BLE001  (shown on the page; the page must render)
        logger.warning("order %s: live Stripe status unavailable: %s", order.reference, error)
        return LiveStatus(None, f"Stripe could not be asked: {short_error(error)}")


def card_last4(order: Order) -> str | None:
    """The last four digits of the card that paid `order` ("4242"), for the refund's question:
    `Order.card_last4` when recorded, else asked of Stripe; None when the order has no payment,
    Stripe does not say, or does not answer within LIVE_STATUS_TIMEOUT seconds. Never raises:
    the question then names "the card it was paid with"."""
    if order.card_last4:  # already known (charge.refunded records it): no need to ask Stripe again
        return order.card_last4
    if not order.stripe_payment_intent_id:
        return None
    future = _pool.submit(gateway.card_last4, order.stripe_payment_intent_id)
    try:
        return future.result(timeout=LIVE_STATUS_TIMEOUT) or None
    except Exception as error:  # noqa: BLE001  (the refund can be confirmed without the digits)
        logger.warning("order %s: card digits unavailable: %s", order.reference, error)
        return None


def short_error(error: Exception) -> str:
    """A Stripe (or any) error as one line for a support person: Stripe's `user_message` when it
    has one, else the text; at most 200 characters."""
    text = getattr(error, "user_message", None) or str(error) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "…"


def stripe_id(value) -> str | None:
    """The id of an expandable Stripe field: the string itself, the object's `id`, or None when empty."""
    if not value:
        return None
    return value if isinstance(value, str) else value.get("id")


def _sync(model, data, label: str) -> tuple[bool, str]:
    """Store one Stripe object in dj-stripe's mirror; a refusal is a message, not an error."""
    try:
        with transaction.atomic():
            model.sync_from_stripe_data(data)
    except Exception as error:  # noqa: BLE001  (dj-stripe raises many kinds; all are shown)
        logger.warning("dj-stripe could not store %s %s: %s", label, data.get("id"), error)
        return False, f"Could not copy {label} {data.get('id')} into dj-stripe: {short_error(error)}"
    return True, f"{label} {data.get('id')} refreshed"


def refresh(order: Order) -> list[tuple[bool, str]]:
    """Re-read this order's Stripe objects and sync them into dj-stripe's tables.

    Returns (ok, sentence) pairs. Never raises for Stripe or dj-stripe trouble.
    """
    from djstripe.models import Charge, Customer, PaymentIntent, Refund

    if not order.stripe_payment_intent_id:
        return [(False, "This order has no Stripe payment to refresh.")]
    try:
        pi = gateway.retrieve_payment_intent(order.stripe_payment_intent_id)
    except Exception as error:  # noqa: BLE001
        logger.warning("refresh %s: Stripe unreachable: %s", order.reference, error)
        return [(False, f"Could not reach Stripe: {short_error(error)}. Nothing was changed; try again in a minute.")]

    results = [_sync(PaymentIntent, pi, "PaymentIntent")]
    charge_ids = [stripe_id(pi.get("latest_charge"))]
    charges = pi.get("charges")
    if charges:
        charge_ids += [stripe_id(c) for c in (charges.get("data") or [])]
    for charge_id in dict.fromkeys(c for c in charge_ids if c):
        results.append(_fetch_and_sync(gateway.retrieve_charge, charge_id, Charge, "charge"))
    if customer_id := stripe_id(pi.get("customer")):
        results.append(_fetch_and_sync(gateway.retrieve_customer, customer_id, Customer, "customer"))
    for refund_id in order.refunds.values_list("stripe_refund_id", flat=True):
        results.append(_fetch_and_sync(_retrieve_refund, refund_id, Refund, "refund"))
    return results


def _fetch_and_sync(fetch, object_id: str, model, label: str) -> tuple[bool, str]:
    try:
        data = fetch(object_id)
    except Exception as error:  # noqa: BLE001
        return False, f"Could not read {label} {object_id} from Stripe: {short_error(error)}"
    return _sync(model, data, label)


def _retrieve_refund(refund_id: str):
    return gateway.call(gateway.client().v1.refunds.retrieve, refund_id)
