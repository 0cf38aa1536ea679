"""The invariant checker: reads the database and Stripe and lists every broken promise (I1–I7).

DESIGN.md's invariants, each checked by one function below that returns a list of
`Violation`s; `check_all()` runs them all and counts them (`Report`). The chaos run
(bench/chaos.py) calls it after the system settles and wants 0; an operator can run it as
`manage.py check_invariants` (support/management/commands/check_invariants.py).

It lives in the console (support) because I7 reads the console's audit rows (the admin
`LogEntry` and `RefundRequest`), and the core may not import the console; the console may read
the core, the outbox and, through billing.gateway, Stripe (support/stripe_view.py).

The checks only read. Each one is a rule the code already keeps on the way in; this is the
proof on the way out, so it never trusts the rule it checks: it re-derives the answer from the
rows (timeline, refunds, emails, webhook triggers) and from Stripe's own objects.
"""

# size: one checker per invariant, side by side so each reads against DESIGN.md's list; splitting
# them would scatter one proof over several files.
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.admin.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.db.models import Count, Prefetch, Q
from django.utils import timezone
from djstripe.models import Event, WebhookEventTrigger

from billing.models import Order, OrderEvent, OutboundEmail, Refund
from billing.models.orders import format_money
from outbox.sending import STALE_SENDING

from .models import RefundRequest
from .stripe_view import StripeView, read_stripe

INVARIANTS = ("I1", "I2", "I3", "I4", "I5", "I6", "I7", "outbox")
CHARGED = (Order.State.PAID, Order.State.FULFILLED, Order.State.REFUNDED)


@dataclass(frozen=True)
class Violation:
    """One broken promise: which invariant, about what (an order reference, pi_…, re_…, a
    webhook trigger or an email), what is wrong, what was expected and what was found."""

    invariant: str
    ref: str
    what: str
    expected: str
    found: str

    def __str__(self) -> str:
        return f"{self.invariant} {self.ref}: {self.what} (expected {self.expected}; found {self.found})"


@dataclass
class Report:
    """Every violation found, counted by invariant; `complete` is False when Stripe could not be
    read whole (the read budget ran out), and then the report cannot say "clean"."""

    violations: list[Violation] = field(default_factory=list)
    complete: bool = True
    orders: int = 0
    stripe_requests: int = 0

    @property
    def counts(self) -> dict[str, int]:
        """Violations found per invariant, every one of INVARIANTS named (0 when none)."""
        found = Counter(v.invariant for v in self.violations)
        return {name: found.get(name, 0) for name in INVARIANTS}

    @property
    def ok(self) -> bool:
        """True only when the check ran to the end and found no violation."""
        return self.complete and not self.violations

    def lines(self) -> list[str]:
        """The report as an operator reads it: one summary line, one line per violation."""
        counts = " ".join(f"{name}={n}" for name, n in self.counts.items())
        verdict = "OK" if self.ok else ("INCOMPLETE" if not self.violations else "VIOLATIONS")
        head = f"{verdict}: {len(self.violations)} violations ({counts}); {self.orders} orders checked"
        head += f", {self.stripe_requests} Stripe requests"
        if not self.complete:
            head += "; Stripe read incomplete (budget spent): not every check could run"
        return [head, *(str(v) for v in self.violations)]


@dataclass
class Window:
    """What the checks look at: orders, Stripe objects and webhook triggers created at or after
    `since`; `settled_before` is when something must have settled by (now less the grace)."""

    since: datetime
    settled_before: datetime


def orders_in(window: Window) -> list[Order]:
    """The window's orders, with what the checks read about each: subscriptions and access
    emails counted, timeline state rows and refunds loaded (a constant number of queries)."""
    return list(
        Order.objects.filter(created_at__gte=window.since)
        .annotate(
            n_subscriptions=Count("subscription", distinct=True),
            n_access_emails=Count("emails", filter=Q(emails__kind__in=OutboundEmail.ACCESS_KINDS), distinct=True),
        )
        .prefetch_related(
            Prefetch("events", OrderEvent.objects.filter(kind__startswith="state:"), to_attr="state_events"),
            Prefetch("refunds", Refund.objects.all(), to_attr="refund_rows"),
        )
        .order_by("created_at")
    )


