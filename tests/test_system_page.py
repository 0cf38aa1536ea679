"""The console's System page (issue 13, item 4): 30 days of orders, recoveries, refunds,
disputes and time from charge to access, drawn by the server, with the numbers as a table.

Orders are seeded with explicit timestamps on chosen days (the clock frozen with time-machine at
noon UTC), then the page's table is read cell by cell, as a person checks it."""

import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from billing import daily
from billing.models import Dispute, Order, Refund
from support.system_charts import human_seconds
from tests.factories import OrderFactory, UserFactory
from tests.fixtures.console import client_for, staff

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
URL = "/admin/system/"


@pytest.fixture
def frozen():
    with time_machine.travel(NOW, tick=False):
        yield NOW


@pytest.fixture
def support(db):
    return staff("sue@paidup.example", "Support")


def order(
    days_ago: int, state: str, *, via: str = "", wait: float | None = None, hour: int = 10, now=NOW, **fields
) -> Order:
    """An order created `days_ago` days before `now` at `hour`:00 UTC in `state`; a fulfilled or
    refunded one charged then and given access `wait` seconds later (default 3 s)."""
    created = now.replace(hour=hour) - timedelta(days=days_ago)
    stamps = {"created_at": created}
    if state in ("paid", "fulfilled", "refunded"):
        stamps.update(paid_at=created, charged_at=created)
    if state in ("fulfilled", "refunded"):
        stamps.update(
            fulfilled_at=created + timedelta(seconds=3 if wait is None else wait), fulfilled_via=via or "webhook"
        )
    if state == "refunded":
        stamps["refunded_at"] = created + timedelta(hours=1)
    if state == "failed":
        stamps["failed_at"] = created
    return OrderFactory(state=state, **stamps, **fields)


def refund(of: Order, days_ago: int, cents: int, status: str = "succeeded") -> Refund:
    return Refund.objects.create(
        order=of,
        stripe_refund_id=f"re_{of.reference}_{cents}_{status}",
        amount_cents=cents,
        currency=of.currency,
        status=status,
        actor="support:sue",
        created_at=NOW - timedelta(days=days_ago),
    )


def dispute(of: Order, days_ago: int) -> Dispute:
    return Dispute.objects.create(
        stripe_dispute_id=f"du_{of.reference}",
        order=of,
        amount_cents=of.amount_cents,
        currency=of.currency,
        status="needs_response",
        created_at=NOW - timedelta(days=days_ago),
    )


