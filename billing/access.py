"""Access: how long a customer's paid access runs, and how another year joins it.

Each fulfilled order has one `Subscription` (starts_at, ends_at). A customer who buys again
while their access still runs gets the new period *after* the one they have: it starts where
their latest access ends (`access_until()`), so the years add up instead of running side by
side and ending on the same day (issue 10: a second year bought by accident bought nothing).

`period_for()` is called by `fulfil()` under a lock on the customer's `User` row
(`customer_for_update()`), so two payments fulfilled at the same moment chain one after the
other (old end + 2 years), never both from the same end and never lost.

Two paid orders for one email within `DOUBLE_PURCHASE_WINDOW` are most likely a second
purchase by accident: `flag_double_purchase()` raises one alert per pair, on the later order,
which the support queue shows with a one-click refund of that order. A full refund of either
order of the pair, or support's "Resolved", closes it.
"""

from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from accounts.addresses import normalize_email
from accounts.models import User

from . import alerts
from .models import Alert, Order, Subscription

DOUBLE_PURCHASE_WINDOW = timedelta(hours=24)


def access_until(email: str, now: datetime | None = None) -> datetime | None:
    """When the paid access of the customer with `email` (any spelling) ends: the latest
    `ends_at` of their fulfilled orders' subscriptions, if it is after `now` (default: now).
    Returns None when they have no access running (no account, expired, refunded)."""
    email = normalize_email(email)
    if not email:
        return None
    now = now or timezone.now()
    latest = Subscription.objects.filter(
        user__email=email, order__state=Order.State.FULFILLED, ends_at__gt=now
    ).aggregate(latest=Max("ends_at"))["latest"]
    return latest


def customer_for_update(email: str) -> User:
    """The customer's `User` for `email` (created if new), locked (`select_for_update`) until
    the caller's transaction ends: the lock that chains two fulfilments for one customer.
    Call inside `transaction.atomic()`."""
    return lock_customer(email)[0]


def lock_customer(email: str) -> tuple[User, bool]:
    """`customer_for_update()`, and whether this transaction created the `User` (True: a new
    customer, who has no access period yet). Call inside `transaction.atomic()`."""
    # One locking read finds an existing customer (a new one is inserted, and so held, by this
    # transaction); a concurrent insert of the same email makes get_or_create read it again,
    # under the lock, once the other transaction ends.
    return User.objects.select_for_update().get_or_create(email=normalize_email(email))


def period_for(
    user: User, duration_days: int, now: datetime | None = None, *, new_customer: bool = False
) -> tuple[datetime, datetime]:
    """(starts_at, ends_at) of a new `duration_days` period for `user`: from the end of the
    access they already have, else from `now`. The caller holds `customer_for_update()`'s lock.
    `new_customer=True` (the caller's transaction just created `user`, `lock_customer()`) skips
    the query: a `User` row inserted by this transaction has no `Subscription` yet."""
    now = now or timezone.now()
    until = None if new_customer else access_until(user.email, now)
    starts_at = max(until or now, now)
    return starts_at, starts_at + timedelta(days=duration_days)


def rechain(user: User, *, actor: str, now: datetime | None = None) -> list[Subscription]:
    """Make `user`'s running and future access periods follow each other with no overlap and no
    gap, keeping each period's length: the first running period stays; every later one starts
    where the one before it ends (from `now` at the earliest). Called after a full refund ends a
    period early (a year bought on top moves forward instead of leaving a gap) and after an
    order's access moves to an account that already has access (its days come after that
    access instead of running beside it). The caller holds `customer_for_update()`'s lock.
    Returns the periods it moved; each move is a timeline row on its order, with `actor`."""
    now = now or timezone.now()
    periods = list(
        Subscription.objects.select_for_update()
        .filter(user=user, order__state=Order.State.FULFILLED, ends_at__gt=now)
        .select_related("order")
        .order_by("starts_at", "order__paid_at", "pk")
    )
    moved, free_from = [], now  # the moment the access so far runs until
    for period in periods:
        if period.starts_at <= now and free_from == now:
            free_from = period.ends_at  # the period running now stays as it is
            continue
        length = period.ends_at - period.starts_at
        if period.starts_at != free_from:
            period.starts_at, period.ends_at = free_from, free_from + length
            period.save(update_fields=["starts_at", "ends_at"])
            period.order.log(
                "access:moved",
                f"Access period moved to {timezone.localtime(period.starts_at):%d %b %Y} – "
                f"{timezone.localtime(period.ends_at):%d %b %Y}, after the access before it, so no paid day is lost "
                "or runs beside another.",
                actor=actor,
                data={"starts_at": period.starts_at.isoformat(), "ends_at": period.ends_at.isoformat()},
            )
            moved.append(period)
        free_from = period.ends_at
    return moved


