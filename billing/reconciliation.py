"""Reconciliation: find every paid-but-unfulfilled or unknown payment and finish the job.

One run (`run()`), guarded so that two runners never work at once, records a
ReconciliationRun (the heartbeat). Steps, each a small function that returns its counts:

1. paid but not fulfilled, older than the grace period → fulfil(via="reconciliation")
2. pending with a PaymentIntent, older than the grace → ask Stripe: succeeded → fulfil;
   cancelled → failed; abandoned past the deadline → cancel it in Stripe → failed
3. Stripe-side scan of succeeded payments since the scan's place (with overlap), written down
   after every page (scan_state.py): known order → fulfil; unknown payment that buys a plan
   (adoption.plan_for_payment) → order created from its metadata or customer email, fulfilled,
   support alerted; no email anywhere → paid, flagged, support alerted; buys no plan → recorded
   as an alert for a person, nothing for the customer. Two queries per healthy page.
4. dj-stripe webhook triggers whose processing failed → replayed
5. refunds made in Stripe but not here → recorded (I4); refunds whose status moved on since
   (failed, cancelled), read from Stripe's refund events → recorded (one more request a run)
6. disputes and early fraud warnings the webhooks missed → recorded, linked (dispute_scan.py)

Stripe requests are budgeted (gateway.budget) and retried with backoff on 429/5xx.
"""

# size: the five steps of one run share its Context and read top to bottom; refunds and adoption
# already live in billing/refunds.py and billing/adoption.py. Next to split: step 3 (the Stripe scan).
import logging
import time
import traceback
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from . import adoption, dispute_scan, disputes, gateway
from .alerts import raise_alert, send_followups
from .fulfilment import NotFulfillable, PaymentMismatch, fulfil, record_payment
from .locks import exclusive
from .models import Alert, Order, OutboundEmail, ReconciliationRun, Refund
from .models.orders import format_money
from .refunds import RECORDED, UPDATED, record_refund
from .scan_state import Listing, ScanState

logger = logging.getLogger(__name__)

ACTOR = "system:reconciliation"
LOCK = "reconcile"


@dataclass
class Context:
    now: object
    dry_run: bool
    counts: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    # Sentences for a person about what was found (self-service puts them in the case).
    notes: list[str] = field(default_factory=list)
    # Which path is settling payments, for the alerts: "reconciliation" or "self-service".
    found_by: str = "reconciliation"
    # PaymentIntent id → `created` of its succeeded event (Unix seconds): the charge time.
    charged_at: dict[str, int] = field(default_factory=dict)
    # Where the Stripe-side scan stands (ScanState); persisted after every page.
    scan: "ScanState | None" = None
    run_id: int | None = None

    def would(self, sentence: str) -> bool:
        """Record the action; True when it should really be done."""
        self.actions.append(sentence)
        return not self.dry_run

    def error(self, what: str) -> None:
        """Record a problem sentence `what` in the run's errors (the run ends not ok) and log it
        at ERROR; the run carries on with the next item."""
        logger.error("reconciliation: %s", what)
        self.errors.append(what)


def grace() -> timedelta:
    """How old an order must be before reconciliation touches it (RECONCILE_GRACE_SECONDS)."""
    return timedelta(seconds=settings.RECONCILE_GRACE_SECONDS)


def run(*, dry_run: bool = False) -> ReconciliationRun | None:
    """One reconciliation run. Returns None when another run holds the lock."""
    with exclusive(LOCK) as acquired:
        if not acquired:
            logger.info("another reconciliation run is in progress; leaving it alone")
            return None
        return _run(dry_run=dry_run)


def _run(*, dry_run: bool) -> ReconciliationRun:
    started = time.monotonic()
    record = ReconciliationRun.objects.create(dry_run=dry_run)
    ctx = Context(now=timezone.now(), dry_run=dry_run, run_id=record.pk)
    with gateway.budget(settings.RECONCILE_STRIPE_BUDGET, settings.RECONCILE_STRIPE_PER_SECOND) as budget:
        for step in (fulfil_paid, check_pending, scan_stripe, replay_webhooks, record_refunds, scan_disputes):
            try:
                step(ctx)
            except gateway.BudgetExhausted as exhausted:
                ctx.error(f"{step.__name__}: {exhausted}; the rest waits for the next run")
                break
            except Exception as error:  # one broken step must not stop the others
                ctx.error(f"{step.__name__}: {type(error).__name__}: {error}\n{traceback.format_exc(limit=5)}")
        ctx.counts["stripe_requests"] = budget.used
    if not dry_run:
        ctx.counts["followups"] += send_followups()
        ctx.counts["dispute_reminders"] += disputes.send_reminders()
    record.finished_at = timezone.now()
    record.ok = not ctx.errors
    record.counts = {**ctx.counts, "duration_ms": round((time.monotonic() - started) * 1000)}
    if ctx.dry_run:
        record.counts["actions"] = ctx.actions
    record.errors = "\n".join(ctx.errors)
    if not dry_run:  # every run's row shows where the scan stands after it
        state = ctx.scan or scan_state(ctx)
        record.cursor, record.scan_upto, record.scan_end = state.cursor, state.upto, state.end
    record.save()
    return record