def table(html: str) -> dict[str, list[str]]:
    """The day-by-day table as {day label: [cells]}, tags stripped, as a person reads it."""
    body = html.split('id="pu-days"', 1)[1].split("</table>", 1)[0].split("<tbody>", 1)[1]
    rows = {}
    for row in re.findall(r"<tr>(.*?)</tr>", body, re.S):
        cells = [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
        rows[cells[0]] = cells[1:]
    return rows


COLUMNS = ["orders", "pending", "paid", "fulfilled", "refunded", "failed", "recovered", "refunds", "refunded €",
           "disputes", "median", "worst"]  # fmt: skip


def cells(rows, day_label: str) -> dict[str, str]:
    return dict(zip(COLUMNS, rows[day_label], strict=True))


def test_it_shows_each_day_as_the_database_has_it(frozen, support):
    assert list(Order.State.values) == ["pending", "paid", "fulfilled", "refunded", "failed"]  # COLUMNS' order
    # Three days ago: two normal sales (3 s and 9 s to access), a recovery by reconciliation
    # after 2 h, a decline; one of the sales refunded in part two days ago, one disputed today.
    sale = order(3, "fulfilled", wait=3)
    order(3, "fulfilled", wait=9)
    order(3, "fulfilled", via="reconciliation", wait=7200)
    order(3, "failed")
    # Yesterday: one paid and not fulfilled (red on the chart), one pending, one fulfilled by
    # support 40 min after the charge, one refunded in full (by the day of its charge: yesterday).
    order(1, "paid")
    order(1, "pending")
    order(1, "fulfilled", via="support", wait=2400)
    full = order(1, "refunded", wait=5)
    refund(sale, 2, 5000)
    refund(full, 0, 24900)
    refund(full, 0, 100, status="failed")  # bounced back: not counted, as in refunded_cents
    dispute(sale, 0)
    order(31, "fulfilled")  # outside the 30 days

    response = client_for(support).get(URL)

    assert response.status_code == 200
    rows = table(response.content.decode())
    assert len(rows) == 30
    assert list(rows)[0] == "Mon 30 Nov" and list(rows)[-1] == "Sun 1 Nov"
    assert cells(rows, "Fri 27 Nov") == {
        "orders": "4", "pending": "0", "paid": "0", "fulfilled": "3", "refunded": "0", "failed": "1",
        "recovered": "1", "refunds": "0", "refunded €": "–", "disputes": "0",
        "median": "9 s", "worst": "2 h",
    }  # fmt: skip
    assert cells(rows, "Sat 28 Nov")["refunds"] == "1"
    assert cells(rows, "Sat 28 Nov")["refunded €"] == "$50.00"
    assert cells(rows, "Sun 29 Nov") == {
        "orders": "4", "pending": "1", "paid": "1", "fulfilled": "1", "refunded": "1", "failed": "0",
        "recovered": "1", "refunds": "0", "refunded €": "–", "disputes": "0",
        "median": "20 min 2 s", "worst": "40 min",
    }  # fmt: skip
    today = cells(rows, "Mon 30 Nov")
    assert (today["refunds"], today["refunded €"], today["disputes"], today["orders"]) == ("1", "$249.00", "1", "0")
    assert "$299.00 in these days" in response.content.decode()


def test_a_day_with_nothing_shows_zero_in_the_table_and_a_stub_in_every_chart(frozen, support):
    order(5, "fulfilled")

    response = client_for(support).get(URL)

    html = response.content.decode()
    quiet = cells(table(html), "Tue 24 Nov")
    assert quiet == {
        "orders": "0", "pending": "0", "paid": "0", "fulfilled": "0", "refunded": "0", "failed": "0",
        "recovered": "0", "refunds": "0", "refunded €": "–", "disputes": "0", "median": "–", "worst": "–",
    }  # fmt: skip
    for key in ("orders", "recoveries", "refunds", "disputes", "access"):
        chart = html.split(f'id="chart-{key}"', 1)[1].split("</svg>", 1)[0]
        assert chart.count('<g class="pu-col">') == 30, key  # a column for every day, none missing
    orders_chart = html.split('id="chart-orders"', 1)[1].split("</svg>", 1)[0]
    assert "<title>Tue 24 Nov: 0 orders</title>" in orders_chart
    assert "<title>Wed 25 Nov: 1 order (1 fulfilled)</title>" in orders_chart


def test_the_days_are_the_sites_local_days(frozen, support, settings):
    """An order at 23:30 UTC is on the next day in Berlin; TruncDate groups in TIME_ZONE."""
    settings.TIME_ZONE = "Europe/Berlin"
    order(2, "pending", hour=23)  # 28 Nov 23:00 UTC = 29 Nov 00:00 in Berlin

    rows = table(client_for(support).get(URL).content.decode())

    assert cells(rows, "Sun 29 Nov")["orders"] == "1"
    assert cells(rows, "Sat 28 Nov")["orders"] == "0"


def test_the_landing_page_links_to_it(support):
    html = client_for(support).get(reverse("admin:index")).content.decode()

    assert f'href="{URL}" id="pu-system-link"' in html


@pytest.mark.parametrize("who", ["anonymous", "customer", "staff_unverified"])
def test_it_sends_anyone_without_a_verified_staff_session_to_sign_in(db, who):
    from django.test import Client

    if who == "anonymous":
        client = Client()
    elif who == "customer":
        client = client_for(UserFactory(email="kim@example.com"))
    else:
        client = Client()
        client.force_login(staff("sam@paidup.example", "Support"))  # password step and factor not done

    response = client.get(URL)

    assert response.status_code == 302
    assert "/admin/login/" in response["Location"] or "/admin/confirm/" in response["Location"]


def test_it_refuses_staff_without_the_view_order_permission(db):
    nobody = staff("nel@paidup.example")  # staff, verified, in no group
    client = client_for(nobody)

    assert client.get(URL).status_code == 403
    assert 'id="pu-system-link"' not in client.get(reverse("admin:index")).content.decode()


def test_it_refuses_a_post(support):
    assert client_for(support).post(URL).status_code in (403, 405)


def queries_for(client, count: int) -> int:
    for index in range(count):
        made = order(index % 30, ["fulfilled", "refunded", "failed"][index % 3], via=["reconciliation", ""][index % 2])
        if made.state == "refunded":
            refund(made, index % 30, 2000)
            dispute(made, index % 30)
    with CaptureQueriesContext(connection) as captured:
        assert client.get(URL).status_code == 200
    return len(captured)


def test_its_queries_do_not_grow_with_the_orders(frozen, support):
    client = client_for(support)
    client.get(URL)  # the session's first request loads what later ones have cached

    few = queries_for(client, 3)
    many = queries_for(client, 30)

    assert few == many
    assert few <= 12  # the session, the person, their permissions, and billing.daily's five


def test_last_days_refuses_a_window_of_no_days(db):
    with pytest.raises(ValueError):
        daily.last_days(0)
    with pytest.raises(ValueError):
        daily.last_days(-3)


@pytest.mark.parametrize(
    ("seconds", "said"),
    [(None, ""), (-4, "0 s"), (0.4, "0.4 s"), (3, "3 s"), (59.6, "1 min"), (185, "3 min 5 s"), (7200, "2 h"),
     (7260, "2 h 1 min"), (3 * 86400 + 5, "3 days")],
)  # fmt: skip
def test_durations_are_said_in_human_units(seconds, said):
    assert human_seconds(seconds) == said


# --- in a real browser ------------------------------------------------------------------

PHONE = {"width": 390, "height": 844}


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_it_reads_on_a_wide_screen_and_a_phone_without_breaking_the_csp(live_server, page, pages):
    """The page fixture fails the test on any CSP violation or script error. Screenshots in /tmp."""
    from django.conf import settings
    from django.utils import timezone
    from playwright.sync_api import expect

    from tests.fixtures.console import support_group

    now = timezone.now()
    for days_ago in range(0, 30, 2):  # a month with work in it, every other day quiet
        for index in range(days_ago % 5 + 1):
            state = ["fulfilled", "fulfilled", "refunded", "failed", "paid"][index % 5]
            made = order(days_ago, state, via=["", "reconciliation", "support"][days_ago % 3], wait=3 + 400 * index,
                         hour=1, now=now)  # fmt: skip
            if state == "refunded":
                refund(made, days_ago, 24900)
    dispute(made, 3)
    person = staff("sue@paidup.example")
    person.groups.add(support_group("Support"))
    cookie = client_for(person).cookies[settings.SESSION_COOKIE_NAME].value
    page.context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": live_server.url}])

    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(live_server.url + "/admin/")
    page.click("#pu-system-link")
    expect(page.locator("h1")).to_contain_text("System")
    charts = page.locator("svg.pu-chart")
    expect(charts).to_have_count(5)
    for index in range(5):
        box = charts.nth(index).bounding_box()
        assert 300 <= box["width"] <= 700 and box["height"] >= 140, box
    page.screenshot(path="/tmp/system-desktop.png", full_page=True)

    page.set_viewport_size(PHONE)
    page.reload()
    wide = page.evaluate("document.documentElement.scrollWidth")
    assert wide <= 390, f"the System page is {wide} px wide on a 390 px phone"
    box = charts.first.bounding_box()
    assert box["width"] >= 300, box  # the chart takes the phone's width, not a thumbnail
    font = page.evaluate("getComputedStyle(document.querySelector('svg.pu-chart text')).fontSize")
    shown = float(font.removesuffix("px")) * box["width"] / 340  # the viewBox is 340 wide
    assert shown >= 9, f"axis labels are {shown:.1f} px on a phone"
    page.screenshot(path="/tmp/system-phone.png", full_page=True)
