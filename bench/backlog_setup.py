"""Setting up bench/webhook_backlog.py: the scratch database, Django, orders paid in localstripe, events."""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import secrets
import time
from concurrent.futures import ThreadPoolExecutor

from bench.harness import admin_sql, setup_django  # noqa: F401  (re-exported for webhook_backlog.py)

TEST_CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"}


# --- the scratch database and Django in this process ------------------------------------


def server_env(args: argparse.Namespace, db_url: str, site_port: int, stripe_port: int) -> dict:
    return {
        **os.environ,
        "DEBUG": "0",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SITE_URL": f"http://127.0.0.1:{site_port}",
        "DATABASE_URL": db_url,
        "CONN_MAX_AGE": str(args.conn_max_age),
        "STRIPE_SECRET_KEY": "sk_test_paidupBench" + secrets.token_hex(12),
        "STRIPE_PUBLISHABLE_KEY": "pk_test_paidupBench" + secrets.token_hex(12),
        "STRIPE_API_BASE": f"http://127.0.0.1:{stripe_port}",
        "LOG_LEVEL": "INFO",
        # Emails go to the server logs here, on purpose (paidup.E006 would refuse it otherwise).
        "ALLOW_CONSOLE_EMAIL": "1",
        "PYTHONUNBUFFERED": "1",
    }


def seed():
    """The plan and dj-stripe's account, key and endpoint rows; returns the endpoint."""
    from django.core.management import call_command

    from billing.stripe_setup import seed_local

    call_command("seed_demo", stdout=io.StringIO())
    return seed_local()


# --- orders, PaymentIntents and events ----------------------------------------------------


def new_orders(variant: str, n: int, rng: random.Random) -> list:
    """Orders in memory (saved later: the database may still be migrating)."""
    from billing.management.commands.seed_demo import DEMO_PLAN
    from billing.models import Order
    from billing.models.orders import REFERENCE_ALPHABET, REFERENCE_PREFIX

    references: set[str] = set()
    while len(references) < n:
        references.add(REFERENCE_PREFIX + "".join(rng.choices(REFERENCE_ALPHABET, k=6)))
    return [
        Order(
            reference=reference,
            email=f"{variant}-{i:05d}@bench.paidup.example",
            amount_cents=DEMO_PLAN["amount_cents"],
            currency=DEMO_PLAN["currency"],
        )
        for i, reference in enumerate(sorted(references))
    ]


def pay(orders: list, concurrency: int) -> list[dict]:
    """A real, succeeded PaymentIntent in localstripe for every order, through PaidUp's own
    gateway (customer, PaymentIntent, confirm). Each order is then left as a crash right after
    the charge leaves it: pending, with its PaymentIntent id, never told that it succeeded."""
    from billing import gateway

    def one(order) -> dict:
        pm = gateway.client().v1.payment_methods.create({"type": "card", "card": TEST_CARD})
        order.payment_attempts = 1
        payment_intent = gateway.create_payment_intent(order, pm.id)
        order.stripe_payment_intent_id = payment_intent.id
        order.stripe_customer_id = payment_intent.customer or ""
        order.stripe_payment_status = payment_intent.status
        charge = gateway.confirm(order, payment_intent.id)
        if charge.status != "succeeded":
            raise RuntimeError(f"{order.reference}: PaymentIntent {charge.payment_intent_id} is {charge.status}")
        return charge.payment_intent.to_dict()

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, orders))


def save_orders(orders: list) -> None:
    from billing.models import Order, Plan

    plan = Plan.objects.get(slug="pro-year")
    for order in orders:
        order.plan = plan
    Order.objects.bulk_create(orders, batch_size=500)


def build_event(payment_intent: dict, api_version: str) -> tuple[str, bytes]:
    event_id = "evt_" + secrets.token_hex(12)
    event = {
        "id": event_id,
        "object": "event",
        "api_version": api_version,
        "created": int(time.time()),
        "data": {"object": payment_intent},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": "payment_intent.succeeded",
    }
    return event_id, json.dumps(event, indent=2).encode()
