"""Support console search over 1,000,000 orders, as a support person runs it in the admin.

Bulk-loads N orders (and a few timeline events) into a fresh PostgreSQL database with COPY,
then times, warm, through Django's test Client logged in as a member of the "Support" group
against the real admin URLs (whatever billing/admin.py registers for Order at the time):

- an email search, a PaymentIntent id search and an order reference search (`?q=`),
- the order changelist's first page.

Median (and min/max) of --runs runs after two warm-up runs, each one checked to show the
order it looked for; then, for each, the slowest SQL statements of one run, so it is plain
what dominates (COUNT(*) or the search). `--proposed` measures again with the changes this
script suggests for the admin applied in this process only (see PROPOSED below).

    .venv/bin/python bench/support_search.py                     # 1,000,000 orders, fresh db
    .venv/bin/python bench/support_search.py --keep              # keep the database afterwards
    .venv/bin/python bench/support_search.py --reuse --proposed  # same data, plus the proposal
    .venv/bin/python bench/support_search.py --orders 100000 --runs 5

A benchmark prints numbers; it has no time limit to pass (STYLE.md).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import statistics
import sys
import time
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FIRST = "ada alan grace linus margaret ken barbara dennis frances john edsger radia tim sophie niklaus".split()
LAST = (
    "lovelace turing hopper torvalds hamilton thompson liskov ritchie allen backus dijkstra perlman lee wilson".split()
)
DOMAINS = ["example.com", "mail.example", "corp.example.org", "uni.example.edu", "example.net"]
ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
TARGETS_MS = {"search": 100, "changelist": 300}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--orders", type=int, default=1_000_000)
    p.add_argument("--events-every", type=int, default=20, help="three timeline events for one order in this many")
    p.add_argument("--runs", type=int, default=9, help="timed runs per scenario (after two warm-up runs)")
    p.add_argument("--pg", default=os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432"))
    p.add_argument("--db", default="paidup_bench_support_search")
    p.add_argument("--reuse", action="store_true", help="keep the data if the database already holds it")
    p.add_argument("--keep", action="store_true", help="do not drop the database at the end")
    p.add_argument("--proposed", action="store_true", help="also measure with the proposed admin changes")
    p.add_argument("--seed", type=int, default=4)
    return p.parse_args(argv)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the database and Django ------------------------------------------------------------


def admin_sql(pg: str, sql: str):
    import psycopg

    with psycopg.connect(f"{pg}/postgres", autocommit=True) as conn:
        cursor = conn.execute(sql)
        return cursor.fetchall() if cursor.description else None


def setup_django(args: argparse.Namespace) -> None:
    os.environ.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=f"{args.pg}/{args.db}",
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="testserver",
        CONN_MAX_AGE="600",  # persistent connections, as production runs
        LOG_LEVEL="WARNING",
    )
    import django

    django.setup()
    from django.test.utils import setup_test_environment

    setup_test_environment()  # the test Client's host, a locmem email backend


# --- the data ---------------------------------------------------------------------------


def reference(n: int) -> str:
    """A distinct PU- reference for each n: n scrambled by a multiplier coprime to 30**6."""
    x = (n * 7_368_787 + 12_345) % 30**6
    chars = []
    for _ in range(6):
        x, r = divmod(x, 30)
        chars.append(ALPHABET[r])
    return "PU-" + "".join(chars)


def stripe_id(prefix: str, n: int, rng: random.Random, length: int) -> str:
    """Stripe-shaped and unique: n in base 62, padded with random characters."""
    digits = ""
    while True:
        n, r = divmod(n, 62)
        digits = BASE62[r] + digits
        if n == 0:
            break
    return prefix + "".join(rng.choice(BASE62) for _ in range(length - len(digits))) + digits


def order_rows(args, plan_id: int, rng: random.Random):
    """(row, is_sample) per order: realistic states, emails, ids and three years of dates."""
    now = datetime.now(UTC)
    span = 3 * 365 * 24 * 3600
    for n in range(args.orders):
        created = now - timedelta(seconds=span * (1 - n / args.orders) + rng.random() * 60)
        person = n if rng.random() > 0.08 else max(0, n - rng.randint(1, 5000))  # some customers buy again
        email = f"{FIRST[person % 15]}.{LAST[person // 15 % 14]}{person}@{DOMAINS[person % 5]}"
        if person % 50 == 7:  # typed with capitals at checkout; stored as typed
            email = email[0].upper() + email[1:]
        roll = rng.random()
        state, status, pi = "fulfilled", "succeeded", True
        if roll < 0.02:
            state, status, pi = "pending", "", False  # abandoned before paying
        elif roll < 0.035:
            state, status = "pending", "declined"
        elif roll < 0.05:
            state, status = "failed", "canceled"
        elif roll < 0.065:
            state = "refunded"
        elif roll < 0.068:
            state = "paid"
        charged = state in ("paid", "fulfilled", "refunded")
        paid = created + timedelta(seconds=3) if charged else None
        yield {
            "id": uuid.UUID(int=rng.getrandbits(128), version=4),
            "reference": reference(n),
            "email": email,
            "plan_id": plan_id,
            "amount_cents": 24900,
            "currency": "usd",
            "state": state,
            "stripe_payment_intent_id": stripe_id("pi_3", n, rng, 24) if pi else None,
            "stripe_customer_id": stripe_id("cus_", n, rng, 14) if pi else "",
            "stripe_payment_status": status,
            "payment_attempts": 1 if pi else 0,
            "fulfilled_via": ("webhook" if rng.random() < 0.7 else "return")
            if state in ("fulfilled", "refunded")
            else "",
            "refunded_cents": 24900 if state == "refunded" else 0,
            "retroactive": False,
            "needs_attention": state == "paid" and rng.random() < 0.3,
            "attention_reason": "",
            "created_at": created,
            "updated_at": paid or created,
            "paid_at": paid,
            "fulfilled_at": paid + timedelta(seconds=1) if state in ("fulfilled", "refunded") else None,
            "refunded_at": paid + timedelta(days=3) if state == "refunded" else None,
            "failed_at": created + timedelta(days=1) if state == "failed" else None,
        }


def load(args) -> None:
    """COPY the orders and a few events; every other Order column gets its model default."""
    from django.db import connection

    from billing.models import Order, OrderEvent, Plan

    rng = random.Random(args.seed)
    plan, _ = Plan.objects.get_or_create(
        slug="pro-year", defaults={"name": "PaidUp Pro, one year", "amount_cents": 24900, "currency": "usd"}
    )
    fields = list(Order._meta.concrete_fields)
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    started = time.monotonic()
    events = []
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(f"COPY {Order._meta.db_table} ({columns}) FROM STDIN") as copy,
    ):
        for n, row in enumerate(order_rows(args, plan.pk, rng)):
            copy.write_row([_value(f, row) for f in fields])
            if n % args.events_every == 0:
                events.append((row["id"], row["created_at"], row["state"]))
            if n and n % 200_000 == 0:
                log(f"  {n:,} orders")
    log(f"loaded {args.orders:,} orders in {time.monotonic() - started:.0f} s")
    event_fields = [f for f in OrderEvent._meta.concrete_fields if not f.primary_key]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in event_fields)
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(f"COPY {OrderEvent._meta.db_table} ({columns}) FROM STDIN") as copy,
    ):
        for order_id, created, state in events:
            for kind, offset, message in (
                ("order:created", 0, "Checkout started."),
                ("state:paid", 3, "Stripe confirmed the payment of $249.00."),
                (f"state:{state}", 4, f"paid → {state}"),
            ):
                row = {"order_id": order_id, "kind": kind, "actor": "stripe:webhook", "message": message}
                row.update(data="{}", created_at=created + timedelta(seconds=offset))
                copy.write_row([_value(f, row) for f in event_fields])
    log(f"loaded {3 * len(events):,} events; VACUUM ANALYZE")
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")


def _value(field, row: dict):
    """The generated value, else the model's default (a column added later still loads)."""
    value = row[field.attname] if field.attname in row else field.get_default()
    return json.dumps(value) if isinstance(value, dict | list) else value