def last_cursor() -> int | None:
    """The cursor of the last run that finished every step (ok): refunds are read from there."""
    return (
        ReconciliationRun.objects.filter(ok=True, dry_run=False, cursor__isnull=False)
        .order_by("-started_at")
        .values_list("cursor", flat=True)
        .first()
    )


# --- step 1 ---------------------------------------------------------------------------


def fulfil_paid(ctx: Context) -> None:
    """Step 1: fulfil paid orders older than the grace (at most 500 a run); counts in ctx.counts.
    A refusal becomes a flag and an alert, never an exception."""
    stuck = Order.objects.filter(state=Order.State.PAID, paid_at__lt=ctx.now - grace(), needs_attention=False)
    for order in stuck.select_related("plan")[:500]:
        ctx.counts["checked"] += 1
        if ctx.would(f"fulfil {order.reference}: paid {order.paid_at:%H:%M:%S}, not fulfilled"):
            _fulfil(ctx, order)


def _fulfil(ctx: Context, order: Order, payment_intent=None, charged_at=None) -> None:
    try:
        result = fulfil(order, via=Order.Via.RECONCILIATION, payment_intent=payment_intent, charged_at=charged_at)
        if result.fulfilled_now:
            ctx.counts["recovered"] += 1
    except PaymentMismatch as problem:
        _flag(ctx, order, Alert.Reason.PAYMENT_MISMATCH, str(problem))
    except NotFulfillable as problem:
        order.refresh_from_db()
        reason = Alert.Reason.PAID_AFTER_FAILED if order.state == Order.State.FAILED else Alert.Reason.FULFIL_FAILED
        _flag(ctx, order, reason, f"Stripe says {order.stripe_payment_intent_id} succeeded, but {problem}.")


def _flag(ctx: Context, order: Order, reason: str, message: str) -> None:
    if not order.needs_attention:
        order.flag_attention(message, actor=ACTOR)
    if raise_alert(reason, message, order=order):
        ctx.counts["alerts"] += 1


# --- step 2 ---------------------------------------------------------------------------


def _due_for_check(order: Order, now) -> bool:
    """Young orders are checked every run, older ones less often (up to hourly), so a
    declined checkout left open does not cost a Stripe request a minute for a day."""
    if order.stripe_checked_at is None:
        return True
    age = now - order.created_at
    interval = min(max(grace(), age / 10), timedelta(hours=1))
    return now - order.stripe_checked_at >= interval


