"""Reconciliation at scale: Stripe requests, database queries and time per run; crash → recovery email.

Issue 3, item 9. On a scratch PostgreSQL database (created, migrated, dropped at the end):

  fake         billing.gateway replaced by a counting fake (tests/fixtures/gateway.py's FakeStripe),
               its events spread over the first-scan window (3 days), as real traffic would be
  localstripe  the same scenarios against localstripe (bench/localstripe_memory.py: the launcher
               with the store kept in memory), payments created concurrently; their events are
               all minutes old, so every run re-reads all of them (the scan's 10-minute overlap)
  crash        a real `manage.py qcluster` with the default schedule (reconcile every minute,
               grace 60 s) and orders left pending right after a succeeded charge (a server
               crash, no webhook): seconds from the crash until the recovery email is queued;
               then --backlog unknown payments at once into that cluster (a q task has 60 s)

Scenarios: N healthy fulfilled orders whose payments are in Stripe (--sizes, default none, 1k
and 10k), the first size with --stuck crashed checkouts beside (pending, paid in Stripe five
minutes ago), and --unknown payments that succeeded in Stripe with no order here (default 1k;
their metadata carries the email, as PaidUp's checkout puts it there). The fake also runs the
unknown payments with the email only on the Stripe customer (one customer lookup each).
Each scenario gets two runs of billing.reconciliation.run(): the first (no cursor: it scans
RECONCILE_FIRST_SCAN_SECONDS back) and the second (from the first run's cursor minus the
overlap). For each: database queries (all of them, by step, and per page of the Stripe scan),
Stripe requests (the run's counts["stripe_requests"], by call; against localstripe also the
HTTP requests in its log), pages of events, time, and the load average beside them.

    .venv/bin/python bench/reconcile.py                         # everything, about 15 min
    .venv/bin/python bench/reconcile.py --parts fake --sizes 1000,10000,50000
    .venv/bin/python bench/reconcile.py --parts crash --crashes 5

Every process it starts is stopped at the end, on Ctrl-C and when --timeout passes; --keep
keeps the database and the logs. Exit status 1 when a correctness check fails. A benchmark
prints numbers; it has no time limit to pass (STYLE.md).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import secrets
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import harness  # noqa: E402
from bench.harness import (  # noqa: E402
    Abort,
    Processes,
    Scratch,
    bounded,
    free_port,
    load,
    log,
    reset_localstripe,
    start_localstripe,
    start_migrate,
    stop_qcluster,
    wait_for_line,
)

VENV_BIN = ROOT / ".venv" / "bin"
TEST_CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"}
PARTS = ("fake", "localstripe", "crash", "catchup", "webhooks")
DEFAULT_PARTS = ("fake", "localstripe", "crash")
# The gateway functions reconciliation calls; each Stripe request is charged to the one running.
GATEWAY_CALLS = (
    "succeeded_payment_pages",
    "refund_pages",
    "retrieve_payment_intent",
    "cancel_payment_intent",
    "retrieve_customer",
)
FAKED = GATEWAY_CALLS + ("create_refund", "retrieve_charge", "customers_with_email", "customer_payment_intents")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--parts",
        default=",".join(DEFAULT_PARTS),
        help=f"which to run, in order: {', '.join(PARTS)} (catchup and webhooks: bench/reconcile_backlog.py)",
    )
    p.add_argument("--catchup", type=int, default=200_000, help="catchup: succeeded payments in the window")
    p.add_argument("--catchup-unknown", type=int, default=100, help="catchup: of which with no order here")
    p.add_argument("--catchup-max-runs", type=int, default=10, help="catchup: give up after this many runs")
    p.add_argument("--webhook-rows", type=int, default=100_000, help="webhooks: processed trigger rows")
    p.add_argument("--repeat", type=int, default=5, help="webhooks: EXPLAIN ANALYZE runs per variant")
    p.add_argument("--sizes", default="0,1000,10000", help="healthy fulfilled orders per scenario (0: idle)")
    p.add_argument("--stuck", type=int, default=50, help="crashed checkouts beside the first non-zero size (0: skip)")
    p.add_argument("--unknown", type=int, default=1000, help="unknown payments (0: skip)")
    p.add_argument("--concurrency", type=int, default=8, help="threads creating payments in localstripe")
    p.add_argument("--crashes", type=int, default=4, help="crashed checkouts for the crash part")
    p.add_argument("--crash-every", type=float, default=15.0, help="seconds between two crashes")
    p.add_argument("--crash-timeout", type=float, default=300.0, help="bound on the wait for each recovery")
    p.add_argument(
        "--backlog",
        type=int,
        default=1000,
        help="after the crashes, this many unknown payments at once into the running cluster (0: skip)",
    )
    p.add_argument("--backlog-timeout", type=float, default=600.0, help="bound on the wait for the backlog")
    p.add_argument("--pg", default=os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432"))
    p.add_argument("--timeout", type=int, default=3600, help="bound on the whole run, seconds")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--show-sql", action="store_true", help="print the SQL of each steady-state run")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--keep", action="store_true", help="keep the database and the logs")
    args = p.parse_args(argv)
    args.parts = [x.strip() for x in args.parts.split(",") if x.strip()]
    if not set(args.parts) <= set(PARTS):
        p.error(f"--parts: choose from {', '.join(PARTS)}")
    try:
        args.sizes = [int(n) for n in args.sizes.split(",") if n.strip()]
    except ValueError:
        p.error("--sizes: e.g. 1000,10000")
    return args


# --- the scratch database and Django in this process ------------------------------------


def django_env(db_url: str, stripe_port: int) -> dict:
    """harness.django_env without the reconciliation, q2 and failpoint variables of this shell:
    the runs measure the defaults."""
    return harness.django_env(
        db_url,
        stripe_port,
        site_url="http://127.0.0.1:9",
        key_tag="paidupBenchRecon",
        log_level="WARNING",
        drop_prefixes=("RECONCILE_", "Q_", "FAILPOINTS"),
    )


def setup_django(env: dict) -> None:
    harness.setup_django(env)
    import logging

    # Every adopted payment logs a support alert at WARNING; the report says how many.
    logging.getLogger("billing.alerts").setLevel(logging.ERROR)


def reset_database() -> None:
    """Empty every table a scenario writes (orders and all that hangs off them, runs, alerts,
    users, q tasks); the plan and the q schedules stay."""
    from django.apps import apps
    from django.db import connection

    from billing.models import Plan

    models = [m for label in ("accounts", "billing", "support") for m in apps.get_app_config(label).get_models()]
    tables = [m._meta.db_table for m in models if m is not Plan]
    tables += ["django_q_ormq", "django_q_task", "djstripe_webhookeventtrigger", "djstripe_event"]
    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " CASCADE")


def plan():
    from billing.management.commands.seed_demo import DEMO_PLAN
    from billing.models import Plan

    return Plan.objects.get_or_create(slug="pro-year", defaults=DEMO_PLAN)[0]


def references(n: int, rng: random.Random) -> list[str]:
    from billing.models.orders import REFERENCE_ALPHABET, REFERENCE_PREFIX

    refs: set[str] = set()
    while len(refs) < n:
        refs.add(REFERENCE_PREFIX + "".join(rng.choices(REFERENCE_ALPHABET, k=6)))
    return sorted(refs)


def healthy_orders(refs: list[str], label: str) -> list:
    """Fulfilled orders in memory; the caller gives them their PaymentIntents."""
    from billing.models import Order

    the_plan = plan()
    return [
        Order(
            id=uuid.uuid4(),
            reference=ref,
            email=f"{label}-{i:05d}@bench.paidup.example",
            plan=the_plan,
            amount_cents=the_plan.amount_cents,
            currency=the_plan.currency,
            state=Order.State.FULFILLED,
            fulfilled_via=Order.Via.WEBHOOK,
            payment_attempts=1,
            stripe_payment_status="succeeded",
        )
        for i, ref in enumerate(refs)
    ]


def make_stuck(orders: list, now: float) -> None:
    """Checkouts that crashed five minutes ago right after the charge: pending, with the
    PaymentIntent id stored before confirming, never told it succeeded (step 2's work)."""
    from datetime import UTC, datetime

    from billing.models import Order

    for order in orders:
        order.state, order.fulfilled_via = Order.State.PENDING, ""
        order.stripe_payment_status = "requires_confirmation"
        order.created_at = datetime.fromtimestamp(now - 300, UTC)
        order.paid_at = order.fulfilled_at = None


def webhook_history(orders: list) -> None:
    """What a healthy order leaves in dj-stripe's table: the processed trigger of its
    payment_intent.succeeded webhook (dj-stripe keeps every one; step 4 looks through them)."""
    from djstripe.models import WebhookEventTrigger

    rows = []
    for order in orders:
        pi = {
            "id": order.stripe_payment_intent_id,
            "object": "payment_intent",
            "amount": order.amount_cents,
            "amount_received": order.amount_cents,
            "currency": order.currency,
            "status": "succeeded",
            "customer": order.stripe_customer_id or None,
            "payment_method": "pm_" + secrets.token_hex(12),
            "payment_method_types": ["card"],
            "metadata": metadata(order.id, order.reference, order.email),
            "latest_charge": "ch_" + secrets.token_hex(12),
            "client_secret": f"{order.stripe_payment_intent_id}_secret_{secrets.token_hex(12)}",
            "created": int(time.time()),
            "livemode": False,
        }
        event = {
            "id": "evt_" + secrets.token_hex(12),
            "object": "event",
            "type": "payment_intent.succeeded",
            "api_version": "2025-01-27.acacia",
            "created": int(time.time()),
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "data": {"object": pi},
        }
        headers = {
            "content-type": "application/json; charset=utf-8",
            "stripe-signature": f"t={int(time.time())},v1={secrets.token_hex(32)}",
            "user-agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        }
        body = json.dumps(event, indent=2)
        rows.append(WebhookEventTrigger(remote_ip="127.0.0.1", headers=headers, body=body, valid=True, processed=True))
    WebhookEventTrigger.objects.bulk_create(rows, batch_size=1000)


def explain_fixed_queries(order_ids: list) -> dict[str, str]:
    """The plan and execution time of the queries every run makes whatever it finds, on the
    tables as the scenario left them: does their cost grow with the healthy orders?"""
    import re

    from django.db.models import Q
    from django.utils import timezone
    from djstripe.models import WebhookEventTrigger

    from billing.models import Alert, Order
    from billing.reconciliation import grace

    now = timezone.now()
    sample = list(Order.objects.filter(pk__in=order_ids[:100]).values_list("pk", "stripe_payment_intent_id"))
    queries = {
        "step 1 paid, not fulfilled": Order.objects.filter(
            state=Order.State.PAID, paid_at__lt=now - grace(), needs_attention=False
        ).select_related("plan")[:500],
        "step 2 pending": Order.objects.filter(
            state=Order.State.PENDING, created_at__lt=now - grace(), stripe_payment_intent_id__isnull=False
        ).order_by("created_at")[:500],
        "step 3 one page": Order.objects.filter(
            Q(stripe_payment_intent_id__in=[pi for _, pi in sample]) | Q(pk__in=[pk for pk, _ in sample])
        ).select_related("plan"),
        "step 4 failed webhooks": WebhookEventTrigger.objects.filter(
            valid=True, processed=False, created__lt=now - grace()
        ).order_by("created")[:100],
        "follow-ups": Alert.objects.filter(
            resolved_at__isnull=True, followup_sent_at__isnull=True, created_at__lt=now
        ).select_related("order"),
    }
    out = {}
    for name, qs in queries.items():
        plan = qs.explain(analyze=True)
        took = re.search(r"Execution Time: ([0-9.]+) ms", plan)
        scans = sorted(
            set(
                re.findall(
                    r"((?:Parallel )?(?:Seq|Index Only|Index|Bitmap Heap|Bitmap Index) Scan (?:on|using) \w+)", plan
                )
            )
        )
        out[name] = f"{float(took.group(1)):.2f} ms ({', '.join(scans)})" if took else "not run (nothing to look up)"
    return out


def metadata(order_id, reference: str, email: str) -> dict:
    """What PaidUp's checkout puts on a PaymentIntent (gateway._metadata)."""
    return {"order_id": str(order_id), "reference": reference, "email": email}


# --- counting -----------------------------------------------------------------------------


@dataclass
class RunFigures:
    scenario: str
    stripe: str  # "fake" or "localstripe"
    run: str  # "first" or "second"
    seconds: float = 0.0
    load: str = ""
    ok: bool = True
    errors: str = ""
    queries: int = 0
    queries_by_step: dict = field(default_factory=dict)
    seconds_by_step: dict = field(default_factory=dict)
    pages: int = 0
    events: int = 0
    page_queries: list = field(default_factory=list)
    stripe_requests: int = 0  # the run's own count (budget.used)
    requests_by_call: dict = field(default_factory=dict)
    http_requests: int | None = None  # localstripe: requests in its access log
    counts: dict = field(default_factory=dict)
    sql: list = field(default_factory=list)

    @property
    def healthy_page_queries(self) -> str:
        if not self.page_queries:
            return "—"
        lo, hi = min(self.page_queries), max(self.page_queries)
        return str(lo) if lo == hi else f"{lo}–{hi}"

    @property
    def other_queries(self) -> int:
        return self.queries - sum(self.page_queries)


class Meter:
    """Counts what one reconciliation run does, without changing what it does: queries (a
    connection execute wrapper), queries and time per step and per page of the Stripe scan
    (the module's step functions wrapped), Stripe requests by gateway call (Budget.spend,
    which both the real gateway.call and the fake charge for every request)."""

    def __init__(self) -> None:
        self.queries = 0
        self.sql: list[str] = []
        self.keep_sql = False
        self.current_call = "other"
        self.figures: RunFigures | None = None

    def execute(self, execute, sql, params, many, context):
        self.queries += 1
        if self.keep_sql:
            self.sql.append(" ".join(sql.split())[:160])
        return execute(sql, params, many, context)

    def _charged_to(self, name: str, fn):
        """fn, with every Stripe request made while it runs charged to `name`."""
        meter = self

        @functools.wraps(fn)
        def call(*args, **kwargs):
            outer, meter.current_call = meter.current_call, name
            try:
                return fn(*args, **kwargs)
            finally:
                meter.current_call = outer

        @functools.wraps(fn)
        def pages(*args, **kwargs):
            iterator = iter(call(*args, **kwargs))
            while True:
                outer, meter.current_call = meter.current_call, name
                try:
                    page = next(iterator)
                except StopIteration:
                    return
                finally:
                    meter.current_call = outer
                if name == "succeeded_payment_pages" and meter.figures is not None:
                    meter.figures.pages += 1
                    meter.figures.events += len(page)
                yield page

        return pages if name.endswith("_pages") else call

    def _step(self, name: str, fn):
        meter = self

        @functools.wraps(fn)
        def timed(*args, **kwargs):
            q0, t0 = meter.queries, time.monotonic()
            try:
                return fn(*args, **kwargs)
            finally:
                f = meter.figures
                if f is not None:
                    f.queries_by_step[name] = f.queries_by_step.get(name, 0) + meter.queries - q0
                    f.seconds_by_step[name] = round(f.seconds_by_step.get(name, 0) + time.monotonic() - t0, 3)

        return timed

    @contextmanager
    def installed(self):
        """Wrap (and afterwards restore) what the run calls: whatever billing.gateway holds
        now (the real functions or a fake's), the steps, settle_page, Budget.spend."""
        from django.db import connection

        from billing import gateway, reconciliation

        saved_gateway = {name: getattr(gateway, name) for name in GATEWAY_CALLS}
        steps = ("fulfil_paid", "check_pending", "scan_stripe", "replay_webhooks", "record_refunds")
        saved_steps = {name: getattr(reconciliation, name) for name in (*steps, "settle_page")}
        saved_spend = gateway.Budget.spend
        meter = self

        def spend(budget):
            saved_spend(budget)
            if meter.figures is not None:
                by_call = meter.figures.requests_by_call
                by_call[meter.current_call] = by_call.get(meter.current_call, 0) + 1

        def scan_page(ctx, payment_intents):
            q0 = meter.queries
            try:
                return saved_steps["settle_page"](ctx, payment_intents)
            finally:
                if meter.figures is not None:
                    meter.figures.page_queries.append(meter.queries - q0)

        try:
            for name, fn in saved_gateway.items():
                setattr(gateway, name, self._charged_to(name, fn))
            for name in steps:
                setattr(reconciliation, name, self._step(name, saved_steps[name]))
            reconciliation.settle_page = scan_page
            gateway.Budget.spend = spend
            with connection.execute_wrapper(self.execute):
                yield self
        finally:
            gateway.Budget.spend = saved_spend
            for name, fn in saved_steps.items():
                setattr(reconciliation, name, fn)
            for name, fn in saved_gateway.items():
                setattr(gateway, name, fn)

    def run(self, scenario: str, stripe: str, which: str, *, keep_sql=False, http_count=None) -> RunFigures:
        from billing import reconciliation

        f = RunFigures(scenario=scenario, stripe=stripe, run=which, load=load())
        self.figures, self.keep_sql, self.sql = f, keep_sql, []
        q0 = self.queries
        http0 = http_count() if http_count else None
        t0 = time.monotonic()
        try:
            with self.installed():
                record = reconciliation.run()
        finally:
            f.seconds = time.monotonic() - t0
            self.figures, self.keep_sql = None, False
        if record is None:
            raise RuntimeError("another reconciliation run held the lock")
        f.queries = self.queries - q0
        f.sql = self.sql
        f.ok, f.errors = record.ok, record.errors
        f.stripe_requests = record.counts.get("stripe_requests", 0)
        f.counts = {k: v for k, v in record.counts.items() if k not in ("stripe_requests", "actions")}
        if http_count:
            f.http_requests = http_count() - http0
        log(
            f"{scenario} ({stripe}), {which} run: {f.seconds:.2f} s, {f.queries} queries, "
            f"{f.pages} pages / {f.events} events, {f.stripe_requests} Stripe requests, load {f.load}"
            + ("" if f.ok else f"; ERRORS: {f.errors.splitlines()[0]}")
        )
        return f


# --- scenarios ----------------------------------------------------------------------------


@dataclass
class Scenario:
    name: str
    kind: str  # healthy / unknown / unknown-customer
    size: int
    stuck: int = 0  # healthy scenarios: pending orders whose payment succeeded (crashed checkouts)
    runs: list[RunFigures] = field(default_factory=list)
    setup_seconds: float = 0.0
    checks: dict[str, bool] = field(default_factory=dict)
    fixed_queries: dict[str, str] = field(default_factory=dict)


def check_outcome(s: Scenario, order_ids: list, stuck_ids: list) -> None:
    """What the runs must have left behind: healthy orders untouched, crashed checkouts and
    unknown payments fulfilled once, with one access email each (the recovery email when late)."""
    from billing.models import Order, OutboundEmail

    sample = order_ids or stuck_ids or list(Order.objects.values_list("pk", flat=True)[:100])
    s.fixed_queries = explain_fixed_queries(sample)
    emails = OutboundEmail.objects.filter(order__isnull=False)
    if s.kind == "healthy":
        s.checks["every healthy order still fulfilled by its webhook"] = (
            Order.objects.filter(pk__in=order_ids, state=Order.State.FULFILLED, fulfilled_via=Order.Via.WEBHOOK).count()
            == s.size
        )
        s.checks["every crashed checkout fulfilled by reconciliation"] = (
            Order.objects.filter(
                pk__in=stuck_ids, state=Order.State.FULFILLED, fulfilled_via=Order.Via.RECONCILIATION
            ).count()
            == s.stuck
        )
        s.checks["one recovery email per crashed checkout, nothing else"] = (
            emails.count() == emails.filter(order_id__in=stuck_ids, kind=OutboundEmail.Kind.RECOVERY).count() == s.stuck
            and Order.objects.count() == s.size + s.stuck
        )
    else:
        s.checks["every unknown payment adopted and fulfilled once"] = (
            Order.objects.filter(retroactive=True, state=Order.State.FULFILLED).count()
            == Order.objects.count()
            == s.size
        )
        # The recovery email only for a customer who waited past LATE_FULFILMENT_SECONDS since the
        # charge (fulfilment.is_late); spread() puts the newest payment a minute ago: a confirmation.
        from django.conf import settings

        late = sum(
            (o.fulfilled_at - (o.charged_at or o.paid_at)).total_seconds() > settings.LATE_FULFILMENT_SECONDS
            for o in Order.objects.filter(state=Order.State.FULFILLED)
        )
        access = emails.filter(kind__in=[OutboundEmail.Kind.RECOVERY, OutboundEmail.Kind.CONFIRMATION])
        s.checks["one access email each, the recovery email when late"] = (
            access.count() == s.size and access.filter(kind=OutboundEmail.Kind.RECOVERY).count() == late
        )
    first, second = s.runs
    if s.kind == "unknown-customer":
        # One customer lookup per payment: past the budget the run stops, the next one goes on.
        s.checks["second run ok"] = second.ok
    else:
        s.checks["both runs ok"] = first.ok and second.ok
        s.checks["second run finds nothing to do"] = not second.counts.get("retroactive") and not second.counts.get(
            "recovered"
        )


@contextmanager
def faked_gateway(fake):
    from billing import gateway

    saved = {name: getattr(gateway, name) for name in FAKED}
    try:
        for name in FAKED:
            setattr(gateway, name, getattr(fake, name))
        yield fake
    finally:
        for name, fn in saved.items():
            setattr(gateway, name, fn)


def spread(n: int, now: float, window: int) -> list[int]:
    """n Stripe event times spread evenly over the window, the newest a minute ago."""
    span = window - 3600  # well inside the first scan
    return [int(now - 60 - span * (n - 1 - i) / max(n, 1)) for i in range(n)]


def fake_scenario(s: Scenario, meter: Meter, rng: random.Random, args) -> Scenario:
    from datetime import UTC, datetime, timedelta

    from django.conf import settings

    from billing.models import Order
    from tests.fixtures.gateway import FakeStripe

    reset_database()
    t0 = time.monotonic()
    fake = FakeStripe()
    now = time.time()
    order_ids, stuck_ids = [], []
    if s.kind == "healthy":
        orders = healthy_orders(references(s.size + s.stuck, rng), f"fake{s.size}")
        times = spread(s.size, now, settings.RECONCILE_FIRST_SCAN_SECONDS) + [int(now - 295)] * s.stuck
        for order, created in zip(orders, times, strict=True):
            pi = fake.pay_elsewhere(
                amount=order.amount_cents,
                metadata=metadata(order.id, order.reference, order.email),
                email=order.email,
                created=created,
            )
            at = datetime.fromtimestamp(created, UTC)
            order.stripe_payment_intent_id, order.stripe_customer_id = pi.id, pi.customer
            order.created_at, order.paid_at, order.fulfilled_at = at - timedelta(seconds=5), at, at
        healthy, stuck = orders[: s.size], orders[s.size :]
        make_stuck(stuck, now)
        Order.objects.bulk_create(orders, batch_size=1000)
        webhook_history(healthy)
        order_ids, stuck_ids = [o.id for o in healthy], [o.id for o in stuck]
    else:
        amount = plan().amount_cents
        times = spread(s.size, now, settings.RECONCILE_FIRST_SCAN_SECONDS)
        for i, (ref, created) in enumerate(zip(references(s.size, rng), times, strict=True)):
            email = f"lost-{i:05d}@bench.paidup.example"
            meta = metadata(uuid.uuid4(), ref, email) if s.kind == "unknown" else {}
            fake.pay_elsewhere(amount=amount, metadata=meta, email=email, created=created)
    analyze()
    s.setup_seconds = time.monotonic() - t0
    with faked_gateway(fake):
        for which in ("first", "second"):
            requests0 = fake.requests
            f = meter.run(s.name, "fake", which, keep_sql=args.show_sql and which == "second")
            f.http_requests = fake.requests - requests0  # what the fake answered (its own count)
            s.runs.append(f)
    check_outcome(s, order_ids, stuck_ids)
    return s


def pay_in_localstripe(metas: list[dict], concurrency: int) -> list:
    """A succeeded PaymentIntent per metadata, `concurrency` at a time, one request each:
    localstripe's magic card, confirmed at once, no customer (the email is in the metadata, as
    PaidUp's checkout puts it there)."""
    from billing import gateway

    api, the_plan = gateway.client(), plan()

    def pay(meta: dict):
        return api.v1.payment_intents.create(
            {
                "amount": the_plan.amount_cents,
                "currency": the_plan.currency,
                "payment_method": "pm_card_visa",
                "payment_method_types": ["card"],
                "confirm": True,
                "metadata": meta,
            }
        )

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(pay, metas))


def lost_payments(n: int, rng: random.Random) -> list[dict]:
    """Metadata of payments made by PaidUp's checkout whose orders are gone (say, a restore)."""
    return [
        metadata(uuid.uuid4(), ref, f"lost-{i:05d}@bench.paidup.example") for i, ref in enumerate(references(n, rng))
    ]


def analyze() -> None:
    """Fresh planner statistics, as autovacuum keeps them in production (not after a bulk load)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "ANALYZE billing_order, billing_plan, billing_reconciliationrun, support_alert, "
            "djstripe_webhookeventtrigger"
        )


def localstripe_scenario(s: Scenario, meter: Meter, rng: random.Random, args, stripe_base: str, http_count):
    from django.utils import timezone

    from billing.models import Order

    reset_database()
    reset_localstripe(stripe_base)
    t0 = time.monotonic()
    order_ids, stuck_ids = [], []
    if s.kind == "healthy":
        orders = healthy_orders(references(s.size + s.stuck, rng), f"ls{s.size}")
        pis = pay_in_localstripe([metadata(o.id, o.reference, o.email) for o in orders], args.concurrency)
        for order, pi in zip(orders, pis, strict=True):
            if pi.status != "succeeded":
                raise RuntimeError(f"localstripe PaymentIntent {pi.id} is {pi.status}")
            order.stripe_payment_intent_id = pi.id
            order.paid_at = order.fulfilled_at = timezone.now()
        healthy, stuck = orders[: s.size], orders[s.size :]
        make_stuck(stuck, time.time())
        Order.objects.bulk_create(orders, batch_size=1000)
        webhook_history(healthy)
        order_ids, stuck_ids = [o.id for o in healthy], [o.id for o in stuck]
    else:
        pay_in_localstripe(lost_payments(s.size, rng), args.concurrency)
    analyze()
    s.setup_seconds = time.monotonic() - t0
    log(f"{s.name} (localstripe): {s.size + s.stuck} payments created in {s.setup_seconds:.1f} s")
    for which in ("first", "second"):
        s.runs.append(
            meter.run(s.name, "localstripe", which, keep_sql=args.show_sql and which == "second", http_count=http_count)
        )
    check_outcome(s, order_ids, stuck_ids)
    return s


def warm_refund_probe() -> float:
    """localstripe cannot list refunds by time: gateway.refund_pages learns that once per
    process, after retries with backoff. Done here, outside the measured runs (real Stripe
    never pays it); returns what it cost."""
    from billing import gateway

    t0 = time.monotonic()
    list(gateway.refund_pages(int(time.time())))
    return time.monotonic() - t0


# --- crash → recovery email, with a real q cluster and the default schedule ---------------


@dataclass
class Crash:
    reference: str
    order_id: str
    created: float  # order row created (checkout started), wall clock
    crashed: float  # the charge succeeded and the server died, wall clock
    queued: float | None = None  # recovery email row created
    by: str = ""  # which step recovered it

    @property
    def seconds(self) -> float | None:
        return None if self.queued is None else self.queued - self.crashed


def crash_one(rng: random.Random) -> Crash:
    """A checkout that dies right after the charge succeeds: the order is pending with its
    PaymentIntent id (stored before confirming, as checkout does), nobody tells it anything
    (no webhook is registered), the customer was charged."""
    from billing import gateway
    from billing.models import Order

    the_plan = plan()
    card = gateway.client().v1.payment_methods.create({"type": "card", "card": TEST_CARD})
    order = Order.objects.create(
        email=f"crashed-{rng.randrange(10**6):06d}@bench.paidup.example",
        plan=the_plan,
        amount_cents=the_plan.amount_cents,
        currency=the_plan.currency,
        payment_attempts=1,
    )
    created = time.time()
    pi = gateway.create_payment_intent(order, card.id)
    Order.objects.filter(pk=order.pk).update(
        stripe_payment_intent_id=pi.id, stripe_customer_id=pi.customer or "", stripe_payment_status=pi.status
    )
    charge = gateway.confirm(order, pi.id)
    crashed = time.time()
    if charge.status != "succeeded":
        raise RuntimeError(f"crash setup: {pi.id} is {charge.status}")
    return Crash(order.reference, str(order.pk), created, crashed)


def crash_part(args, procs: Processes, env: dict, workdir: Path, stripe_base: str, rng: random.Random) -> dict:
    from django.conf import settings
    from django_q.models import Schedule

    from billing.models import Order, OutboundEmail, ReconciliationRun
    from billing.stripe_setup import seed_local

    reset_database()
    reset_localstripe(stripe_base)
    # The webhook endpoint row the system checks ask for; nothing is registered with
    # localstripe, so no webhook ever arrives: the crash stays a crash.
    seed_local()
    schedule = Schedule.objects.get(name="reconcile")
    defaults = {
        "RECONCILE_GRACE_SECONDS": settings.RECONCILE_GRACE_SECONDS,
        "schedule": f"{schedule.schedule_type} every {schedule.minutes} min",
        "Q_CLUSTER poll": settings.Q_CLUSTER.get("poll"),
    }
    qlog = workdir / "qcluster.log"
    cluster = procs.start(
        [str(VENV_BIN / "python"), "manage.py", "qcluster"], log=qlog, env={**env, "LOG_LEVEL": "INFO"}, cwd=ROOT
    )
    crashes: list[Crash] = []
    backlog = None
    try:
        wait_for_line(qlog, "] running.", cluster, timeout=120)
        started = time.time()
        log(f"q cluster running (pid {cluster.pid}); reconcile schedule next_run {schedule.next_run:%H:%M:%S}")
        # Crash into a cluster in its steady state, not into its start: the first run of a
        # worker is slow against localstripe (refund probe), so after the second run, at once
        # (the worst moment: the scan has just passed) and then every --crash-every seconds.
        bounded(lambda: ReconciliationRun.objects.filter(finished_at__isnull=False).count() >= 2, 240, cluster, qlog)
        log("two scheduled runs done; crashing checkouts")
        next_crash = time.monotonic()
        deadline = None
        while True:
            if cluster.poll() is not None:
                raise RuntimeError(f"qcluster exited with {cluster.returncode}; see {qlog}")
            if len(crashes) < args.crashes and time.monotonic() >= next_crash:
                crashes.append(crash_one(rng))
                log(f"crash {len(crashes)}: {crashes[-1].reference} charged, server gone")
                next_crash += args.crash_every
                if len(crashes) == args.crashes:
                    deadline = time.monotonic() + args.crash_timeout
            pending = [c for c in crashes if c.queued is None]
            if pending:
                found = dict(
                    OutboundEmail.objects.filter(
                        order_id__in=[c.order_id for c in pending], kind=OutboundEmail.Kind.RECOVERY
                    ).values_list("order_id", "created_at")
                )
                for c in pending:
                    if (at := found.get(uuid.UUID(c.order_id))) is not None:
                        c.queued = at.timestamp()
                        log(f"{c.reference}: recovery email queued {c.seconds:.1f} s after the crash")
            if len(crashes) == args.crashes and all(c.queued is not None for c in crashes):
                break
            if deadline is not None and time.monotonic() > deadline:
                log(f"gave up waiting after {args.crash_timeout:.0f} s")
                break
            time.sleep(0.25)
        # Let the run that recovered the last one finish, for its duration.
        bounded(lambda: not ReconciliationRun.objects.filter(finished_at__isnull=True).exists(), 120, cluster, qlog)
        runs = [
            {
                "started": r.started_at.timestamp() - started,
                "seconds": r.duration_seconds,
                "recovered": r.counts.get("recovered", 0),
                "stripe_requests": r.counts.get("stripe_requests", 0),
                "ok": r.ok,
            }
            for r in ReconciliationRun.objects.order_by("started_at")
        ]
        # Step 2 (pending orders older than the grace) stamps stripe_checked_at before it
        # fulfils; step 3 (the scan of Stripe's succeeded payments) does not.
        checked = dict(
            Order.objects.filter(pk__in=[c.order_id for c in crashes]).values_list("pk", "stripe_checked_at")
        )
        for c in crashes:
            c.by = "pending check (step 2)" if checked.get(uuid.UUID(c.order_id)) else "Stripe scan (step 3)"
        if args.backlog:
            backlog = backlog_in_cluster(args, cluster, qlog, rng, started)
    finally:
        stop_qcluster(procs, cluster)
    return {
        "defaults": defaults,
        "load": load(),
        "crashes": [
            {
                **asdict(c),
                "crashed": c.crashed - started,
                "queued": c.queued and c.queued - started,
                "seconds": c.seconds,
            }
            for c in crashes
        ],
        "runs": runs,
        "backlog": backlog,
    }


def backlog_in_cluster(args, cluster, qlog: Path, rng: random.Random, started: float) -> dict:
    """--backlog payments that succeeded in Stripe with no order here, all at once, into the
    running cluster: how long until every one is adopted, and what became of the runs (a q
    task has 60 s: Q_CLUSTER["timeout"])."""
    from datetime import UTC, datetime

    from django_q.models import Task

    from billing.models import Order, ReconciliationRun

    def at(unix: float):
        return datetime.fromtimestamp(unix, UTC)

    log(f"backlog: {args.backlog} unknown payments into localstripe")
    pay_in_localstripe(lost_payments(args.backlog, rng), args.concurrency)
    t0 = time.time()
    log("backlog: created; waiting for the cluster to adopt them")
    progress: list[tuple[float, int]] = []
    done = None
    deadline = time.monotonic() + args.backlog_timeout
    while True:
        if cluster.poll() is not None:
            raise RuntimeError(f"qcluster exited with {cluster.returncode}; see {qlog}")
        adopted = Order.objects.filter(retroactive=True, state=Order.State.FULFILLED).count()
        if not progress or adopted != progress[-1][1]:
            progress.append((round(time.time() - t0, 1), adopted))
        if adopted >= args.backlog:
            done = time.time() - t0
            log(f"backlog: all {adopted} adopted {done:.1f} s after they were in Stripe")
            break
        if time.monotonic() > deadline:
            log(f"backlog: {adopted} of {args.backlog} adopted when the bound ({args.backlog_timeout:.0f} s) passed")
            break
        time.sleep(1)
    # The run in flight finishes or is killed (q timeout 60 s) within 70 s of its start.
    bounded(
        lambda: (
            not ReconciliationRun.objects.filter(finished_at__isnull=True, started_at__gt=at(time.time() - 70)).exists()
        ),
        90,
        cluster,
        qlog,
    )
    runs = [
        {
            "started": r.started_at.timestamp() - t0,
            "seconds": r.duration_seconds,
            "retroactive": r.counts.get("retroactive"),
            "ok": r.ok,
        }
        for r in ReconciliationRun.objects.filter(started_at__gt=at(t0 - 60)).order_by("started_at")
    ]
    # The cluster's monitor stores a task's result a moment after the task ends.
    tasks = Task.objects.filter(func="billing.tasks.reconcile", started__gt=at(t0 - 60))
    wait_until = time.monotonic() + 30
    while tasks.count() < len(runs) and time.monotonic() < wait_until:
        time.sleep(1)
    tasks = [
        {
            "started": t.started.timestamp() - t0,
            "seconds": round((t.stopped - t.started).total_seconds(), 1),
            "success": t.success,
            "result": str(t.result)[:120],
        }
        for t in tasks.order_by("started")
    ]
    return {
        "payments": args.backlog,
        "seconds_to_all": done,
        "adopted": adopted,
        "progress": progress,
        "runs": runs,
        "tasks": tasks,
    }


# --- the report -----------------------------------------------------------------------------


def scenario_name(kind: str, n: int, stuck: int = 0) -> str:
    if n == 0 and kind == "healthy" and not stuck:
        return "idle (no payments)"
    size = f"{n // 1000}k" if n and n % 1000 == 0 else str(n)
    return {
        "healthy": f"{size} healthy" + (f" + {stuck} stuck" if stuck else ""),
        "unknown": f"{size} unknown",
        "unknown-customer": f"{size} unknown, customer email",
    }[kind]


def print_report(args, scenarios: list[Scenario], crash: dict | None, setup: dict) -> bool:
    from django.conf import settings

    print()
    print("Reconciliation benchmark (bench/reconcile.py)")
    print(
        f"  settings: grace {settings.RECONCILE_GRACE_SECONDS} s, "
        f"first scan {settings.RECONCILE_FIRST_SCAN_SECONDS} s, "
        f"overlap {settings.RECONCILE_SCAN_OVERLAP_SECONDS} s, budget {settings.RECONCILE_STRIPE_BUDGET} requests "
        f"at {settings.RECONCILE_STRIPE_PER_SECOND:g}/s"
    )
    print(f"  machine: {os.cpu_count()} cores, load average at start {setup['load']} (1/5/15 min)")
    for k, v in setup.items():
        if k != "load":
            print(f"  {k}: {v}")
    ok = True
    if scenarios:
        print()
        print("pages/events: of payment_intent.succeeded events read; q/page: queries per page of the scan (a healthy")
        print("page: 1); q other: all the run's other queries; stripe req: the run's counts['stripe_requests'];")
        print("target: pages + stuck orders asked about + 1; http: requests the fake answered / localstripe logged;")
        print("recov/adopted: orders fulfilled by the run / created from unknown payments; load: 1/5/15 min")
        header = (
            f"{'scenario':<30} {'stripe':<11} {'run':<6} {'time s':>7} {'queries':>7} {'pages':>5} "
            f"{'events':>6} {'q/page':>9} {'q other':>7} {'stripe req':>10} {'target':>6} {'http':>5} "
            f"{'recov':>5} {'adopted':>7}  load"
        )
        print(header)
        print("-" * len(header))
        for s in scenarios:
            for r in s.runs:
                stuck = r.requests_by_call.get("retrieve_payment_intent", 0)  # pending orders asked about
                target = r.pages + stuck + 1
                print(
                    f"{s.name:<30} {r.stripe:<11} {r.run:<6} {r.seconds:>7.2f} {r.queries:>7} "
                    f"{r.pages:>5} {r.events:>6} {r.healthy_page_queries:>9} {r.other_queries:>7} "
                    f"{r.stripe_requests:>10} {target:>6} {'—' if r.http_requests is None else r.http_requests:>5} "
                    f"{r.counts.get('recovered', 0):>5} {r.counts.get('retroactive', 0):>7}  {r.load}"
                )
        print()
        print("Stripe requests by gateway call; queries and seconds by step:")
        for s in scenarios:
            for r in s.runs:
                calls = ", ".join(f"{k} {v}" for k, v in sorted(r.requests_by_call.items()))
                steps = ", ".join(f"{k} {v}q/{r.seconds_by_step.get(k, 0):.2f}s" for k, v in r.queries_by_step.items())
                print(f"  {s.name} ({r.stripe}, {r.run}): {calls}")
                print(f"      {steps}")
        print()
        print(
            "The queries every run makes, EXPLAIN ANALYZE on the tables each scenario left (1 webhook row per order):"
        )
        for s in scenarios:
            print(f"  {s.name} ({s.runs[0].stripe}): " + "; ".join(f"{k} {v}" for k, v in s.fixed_queries.items()))
        print()
        print("Checks:")
        for s in scenarios:
            failed = [name for name, passed in s.checks.items() if not passed]
            ok &= not failed
            label = f"{s.name} ({s.runs[0].stripe})"
            print(f"  {label:<42} {'ok' if not failed else 'FAILED: ' + '; '.join(failed)}")
            for r in s.runs:
                if r.errors:
                    print(f"    {r.run} run errors: {r.errors[:500]}")
        if args.show_sql:
            for s in scenarios:
                for r in s.runs:
                    if r.sql:
                        print(f"\nSQL of {s.name} ({r.stripe}, {r.run} run):")
                        for line in r.sql:
                            print(f"  {line}")
    if crash:
        print()
        print(f"Crash → recovery email queued, real q cluster, defaults {crash['defaults']}, load {crash['load']}:")
        print("  (times from the moment the cluster was up; each crash: the charge succeeded, nothing more)")
        for r in crash["runs"]:
            took = "unfinished" if r["seconds"] is None else f"{r['seconds']:.2f} s"
            print(
                f"  run   at +{r['started']:6.1f} s  took {took}, recovered {r['recovered']}, "
                f"{r['stripe_requests']} Stripe requests"
            )
        for c in crash["crashes"]:
            if c["seconds"] is None:
                print(f"  crash at +{c['crashed']:6.1f} s  {c['reference']}: no recovery email within the bound")
            else:
                print(
                    f"  crash at +{c['crashed']:6.1f} s  {c['reference']}: recovery email queued at "
                    f"+{c['queued']:.1f} s = {c['seconds']:.1f} s after the crash, by the {c['by']}"
                )
        times = [c["seconds"] for c in crash["crashes"]]
        done = [t for t in times if t is not None]
        if done:
            met = len(done) == len(times) and max(done) <= 120
            print(f"  worst {max(done):.1f} s, target ≤ 120 s: {'met' if met else 'NOT met'}")
        ok &= len(done) == len(times)
        if b := crash.get("backlog"):
            print()
            took = "not within the bound" if b["seconds_to_all"] is None else f"{b['seconds_to_all']:.1f} s"
            print(
                f"Backlog: {b['payments']} unknown payments at once into the running cluster: all adopted in {took} "
                f"({b['adopted']} adopted)"
            )
            print(
                "  adopted so far: "
                + ", ".join(f"{n} at +{t:.0f} s" for t, n in b["progress"][:: max(1, len(b["progress"]) // 12)])
            )
            for r in b["runs"]:
                took = "never finished" if r["seconds"] is None else f"took {r['seconds']:.1f} s"
                print(f"  run at +{r['started']:6.1f} s  {took}, ok={r['ok']}, adopted {r['retroactive']}")
            for t in b["tasks"]:
                result = (t["result"].splitlines() or [""])[0]
                print(f"  q task at +{t['started']:6.1f} s  {t['seconds']:.1f} s, success={t['success']}: {result}")
    return ok


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rng = random.Random(args.seed)
    run = Scratch(args.pg, args.timeout, prefix="paidup-reconcile-", db_prefix="paidup_reconcile")
    procs, workdir, db_name = run.procs, run.workdir, run.db_name
    scenarios: list[Scenario] = []
    crash = None
    setup = {"load": load()}
    try:
        t0 = time.monotonic()
        run.create_database()
        stripe_port = free_port()
        stripe_base = f"http://127.0.0.1:{stripe_port}"
        env = django_env(run.db_url, stripe_port)
        migrate = start_migrate(procs, ROOT, env, workdir / "migrate.log")
        ls_log = workdir / "localstripe.log"
        localstripe = None
        if {"localstripe", "crash"} & set(args.parts):
            localstripe = start_localstripe(procs, ROOT, env, stripe_port, workdir)
        log(f"database {db_name} migrating; logs in {workdir}; load {load()}")
        setup_django(env)
        while migrate.poll() is None:
            time.sleep(0.2)
        if migrate.returncode:
            raise RuntimeError(f"migrate failed; see {workdir / 'migrate.log'}")
        setup["migrate"] = f"{time.monotonic() - t0:.0f} s"
        plan()

        def http_count() -> int:
            with ls_log.open("rb") as f:
                # GETs only: the runs here only read, and the access lines of the payments just
                # created (POSTs) may still be on their way to the log.
                return sum(b'"GET /v1/' in line for line in f)

        def planned(stripe: str) -> list[Scenario]:
            out = [Scenario(scenario_name("healthy", n), "healthy", n) for n in args.sizes]
            if args.stuck:
                n = next((n for n in args.sizes if n), 1000)
                out.append(Scenario(scenario_name("healthy", n, args.stuck), "healthy", n, stuck=args.stuck))
            if args.unknown:
                out.append(Scenario(scenario_name("unknown", args.unknown), "unknown", args.unknown))
            if args.unknown and stripe == "fake":
                n = args.unknown
                out.append(Scenario(scenario_name("unknown-customer", n), "unknown-customer", n))
            return out

        meter = Meter()
        if "fake" in args.parts:
            for scenario in planned("fake"):
                scenarios.append(fake_scenario(scenario, meter, rng, args))
        if localstripe is not None:
            wait_for_line(ls_log, "Running on", localstripe)
        if "localstripe" in args.parts:
            setup["localstripe refund probe (once per process, not in the runs)"] = f"{warm_refund_probe():.1f} s"
            for scenario in planned("localstripe"):
                scenarios.append(localstripe_scenario(scenario, meter, rng, args, stripe_base, http_count))
        if "crash" in args.parts:
            crash = crash_part(args, procs, env, workdir, stripe_base, rng)
        from bench import reconcile_backlog

        catchup = reconcile_backlog.catchup_part(args, meter, rng) if "catchup" in args.parts else []
        webhooks = reconcile_backlog.webhooks_part(args, rng) if "webhooks" in args.parts else None
        ok = print_report(args, scenarios, crash, setup)
        if catchup:
            ok &= reconcile_backlog.print_catchup(catchup)
        if webhooks:
            reconcile_backlog.print_webhooks(webhooks)
        if args.json:
            report = {
                "setup": setup,
                "scenarios": [{**asdict(s), "runs": [{**asdict(r), "sql": None} for r in s.runs]} for s in scenarios],
                "crash": crash,
                "catchup": [{**asdict(c), "runs": [{**asdict(r), "sql": None} for r in c.runs]} for c in catchup],
                "webhooks": webhooks,
            }
            args.json.write_text(json.dumps(report, indent=2, default=str))
        return 0 if ok else 1
    except Abort as stop:
        log(f"aborted: {stop}")
        return 2
    finally:
        run.end(keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
