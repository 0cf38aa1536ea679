"""The System page's charts, drawn by the server as inline SVG: no chart library, no script
(the CSP runs none inline), nothing to load. Geometry only; the numbers come from billing.daily.

Every chart has one column per day, oldest left, today right. The SVG scales to its box
(viewBox, width 100%), so the same drawing fits a 390 px phone and a wide screen; every
column carries a <title> (its day in words, shown on hover) and the chart an accessible name
that sums it up. The exact numbers are in the page's table, which is what a screen reader reads.

A day with nothing gets a 1-unit grey stub on the baseline: zero, visibly, not a gap.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from django.utils import dateformat

from billing.daily import RECOVERY_VIA, Day
from billing.models import Order
from billing.money import format_money

WIDTH, HEIGHT = 340, 170
LEFT, RIGHT, TOP, BOTTOM = 40, 4, 8, 20
PLOT_W, PLOT_H = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
ZERO = "#b0b0b0"

# Colours carry meaning, and the table and titles carry the same numbers (colour is never alone).
STATE_COLOURS = {
    Order.State.FULFILLED: "#2e7d32",
    Order.State.REFUNDED: "#5c5cb8",
    Order.State.FAILED: "#8d8d8d",
    Order.State.PENDING: "#e09b00",
    Order.State.PAID: "#c62828",
}
VIA_COLOURS = {Order.Via.RECONCILIATION: "#1565c0", Order.Via.SUPPORT: "#6a1b9a", Order.Via.SELF_SERVICE: "#00838f"}
SECONDS_TICKS = [(1, "1 s"), (10, "10 s"), (60, "1 min"), (600, "10 min"), (3600, "1 h"), (86400, "1 day")]


@dataclass
class Rect:
    x: float
    y: float
    width: float
    height: float
    colour: str


@dataclass
class Column:
    title: str
    rects: list[Rect] = field(default_factory=list)


@dataclass
class Chart:
    key: str
    title: str
    summary: str  # the chart's accessible name: what it shows and its headline numbers
    legend: list[tuple[str, str]]  # (label, colour)
    columns: list[Column]
    ticks: list[tuple[float, str]]  # (y, label) on the left axis
    days: list[tuple[float, str, str]]  # (x, label, text-anchor) under the axis
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    baseline: float = TOP + PLOT_H


def human_seconds(seconds: float | None) -> str:
    """A duration in seconds as a person says it: "0.4 s", "12 s", "3 min 5 s", "2 h 10 min",
    "3 days"; "" for None. Negative values count as 0."""
    if seconds is None:
        return ""
    seconds = max(0.0, float(seconds))
    if seconds < 10:
        return f"{seconds:.1f} s".replace(".0 s", " s")
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        minutes, rest = divmod(whole, 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    if whole < 48 * 3600:
        hours, minutes = divmod(whole // 60, 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{whole // 86400} days"


def counted(n: int, one: str, many: str) -> str:
    """ "1 order", "2 orders": `n` with the word that fits it."""
    return f"{n} {one if n == 1 else many}"


def day_label(day: Day) -> str:
    """The day as the page names it everywhere: "Mon 30 Nov"."""
    return dateformat.format(day.day, "D j M")


def _nice_top(largest: float) -> int:
    """The axis top for counts: 4, 6, 8, 10, 20, 40, 60, 80, 100, …, at least `largest`."""
    magnitude = 1
    while True:
        for step in (4, 6, 8, 10):
            if step * magnitude >= largest:
                return step * magnitude
        magnitude *= 10


def _x(index: int, count: int) -> tuple[float, float]:
    slot = PLOT_W / count
    return LEFT + index * slot + slot * 0.15, slot * 0.7


def _day_ticks(days: Sequence[Day]) -> list[tuple[float, str, str]]:
    """(x, label, text-anchor): a date under every seventh column counted back from today, so
    today is always named; today's ends at the chart's right edge instead of running off it."""
    ticks = []
    for index in range(len(days) - 1, -1, -7):
        x, width = _x(index, len(days))
        label = dateformat.format(days[index].day, "j M")
        ticks.append((x + width, label, "end") if index == len(days) - 1 else (x + width / 2, label, "middle"))
    return ticks


def stacked(
    key: str, title: str, days: Sequence[Day], series: list[tuple[str, str, Callable[[Day], int]]], describe
) -> Chart:
    """A stacked count chart. `series` is (label, colour, value of a day) bottom-up; `describe`
    gives a column's title from its Day."""
    top = _nice_top(max((sum(value(d) for _, _, value in series) for d in days), default=0))
    columns = []
    for index, day in enumerate(days):
        x, width = _x(index, len(days))
        column, y = Column(describe(day)), TOP + PLOT_H
        for _, colour, value in series:
            if height := value(day) / top * PLOT_H:
                y -= height
                column.rects.append(Rect(x, y, width, height, colour))
        if not column.rects:
            column.rects.append(Rect(x, TOP + PLOT_H - 1, width, 1, ZERO))
        columns.append(column)
    ticks = [(TOP + PLOT_H - PLOT_H * part, str(int(top * part))) for part in (0, 0.5, 1)]
    total = sum(value(d) for d in days for _, _, value in series)
    busiest = max(days, key=lambda d: sum(value(d) for _, _, value in series))
    summary = f"{title}, one column per day for {len(days)} days: {total} in all"
    if total:
        summary += f"; most on {day_label(busiest)} ({sum(value(busiest) for _, _, value in series)})"
    return Chart(key, title, summary + ".", [(label, colour) for label, colour, _ in series], columns, ticks,
                 _day_ticks(days))  # fmt: skip


