"""Reconciliation over a backlog bigger than one run's budget, and step 4's query on a big table.

Two parts of bench/reconcile.py, which makes the scratch PostgreSQL database, Django and the
Meter (queries and Stripe requests per run) they use; run them through it:

  catchup   --catchup N (default 200,000) succeeded payments spread over the first-scan window
            (3 days) in the fake Stripe (tests/fixtures/gateway.py), as a first run would find
            them: all but --catchup-unknown (default 100) are healthy fulfilled orders, the others
            have no order here (spread evenly among them). The scan is run until a run is ok
            (caught up), once with the events listed newest first (real Stripe) and once oldest
            first (localstripe), with the default budget and pace (RECONCILE_STRIPE_BUDGET and
            RECONCILE_STRIPE_PER_SECOND). Checks: every unknown payment adopted exactly once,
            every healthy order untouched, one access email each, and a run after catching up
            reads only the overlap.
  webhooks  --webhook-rows (default 100,000) processed dj-stripe webhook triggers as healthy
            orders leave them, plus 10 that failed: EXPLAIN ANALYZE of step 4's query (median of
            --repeat runs) with billing's partial index dropped (inside a transaction that is
            rolled back) and with it.

    .venv/bin/python bench/reconcile.py --parts catchup,webhooks

Orders and triggers are loaded with PostgreSQL's COPY (bulk_create of 200,000 orders took too
long for a benchmark bounded at about ten minutes).
"""

from __future__ import annotations

import json
import secrets
import statistics
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from bench.reconcile import (
    Meter,
    RunFigures,
    analyze,
    faked_gateway,
    healthy_orders,
    log,
    metadata,
    references,
    reset_database,
    spread,
)

INDEX = "billing_djstripe_failed_triggers"  # billing/migrations/0009


def copy_orders(orders: list) -> None:
    """COPY Order instances into their table (every concrete column, as the model prepares it)."""
    from django.db import connection

    from billing.models import Order

    fields = list(Order._meta.concrete_fields)
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(f"COPY {Order._meta.db_table} ({columns}) FROM STDIN") as copy,
    ):
        for order in orders:
            copy.write_row([f.get_db_prep_save(f.pre_save(order, True), connection) for f in fields])


@dataclass
class Catchup:
    order: str  # "newest first" / "oldest first"
    payments: int
    unknown: int
    setup_seconds: float = 0.0
    runs: list[RunFigures] = field(default_factory=list)
    after: RunFigures | None = None
    overlap_events: int = 0  # payments in the overlap before the newest one
    checks: dict[str, bool] = field(default_factory=dict)