def check_pending(ctx: Context) -> None:
    """Step 2: ask Stripe about pending orders older than the grace (at most 500 a run, older
    ones less often): succeeded → fulfil; cancelled or abandoned → Order.close_unpaid();
    awaiting capture → alert. Raises stripe.StripeError when Stripe cannot be reached and
    gateway.BudgetExhausted when the run's request budget is spent (`_run` records either)."""
    pending = Order.objects.filter(state=Order.State.PENDING, created_at__lt=ctx.now - grace()).select_related("plan")
    abandon_before = ctx.now - timedelta(seconds=settings.RECONCILE_ABANDON_AFTER_SECONDS)
    # Never charged and past the deadline: close it, no Stripe call needed.
    for order in pending.filter(stripe_payment_intent_id__isnull=True, created_at__lt=abandon_before)[:500]:
        ctx.counts["checked"] += 1
        if ctx.would(f"close {order.reference}: abandoned before any charge"):
            _close(ctx, order, "Checkout abandoned before any charge; nothing was charged.")
    for order in pending.filter(stripe_payment_intent_id__isnull=False).order_by("created_at")[:500]:
        if not _due_for_check(order, ctx.now):
            continue
        ctx.counts["checked"] += 1
        payment_intent = gateway.retrieve_payment_intent(order.stripe_payment_intent_id)
        Order.objects.filter(pk=order.pk).update(stripe_checked_at=ctx.now)
        status = payment_intent.status
        if order.stripe_payment_status not in ("", "creating"):  # else a replaced attempt's PaymentIntent
            # Only if no checkout request changed it meanwhile: that one holds a newer answer.
            Order.objects.filter(
                pk=order.pk,
                stripe_payment_intent_id=order.stripe_payment_intent_id,
                stripe_payment_status=order.stripe_payment_status,
            ).update(stripe_payment_status=status)
        if status == "succeeded":
            if ctx.would(f"fulfil {order.reference}: pending here, succeeded in Stripe (missed webhook)"):
                _fulfil(ctx, order, payment_intent)
        elif status == "canceled" and (
            order.stripe_payment_status not in ("", "creating") or order.created_at < abandon_before
        ):
            if ctx.would(f"close {order.reference}: its PaymentIntent was cancelled"):
                _close(ctx, order, "The payment was cancelled in Stripe; nothing was charged.")
        elif status == "requires_capture":
            # Authorised, not captured: PaidUp never asks for that, so a person must decide
            # (capture it or cancel it) before the authorisation expires.
            if ctx.would(f"alert about {order.reference}: its PaymentIntent awaits capture"):
                _flag(
                    ctx,
                    order,
                    Alert.Reason.PAYMENT_MISMATCH,
                    f"{order.stripe_payment_intent_id} is authorised but not captured (requires_capture); "
                    "PaidUp never asks for manual capture. Capture or cancel it in Stripe.",
                )
        elif order.created_at < abandon_before and status in (
            "requires_payment_method",
            "requires_confirmation",
            "requires_action",
        ):
            if ctx.would(f"cancel {order.stripe_payment_intent_id} and close {order.reference}: abandoned"):
                gateway.cancel_payment_intent(order.stripe_payment_intent_id)
                _close(ctx, order, "Checkout abandoned; the unfinished payment was cancelled. Nothing was charged.")


def _close(ctx: Context, order: Order, message: str) -> None:
    if order.close_unpaid(actor=ACTOR, message=message):
        ctx.counts["failed"] += 1


# --- step 3 ---------------------------------------------------------------------------


def scan_since(ctx: Context, cursor: int | None) -> int:
    """Where a refund scan starts: the last cursor minus the overlap, or, on the first run,
    RECONCILE_FIRST_SCAN_SECONDS back."""
    if cursor is None:
        return int((ctx.now - timedelta(seconds=settings.RECONCILE_FIRST_SCAN_SECONDS)).timestamp())
    return cursor - settings.RECONCILE_SCAN_OVERLAP_SECONDS


def scan_state(ctx: Context) -> ScanState:
    """Where the Stripe scan stands: as the latest run left it after its last settled page
    (a run that died or ran out of budget included: it only ever wrote settled pages), or, on
    the first run, RECONCILE_FIRST_SCAN_SECONDS back."""
    row = (
        ReconciliationRun.objects.filter(dry_run=False, cursor__isnull=False)
        .exclude(pk=ctx.run_id)
        .order_by("-started_at", "-pk")
        .values("cursor", "scan_upto", "scan_end")
        .first()
    )
    if row is None:
        since = scan_since(ctx, None)
        return ScanState(cursor=since + settings.RECONCILE_SCAN_OVERLAP_SECONDS)
    return ScanState(row["cursor"], row["scan_upto"], row["scan_end"])


def _save_scan(ctx: Context) -> None:
    """Write the scan's place on this run's row now: a run that dies later resumes from here."""
    if ctx.dry_run or ctx.run_id is None or ctx.scan is None:
        return
    ReconciliationRun.objects.filter(pk=ctx.run_id).update(
        cursor=ctx.scan.cursor, scan_upto=ctx.scan.upto, scan_end=ctx.scan.end
    )


def scan_stripe(ctx: Context) -> None:
    """Settle every succeeded payment since the scan's place, page by page, writing the place
    down after each page (billing/scan_state.py: safe whichever way Stripe lists). A run that
    finishes the older rest of a window read newest first goes on to the newer events."""
    ctx.scan = scan_state(ctx)
    while True:
        resuming = ctx.scan.upto is not None
        listing = Listing(ctx.scan)
        since = ctx.scan.since(settings.RECONCILE_SCAN_OVERLAP_SECONDS)
        for page in gateway.succeeded_payment_pages(since, ctx.scan.upto):
            ctx.charged_at.update({event.data.object.id: event.created for event in page})
            settle_page(ctx, [event.data.object for event in page])
            if listing.page_settled([event.created for event in page]):
                _save_scan(ctx)
        listing.finished()
        _save_scan(ctx)
        if not resuming:
            return


