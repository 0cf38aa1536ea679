"""Reconciliation racing the other paths, and two reconcilers at once (issue 3, item 8).

1. The webhook, the return page, a reconciliation run and a support fulfil hit one order at
   the same instant, fifty times: each time exactly one subscription, one access email, one
   `state:fulfilled` event, and every path ends in one of its benign outcomes.
2. Two reconcilers at once, as threads and as two `manage.py reconcile` processes: one
   works, the other says so and leaves at once; the next run works.
3. The lease row that stands in for PostgreSQL's advisory lock on other databases.

(1) and (2) need PostgreSQL (row and advisory locks; the `postgres` marker, see
tests/test_races.py); (3) runs anywhere.
"""

import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from billing import checkout, fulfilment, gateway, locks, reconciliation
from billing.locks import exclusive
from billing.models import Alert, Lease, Order, OrderEvent, OutboundEmail, ReconciliationRun, Subscription
from support import actions
from tests.factories import OrderFactory, UserFactory
from tests.fixtures.services import CARD, give_cookie, post_event, signed_event
from tests.test_races import race, run_together

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 50


@pytest.fixture
def reconcile_now(settings):
    """No grace period (the order is seconds old) and no pacing of the fake Stripe calls."""
    settings.RECONCILE_GRACE_SECONDS = 0
    settings.RECONCILE_STRIPE_PER_SECOND = 100_000


def pending_order_paid_in_stripe(fake_stripe, plan) -> Order:
    """Checkout created and confirmed the PaymentIntent; 3-D Secure then succeeded at Stripe,
    and nobody here has heard yet: the order is pending, never checked."""
    order = OrderFactory(plan=plan)
    pi = fake_stripe.create_payment_intent(order, CARD)
    fake_stripe.settle(pi["id"], "succeeded")
    Order.objects.filter(pk=order.pk).update(
        stripe_payment_intent_id=pi["id"], stripe_payment_status="requires_action", stripe_checked_at=None
    )
    order.refresh_from_db()
    return order


# --- 1. four paths, one order -----------------------------------------------------------


class Rendezvous:
    """Holds each caller of fulfil() until `parties` have arrived or `patience` has passed.

    Left alone, the support action (a function call) nearly always beats the webhook and the
    order page (a whole request each) and reconciliation (a few queries first); held here,
    every path that gets as far as fulfil() goes for the row lock at the same instant.
    """

    def __init__(self, parties: int) -> None:
        self.parties, self.patience, self.arrived = parties, 0.0, 0
        self.condition = threading.Condition()

    def next_round(self, patience: float) -> None:
        self.patience, self.arrived = patience, 0

    def wait(self) -> None:
        with self.condition:
            self.arrived += 1
            self.condition.notify_all()
            self.condition.wait_for(lambda: self.arrived >= self.parties, timeout=self.patience)


@pytest.fixture
def rendezvous(monkeypatch) -> Rendezvous:
    meeting, real = Rendezvous(parties=4), fulfilment.fulfil

    def fulfil_together(*args, **kwargs):
        meeting.wait()
        return real(*args, **kwargs)

    for module in (fulfilment, checkout, reconciliation, actions):  # every path's fulfil()
        monkeypatch.setattr(module, "fulfil", fulfil_together)
    return meeting


