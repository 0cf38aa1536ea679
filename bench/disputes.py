"""Disputes and early fraud warnings: webhook latency, and what they add to an idle reconciliation.

Issue 11, "Measure". In this process, on a scratch PostgreSQL database (created and migrated
by Django's test-database machinery from DATABASE_URL, dropped at the end):

1. event → recorded and alert queued: N signed `charge.dispute.created` events (each a fresh
   dispute on its own fulfilled order, built through stripe-python's Dispute class) POSTed to
   the real webhook endpoint through Django's test client. The webhook commits the dispute row,
   the alert and the alert's outbox emails in one transaction before it answers, so the time
   until the 2xx is the time until all of them are committed. The same for
   `radar.early_fraud_warning.created` (EFW_AUTO_REFUND=off).
2. Stripe requests per idle reconciliation run (nothing to do, the cursor already set), against
   the counting Stripe fake (tests/fixtures/gateway.py), with step 6 (disputes and warnings)
   switched off ("before") and on ("after").
3. webhook missed → recorded by reconciliation: MISSED disputes put in the fake Stripe with no
   event, then one reconciliation run timed. The worst case with the default schedule is one
   whole interval (RECONCILE_INTERVAL_MINUTES: the previous run just missed them) plus that run.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/paidup .venv/bin/python bench/disputes.py --events 200

A benchmark prints numbers; it has no time limit to pass (STYLE.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200)
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from django.db import connection
    from django.test.utils import setup_test_environment

    setup_test_environment()
    name = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    try:
        result = measure(args.events)
    finally:
        connection.creation.destroy_test_db(name, verbosity=0)
    print(json.dumps(result, indent=2))
    return 0


MISSED = 20  # disputes whose webhook was missed, recorded by one reconciliation run


def measure(n: int) -> dict:
    import pytest
    from django.test import Client

    from bench.harness import load, percentile
    from billing import reconciliation, schedules
    from billing.models import Alert, Dispute, EarlyFraudWarning, OutboundEmail
    from billing.stripe_setup import seed_local
    from tests.factories import PlanFactory, stripe_paid_order
    from tests.fixtures import stripe_disputes
    from tests.fixtures.gateway import FakeStripe, install
    from tests.fixtures.services import post_event, signed_event

    patch = pytest.MonkeyPatch()
    fake = install(FakeStripe(), patch)
    endpoint = seed_local()
    PlanFactory()
    client = Client()
    orders = [stripe_paid_order(fake, state="fulfilled") for _ in range(n)]
    timings: dict[str, list[float]] = {"dispute": [], "warning": []}
    for order in orders:
        for kind, event_type, obj in (
            (
                "dispute",
                "charge.dispute.created",
                stripe_disputes.dispute(payment_intent=order.stripe_payment_intent_id),
            ),
            (
                "warning",
                "radar.early_fraud_warning.created",
                stripe_disputes.early_fraud_warning(payment_intent=order.stripe_payment_intent_id),
            ),
        ):
            body, header = signed_event(event_type, obj)
            start = time.perf_counter()
            response = post_event(client, endpoint, body, header)
            timings[kind].append(time.perf_counter() - start)
            assert response.status_code == 200, response.content
    checks = {
        "disputes recorded": Dispute.objects.exclude(order=None).count() == n,
        "warnings recorded": EarlyFraudWarning.objects.exclude(order=None).count() == n,
        "one dispute alert each": Alert.objects.filter(reason="dispute").count() == n,
        "alert emails queued": OutboundEmail.objects.filter(kind="alert").count() >= 2 * n,
    }
    reconciliation.run()  # sets the cursor and records nothing new (every dispute is known)
    after = reconciliation.run().counts["stripe_requests"]
    patch.setattr(reconciliation, "scan_disputes", lambda ctx: None)
    before = reconciliation.run().counts["stripe_requests"]
    patch.undo()
    install(fake, patch)
    # Webhook missed: disputes Stripe has that no event told us about. The next scheduled run
    # records them; the worst case is one whole interval (the run just missed them) plus that run.
    missed_orders = [stripe_paid_order(fake, state="fulfilled") for _ in range(MISSED)]
    for order in missed_orders:
        fake.disputes.append(stripe_disputes.dispute(payment_intent=order.stripe_payment_intent_id))
    start = time.perf_counter()
    recovering = reconciliation.run()
    missed_run_s = time.perf_counter() - start
    checks["missed disputes recorded by one run"] = (
        recovering.ok and Dispute.objects.filter(order__in=missed_orders).count() == MISSED
    )
    interval_s = schedules.reconcile_interval_minutes() * 60
    patch.undo()
    return {
        "events": n,
        "dispute_p50_ms": round(percentile(timings["dispute"], 50) * 1000, 1),
        "dispute_p99_ms": round(percentile(timings["dispute"], 99) * 1000, 1),
        "warning_p50_ms": round(percentile(timings["warning"], 50) * 1000, 1),
        "warning_p99_ms": round(percentile(timings["warning"], 99) * 1000, 1),
        "idle_run_stripe_requests_before": before,
        "idle_run_stripe_requests_after": after,
        "missed_disputes": MISSED,
        "missed_run_ms": round(missed_run_s * 1000, 1),
        "missed_worst_case_s": round(interval_s + missed_run_s, 1),
        "checks": checks,
        "load": load(),
    }


if __name__ == "__main__":
    sys.exit(main())
