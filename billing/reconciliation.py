"""Reconciliation: find every paid-but-unfulfilled or unknown payment and finish the job.

One run (`run()`), guarded so that two runners never work at once, records a
ReconciliationRun (the heartbeat). Steps, each a small function that returns its counts:

1. paid but not fulfilled, older than the grace period → fulfil(via="reconciliation")
2. pending with a PaymentIntent, older than the grace → ask Stripe: succeeded → fulfil;
   cancelled → failed; abandoned past the deadline → cancel it in Stripe → failed
3. Stripe-side scan of succeeded payments since the cursor (with overlap): known order →
   fulfil; unknown payment → order created from its metadata or customer email, fulfilled,
   support alerted; no email anywhere → paid, flagged, support alerted. One query per page.
4. dj-stripe webhook triggers whose processing failed → replayed
5. refunds made in Stripe but not here → recorded (I4)

Stripe requests are budgeted (gateway.budget) and retried with backoff on 429/5xx.
"""

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

from support.alerts import raise_alert, send_followups
from support.models import Alert

from . import emails, gateway
from .fulfilment import NotFulfillable, PaymentMismatch, fulfil, record_payment
from .locks import exclusive
from .models import Order, OutboundEmail, Plan, ReconciliationRun, Refund
from .models.orders import is_valid_reference

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
    cursor: int | None = None

    def would(self, sentence: str) -> bool:
        """Record the action; True when it should really be done."""
        self.actions.append(sentence)
        return not self.dry_run

    def error(self, what: str) -> None:
        logger.error("reconciliation: %s", what)
        self.errors.append(what)


def grace() -> timedelta:
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
    ctx = Context(now=timezone.now(), dry_run=dry_run)
    with gateway.budget(settings.RECONCILE_STRIPE_BUDGET, settings.RECONCILE_STRIPE_PER_SECOND) as budget:
        for step in (fulfil_paid, check_pending, scan_stripe, replay_webhooks, record_refunds):
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
    record.finished_at = timezone.now()
    record.ok = not ctx.errors
    record.counts = {**ctx.counts, "duration_ms": round((time.monotonic() - started) * 1000)}
    if ctx.dry_run:
        record.counts["actions"] = ctx.actions
    record.errors = "\n".join(ctx.errors)
    record.cursor = ctx.cursor if ctx.cursor is not None else last_cursor()
    record.save()
    return record


def last_cursor() -> int | None:
    return (
        ReconciliationRun.objects.filter(ok=True, dry_run=False, cursor__isnull=False)
        .order_by("-started_at")
        .values_list("cursor", flat=True)
        .first()
    )


# --- step 1 ---------------------------------------------------------------------------


def fulfil_paid(ctx: Context) -> None:
    stuck = Order.objects.filter(state=Order.State.PAID, paid_at__lt=ctx.now - grace(), needs_attention=False)
    for order in stuck.select_related("plan")[:500]:
        ctx.counts["checked"] += 1
        if ctx.would(f"fulfil {order.reference}: paid {order.paid_at:%H:%M:%S}, not fulfilled"):
            _fulfil(ctx, order)


def _fulfil(ctx: Context, order: Order, payment_intent=None) -> None:
    try:
        if fulfil(order, via=Order.Via.RECONCILIATION, payment_intent=payment_intent).fulfilled_now:
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
        Order.objects.filter(pk=order.pk).update(stripe_checked_at=ctx.now, stripe_payment_status=payment_intent.status)
        status = payment_intent.status
        if status == "succeeded":
            if ctx.would(f"fulfil {order.reference}: pending here, succeeded in Stripe (missed webhook)"):
                _fulfil(ctx, order, payment_intent)
        elif status == "canceled":
            if ctx.would(f"close {order.reference}: its PaymentIntent was cancelled"):
                _close(ctx, order, "The payment was cancelled in Stripe; nothing was charged.")
        elif order.created_at < abandon_before and status in (
            "requires_payment_method",
            "requires_confirmation",
            "requires_action",
        ):
            if ctx.would(f"cancel {order.stripe_payment_intent_id} and close {order.reference}: abandoned"):
                gateway.cancel_payment_intent(order.stripe_payment_intent_id)
                _close(ctx, order, "Checkout abandoned; the unfinished payment was cancelled. Nothing was charged.")


def _close(ctx: Context, order: Order, message: str) -> None:
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order.pk)
        if order.state == Order.State.PENDING:
            order.transition(Order.State.FAILED, actor=ACTOR, message=message)
            ctx.counts["failed"] += 1


# --- step 3 ---------------------------------------------------------------------------


def scan_since(ctx: Context, cursor: int | None) -> int:
    """Where a Stripe-side scan starts: the last cursor minus the overlap, or, on the first
    run, RECONCILE_FIRST_SCAN_SECONDS back."""
    if cursor is None:
        return int((ctx.now - timedelta(seconds=settings.RECONCILE_FIRST_SCAN_SECONDS)).timestamp())
    return cursor - settings.RECONCILE_SCAN_OVERLAP_SECONDS


def scan_stripe(ctx: Context) -> None:
    cursor = last_cursor()
    since = scan_since(ctx, cursor)
    newest = cursor or since
    for page in gateway.succeeded_payment_pages(since):
        _scan_page(ctx, [event.data.object for event in page])
        newest = max(newest, *(event.created for event in page))
    ctx.cursor = newest


def _uuid(value) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except (TypeError, ValueError):
        return None