def check_i1(orders: list[Order], stripe: StripeView) -> list[Violation]:
    """I1: an order is paid/fulfilled/refunded only with a succeeded PaymentIntent of its
    amount and currency, as Stripe has it now."""
    found = []
    for order in orders:
        if order.state not in CHARGED:
            continue
        expected = f"a succeeded PaymentIntent of {order.price}"
        pi = stripe.payment_intents.get(order.stripe_payment_intent_id or "")
        if pi is None:
            got = "no PaymentIntent recorded" if not order.stripe_payment_intent_id else "Stripe has no such payment"
            found.append(Violation("I1", order.reference, f"{order.state} without a payment", expected, got))
            continue
        if pi["status"] != "succeeded" or pi["amount"] != order.amount_cents or pi["currency"] != order.currency:
            got = f"{pi['id']} {pi['status']}, {format_money(pi['amount'], pi['currency'])}"
            found.append(
                Violation("I1", order.reference, f"{order.state} on a payment that does not prove it", expected, got)
            )
    return found


def check_i2(stripe: StripeView, window: Window) -> list[Violation]:
    """I2: every PaymentIntent that succeeded before `window.settled_before` has an order here
    that is fulfilled or refunded, or Stripe refunded all of it."""
    cutoff = window.settled_before.timestamp()
    settled = [
        pi
        for pi in stripe.payment_intents.values()
        if pi["status"] == "succeeded" and (pi.get("created") or 0) <= cutoff
    ]
    by_pi = Order.objects.filter(stripe_payment_intent_id__in=[pi["id"] for pi in settled]).in_bulk(
        field_name="stripe_payment_intent_id"
    )
    found = []
    for pi in settled:
        order = by_pi.get(pi["id"])
        if order is not None and order.state in (Order.State.FULFILLED, Order.State.REFUNDED):
            continue
        if stripe.refunded_cents(pi["id"]) >= pi["amount"]:
            continue
        got = f"order {order.reference} {order.state}" if order else "no order for it"
        found.append(Violation("I2", pi["id"], "succeeded payment not settled", "an order fulfilled or refunded", got))
    return found


def check_i3(orders: list[Order]) -> list[Violation]:
    """I3: one subscription and one access email (confirmation or recovery) for a fulfilled
    order; none for an order never fulfilled; a refunded order has both or neither."""
    found = []
    for order in orders:
        subs, emails = order.n_subscriptions, order.n_access_emails
        if order.state == Order.State.FULFILLED:
            ok, expected = subs == 1 and emails == 1, "1 subscription and 1 access email"
        elif order.state == Order.State.REFUNDED:
            ok, expected = subs == emails and subs <= 1, "both (fulfilled before the refund) or neither"
        else:
            ok, expected = subs == 0 and emails == 0, "no subscription and no access email"
        if not ok:
            got = f"{subs} subscriptions, {emails} access emails"
            found.append(Violation("I3", order.reference, f"{order.state} order's access", expected, got))
    return found


def check_i4(orders: list[Order], stripe: StripeView) -> list[Violation]:
    """I4: refunds never exceed the charge, and local refunds equal Stripe's: each refund in
    both places with the same amount and the same counted/not counted status, and the order's
    `refunded_cents` the sum of its counted refunds."""
    found = []
    for order in orders:
        local = {r.stripe_refund_id: r for r in order.refund_rows}
        theirs = (
            {r["id"]: r for r in stripe.refunds_of(order.stripe_payment_intent_id)}
            if order.stripe_payment_intent_id
            else {}
        )
        for ref in sorted(set(local) | set(theirs)):
            mine, stripe_refund = local.get(ref), theirs.get(ref)
            expected = "the same refund here and at Stripe"
            if mine is None or stripe_refund is None:
                got = "only at Stripe" if mine is None else "only here"
                found.append(Violation("I4", f"{order.reference} {ref}", "refund recorded on one side", expected, got))
            elif mine.amount_cents != stripe_refund["amount"] or mine.counts != (
                stripe_refund["status"] not in Refund.FINAL
            ):
                got = f"{mine.amount_cents} {mine.status} here, "
                got += f"{stripe_refund['amount']} {stripe_refund['status']} at Stripe"
                found.append(Violation("I4", f"{order.reference} {ref}", "refund differs from Stripe's", expected, got))
        counted = sum(r.amount_cents for r in order.refund_rows if r.counts)
        if order.refunded_cents != counted or counted > order.amount_cents:
            got = f"refunded_cents {order.refunded_cents}, counted refunds {counted}, charge {order.amount_cents}"
            expected = "refunded_cents = counted refunds ≤ the charge"
            found.append(Violation("I4", order.reference, "refunded total wrong", expected, got))
    for pi in stripe.payment_intents.values():
        if (total := stripe.refunded_cents(pi["id"])) > pi["amount"]:
            found.append(
                Violation("I4", pi["id"], "Stripe refunded more than the charge", f"≤ {pi['amount']}", str(total))
            )
    return found