@race
def test_webhook_return_page_reconciliation_and_support_fulfil_one_order_once_fifty_times(
    plan, fake_stripe, webhook_endpoint, reconcile_now, rendezvous, mailoutbox
):
    sam = UserFactory(email="sam@paidup.example", is_staff=True)
    winners = {"as they come": Counter(), "met at fulfil()": Counter()}
    support_said, reached_fulfil = Counter(), Counter()
    slowest, started = 0.0, time.monotonic()

    for round_ in range(ROUNDS):
        order = pending_order_paid_in_stripe(fake_stripe, plan)
        pi = dict(fake_stripe.intents[order.stripe_payment_intent_id])
        body, header = signed_event("payment_intent.succeeded", pi)
        as_support_saw_it = Order.objects.get(pk=order.pk)  # the order page open before the click
        timing = "met at fulfil()" if round_ % 2 else "as they come"
        rendezvous.next_round(patience=0.3 if round_ % 2 else 0.0)

        customer = Client()  # the browser that paid: it holds the order's reference cookie
        give_cookie(customer, order.reference)
        round_started = time.monotonic()
        webhook, page, run, support = run_together(
            lambda b=body, h=header: post_event(Client(), webhook_endpoint, b, h),
            lambda o=order, c=customer: c.get(f"/orders/{o.reference}/"),
            reconciliation.run,
            lambda o=as_support_saw_it: actions.fulfil_verified(o, sam),
        )
        slowest = max(slowest, time.monotonic() - round_started)

        order.refresh_from_db()
        winners[timing][order.fulfilled_via] += 1
        reached_fulfil[rendezvous.arrived] += 1
        # Each path's outcome is one of the benign ones.
        assert webhook.status_code == 200, webhook.content
        assert page.status_code == 200  # "ready", or "confirming" when reconciliation had just asked Stripe
        assert run is not None, "the only reconciler found the lock held"
        assert run.ok, run.errors
        if support.message.endswith("already fulfilled; nothing done."):
            support_said["already fulfilled"] += 1
        else:
            support_said["fulfilled"] += 1
            assert order.fulfilled_via == "support", f"support was told it fulfilled {order}: {order.fulfilled_via} did"

        # Exactly once.
        assert order.state == "fulfilled"
        assert Subscription.objects.filter(order=order).count() == 1
        access = OutboundEmail.objects.filter(order=order, kind__in=OutboundEmail.ACCESS_KINDS)
        # The charge was seconds ago: the confirmation, whichever path won (issue 7, item 4).
        assert [(e.kind, e.status) for e in access] == [("confirmation", "sent")]
        assert OrderEvent.objects.filter(order=order, kind="state:fulfilled").count() == 1
        assert OrderEvent.objects.filter(order=order, kind="state:paid").count() == 1
        assert [m.to for m in mailoutbox].count([order.email]) == 1
        assert not order.needs_attention and not Alert.objects.filter(order=order).exists()

    elapsed = time.monotonic() - started
    print(f"\n{ROUNDS} rounds in {elapsed:.1f}s, slowest {slowest:.2f}s")
    for timing, counts in winners.items():
        print(f"fulfilled by, {timing}: {dict(counts)}")
    print(f"paths that reached fulfil(), per round: {dict(reached_fulfil)}; support was told: {dict(support_said)}")
    assert Subscription.objects.count() == ROUNDS
    assert ReconciliationRun.objects.count() == ROUNDS


# --- 2. two reconcilers at once -----------------------------------------------------------


@race
def test_two_reconcilers_at_once_one_works_and_the_other_leaves_at_once(
    plan, fake_stripe, reconcile_now, monkeypatch, mailoutbox
):
    order = pending_order_paid_in_stripe(fake_stripe, plan)  # work for whichever gets the lock
    other_left = threading.Event()
    held_until_the_other_left = []
    scan = fake_stripe.succeeded_payment_pages

    def slow_scan(since, until=None):
        """The first run to get here holds the lock: it stays until the other has tried."""
        if not held_until_the_other_left:
            held_until_the_other_left.append(other_left.wait(timeout=15))
        yield from scan(since, until)

    monkeypatch.setattr(gateway, "succeeded_payment_pages", slow_scan)

    def reconcile():
        began = time.monotonic()
        record = reconciliation.run()
        if record is None:
            other_left.set()
        return record, time.monotonic() - began

    outcomes = run_together(reconcile, reconcile)

    (worked, _), (left, left_after) = sorted(outcomes, key=lambda outcome: outcome[0] is None)
    assert left is None, "both runs worked at once"
    assert left_after < 3, f"the second run waited {left_after:.1f}s instead of leaving"
    assert held_until_the_other_left == [True]  # the lock really was held while the other tried
    assert worked.ok and worked.counts["recovered"] == 1, (worked.counts, worked.errors)
    assert list(ReconciliationRun.objects.all()) == [worked]
    order.refresh_from_db()
    assert order.state == "fulfilled" and order.fulfilled_via == "reconciliation"
    assert Subscription.objects.filter(order=order).count() == 1

    third = reconciliation.run()  # the lock was given back
    assert third is not None and third.ok
    assert ReconciliationRun.objects.count() == 2


# A `manage.py reconcile` whose Stripe is faked: its scan holds the lock until RELEASE exists.
COMMAND = """
import runpy, sys, time
from pathlib import Path
from billing import gateway

release = Path(sys.argv[1])

def succeeded_payment_pages(since, until=None):
    deadline = time.monotonic() + 60
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return iter(())

gateway.succeeded_payment_pages = succeeded_payment_pages
gateway.refund_pages = lambda since: iter(())
gateway.refund_event_pages = lambda since: iter(())
gateway.dispute_pages = gateway.early_fraud_warning_pages = lambda since: iter(())
sys.argv = ["manage.py", "reconcile", "--skip-checks"]  # the deploy checks want production settings
runpy.run_path("manage.py", run_name="__main__")
"""