def confirmed_extension(order: Order, until: datetime) -> None:
    """Write on `order`'s timeline that the customer, told their access runs until `until`,
    confirmed at checkout that they want another period after it (once per order)."""
    if order.events.filter(kind="checkout:extend_confirmed").exists():
        return
    order.log(
        "checkout:extend_confirmed",
        f"Told that {order.email} already has access until {timezone.localtime(until):%d %b %Y}, the customer "
        "confirmed buying another period; it will start when the current access ends.",
        actor="customer",
        data={"access_until": until.isoformat()},
    )


def double_purchase_key(later: Order, earlier: Order) -> str:
    """The Alert key for the pair, "double_purchase:<later pk>:<earlier pk>": one alert per pair
    (Alert.key is unique), whichever order is fulfilled last."""
    return f"double_purchase:{later.pk}:{earlier.pk}"


def flag_double_purchase(order: Order) -> list[Alert]:
    """Raise a "possible double purchase" alert for each other paid or fulfilled order with the
    same email paid within DOUBLE_PURCHASE_WINDOW of `order` (itself paid). The alert is on the
    later of the two (by `paid_at`), its key names both (`double_purchase_key`), so a pair is
    flagged once whichever of them is fulfilled last, and each later order has at most one (the
    caller holds the customer's lock, so two fulfilments cannot both miss it). Returns the
    alerts raised now."""
    if not order.email or order.paid_at is None:
        return []
    # An existence check first: this runs on every fulfilment and almost always finds nothing, and
    # a query with no columns costs the webhook a fraction of a whole-row one (docs/benchmarks.md,
    # "Cheaper webhooks"); the rows, with the same filters, only when there are some.
    candidates = Order.objects.filter(
        email=order.email,
        state__in=[Order.State.PAID, Order.State.FULFILLED],
        paid_at__gte=order.paid_at - DOUBLE_PURCHASE_WINDOW,
        paid_at__lte=order.paid_at + DOUBLE_PURCHASE_WINDOW,
    ).exclude(pk=order.pk)
    if not candidates.values_list("pk", flat=True).exists():
        return []
    raised = []
    for other in candidates:
        order_is_later = (order.paid_at, order.created_at) >= (other.paid_at, other.created_at)
        later, earlier = (order, other) if order_is_later else (other, order)
        if Alert.objects.filter(reason=Alert.Reason.DOUBLE_PURCHASE, order=later).exists():
            continue  # one row per extra order: three orders in a day are two to decide on, not three pairs
        confirmed = later.events.filter(kind="checkout:extend_confirmed").exists()
        message = (
            f"{later.email} paid twice within 24 hours: {earlier.reference} ({earlier.price}) and {later.reference} "
            f"({later.price}). "
            + (
                "The customer confirmed at checkout that they wanted another year. "
                if confirmed
                else "Nothing says they meant to. "
            )
            + f"Refund {later.reference} if they did not mean to buy twice; else mark it resolved."
        )
        with transaction.atomic():
            alert = alerts.raise_alert(
                Alert.Reason.DOUBLE_PURCHASE, message, order=later, key=double_purchase_key(later, earlier)
            )
        if alert is not None:
            raised.append(alert)
    return raised


def open_double_purchases(order: Order):
    """The unresolved "possible double purchase" alerts that name `order`, as the later or the
    earlier order of the pair (a queryset of Alert)."""
    return Alert.objects.filter(
        reason=Alert.Reason.DOUBLE_PURCHASE, resolved_at__isnull=True, key__contains=str(order.pk)
    )


def close_double_purchases(order: Order) -> int:
    """Resolve every open "possible double purchase" alert naming `order` (it was fully
    refunded, so only one payment is left). Returns how many were resolved."""
    return open_double_purchases(order).update(resolved_at=timezone.now())