def _uuid(value) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except (TypeError, ValueError):
        return None


def settle_page(ctx: Context, payment_intents: list) -> None:
    """Settle a page of succeeded PaymentIntents (Stripe objects or dicts): known order →
    fulfil; unknown payment → adopt_payment(). Used by the Stripe scan and by the customer's
    self-service check. A constant number of queries for a healthy page: one to match the
    page's payments to orders (one more when some have no order: which were already recorded
    as buying nothing)."""
    ids = {pi.id for pi in payment_intents}
    order_ids = {u for pi in payment_intents if (u := _uuid((pi.metadata or {}).get("order_id")))}
    known = Order.objects.filter(Q(stripe_payment_intent_id__in=ids) | Q(pk__in=order_ids)).select_related("plan")
    by_pi = {o.stripe_payment_intent_id: o for o in known if o.stripe_payment_intent_id}
    by_id = {o.pk: o for o in known}
    orphans = [pi.id for pi in payment_intents if pi.id not in by_pi and _uuid_key(pi) not in by_id]
    recorded = adoption.is_recorded_unmatched(orphans) if orphans else set()
    for pi in payment_intents:
        ctx.counts["checked"] += 1
        order = by_pi.get(pi.id) or by_id.get(_uuid_key(pi))
        if order is not None and order.was_charged and order.stripe_payment_intent_id not in (None, pi.id):
            # The order was paid by another PaymentIntent: this one is a second charge.
            if ctx.would(f"alert: {pi.id} is a second payment for {order.reference}"):
                message = (
                    f"{pi.id} succeeded for {order.reference}, "
                    f"which was already paid by {order.stripe_payment_intent_id}."
                )
                if raise_alert(Alert.Reason.DUPLICATE_PAYMENT, message, order=order, key=f"duplicate_payment:{pi.id}"):
                    ctx.counts["alerts"] += 1
            continue
        if order is not None and order.state in (Order.State.FULFILLED, Order.State.REFUNDED):
            continue
        if order is not None and order.needs_attention:
            continue  # a person has it
        if order is not None:
            if ctx.would(f"fulfil {order.reference}: {pi.id} succeeded in Stripe, order is {order.state}"):
                _fulfil(ctx, order, pi, charged_at=ctx.charged_at.get(pi.id))
        elif pi.id not in recorded:
            adopt_payment(ctx, pi)


def _uuid_key(pi) -> uuid.UUID | None:
    return _uuid((pi.metadata or {}).get("order_id"))


def adopt_payment(ctx: Context, pi) -> Order | None:
    """A succeeded payment with no order here. If it buys a plan (adoption.plan_for_payment:
    exactly a plan's amount and currency), create the order it should have had and fulfil it
    (or, with no email anywhere, flag it). If it buys nothing, record it for a person
    (adoption.record_unmatched): no order, no access, no email to the customer. Returns the
    order, or None when none was created."""
    price = format_money(pi.amount, pi.currency)
    plan = adoption.plan_for_payment(pi.amount, pi.currency)
    if plan is None:
        if ctx.would(f"record {pi.id}: {price} matches no plan and names no order here; alert support"):
            if adoption.record_unmatched(pi, found_by=ctx.found_by):
                ctx.counts["alerts"] += 1
            ctx.counts["unmatched"] += 1
            ctx.notes.append(f"Stripe payment {pi.id} of {price} matches no plan: no access given, support alerted.")
        return None
    if not ctx.would(f"adopt {pi.id}: {price} succeeded in Stripe with no order here"):
        return None
    email = adoption.email_for_payment(pi)
    try:
        order = adoption.create_order(
            pi,
            plan,
            email,
            actor=ACTOR,
            kind="order:adopted",
            message=f"Created from Stripe payment {pi.id}, which had no order here.",
            data={"payment_intent": pi.id, "metadata": dict(pi.metadata or {})},
        )
    except IntegrityError:  # a webhook created or claimed it meanwhile
        return Order.objects.filter(stripe_payment_intent_id=pi.id).first()
    ctx.counts["retroactive"] += 1
    if not email:
        with transaction.atomic():
            locked = Order.objects.select_for_update().get(pk=order.pk)
            record_payment(locked, pi, via=Order.Via.RECONCILIATION, charged_at=ctx.charged_at.get(pi.id))
        _flag(
            ctx,
            order,
            Alert.Reason.NO_EMAIL,
            f"Stripe payment {pi.id} succeeded with no email in its metadata or customer.",
        )
        return order
    _fulfil(ctx, order, pi, charged_at=ctx.charged_at.get(pi.id))
    order.refresh_from_db()
    sent = order.emails.filter(kind__in=OutboundEmail.ACCESS_KINDS).first()
    if raise_alert(
        Alert.Reason.UNKNOWN_PAYMENT,
        f"Stripe payment {pi.id} ({order.price}, {email}) had no order here. "
        f"Reconciliation created {order.reference} and fulfilled it; "
        + (f"the customer got the {sent.get_kind_display().lower()} email." if sent else "no access email went out."),
        order=order,
    ):
        ctx.counts["alerts"] += 1
    return order