def check_i5(orders: list[Order]) -> list[Violation]:
    """I5: the timeline's state rows replay, from pending, only legal moves, each with an actor,
    and end at the order's state: a state changed without its row is found here."""
    found = []
    for order in orders:
        state = Order.State.PENDING
        for event in order.state_events:
            to, frm = event.kind.removeprefix("state:"), event.data.get("from", state)
            if frm != state or to not in Order.TRANSITIONS.get(state, set()):
                found.append(
                    Violation(
                        "I5", order.reference, "illegal move in the timeline", f"a move from {state}", f"{frm} → {to}"
                    )
                )
            if not event.actor.strip():
                found.append(Violation("I5", order.reference, f"move to {to} without an actor", "an actor", "none"))
            state = to
        if state != order.state:
            found.append(
                Violation("I5", order.reference, "state not in the timeline", f"{state} (the last move)", order.state)
            )
    return found


def check_i6(window: Window, acknowledged: Iterable[str] = ()) -> list[Violation]:
    """I6: a webhook answered 2xx is committed. dj-stripe answers 2xx only for a trigger it
    stored valid and processed, so every such trigger must point at its recorded Event; a valid
    trigger that failed (500) must have been replayed since (reconciliation replays the inbox);
    and every event id in `acknowledged` (the ones a caller saw answered 2xx, e.g. the chaos
    run's sender) must be a recorded Event."""
    triggers = list(WebhookEventTrigger.objects.filter(created__gte=window.since, valid=True).order_by("id"))
    event_ids = {_event_id(t) for t in triggers} | set(acknowledged)
    recorded = set(Event.objects.filter(id__in=event_ids - {""}).values_list("id", flat=True))
    found = []
    for trigger in triggers:
        event_id = _event_id(trigger)
        if trigger.processed and not trigger.event_id:
            found.append(
                Violation("I6", f"trigger {trigger.pk}", f"{event_id} answered 2xx, not recorded", "its Event", "none")
            )
        elif not trigger.processed and event_id not in recorded and trigger.created < window.settled_before:
            got = f"failed ({trigger.exception or 'no exception'}), never replayed"
            found.append(
                Violation("I6", f"trigger {trigger.pk}", f"{event_id} never committed", "processed on replay", got)
            )
    for event_id in sorted(set(acknowledged) - recorded):
        found.append(Violation("I6", event_id, "answered 2xx, not recorded", "a recorded Event", "none"))
    return found


def _event_id(trigger: WebhookEventTrigger) -> str:
    try:
        return str(trigger.json_body.get("id") or "")
    except (ValueError, AttributeError):
        return ""


def check_i7(orders: list[Order]) -> list[Violation]:
    """I7: no money action without its audit rows. Every refund has its timeline row; a refund
    a support person made has its RefundRequest (who, why, the idempotency token) and the
    admin's LogEntry by that person; every RefundRequest has the refund it asked for; an order
    fulfilled by support has the admin's LogEntry by the person the timeline names."""
    ids = [o.pk for o in orders]
    refund_rows = set(OrderEvent.objects.filter(order__in=ids, kind="refund").values_list("data__refund", flat=True))
    refund_requests = {r.stripe_refund_id: r for r in RefundRequest.objects.filter(order__in=ids)}
    logged = _admin_log(ids)
    found = []
    for order in orders:
        for refund in order.refund_rows:
            ref = f"{order.reference} {refund.stripe_refund_id}"
            if refund.stripe_refund_id not in refund_rows:
                found.append(Violation("I7", ref, "refund without its timeline row", "a 'refund' row", "none"))
            if refund.actor.startswith("support:"):
                request = refund_requests.get(refund.stripe_refund_id)
                if request is None or request.requested_by != refund.actor:
                    got = request.requested_by if request else "none"
                    found.append(Violation("I7", ref, "console refund without its request", refund.actor, got))
                if (order.pk, refund.actor, "Refund") not in logged:
                    found.append(Violation("I7", ref, "console refund without its admin log", refund.actor, "none"))
        if order.fulfilled_via == Order.Via.SUPPORT:
            actor = next((e.actor for e in order.state_events if e.kind == "state:fulfilled"), "")
            if (order.pk, actor, "Fulfil") not in logged and (order.pk, actor, "Attach payment") not in logged:
                found.append(
                    Violation("I7", order.reference, "support fulfilment without its admin log", actor, "none")
                )
    recorded = set(Refund.objects.filter(order__in=ids).values_list("stripe_refund_id", flat=True))
    for stripe_refund_id, request in refund_requests.items():
        if stripe_refund_id not in recorded:
            got = stripe_refund_id or "no Stripe refund id"
            found.append(
                Violation("I7", str(request.token), "refund request without its refund", "a recorded refund", got)
            )
    return found


