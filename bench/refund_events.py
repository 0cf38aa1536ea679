"""Refund event → recorded and the customer's email queued, through the real webhook endpoint.

Posts N signed `refund.created` events (one partial refund per fulfilled order, shaped as
Stripe's API reference says: tests/fixtures/stripe_objects.py) to PaidUp as it runs in
production (gunicorn, PostgreSQL, DEBUG off, persistent connections), one at a time by
default, and reports p50/p99/max of:

- **until the 2xx**: the answer comes after dj-stripe's transaction committed, and the refund,
  the order's new total, its timeline rows and the outbox row (with its q task) are all in
  that transaction, so a 2xx means recorded and email queued;
- **until the email row**: the outbox row's `created_at` (the server's clock) minus the send
  time, which leaves out the commit and the answer's way back.

Then it checks every order has exactly one refund and one refund email. No Stripe is needed:
the refund receivers make no Stripe request (a STRIPE_API_BASE nobody listens on proves it: a
call would fail the event).

    .venv/bin/python bench/refund_events.py                    # N=200, one at a time, 2x4 gunicorn
    .venv/bin/python bench/refund_events.py --events 200 --concurrency 8

The scratch database and the server are removed at the end, on Ctrl-C, and on --timeout;
--keep keeps them. Exit status 1 when a check fails. It prints numbers; it has no time limit
to pass (STYLE.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.backlog_setup import seed, server_env  # noqa: E402
from bench.harness import (  # noqa: E402
    Abort,
    Scratch,
    deliver,
    free_port,
    load,
    log,
    ms,
    percentile,
    setup_django,
    start_gunicorn,
    start_migrate,
    wait_for_http,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=200, help="refund events, one per order (N)")
    p.add_argument("--concurrency", type=int, default=1, help="sender connections (Stripe's side)")
    p.add_argument("--server", default="2x4", help="gunicorn WORKERSxTHREADS")
    p.add_argument("--conn-max-age", type=int, default=600)
    p.add_argument("--pg", default=os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432"))
    p.add_argument("--timeout", type=int, default=1200, help="bound on the whole run, seconds")
    p.add_argument("--request-timeout", type=float, default=30.0)
    p.add_argument("--keep", action="store_true", help="keep the database and the logs")
    args = p.parse_args(argv)
    args.workers, args.threads = (int(n) for n in args.server.split("x"))
    return args


def fulfilled_orders(n: int) -> list:
    """N fulfilled $249 orders, each with its user and a year's subscription (bulk, no email)."""
    from django.utils import timezone

    from accounts.models import User
    from billing.models import Order, Plan, Subscription

    plan = Plan.objects.get(active=True, amount_cents=24900)
    now = timezone.now()
    users = User.objects.bulk_create([User(email=f"refund{i}@bench.example") for i in range(n)])
    orders = Order.objects.bulk_create(
        Order(
            reference=f"PU-R{i:05d}",
            email=u.email,
            plan=plan,
            amount_cents=plan.amount_cents,
            currency=plan.currency,
            state=Order.State.FULFILLED,
            fulfilled_via=Order.Via.WEBHOOK,
            stripe_payment_intent_id=f"pi_benchrefund{i:05d}",
            stripe_payment_status="succeeded",
            paid_at=now,
            fulfilled_at=now,
            card_last4="4242",
        )
        for i, u in enumerate(users)
    )
    Subscription.objects.bulk_create(
        Subscription(order=o, user=u, starts_at=now, ends_at=now + timedelta(days=365))
        for o, u in zip(orders, users, strict=True)
    )
    return orders


def bodies_for(orders: list) -> list[bytes]:
    from tests.fixtures import stripe_objects as so

    return [
        json.dumps(
            so.event("refund.created", so.refund(o.stripe_payment_intent_id, 5000, refund_id=f"re_bench{i:05d}"))
        ).encode()
        for i, o in enumerate(orders)
    ]


def report(args, orders, deliveries) -> bool:
    from billing.models import OutboundEmail, Refund

    sent = {f"re_bench{i:05d}": d for i, d in enumerate(deliveries)}
    ok_deliveries = [d for d in deliveries if d is not None and d.status == 200]
    emails = {
        e.key.removeprefix("refund:"): e.created_at.timestamp() for e in OutboundEmail.objects.filter(kind="refund")
    }
    to_email = [emails[r] - d.sent for r, d in sent.items() if d is not None and r in emails]
    to_2xx = [d.latency for d in ok_deliveries]
    checks = {
        "every event answered 200": len(ok_deliveries) == len(orders),
        "one refund per order": Refund.objects.count() == len(orders)
        and Refund.objects.values("order").distinct().count() == len(orders),
        "one refund email per refund": len(emails) == len(orders),
    }
    print(
        f"\nRefund event → recorded and email queued ({len(orders)} events, {args.concurrency} at a time, "
        f"gunicorn {args.server}, load {load()})"
    )
    print("| until | p50 | p99 | max |\n| --- | ---: | ---: | ---: |")
    for title, values in (("the 2xx (committed)", to_2xx), ("the email row is written", to_email)):
        if values:
            print(f"| {title} | {ms(percentile(values, 50))} | {ms(percentile(values, 99))} | {ms(max(values))} |")
    for name, passed in checks.items():
        print(f"- {name}: {'ok' if passed else 'FAILED'}")
    return all(checks.values())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = Scratch(args.pg, args.timeout, prefix="paidup-bench-refund-", db_prefix="paidup_bench_refund")
    procs, workdir = run.procs, run.workdir
    try:
        run.create_database()
        site_port, nobody = free_port(), free_port()
        env = server_env(args, run.db_url, site_port, nobody)
        log(f"migrating {run.db_name} (dj-stripe brings about a hundred migrations); logs in {workdir}")
        migrate = start_migrate(procs, ROOT, env, workdir / "migrate.log")
        if migrate.wait():
            raise RuntimeError(f"migrate failed; see {workdir / 'migrate.log'}")
        setup_django(env)
        endpoint = seed()
        orders = fulfilled_orders(args.events)
        bodies = bodies_for(orders)
        server = start_gunicorn(
            procs,
            ROOT,
            env,
            port=site_port,
            workers=args.workers,
            threads=args.threads,
            log_path=workdir / "gunicorn.log",
        )
        wait_for_http(site_port, "/healthz", server, timeout=60)
        path = f"/stripe/webhook/{endpoint.djstripe_uuid}/"
        log(f"delivering {len(bodies)} refund events, {args.concurrency} at a time")
        deliveries = deliver(
            bodies,
            port=site_port,
            path=path,
            secret=endpoint.secret,
            concurrency=args.concurrency,
            request_timeout=args.request_timeout,
            stop=threading.Event(),
        )
        return 0 if report(args, orders, deliveries) else 1
    except (Abort, KeyboardInterrupt) as stopped:
        log(f"{stopped or 'interrupted'}; cleaning up")
        return 130
    finally:
        run.end(keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