# --- step 4 ---------------------------------------------------------------------------


def replay_webhooks(ctx: Context) -> None:
    """Step 4: replay dj-stripe webhook triggers that failed processing (at most 100 a run); a
    replay that fails again raises an alert once per trigger, never an exception."""
    from djstripe.models import WebhookEventTrigger

    failed = WebhookEventTrigger.objects.filter(valid=True, processed=False, created__lt=ctx.now - grace())
    for trigger in failed.order_by("created")[:100]:
        ctx.counts["checked"] += 1
        if not ctx.would(f"replay webhook trigger {trigger.pk} ({trigger.json_body.get('type', '?')})"):
            continue
        try:
            with transaction.atomic():
                trigger.process(save=True)
            ctx.counts["replayed"] += 1
        except Exception as error:
            WebhookEventTrigger.objects.filter(pk=trigger.pk).update(exception=str(error)[:128])
            if raise_alert(
                Alert.Reason.WEBHOOK_FAILED,
                f"Stripe event {trigger.json_body.get('id', '?')} still fails on replay: {error}",
                key=f"webhook_failed:{trigger.pk}",
            ):
                ctx.counts["alerts"] += 1


# --- step 5 ---------------------------------------------------------------------------


def record_refunds(ctx: Context) -> None:
    """Step 5, the net under the refund webhooks: record refunds made in Stripe since the last
    ok run's cursor that are not recorded here, and status changes (failed, cancelled) of
    those it lists; then read Stripe's refund events since the same cursor for status changes
    of older refunds (a refund fails days after it was made), all through
    billing.refunds.record_refund (invariant I4). Raises
    stripe.StripeError when Stripe cannot be reached and gateway.BudgetExhausted when the run's
    budget is spent."""
    for page in gateway.refund_pages(scan_since(ctx, last_cursor())):
        refunds = [r for r in page if r.payment_intent]
        seen = dict(
            Refund.objects.filter(stripe_refund_id__in=[r.id for r in refunds]).values_list(
                "stripe_refund_id", "status"
            )
        )
        new = [r for r in refunds if seen.get(r.id) != (r.status or "succeeded")]
        if not new:
            continue
        orders = {
            o.stripe_payment_intent_id: o
            for o in Order.objects.filter(stripe_payment_intent_id__in=[_id(r.payment_intent) for r in new])
        }
        for refund in new:
            order = orders.get(_id(refund.payment_intent))
            shown = format_money(refund.amount, refund.currency)
            if order is not None and ctx.would(f"record refund {refund.id} of {shown} on {order.reference}"):
                if record_refund(order, refund, actor=ACTOR, reason="Refunded in Stripe") in (RECORDED, UPDATED):
                    ctx.counts["refunds"] += 1
    for page in gateway.refund_event_pages(scan_since(ctx, last_cursor())):
        # Only refunds recorded here whose status moved on (new ones come from the list above).
        latest = {e.data.object.id: e.data.object for e in sorted(page, key=lambda e: e.created)}
        rows = Refund.objects.filter(stripe_refund_id__in=list(latest)).select_related("order")
        for row in rows:
            refund = latest[row.stripe_refund_id]
            if row.status != refund.status and ctx.would(f"refund {row.stripe_refund_id} is now {refund.status}"):
                if record_refund(row.order, refund, actor=ACTOR) == UPDATED:
                    ctx.counts["refunds"] += 1


def _id(value) -> str:
    return value if isinstance(value, str) else value.id


def scan_disputes(ctx: Context) -> None:
    """Step 6: disputes and early fraud warnings created since the cursor (dispute_scan.scan)."""
    dispute_scan.scan(ctx, scan_since(ctx, last_cursor()))