# --- the measurements -------------------------------------------------------------------


@contextmanager
def timed_queries():
    """Every SQL statement run inside, with its duration in ms."""
    from django.db import connection

    seen = []

    def wrapper(execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            seen.append(((time.perf_counter() - started) * 1000, sql))

    with connection.execute_wrapper(wrapper):
        yield seen


def support_client():
    from django.contrib.auth.models import Group
    from django.test import Client
    from django.urls import reverse

    from accounts.models import User

    user, _ = User.objects.get_or_create(email="bench-support@paidup.example", defaults={"is_staff": True})
    user.groups.add(*Group.objects.filter(name="Support"))
    client = Client()
    client.force_login(user)
    if client.get(reverse("admin:billing_order_changelist")).status_code == 403:
        log("the Support group cannot open the order list; measuring as a superuser instead")
        User.objects.filter(pk=user.pk).update(is_superuser=True)
    return client, user


def samples() -> dict[str, tuple[str, str]]:
    """What to search for, and the reference the answer must show: one real order of each kind,
    from the middle of the table (not the newest page)."""
    from billing.models import Order

    count = Order.objects.count()
    order = Order.objects.filter(stripe_payment_intent_id__isnull=False).order_by("created_at")[count // 2]
    capitals = Order.objects.filter(created_at__gt=order.created_at, email__regex=r"^[A-Z]").order_by("created_at")
    capital = capitals.first()
    if capital is None:  # data loaded by an older version of this script
        capital = Order.objects.filter(created_at__gt=order.created_at).order_by("created_at").first()
        Order.objects.filter(pk=capital.pk).update(email=capital.email.capitalize())
        capital.refresh_from_db()
    return {
        "email": (order.email, order.reference),
        "capitals": (capital.email.lower(), capital.reference),
        "payment_intent": (order.stripe_payment_intent_id, order.reference),
        "reference": (order.reference, order.reference),
    }


def measure(client, url: str, expect: str, runs: int) -> dict:
    for _ in range(2):  # warm: caches, plans, the session
        client.get(url)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200 or (expect and expect not in response.content.decode()):
            raise SystemExit(f"{url}: status {response.status_code}, {expect!r} not on the page")
    with timed_queries() as queries:
        client.get(url)
    slowest = sorted(queries, reverse=True)[:3]
    return {
        "median": statistics.median(times),
        "min": min(times),
        "max": max(times),
        "queries": len(queries),
        "sql_ms": sum(ms for ms, _ in queries),
        "slowest": [(ms, " ".join(sql.split())[:160]) for ms, sql in slowest],
    }


def scenarios() -> list[tuple[str, str, str, str]]:
    from urllib.parse import urlencode

    from django.urls import reverse

    changelist = reverse("admin:billing_order_changelist")
    found = samples()
    return [
        ("email search", "search", f"{changelist}?{urlencode({'q': found['email'][0]})}", found["email"][1]),
        (
            "email search, stored with other capitals",
            "search",
            f"{changelist}?{urlencode({'q': found['capitals'][0]})}",
            found["capitals"][1],
        ),
        (
            "PaymentIntent id search",
            "search",
            f"{changelist}?{urlencode({'q': found['payment_intent'][0]})}",
            found["payment_intent"][1],
        ),
        (
            "reference search",
            "search",
            f"{changelist}?{urlencode({'q': found['reference'][0]})}",
            found["reference"][1],
        ),
        ("order changelist", "changelist", changelist, ""),
    ]


def report(title: str, results: list) -> None:
    print(f"\n{title}\n")
    print("| what | median ms | min–max ms | SQL statements | SQL ms | target |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for name, kind, result in results:
        verdict = "ok" if result["median"] < TARGETS_MS[kind] else "**over**"
        print(
            f"| {name} | {result['median']:.0f} | {result['min']:.0f}–{result['max']:.0f} | "
            f"{result['queries']} | {result['sql_ms']:.0f} | < {TARGETS_MS[kind]} ms: {verdict} |"
        )
    print("\nSlowest statements (one run each):\n")
    for name, _, result in results:
        print(f"- {name}:")
        for ms, sql in result["slowest"]:
            print(f"    {ms:7.1f} ms  {sql}")


def run_all(client, runs: int) -> list:
    results = []
    for name, kind, url, expect in scenarios():
        log(f"measuring {name}: {url}")
        results.append((name, kind, measure(client, url, expect, runs)))
    return results


# --- the proposal -------------------------------------------------------------------------

PROPOSED = """\
Proposed for billing/admin.py (OrderAdmin) and the Order model, applied here in this process only:
  paginator = EstimatedCountPaginator   # unfiltered list: the planner's row estimate, not COUNT(*)
  show_full_result_count = False        # (no second COUNT(*) of the whole table per page)
  models.Index(Upper("email"), name="billing_order_email_upper")  # email__iexact by index, not a scan
"""


def apply_proposal() -> None:
    from django.contrib import admin
    from django.core.paginator import Paginator
    from django.db import connection
    from django.utils.functional import cached_property

    from billing.models import Order

    class EstimatedCountPaginator(Paginator):
        """The exact count when filtered (small, by index); the planner's estimate for the whole
        table, which only VACUUM/ANALYZE keep fresh: "about 1,000,000" is all a person needs."""

        @cached_property
        def count(self):
            if not self.object_list.query.where:
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [Order._meta.db_table]
                    )
                    estimate = cursor.fetchone()[0]
                if estimate > 10_000:
                    return estimate
            return super().count

    model_admin = admin.site._registry[Order]
    model_admin.show_full_result_count = False
    model_admin.paginator = EstimatedCountPaginator
    with connection.cursor() as cursor:
        cursor.execute("CREATE INDEX IF NOT EXISTS billing_order_email_upper ON billing_order (UPPER(email))")
        cursor.execute("ANALYZE billing_order")


# --- main ---------------------------------------------------------------------------------


def loaded(args) -> bool:
    """The database exists and holds exactly --orders orders."""
    import psycopg

    if not admin_sql(args.pg, f"SELECT 1 FROM pg_database WHERE datname = '{args.db}'"):
        return False
    try:
        with psycopg.connect(f"{args.pg}/{args.db}") as conn:
            return conn.execute("SELECT count(*) FROM billing_order").fetchone()[0] == args.orders
    except psycopg.Error:
        return False


def main(argv=None) -> int:
    args = parse_args(argv)
    if not (args.reuse and loaded(args)):
        log(f"creating a fresh database {args.db}")
        admin_sql(args.pg, f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')
        admin_sql(args.pg, f'CREATE DATABASE "{args.db}"')
        args.reuse = False
    setup_django(args)
    from django.contrib import admin
    from django.core.management import call_command
    from django.db import connection

    from billing.models import Order

    call_command("migrate", verbosity=0, skip_checks=True)
    if not args.reuse:
        load(args)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT version()")
            version = cursor.fetchone()[0].split(" on ")[0]
            cursor.execute("SELECT pg_size_pretty(pg_total_relation_size('billing_order'))")
            size = cursor.fetchone()[0]
        if "billing_order_email_upper" not in {index.name for index in Order._meta.indexes}:
            with connection.cursor() as cursor:  # left by an earlier --proposed run on kept data
                cursor.execute("DROP INDEX IF EXISTS billing_order_email_upper")
        client, _ = support_client()
        print(f"# Support console search: {args.orders:,} orders ({size} with indexes), {version}")
        print(f"# load average at start: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
        model_admin = type(admin.site._registry[Order])
        print(f"# admin: {model_admin.__module__}.{model_admin.__name__}, search_fields={model_admin.search_fields}")
        report(f"As billing/admin.py stands (median of {args.runs} warm runs)", run_all(client, args.runs))
        if args.proposed:
            apply_proposal()
            print("\n" + PROPOSED)
            report(f"With the proposal (median of {args.runs} warm runs)", run_all(client, args.runs))
        print(f"\n# load average at end: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    finally:
        connection.close()
        if not args.keep:
            log(f"dropping {args.db}")
            admin_sql(args.pg, f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