def _scan_page(ctx: Context, payment_intents: list) -> None:
    """A constant number of queries for a healthy page: one to match the page's payments."""
    ids = {pi.id for pi in payment_intents}
    order_ids = {u for pi in payment_intents if (u := _uuid((pi.metadata or {}).get("order_id")))}
    known = Order.objects.filter(Q(stripe_payment_intent_id__in=ids) | Q(pk__in=order_ids)).select_related("plan")
    by_pi = {o.stripe_payment_intent_id: o for o in known if o.stripe_payment_intent_id}
    by_id = {o.pk: o for o in known}
    for pi in payment_intents:
        ctx.counts["checked"] += 1
        order = by_pi.get(pi.id) or by_id.get(_uuid((pi.metadata or {}).get("order_id")))
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
                _fulfil(ctx, order, pi)
        elif ctx.would(f"adopt {pi.id}: succeeded in Stripe ({pi.amount} {pi.currency}) with no order here"):
            adopt_payment(ctx, pi)


def _email_for(pi) -> str:
    email = ((pi.metadata or {}).get("email") or "").strip()
    if not email and pi.customer:
        customer_id = pi.customer if isinstance(pi.customer, str) else pi.customer.id
        email = (gateway.retrieve_customer(customer_id).email or "").strip()
    return email.lower()


def adopt_payment(ctx: Context, pi) -> Order | None:
    """Create the order a succeeded payment should have had, then fulfil it (or flag it)."""
    email = _email_for(pi)
    plan = (
        Plan.objects.filter(amount_cents=pi.amount, currency=pi.currency).order_by("-active", "id").first()
        or Plan.objects.filter(active=True).order_by("id").first()
    )
    if plan is None:
        ctx.error(f"cannot adopt {pi.id}: no plan exists")
        return None
    reference = (pi.metadata or {}).get("reference") or ""
    fields = {
        "email": email,
        "plan": plan,
        "amount_cents": pi.amount,
        "currency": pi.currency,
        "stripe_payment_intent_id": pi.id,
        "stripe_customer_id": (pi.customer if isinstance(pi.customer, str) else getattr(pi.customer, "id", "")) or "",
        "stripe_payment_status": pi.status,
        "retroactive": True,
    }
    if is_valid_reference(reference) and not Order.objects.filter(reference=reference).exists():
        fields["reference"] = reference  # the one the customer saw at checkout
    try:
        with transaction.atomic():
            order = Order.objects.create(**fields)
            order.log(
                "order:adopted",
                f"Created from Stripe payment {pi.id}, which had no order here.",
                actor=ACTOR,
                data={"payment_intent": pi.id, "metadata": dict(pi.metadata or {})},
            )
    except IntegrityError:  # a webhook created or claimed it meanwhile
        return Order.objects.filter(stripe_payment_intent_id=pi.id).first()
    ctx.counts["retroactive"] += 1
    if not email:
        with transaction.atomic():
            locked = Order.objects.select_for_update().get(pk=order.pk)
            record_payment(locked, pi, via=Order.Via.RECONCILIATION)
        _flag(
            ctx,
            order,
            Alert.Reason.NO_EMAIL,
            f"Stripe payment {pi.id} succeeded with no email in its metadata or customer.",
        )
        return order
    _fulfil(ctx, order, pi)
    if raise_alert(
        Alert.Reason.UNKNOWN_PAYMENT,
        f"Stripe payment {pi.id} ({order.price}, {email}) had no order here. "
        f"Reconciliation created {order.reference} and fulfilled it; the customer got the recovery email.",
        order=order,
    ):
        ctx.counts["alerts"] += 1
    return order


# --- step 4 ---------------------------------------------------------------------------


def replay_webhooks(ctx: Context) -> None:
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
    for page in gateway.refund_pages(scan_since(ctx, last_cursor())):
        refunds = [r for r in page if r.status in ("succeeded", "pending") and r.payment_intent]
        seen = set(
            Refund.objects.filter(stripe_refund_id__in=[r.id for r in refunds]).values_list(
                "stripe_refund_id", flat=True
            )
        )
        new = [r for r in refunds if r.id not in seen]
        if not new:
            continue
        orders = {
            o.stripe_payment_intent_id: o
            for o in Order.objects.filter(stripe_payment_intent_id__in=[_id(r.payment_intent) for r in new])
        }
        for refund in new:
            order = orders.get(_id(refund.payment_intent))
            if order is not None and ctx.would(f"record refund {refund.id} of {refund.amount} on {order.reference}"):
                record_refund(order, refund, actor=ACTOR, reason="Refunded in Stripe")
                ctx.counts["refunds"] += 1


def _id(value) -> str:
    return value if isinstance(value, str) else value.id


def record_refund(order: Order, refund, *, actor: str, reason: str = "") -> bool:
    """Record a Stripe refund here once; a full refund ends the subscription today."""
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order.pk)
        try:
            with transaction.atomic():
                Refund.objects.create(
                    order=order,
                    stripe_refund_id=refund.id,
                    amount_cents=refund.amount,
                    currency=refund.currency,
                    reason=reason,
                    actor=actor,
                )
        except IntegrityError:
            return False
        order.refunded_cents += refund.amount
        order.save(update_fields=["refunded_cents", "updated_at"])
        order.log(
            "refund",
            f"Refund {refund.id} of {refund.amount} cents recorded ({reason or 'no reason given'}).",
            actor=actor,
            data={"refund": refund.id, "amount": refund.amount},
        )
        if order.refunded_cents >= order.amount_cents and order.state in (Order.State.PAID, Order.State.FULFILLED):
            order.transition(Order.State.REFUNDED, actor=actor, message="Fully refunded; access ends today.")
            if hasattr(order, "subscription"):
                order.subscription.ends_at = min(order.subscription.ends_at, timezone.now())
                order.subscription.save(update_fields=["ends_at"])
        emails.queue_order_email(order, OutboundEmail.Kind.REFUND)
    return True
