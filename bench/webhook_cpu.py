"""CPU and statements per first delivery of `payment_intent.succeeded`, in one process.

The backlog benchmark (bench/webhook_backlog.py) measures the real server, but on a shared
machine under load its CPU figures move by tens of percent between runs. This measures the same
work with less around it, so that two versions of the code can be compared in alternation
within minutes: N pending orders, N signed events POSTed one after another through Django's
test client (every middleware, the real view, dj-stripe, PaidUp's receiver, the commit), and
for each phase the CPU of this process and of its PostgreSQL backend (/proc/<pid>/stat), plus
the statements Django sent. Warm-up events first, so that one-off costs (imports, template
compilation, the URL resolver) are left out of the figures.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/<migrated db> \\
        .venv/bin/python bench/webhook_cpu.py --events 200 --warmup 20 --rounds 3

The database must be migrated; the script adds its orders, plan and dj-stripe rows and leaves
them. It prints numbers; it has no time limit to pass (STYLE.md).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import random
import secrets
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=200, help="measured first deliveries per round")
    p.add_argument("--warmup", type=int, default=20, help="deliveries before measuring")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--profile",
        type=Path,
        help="also write a cProfile of the measured rounds here, timed in CPU seconds (pstats format)",
    )
    return p.parse_args(argv)


def setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DEBUG", "0")
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    os.environ.setdefault("ALLOWED_HOSTS", "testserver,127.0.0.1")
    os.environ.setdefault("SITE_URL", "http://127.0.0.1:8999")
    os.environ.setdefault("STRIPE_SECRET_KEY", "sk_test_paidupBench" + secrets.token_hex(12))
    os.environ.setdefault("STRIPE_PUBLISHABLE_KEY", "pk_test_paidupBench" + secrets.token_hex(12))
    os.environ.setdefault("STRIPE_API_BASE", "http://127.0.0.1:8998")  # never called: the receiver trusts the body
    os.environ.setdefault("ALLOW_CONSOLE_EMAIL", "1")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("CONN_MAX_AGE", "600")  # one backend for the whole run, as gunicorn keeps it
    import django

    django.setup()


def backend_cpu_seconds(pid: int) -> float:
    """utime + stime of a local process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv=None) -> int:
    args = parse_args(argv)
    setup()
    from django.db import connection
    from django.test import Client
    from djstripe.settings import djstripe_settings

    from bench.backlog_setup import build_event, new_orders, save_orders, seed
    from bench.harness import stripe_signature

    rng = random.Random(args.seed)
    endpoint = seed()
    path = f"/stripe/webhook/{endpoint.djstripe_uuid}/"
    client = Client()
    label = secrets.token_hex(3)
    orders = new_orders(f"cpu-{label}", args.warmup + args.rounds * args.events, rng)
    for order in orders:
        order.stripe_payment_intent_id = "pi_" + secrets.token_hex(12)
        order.stripe_payment_status = "requires_confirmation"
    save_orders(orders)
    bodies = []
    for order in orders:
        pi = {
            "id": order.stripe_payment_intent_id,
            "object": "payment_intent",
            "status": "succeeded",
            "amount": order.amount_cents,
            "currency": order.currency,
            "customer": None,
            "metadata": {"order_id": str(order.id), "reference": order.reference, "email": order.email},
            "created": int(time.time()),
        }
        bodies.append(build_event(pi, djstripe_settings.STRIPE_API_VERSION)[1].decode())

    def post(body: str) -> None:
        header = stripe_signature(body.encode(), endpoint.secret)
        response = client.post(path, data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE=header)
        if response.status_code != 200:
            raise RuntimeError(f"webhook answered {response.status_code}: {response.content[:200]!r}")

    for body in bodies[: args.warmup]:
        post(body)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = cursor.fetchone()[0]
    app_ms, db_ms, statements = [], [], []
    profiler = cProfile.Profile(time.process_time) if args.profile else None
    for r in range(args.rounds):
        chunk = bodies[args.warmup + r * args.events : args.warmup + (r + 1) * args.events]
        sent = [0]

        def count(execute, sql, params, many, context, sent=sent):
            # A counter, not Django's CaptureQueriesContext: that one formats and keeps every
            # statement, which is CPU the server does not spend.
            sent[0] += 1
            return execute(sql, params, many, context)

        app0, db0 = time.process_time(), backend_cpu_seconds(backend)
        with connection.execute_wrapper(count):
            if profiler is not None:
                profiler.enable()
            for body in chunk:
                post(body)
            if profiler is not None:
                profiler.disable()
        app_ms.append((time.process_time() - app0) * 1000 / len(chunk))
        db_ms.append((backend_cpu_seconds(backend) - db0) * 1000 / len(chunk))
        statements.append(sent[0] / len(chunk))
        print(
            f"round {r + 1}: {len(chunk)} first deliveries, ms CPU per event: app {app_ms[-1]:.1f}, "
            f"postgres {db_ms[-1]:.1f}, total {app_ms[-1] + db_ms[-1]:.1f}; statements per event {statements[-1]:.1f}",
            flush=True,
        )
    total = [a + d for a, d in zip(app_ms, db_ms, strict=True)]
    if profiler is not None:
        profiler.dump_stats(args.profile)
        print(f"profile of the measured rounds (CPU time, with the profiler's own overhead): {args.profile}")
    print(
        f"median of {args.rounds}: app {statistics.median(app_ms):.1f} ms, postgres {statistics.median(db_ms):.1f} ms, "
        f"total {statistics.median(total):.1f} ms CPU per first delivery; {statistics.median(statements):.1f}"
        f" statements (load {os.getloadavg()[0]:.1f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
