"""What one Prometheus scrape of /metrics costs on a seeded PostgreSQL database.

Seeds (once; `--reuse` keeps what is there) N orders over the five states, two sent emails per
order plus a few hundred waiting or failed, one stored webhook event per order (one in a
thousand failed), a thousand alerts (a tenth open), a hundred disputes and a year of
reconciliation runs (one a minute), each table copied from one template row with
`INSERT … SELECT … generate_series`. Then requests `/metrics` with its bearer token through
Django's test Client, warm, `--runs` times: the whole answer's time, the business gauges' own
time (`paidup_metrics_collect_duration_seconds`) and each SQL statement's time in one run.

    .venv/bin/python bench/metrics_scrape.py                      # 200,000 orders, fresh data
    .venv/bin/python bench/metrics_scrape.py --reuse --runs 50    # measure again on the same data

The database (default paidup_bench_metrics) must exist and be migrated:
    createdb -h 127.0.0.1 -U postgres paidup_bench_metrics
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/paidup_bench_metrics DEBUG=1 .venv/bin/python manage.py migrate

A benchmark prints numbers; it has no time limit to pass (STYLE.md).
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TOKEN = "bench-metrics-token-0123456789abcdef"  # 32+ characters: paidup.E013


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--orders", type=int, default=200_000)
    p.add_argument("--runs", type=int, default=30, help="timed scrapes (after three warm-up scrapes)")
    p.add_argument("--pg", default=os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432"))
    p.add_argument("--db", default="paidup_bench_metrics")
    p.add_argument("--reuse", action="store_true", help="keep the data if the database already holds orders")
    return p.parse_args(argv)


def setup_django(args: argparse.Namespace) -> None:
    os.environ.update(
        DATABASE_URL=f"{args.pg}/{args.db}",
        DEBUG="0",
        ALLOWED_HOSTS="testserver",
        METRICS_TOKEN=TOKEN,
        LOG_LEVEL="ERROR",
    )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()


def copies(model, template_pk, n: int, overrides: dict[str, str]) -> None:
    """INSERT `n` copies of `model`'s row `template_pk`, each column as in the template unless
    `overrides` gives it an SQL expression of `i` (1..n). An auto primary key is left to the database."""
    from django.db import connection

    columns, values = [], []
    for field in model._meta.concrete_fields:
        if field.primary_key and field.get_internal_type() in ("AutoField", "BigAutoField"):
            continue
        columns.append(connection.ops.quote_name(field.column))
        values.append(overrides.get(field.column, f"t.{connection.ops.quote_name(field.column)}"))
    table = model._meta.db_table
    sql = (
        f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(values)} "
        f"FROM {table} t, generate_series(1, {n}) i WHERE t.{model._meta.pk.column} = %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [template_pk])


def seed(n: int) -> None:
    """The rows the module docstring describes; about 100 s for 1,000,000 orders here."""
    from django.utils import timezone
    from djstripe.models import WebhookEventTrigger

    from billing.models import Alert, Dispute, Order, OutboundEmail, Plan, ReconciliationRun

    plan = Plan.objects.create(slug="pro-year", name="Pro", amount_cents=24900, currency="usd")
    order = Order.objects.create(
        reference="PU-TEMPL8", email="t@example.com", plan=plan, amount_cents=24900, currency="usd"
    )
    # Nearly all fulfilled or failed (abandoned checkouts); one in a hundred pending and one in a
    # thousand refunded or paid (stuck), as on a working site.
    states = "(CASE WHEN mod(i, 1000) = 0 THEN 'paid' WHEN mod(i, 1000) = 1 THEN 'refunded' "
    states += "WHEN mod(i, 100) = 2 THEN 'pending' WHEN mod(i, 5) = 3 THEN 'failed' ELSE 'fulfilled' END)"
    copies(Order, order.pk, n, {
        "id": "gen_random_uuid()", "reference": "'PU-B' || i", "email": "'c' || i || '@example.com'",
        "state": states, "stripe_payment_intent_id": "'pi_b' || i",
        "created_at": "now() - i * interval '2 minutes'", "paid_at": "now() - i * interval '2 minutes'",
    })  # fmt: skip
    order.delete()
    email = OutboundEmail.objects.create(kind="signin", to="t@example.com", subject="s", body_text="t", body_html="h")
    statuses = "(ARRAY['queued','retry','sending','failed'])"
    copies(OutboundEmail, email.pk, 2 * n, {"status": "'sent'", "created_at": "now() - i * interval '1 minute'"})
    copies(
        OutboundEmail,
        email.pk,
        400,
        {"status": f"{statuses}[1 + mod(i, 4)]", "created_at": "now() - i * interval '1 second'"},
    )
    email.delete()
    trigger = WebhookEventTrigger.objects.create(
        body='{"type": "payment_intent.succeeded"}', headers={}, remote_ip="127.0.0.1", valid=True, processed=True
    )
    copies(WebhookEventTrigger, trigger.pk, n, {"processed": "mod(i, 1000) <> 0"})
    trigger.delete()
    alert = Alert.objects.create(key="template", reason=Alert.Reason.DISPUTE, message="m")
    copies(
        Alert, alert.pk, 1000, {"key": "'k' || i", "resolved_at": "CASE WHEN mod(i, 10) = 0 THEN NULL ELSE now() END"}
    )
    alert.delete()
    dispute = Dispute.objects.create(stripe_dispute_id="du_template", status="won", evidence_due_by=timezone.now())
    copies(Dispute, dispute.pk, 100, {
        "stripe_dispute_id": "'du_' || i",
        "status": "(ARRAY['won','lost','needs_response','under_review'])[1 + mod(i, 4)]",
        "evidence_due_by": "now() + i * interval '1 hour'",
    })  # fmt: skip
    dispute.delete()
    run = ReconciliationRun.objects.create(ok=True, finished_at=timezone.now())
    copies(ReconciliationRun, run.pk, 525_600, {
        "started_at": "now() - i * interval '1 minute'",
        "finished_at": "now() - i * interval '1 minute' + interval '2 seconds'",
    })  # fmt: skip


def scrape(client) -> tuple[float, float, list[tuple[float, str]]]:
    """One GET /metrics: (ms for the whole answer, ms the gauges took, [(ms, sql)] per query)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        elapsed = (time.perf_counter() - started) * 1000
    assert response.status_code == 200, response.status_code
    text = response.content.decode()
    assert "paidup_database_up 1.0" in text, "the database did not answer"
    collect = next(line for line in text.splitlines() if line.startswith("paidup_metrics_collect_duration_seconds "))
    return elapsed, float(collect.split()[1]) * 1000, [(float(q["time"]) * 1000, q["sql"]) for q in queries]


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_django(args)
    from django.db import connection, transaction
    from django.test import Client

    from billing.models import Order

    if not (args.reuse and Order.objects.exists()):
        if Order.objects.exists():
            print(f"{args.db} already holds orders: use --reuse, or drop and migrate it again", file=sys.stderr)
            return 2
        started = time.perf_counter()
        with transaction.atomic():
            seed(args.orders)
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")  # what autovacuum does soon after a load (visibility map included)
        print(f"seeded {args.orders:,} orders in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    with connection.cursor() as cursor:
        cursor.execute("SELECT version()")
        version = cursor.fetchone()[0].split(",")[0]
    client = Client()
    for _ in range(3):
        scrape(client)
    results = [scrape(client) for _ in range(args.runs)]
    whole, gauges = [r[0] for r in results], [r[1] for r in results]
    print(f"{version}; {Order.objects.count():,} orders; {args.runs} warm scrapes of /metrics")
    print(f"whole answer: median {statistics.median(whole):.1f} ms (min {min(whole):.1f}, max {max(whole):.1f})")
    print(f"business gauges: median {statistics.median(gauges):.1f} ms (min {min(gauges):.1f}, max {max(gauges):.1f})")
    middle = sorted(results, key=lambda r: r[0])[len(results) // 2]
    print(f"queries in the median scrape: {len(middle[2])}")
    for ms, sql in sorted(middle[2], reverse=True):
        print(f"  {ms:6.1f} ms  {sql[:150]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