def _log_height(seconds: float, top: float) -> float:
    return math.log1p(seconds) / math.log1p(top) * PLOT_H


def charge_to_access(days: Sequence[Day]) -> Chart:
    """Median (dark) over worst (light) seconds from charge to access, on a log scale: a normal
    day is seconds and a recovered one hours, and both must stay readable."""
    worst = max((d.access_worst or 0 for d in days), default=0)
    top = next((s for s, _ in SECONDS_TICKS if s >= worst), SECONDS_TICKS[-1][0])
    top = max(top, 60)
    if worst > top:  # beyond a day: whole days
        top = math.ceil(worst / 86400) * 86400
    columns = []
    for index, day in enumerate(days):
        x, width = _x(index, len(days))
        if day.access_worst is None:
            columns.append(
                Column(f"{day_label(day)}: nothing charged and fulfilled", [Rect(x, TOP + PLOT_H - 1, width, 1, ZERO)])
            )
            continue
        column = Column(
            f"{day_label(day)}: median {human_seconds(day.access_median)}, worst {human_seconds(day.access_worst)}"
        )
        for seconds, colour in ((day.access_worst, "#f4a6a6"), (day.access_median, "#b71c1c")):
            height = max(1.0, _log_height(seconds, top))
            column.rects.append(Rect(x, TOP + PLOT_H - height, width, height, colour))
        columns.append(column)
    ticks = [(TOP + PLOT_H, "0")]
    ticks += [(TOP + PLOT_H - _log_height(s, top), label) for s, label in SECONDS_TICKS if s <= top and s >= 10]
    if not any(s == top for s, _ in SECONDS_TICKS):
        ticks.append((TOP, human_seconds(top)))
    summary = "Time from charge to access, median and worst per day"
    if worst:
        summary += f"; the worst in {len(days)} days was {human_seconds(worst)}"
    return Chart(
        "access",
        "Time from charge to access",
        summary + ".",
        [("Median", "#b71c1c"), ("Worst", "#f4a6a6")],
        columns,
        ticks,
        _day_ticks(days),
    )


def _money(amounts: dict[str, int]) -> str:
    return ", ".join(format_money(cents, currency) for currency, cents in sorted(amounts.items()))


def refunded_total(days: Sequence[Day]) -> str:
    """Every refund of the days, per currency, through the one money formatter ("" when none)."""
    totals: dict[str, int] = {}
    for day in days:
        for currency, cents in day.refunded.items():
            totals[currency] = totals.get(currency, 0) + cents
    return _money(totals)


def charts(days: Sequence[Day]) -> list[Chart]:
    """The page's charts, in the order a person scans them."""
    states = [(label, STATE_COLOURS[value], lambda d, v=value: d.orders[v]) for value, label in Order.State.choices]
    labels = dict(Order.Via.choices)
    vias = [(labels[via], VIA_COLOURS[via], lambda d, v=via: d.recoveries[v]) for via in RECOVERY_VIA]

    def orders(d: Day) -> str:
        parts = ", ".join(f"{d.orders[v]} {label.lower()}" for v, label in Order.State.choices if d.orders[v])
        return f"{day_label(d)}: {counted(d.order_count, 'order', 'orders')}" + (f" ({parts})" if parts else "")

    def recoveries(d: Day) -> str:
        parts = ", ".join(f"{d.recoveries[v]} by {labels[v].lower()}" for v in RECOVERY_VIA if d.recoveries[v])
        return f"{day_label(d)}: {d.recovery_count} recovered" + (f" ({parts})" if parts else "")

    def refunds(d: Day) -> str:
        return f"{day_label(d)}: {counted(d.refunds, 'refund', 'refunds')}" + (
            f", {_money(d.refunded)}" if d.refunds else ""
        )

    refund_chart = stacked("refunds", "Refunds", days, [("Refunds", "#5c5cb8", lambda d: d.refunds)], refunds)
    if total := refunded_total(days):
        refund_chart.summary = refund_chart.summary[:-1] + f", {total} refunded."
    return [
        stacked("orders", "Orders by outcome", days, states, orders),
        stacked("recoveries", "Recoveries", days, vias, recoveries),
        refund_chart,
        stacked(
            "disputes",
            "Disputes opened",
            days,
            [("Disputes", "#c62828", lambda d: d.disputes)],
            lambda d: f"{day_label(d)}: {counted(d.disputes, 'dispute', 'disputes')} opened",
        ),
        charge_to_access(days),
    ]


def table_rows(days: Sequence[Day]) -> list[dict]:
    """The table's rows, newest day first: the charts' numbers as text."""
    return [
        {
            "day": day_label(d),
            "orders": d.order_count,
            "states": [d.orders[v] for v in Order.State.values],
            "recoveries": d.recovery_count,
            "refunds": d.refunds,
            "refunded": _money(d.refunded) or "–",
            "disputes": d.disputes,
            "median": human_seconds(d.access_median) or "–",
            "worst": human_seconds(d.access_worst) or "–",
        }
        for d in reversed(days)
    ]