def catchup_part(args, meter: Meter, rng) -> list[Catchup]:
    from django.conf import settings

    from billing.models import Alert, Order, OutboundEmail, ReconciliationRun, Subscription
    from tests.fixtures.gateway import FakeStripe

    reset_database()
    t0 = time.monotonic()
    n, lost_count = args.catchup, args.catchup_unknown
    every = max(n // max(lost_count, 1), 1)
    now = time.time()
    fake = FakeStripe()
    healthy, lost = [], []
    orders = healthy_orders(references(n, rng), "catchup")
    times = spread(n, now, settings.RECONCILE_FIRST_SCAN_SECONDS)
    for i, (order, created) in enumerate(zip(orders, times, strict=True)):
        if lost_count and i % every == every // 2 and len(lost) < lost_count:
            meta = metadata(uuid.uuid4(), order.reference, order.email)  # its order is gone
            lost.append(fake.pay_elsewhere(amount=order.amount_cents, metadata=meta, created=created).id)
            continue
        pi = fake.pay_elsewhere(
            amount=order.amount_cents,
            metadata=metadata(order.id, order.reference, order.email),
            email=order.email,
            created=created,
        )
        at = datetime.fromtimestamp(created, UTC)
        order.stripe_payment_intent_id, order.stripe_customer_id = pi.id, pi.customer
        order.created_at, order.paid_at, order.fulfilled_at, order.charged_at = at - timedelta(seconds=5), at, at, at
        healthy.append(order)
    copy_orders(healthy)
    analyze()
    setup = time.monotonic() - t0
    log(f"catchup: {len(healthy):,} healthy orders and {len(lost)} unknown payments loaded in {setup:.0f} s")
    out = []
    with faked_gateway(fake):
        for newest_first in (True, False):
            label = "newest first" if newest_first else "oldest first"
            fake.newest_first = newest_first
            # Each listing order starts as a first run would: no runs, no adopted orders.
            Subscription.objects.filter(order__retroactive=True).delete()
            Order.objects.filter(retroactive=True).delete()
            ReconciliationRun.objects.all().delete()
            Alert.objects.all().delete()
            OutboundEmail.objects.all().delete()
            c = Catchup(label, n, len(lost), setup_seconds=setup)
            while True:
                f = meter.run(f"{n // 1000}k catch-up, {label}", "fake", f"run {len(c.runs) + 1}")
                c.runs.append(f)
                if f.ok or len(c.runs) >= args.catchup_max_runs:
                    break
            c.after = meter.run(f"{n // 1000}k catch-up, {label}", "fake", "after")
            adopted = Order.objects.filter(retroactive=True)
            c.checks["caught up (a run ok)"] = c.runs[-1].ok
            c.checks["every unknown payment adopted once, fulfilled"] = adopted.count() == adopted.filter(
                state=Order.State.FULFILLED
            ).count() == len(lost) and set(adopted.values_list("stripe_payment_intent_id", flat=True)) == set(lost)
            c.checks["every healthy order untouched"] = Order.objects.filter(
                retroactive=False, state=Order.State.FULFILLED, fulfilled_via="webhook"
            ).count() == len(healthy)
            c.checks["one access email per adopted payment, nothing else"] = (
                OutboundEmail.objects.filter(order__isnull=False).count()
                == OutboundEmail.objects.filter(order__in=adopted).count()
                == len(lost)
            )
            newest = max(e.created for e in fake.events)
            overlap = sum(e.created >= newest - settings.RECONCILE_SCAN_OVERLAP_SECONDS for e in fake.events)
            c.overlap_events = overlap
            c.checks["the run after reads only the overlap"] = c.after.ok and c.after.events == overlap
            out.append(c)
    return out


def _triggers(orders: list, failed: int) -> None:
    """COPY a processed trigger of each order's payment_intent.succeeded webhook (as
    bench/reconcile.py's webhook_history writes them, over the last 30 days), then `failed`
    valid triggers whose processing failed, five minutes old."""
    from django.db import connection
    from djstripe.models import WebhookEventTrigger

    table = WebhookEventTrigger._meta.db_table
    columns = "remote_ip, headers, body, valid, processed, exception, traceback, djstripe_version, created, updated"
    now = datetime.now(UTC)
    headers = json.dumps(
        {
            "content-type": "application/json; charset=utf-8",
            "stripe-signature": f"t={int(now.timestamp())},v1={secrets.token_hex(32)}",
            "user-agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        }
    )
    with connection.cursor() as cursor, cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        for i, order in enumerate(orders):
            at = now - timedelta(days=30) + timedelta(seconds=i * 30 * 86400 / max(len(orders), 1))
            event = {
                "id": "evt_" + secrets.token_hex(12),
                "object": "event",
                "type": "payment_intent.succeeded",
                "api_version": "2025-01-27.acacia",
                "created": int(at.timestamp()),
                "livemode": False,
                "pending_webhooks": 1,
                "request": {"id": None, "idempotency_key": None},
                "data": {
                    "object": {
                        "id": order.stripe_payment_intent_id,
                        "object": "payment_intent",
                        "amount": order.amount_cents,
                        "currency": order.currency,
                        "status": "succeeded",
                        "customer": order.stripe_customer_id or None,
                        "payment_method": "pm_" + secrets.token_hex(12),
                        "metadata": metadata(order.id, order.reference, order.email),
                        "latest_charge": "ch_" + secrets.token_hex(12),
                        "client_secret": f"{order.stripe_payment_intent_id}_secret_{secrets.token_hex(12)}",
                        "created": int(at.timestamp()),
                        "livemode": False,
                    }
                },
            }
            copy.write_row(["127.0.0.1", headers, json.dumps(event, indent=2), True, True, "", "", "2.11", at, at])
        for _ in range(failed):
            at = now - timedelta(minutes=5)
            body = json.dumps({"id": "evt_" + secrets.token_hex(12), "type": "payment_intent.succeeded"})
            copy.write_row(["127.0.0.1", headers, body, True, False, "boom", "Traceback", "2.11", at, at])


def _explain(repeat: int) -> tuple[float, str]:
    """Median execution time (ms) of step 4's query over `repeat` EXPLAIN ANALYZE runs, and its scans."""
    import re

    from django.utils import timezone
    from djstripe.models import WebhookEventTrigger

    from billing.reconciliation import grace

    qs = WebhookEventTrigger.objects.filter(valid=True, processed=False, created__lt=timezone.now() - grace()).order_by(
        "created"
    )[:100]
    times, plan_text = [], ""
    for _ in range(repeat):
        plan_text = qs.explain(analyze=True)
        times.append(float(re.search(r"Execution Time: ([0-9.]+) ms", plan_text).group(1)))
    scan = r"((?:Parallel )?(?:Seq|Index Only|Index|Bitmap Heap) Scan (?:on|using) \w+)"
    scans = sorted(set(re.findall(scan, plan_text)))
    return statistics.median(times), ", ".join(scans)


class _Rollback(Exception):
    pass


def webhooks_part(args, rng) -> dict:
    from django.db import connection, transaction

    reset_database()
    t0 = time.monotonic()
    orders = healthy_orders(references(args.webhook_rows, rng), "hooks")
    for order in orders:
        order.stripe_payment_intent_id = "pi_" + secrets.token_hex(12)
    _triggers(orders, failed=10)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE djstripe_webhookeventtrigger")
        cursor.execute(
            "SELECT count(*), pg_total_relation_size('djstripe_webhookeventtrigger') FROM djstripe_webhookeventtrigger"
        )
        rows, size = cursor.fetchone()
    log(f"webhooks: {rows:,} triggers ({size / 1e6:.0f} MB with indexes and TOAST) in {time.monotonic() - t0:.0f} s")
    result = {"rows": rows, "table_mb": round(size / 1e6), "repeat": args.repeat}
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(f'DROP INDEX "{INDEX}"')
            result["without index"] = _explain(args.repeat)
            raise _Rollback
    except _Rollback:
        pass
    result["with index"] = _explain(args.repeat)
    return result


def print_catchup(runs: list[Catchup]) -> bool:
    from django.conf import settings

    ok = True
    print()
    print(
        f"First reconciliation over a backlog (fake Stripe): budget {settings.RECONCILE_STRIPE_BUDGET} requests "
        f"at {settings.RECONCILE_STRIPE_PER_SECOND:g}/s, pages of 100, first scan "
        f"{settings.RECONCILE_FIRST_SCAN_SECONDS} s, overlap {settings.RECONCILE_SCAN_OVERLAP_SECONDS} s"
    )
    for c in runs:
        print(f"  {c.payments:,} succeeded payments ({c.unknown} with no order here), listed {c.order}:")
        print(
            f"    {'run':<7} {'ok':<3} {'time s':>7} {'pages':>5} {'events':>7} {'stripe req':>10} {'queries':>7} "
            f"{'q/page':>7} {'q other':>7} {'adopted':>7}  load"
        )
        for f in [*c.runs, c.after]:
            print(
                f"    {f.run:<7} {'yes' if f.ok else 'no':<3} {f.seconds:>7.1f} {f.pages:>5} {f.events:>7} "
                f"{f.stripe_requests:>10} {f.queries:>7} {f.healthy_page_queries:>7} {f.other_queries:>7} "
                f"{f.counts.get('retroactive', 0):>7}  {f.load}"
            )
        print(f"    (the overlap before the newest payment holds {c.overlap_events} payments)")
        failed = [name for name, passed in c.checks.items() if not passed]
        ok &= not failed
        print(f"    checks: {'ok' if not failed else 'FAILED: ' + '; '.join(failed)}")
    return ok


def print_webhooks(w: dict) -> None:
    print()
    print(
        f"Step 4 (failed webhook triggers) on {w['rows']:,} trigger rows ({w['table_mb']} MB), "
        f"EXPLAIN ANALYZE, median of {w['repeat']}:"
    )
    for key in ("without index", "with index"):
        took, scans = w[key]
        print(f"  {key:<14} {took:8.3f} ms  ({scans})")
