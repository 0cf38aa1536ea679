"""The last 30 days, one row per day: what the console's System page charts (support/system_page.py).

Five queries whatever the number of orders, each grouped by day in the database with TruncDate
(in the site's TIME_ZONE; the same SQL shape on SQLite and PostgreSQL), each on a column that
has an index or a table that stays small. A day with nothing has zeros, not a missing row: a
gap in a chart reads as "no data", and zero orders on a Tuesday is itself the news.

What counts on which day:
- orders: by the day they were created, split by the state they are in now;
- recoveries: fulfilments by reconciliation, support or the customer's self-service page (the
  paths that finish a payment the normal ones lost), by the day of the fulfilment;
- refunds: Stripe refunds that are on their way or done (Refund.COUNTED, as the order's
  `refunded_cents` counts them), by the day Stripe created them, count and amount per currency;
- disputes: by the day we learnt of them;
- charge to access: for orders fulfilled so far, seconds from Stripe's charge (`charged_at`, else
  `paid_at` for rows from before it was recorded) to `fulfilled_at`, by the day of the charge;
  median and worst. The median needs the values (SQLite has no percentile function), so this
  query returns one small row per fulfilled order of the 30 days, grouped here.
"""

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from django.db.models import Count, F, Sum
from django.db.models.functions import Coalesce, TruncDate
from django.utils import timezone

from .models import Dispute, Order, Refund

DAYS = 30
# The fulfilment paths that recover a payment the checkout's own paths (return page, webhook) lost.
RECOVERY_VIA = (Order.Via.RECONCILIATION, Order.Via.SUPPORT, Order.Via.SELF_SERVICE)


@dataclass
class Day:
    """One day's numbers. Counts are ints; `refunded` maps a lowercase currency code to minor
    units; `access_median` and `access_worst` are seconds (None: nothing was charged and
    fulfilled that day)."""

    day: date
    orders: dict[str, int] = field(default_factory=lambda: dict.fromkeys(Order.State.values, 0))
    recoveries: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RECOVERY_VIA, 0))
    refunds: int = 0
    refunded: dict[str, int] = field(default_factory=dict)
    disputes: int = 0
    access_median: float | None = None
    access_worst: float | None = None

    @property
    def order_count(self) -> int:
        return sum(self.orders.values())

    @property
    def recovery_count(self) -> int:
        return sum(self.recoveries.values())


def first_instant(days: int = DAYS, now: datetime | None = None) -> tuple[list[date], datetime]:
    """The `days` local dates ending today (oldest first) and the aware datetime at which the
    first of them begins in the current time zone. Raises ValueError when `days` < 1."""
    if days < 1:
        raise ValueError(f"days must be 1 or more, not {days!r}")
    today = timezone.localdate(now or timezone.now())
    dates = [today - timedelta(days=back) for back in range(days - 1, -1, -1)]
    return dates, timezone.make_aware(datetime.combine(dates[0], time.min))


def last_days(days: int = DAYS, now: datetime | None = None) -> list[Day]:
    """One `Day` per local date of the last `days` days, today included, oldest first; zeros
    where nothing happened. Five queries (module docstring). `now` (aware) is for tests; rows
    stamped after it still count on their own day if it is in the window. Raises ValueError
    when `days` < 1."""
    dates, start = first_instant(days, now)
    rows = {d: Day(d) for d in dates}

    def by_day(queryset, column: str):
        return queryset.filter(**{f"{column}__gte": start}).annotate(day=TruncDate(column)).order_by()

    for row in by_day(Order.objects, "created_at").values("day", "state").annotate(n=Count("*")):
        if row["day"] in rows:
            rows[row["day"]].orders[row["state"]] = row["n"]
    recovered = by_day(Order.objects.filter(fulfilled_via__in=RECOVERY_VIA), "fulfilled_at")
    for row in recovered.values("day", "fulfilled_via").annotate(n=Count("*")):
        if row["day"] in rows:
            rows[row["day"]].recoveries[row["fulfilled_via"]] = row["n"]
    refunds = by_day(Refund.objects.filter(status__in=Refund.COUNTED), "created_at")
    for row in refunds.values("day", "currency").annotate(n=Count("*"), total=Sum("amount_cents")):
        if (day := rows.get(row["day"])) is not None:
            day.refunds += row["n"]
            currency = row["currency"].lower()
            day.refunded[currency] = day.refunded.get(currency, 0) + row["total"]
    for row in by_day(Dispute.objects, "created_at").values("day").annotate(n=Count("*")):
        if row["day"] in rows:
            rows[row["day"]].disputes = row["n"]
    _charge_to_access(rows, start)
    return list(rows.values())


def _charge_to_access(rows: dict[date, Day], start: datetime) -> None:
    waits: dict[date, list[float]] = defaultdict(list)
    fulfilled = (
        Order.objects.filter(fulfilled_at__isnull=False)
        .annotate(charged=Coalesce("charged_at", "paid_at"))
        .filter(charged__gte=start)
        .annotate(day=TruncDate("charged"))
        .order_by()
        .values_list("day", "charged", F("fulfilled_at"))
    )
    for day, charged, fulfilled_at in fulfilled:
        # Stripe's clock and ours differ by a little: a fulfilment "before" the charge waited 0 s.
        waits[day].append(max(0.0, (fulfilled_at - charged).total_seconds()))
    for day, seconds in waits.items():
        if day in rows:
            rows[day].access_median = statistics.median(seconds)
            rows[day].access_worst = max(seconds)