def _admin_log(order_ids: list) -> set[tuple]:
    """(order pk, "support:<username>", action label) for every admin LogEntry on these orders;
    the label is the change message up to its colon ("Refund: Refunded $10.00 on PU-…")."""
    content_type = ContentType.objects.get_for_model(Order)
    entries = LogEntry.objects.filter(content_type=content_type, object_id__in=[str(i) for i in order_ids])
    pk_type = type(order_ids[0]) if order_ids else str
    return {
        (pk_type(e.object_id), f"support:{e.user.get_username()}", e.change_message.split(":", 1)[0])
        for e in entries.select_related("user")
    }


def check_outbox(window: Window) -> list[Violation]:
    """Every queued email is sent, or failed after its attempts: one still waiting with its
    attempts spent, or whose next attempt was due before `window.settled_before` (for one being
    sent: claimed longer than the outbox's STALE_SENDING before it), is stuck."""
    waiting = OutboundEmail.objects.filter(created_at__gte=window.since).exclude(
        status__in=(OutboundEmail.Status.SENT, OutboundEmail.Status.FAILED)
    )
    # "sending" left by a dead worker is the sweep's only after STALE_SENDING (the outbox's rule).
    due = Q(next_attempt_at__lt=window.settled_before) & ~Q(status=OutboundEmail.Status.SENDING)
    stale = Q(status=OutboundEmail.Status.SENDING, next_attempt_at__lt=window.settled_before - STALE_SENDING)
    stuck = waiting.filter(Q(attempts__gte=settings.EMAIL_MAX_ATTEMPTS) | due | stale)
    return [
        Violation(
            "outbox",
            f"email {email.pk}",
            f"{email.kind} email to {email.to} stuck",
            f"sent, or failed after {settings.EMAIL_MAX_ATTEMPTS} attempts",
            f"{email.status} after {email.attempts} attempts, next due {email.next_attempt_at:%Y-%m-%d %H:%M:%S}",
        )
        for email in stuck.order_by("created_at")
    ]


def default_grace_seconds() -> int:
    """How long after a payment or an email the system may still be working on it: the
    reconciliation grace plus two runs (180 s with the defaults)."""
    return settings.RECONCILE_GRACE_SECONDS + 2 * 60 * settings.RECONCILE_INTERVAL_MINUTES


def window_for(since: datetime | None = None, grace_seconds: int | None = None) -> Window:
    """The window from `since` (None: everything) with `grace_seconds` (None: the default)."""
    grace = default_grace_seconds() if grace_seconds is None else grace_seconds
    start = since or datetime(2000, 1, 1, tzinfo=timezone.get_current_timezone())
    return Window(since=start, settled_before=timezone.now() - timedelta(seconds=grace))


def check_all(stripe: StripeView, window: Window | None = None, *, acknowledged: Iterable[str] = ()) -> Report:
    """Run every check over `window` (default: everything, default grace) against `stripe` (a
    StripeView read over the same window: read_stripe) and the database; `acknowledged` event
    ids go to I6. With an incomplete view, only the checks that need no Stripe run. Returns the
    Report. Reads only."""
    window = window or window_for()
    orders = orders_in(window)
    # A view cut short by the budget would make I1, I2 and I4 see payments and refunds as missing:
    # those are left out, and the report says INCOMPLETE rather than name what it could not read.
    with_stripe = [*check_i1(orders, stripe), *check_i2(stripe, window), *check_i4(orders, stripe)]
    violations = [
        *(with_stripe if stripe.complete else []),
        *check_i3(orders),
        *check_i5(orders),
        *check_i6(window, acknowledged),
        *check_i7(orders),
        *check_outbox(window),
    ]
    return Report(violations, complete=stripe.complete, orders=len(orders), stripe_requests=stripe.requests)


def payment_ids_since(since: datetime) -> list[str]:
    """The PaymentIntent ids of orders created since `since`: read_stripe's `also`, so that I1
    sees an order's payment even when Stripe lists it before the window."""
    return list(
        Order.objects.filter(created_at__gte=since, stripe_payment_intent_id__isnull=False).values_list(
            "stripe_payment_intent_id", flat=True
        )
    )


def read_and_check(
    since: datetime | None = None,
    grace_seconds: int | None = None,
    *,
    budget: int = 500,
    acknowledged: Iterable[str] = (),
) -> Report:
    """What the chaos run and `manage.py check_invariants` call: read Stripe over the window
    from `since` (None: everything; at most `budget` requests) and run every check with
    `grace_seconds` (None: the default) and the `acknowledged` event ids. Returns the Report.
    Raises `stripe.StripeError` when Stripe cannot be read."""
    window = window_for(since, grace_seconds)
    view = read_stripe(int(window.since.timestamp()), budget=budget, also=payment_ids_since(window.since))
    return check_all(view, window, acknowledged=acknowledged)
