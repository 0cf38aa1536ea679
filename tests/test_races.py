"""Real concurrency on PostgreSQL: threads, each with its own connection, racing for one order.

select_for_update is a no-op on SQLite, so these run on PostgreSQL only; the `postgres`
marker (tests/fixtures/services.py) skips them elsewhere, or fails when REQUIRE_POSTGRES=1.
"""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.db import connection
from django.test import Client

from billing import checkout, gateway
from billing.fulfilment import fulfil
from billing.models import Order, OrderEvent, OutboundEmail, Subscription
from tests.factories import OrderFactory, payment_intent
from tests.fixtures.services import CARD, give_cookie, post_event, signed_event

ROUNDS = 5
ROOT = Path(__file__).resolve().parent.parent


def race(test):
    """PostgreSQL, and real commits: each thread sees what the others committed."""
    return pytest.mark.postgres(pytest.mark.django_db(transaction=True)(test))


def run_together(*calls, timeout: float = 60):
    """Start every call at the same instant, each in its own thread and DB connection."""
    barrier = threading.Barrier(len(calls))
    results, errors = [None] * len(calls), []

    def worker(i, call):
        try:
            barrier.wait(timeout=timeout)
            results[i] = call()
        except BaseException as error:  # noqa: BLE001  (reported below, in the test's thread)
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i, call)) for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(thread.is_alive() for thread in threads), "a racer hung (deadlock?)"
    assert not errors, errors
    return results


def assert_fulfilled_once(order: Order, mailoutbox) -> None:
    order.refresh_from_db()
    assert order.state == "fulfilled"
    assert Subscription.objects.filter(order=order).count() == 1
    assert OutboundEmail.objects.filter(order=order).count() == 1
    assert [m.to for m in mailoutbox].count([order.email]) == 1
    assert OrderEvent.objects.filter(order=order, kind="state:paid").count() == 1
    assert OrderEvent.objects.filter(order=order, kind="state:fulfilled").count() == 1


@race
def test_it_fulfils_once_when_the_webhook_and_the_return_page_arrive_together(
    plan, fake_stripe, webhook_endpoint, mailoutbox
):
    for _ in range(ROUNDS):
        order = OrderFactory(plan=plan)
        fake_stripe.create_payment_intent(order, CARD)
        pi_id = fake_stripe.created[-1]["pi"]
        fake_stripe.settle(pi_id, "succeeded")
        Order.objects.filter(pk=order.pk).update(stripe_payment_intent_id=pi_id, stripe_payment_status="processing")
        body, header = signed_event("payment_intent.succeeded", dict(fake_stripe.intents[pi_id]))

        webhook, returned = run_together(
            lambda b=body, h=header: post_event(Client(), webhook_endpoint, b, h).status_code,
            lambda pk=order.pk: checkout.sync_with_stripe(Order.objects.get(pk=pk)).state,
        )
        assert webhook == 200 and returned == "fulfilled"
        assert_fulfilled_once(order, mailoutbox)


@race
def test_it_fulfils_once_when_eight_workers_try_at_once(plan, mailoutbox):
    order = OrderFactory(plan=plan, stripe_payment_intent_id="pi_eight")
    proof = payment_intent(order)
    results = run_together(*[lambda: fulfil(order, via="webhook", payment_intent=proof)] * 8)
    assert sum(result.fulfilled_now for result in results) == 1
    assert_fulfilled_once(order, mailoutbox)


@race
def test_two_checkout_posts_at_once_make_one_payment_intent(plan, fake_stripe, mailoutbox, monkeypatch):
    create = fake_stripe.create_payment_intent

    def create_like_stripe(order, payment_method):
        time.sleep(0.2)  # Stripe's latency: the window in which a second request could slip in
        return create(order, payment_method)

    monkeypatch.setattr(gateway, "create_payment_intent", create_like_stripe)
    for round_ in range(ROUNDS):
        form = {"email": f"ada{round_}@example.com", "payment_method": CARD}
        reference = f"PU-RACE{round_ + 2}Z"
        clients = [Client(), Client()]
        for client in clients:
            give_cookie(client, reference)

        responses = run_together(*[lambda c=client, f=form: c.post("/checkout/", f) for client in clients])
        assert [r.status_code for r in responses] == [302, 302]
        assert {r.url for r in responses} == {f"/orders/{reference}/"}
        assert [c["order"] for c in fake_stripe.created].count(reference) == 1
        assert_fulfilled_once(Order.objects.get(reference=reference), mailoutbox)
    assert len(fake_stripe.confirmed) == ROUNDS


def test_ci_cannot_pass_by_skipping_the_race_tests_on_sqlite():
    """With REQUIRE_POSTGRES=1 on SQLite the race tests fail; without it they are skipped."""
    env = {k: v for k, v in os.environ.items() if k != "REQUIRE_POSTGRES"}
    env["DATABASE_URL"] = "sqlite:///:memory:"
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfEs", "-k", "eight_workers", __file__]
    runs = [
        subprocess.Popen(command, cwd=ROOT, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for run_env in (env, {**env, "REQUIRE_POSTGRES": "1"})
    ]
    (skipped, _), (required, _) = [run.communicate(timeout=120) for run in runs]

    assert runs[0].returncode == 0 and "1 skipped" in skipped, skipped
    assert runs[1].returncode == 1 and "1 error" in required, required
    assert "the race tests must run on PostgreSQL" in required