def database_url() -> str:
    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    return f"postgres://{db['USER']}{password}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"


@race
def test_two_reconcile_commands_at_once_one_works_and_the_other_exits_0(fake_stripe, reconcile_now, tmp_path):
    release = tmp_path / "release"
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("FAILPOINTS", "DJANGO_SETTINGS_MODULE")},
        "DATABASE_URL": database_url(),  # the test database, where this test's rows are
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "RECONCILE_GRACE_SECONDS": "0",
    }
    commands = [
        subprocess.Popen(
            [sys.executable, "-c", COMMAND, str(release)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        # Whichever gets the lock keeps it until `release` exists: the other must leave first.
        deadline = time.monotonic() + 90
        while all(c.poll() is None for c in commands) and time.monotonic() < deadline:
            time.sleep(0.05)
        first = next((c for c in commands if c.poll() is not None), None)
        assert first is not None, "neither command finished"
        out, err = first.communicate()
        assert first.returncode == 0, (out, err)
        assert out.strip() == "another reconciliation run is in progress; nothing done", (out, err)
        (in_progress,) = ReconciliationRun.objects.all()  # the other one's, still working
        assert in_progress.finished_at is None

        release.touch()
        (second,) = [c for c in commands if c is not first]
        out, err = second.communicate(timeout=60)
        assert second.returncode == 0, (out, err)
        assert out.startswith("checked=0 recovered=0 ") and "errors=0" in out, (out, err)
    finally:
        for command in commands:
            if command.poll() is None:
                command.kill()
                command.communicate()

    in_progress.refresh_from_db()
    assert in_progress.ok and in_progress.finished_at is not None
    assert reconciliation.run() is not None  # neither process left the lock behind
    assert ReconciliationRun.objects.count() == 2


# --- 3. the lease row (any database) ------------------------------------------------------


@pytest.fixture
def lease_path(monkeypatch):
    """billing.locks as it behaves on SQLite, whatever the test database is."""
    monkeypatch.setattr(locks, "connection", SimpleNamespace(vendor="sqlite"))


ELSEWHERE = "worker-2:4242"


def held_elsewhere(name: str, *, until) -> None:
    """The row another process leaves while it holds the lease (hostname:pid)."""
    Lease.objects.update_or_create(name=name, defaults={"holder": ELSEWHERE, "expires_at": until})


def lease(name: str = reconciliation.LOCK) -> tuple[str, object]:
    row = Lease.objects.get(name=name)
    return row.holder, row.expires_at


@pytest.mark.django_db
def test_a_held_lease_refuses_a_second_holder_and_is_free_once_given_back(lease_path, time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    until = timezone.now() + timedelta(minutes=5)
    held_elsewhere(reconciliation.LOCK, until=until)

    with exclusive(reconciliation.LOCK) as acquired:
        assert not acquired
    assert reconciliation.run() is None
    assert lease() == (ELSEWHERE, until), "a refused caller touched a lease it never had"
    assert not ReconciliationRun.objects.exists()

    Lease.objects.filter(name=reconciliation.LOCK).update(holder="", expires_at=None)  # the other one finished
    with exclusive(reconciliation.LOCK) as acquired:
        assert acquired
        me, expires = lease()
        assert me != ELSEWHERE and expires == timezone.now() + timedelta(minutes=10)
        with exclusive(reconciliation.LOCK) as second:  # a second caller in this process
            assert not second
        assert lease() == (me, expires)
    assert lease() == ("", None)


@pytest.mark.django_db
def test_an_expired_lease_is_taken_over(lease_path, time_machine, fake_stripe, settings):
    settings.RECONCILE_STRIPE_PER_SECOND = 100_000
    time_machine.move_to(timezone.now(), tick=False)
    held_elsewhere(reconciliation.LOCK, until=timezone.now() + timedelta(minutes=10))  # then that worker died

    time_machine.shift(timedelta(minutes=9, seconds=59))
    assert reconciliation.run() is None  # not yet expired
    time_machine.shift(timedelta(seconds=2))
    with exclusive(reconciliation.LOCK) as acquired:
        assert acquired
        assert lease() == (f"{socket.gethostname()}:{os.getpid()}", timezone.now() + timedelta(minutes=10))
    assert lease() == ("", None)

    held_elsewhere(reconciliation.LOCK, until=timezone.now() - timedelta(seconds=1))
    record = reconciliation.run()  # a run takes over an expired lease too, and gives it back
    assert record is not None and record.ok, record and record.errors
    assert lease() == ("", None)
