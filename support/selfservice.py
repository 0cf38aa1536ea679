"""The customer's "charged but no access?" page, as a service: find the payment, fix what a
machine can fix, hand the rest to a person, and tell whoever typed the email nothing about
anyone's orders.

The page (support/views.py) validates, rate-limits and calls `submit()`, which only queues
`check()` as a django-q2 task: the page never reads an order or calls Stripe, so it answers
with the same words, status and timing whatever exists. The task, for that email:

1. fixes local orders: paid → fulfil; pending with a PaymentIntent that Stripe says succeeded
   (webhook and return page both missed) → fulfil;
2. searches Stripe for the email's succeeded payments (its customers' PaymentIntents; on
   localstripe, which cannot list PaymentIntents by customer, recent succeeded-payment events
   by metadata email) and settles them as reconciliation does: known order → fulfil, unknown
   payment → adopt (order created, fulfilled, support alerted);
3. answers by email, where only the owner of the address reads it: access active → a fresh
   sign-in link (unless step 1 or 2 just sent an access email, which carries one);
   otherwise a SupportCase with the diagnosis, an alert to support, and the "case opened"
   email promising a person's reply within SUPPORT_REPLY_HOURS. When the email matches no
   order and the customer gave the card's last four digits and the payment date, the case's
   diagnosis names the orders paid around that day with such a card (support/candidates.py),
   for a person to confirm: nothing is given on four digits.
"""

import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import stripe
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_q.tasks import async_task

from accounts.addresses import normalize_email
from accounts.models import User
from accounts.signin import send_signin_link
from billing import client as billing_client
from billing import gateway, ratelimit, reconciliation
from billing.alerts import raise_alert
from billing.fulfilment import NotFulfillable, PaymentMismatch, fulfil
from billing.models import Alert, Order, OutboundEmail
from outbox import emails

from . import candidates
from .diagnosis import diagnose
from .models import ASKED_AGAIN, SelfServiceRequest, SupportCase

logger = logging.getLogger(__name__)

TASK = "support.selfservice.check"  # the check itself (tasks queued before 0016 call it directly)
REQUEST_TASK = "support.selfservice_retry.check_request"  # a kept request's check
ACTOR = "customer:self-service"
# Per hour: enough for a person who mistyped twice, too few to probe a list of addresses.
LIMITS = {"ip": 5, "email": 3}
WINDOW_SECONDS = 3600
# Stripe requests one check may make; the events fallback stops there.
STRIPE_BUDGET = 40
# Stripe keeps events for 30 days.
EVENT_LOOKBACK = timedelta(days=30)
ORDERS_LOOKED_AT = 20
CASE_ALERTS_PER_HOUR = 10


# --- rate limits ----------------------------------------------------------------------
# The limiter is the house's one (billing/ratelimit.py); this page's limits are its own.


def allow(scope: str, value: str, *, limit: int, window: int = WINDOW_SECONDS) -> bool:
    """billing.ratelimit.allow with this page's window (an hour); True while under `limit`."""
    return ratelimit.allow(scope, value, limit=limit, window=window)


def limit_reached(client_address: str, email: str) -> str:
    """Count one request; return which limit stops it: "address" (too many requests from this
    client, whatever the emails), "email" (this email was asked about enough this hour), or ""
    when it may go ahead. The address first: a client over its limit does not use up the
    email's hits, and its answer must say nothing about the email (issue 10, item 7)."""
    if not allow("ip", client_address, limit=LIMITS["ip"]):
        return "address"
    if not allow("email", normalize_email(email), limit=LIMITS["email"]):
        return "email"
    return ""


# The rule moved to the core (billing/client.py), where the checkout records it too.
client_address = billing_client.client_address


# --- the page's half ------------------------------------------------------------------


def submit(email: str, card_last4: str = "", paid_on: date | None = None, typed: str = "") -> None:
    """Keep the request (one insert, whatever the email), then queue its check: the row is the
    promise of an answer, the task may be lost (see SelfServiceRequest; `sweep` queues it again).

    `typed` is the address as the customer typed it, kept only for Stripe's case-sensitive
    customer search; everything else uses the normal form (accounts.addresses).

    If the queue is down, the customer still gets a person: a case is opened without looking
    at any order (so the page's timing still says nothing). Raises the database's error when
    the request cannot be kept (the page then fails honestly instead of promising an email).
    """
    row = SelfServiceRequest.objects.create(
        email=email, card_last4=card_last4, paid_on=paid_on, typed=typed if typed and typed != email else ""
    )
    try:
        async_task(REQUEST_TASK, row.pk, task_name="selfservice-check")
    except Exception as error:
        logger.exception("could not queue the self-service check")
        open_case(
            Request(normalize_email(email), card_last4, paid_on, typed),
            None,
            f"The automatic check could not be queued ({type(error).__name__}: {error}); nothing was checked.",
        )
        SelfServiceRequest.objects.filter(pk=row.pk).delete()


# --- the task -------------------------------------------------------------------------


@dataclass
class Request:
    """What the customer typed. `email` is in the normal form; `typed` as typed (for Stripe)."""

    email: str
    card_last4: str = ""
    paid_on: date | None = None
    typed: str = ""


@dataclass
class Finding:
    """What the check did and saw, for the answer and for the case's diagnosis."""

    orders: list = field(default_factory=list)
    stripe_status: dict = field(default_factory=dict)  # order pk → live PaymentIntent status
    notes: list[str] = field(default_factory=list)
    access_emailed: bool = False  # an access email (confirmation or recovery, each with a sign-in link) went out
    # Orders whose card and day match what the customer gave, when their email matches nothing.
    card_matches: candidates.Candidates = field(default_factory=candidates.Candidates)


def check(email: str, card_last4: str = "", paid_on: str = "", typed: str = "") -> str:
    """The q task. Returns what it did (shown in the q admin): access_emailed, signin_sent or
    case_opened. Whatever breaks, the customer ends with an email and, failing all else, a case."""
    paid = date.fromisoformat(paid_on) if paid_on else None
    request = Request(normalize_email(email), card_last4, paid, typed.strip())
    ratelimit.sweep()
    finding = Finding()
    try:
        fix_local_orders(request, finding)
        settle_stripe_payments(request, finding)
        if not finding.orders and request.card_last4 and request.paid_on:
            finding.card_matches = candidates.find(request.card_last4, request.paid_on)
    except Exception as error:  # a person picks up whatever the machine could not finish
        logger.exception("self-service check for a customer failed")
        finding.notes.append(f"The automatic check stopped: {type(error).__name__}: {error}")
    return answer(request, finding)


def fix_local_orders(request: Request, finding: Finding) -> None:
    """Step 1 of the module docstring, for `request.email`'s newest ORDERS_LOOKED_AT orders: log
    the request on each order's timeline; fulfil (via SELF_SERVICE) a paid one, and a pending one
    whose PaymentIntent Stripe says succeeded (one request each). An order waiting for a person
    (needs_attention) is left alone. Writes what it saw into `finding` (orders, stripe_status,
    notes, access_emailed). Stripe errors and refused fulfilments become notes, not exceptions;
    `BudgetExhausted` or a database error propagates (check() turns it into a note)."""
    orders = Order.objects.filter(email=request.email).select_related("plan").order_by("-created_at")
    finding.orders = list(orders[:ORDERS_LOOKED_AT])
    for order in finding.orders:
        order.log(
            "support:selfservice", "The customer asked for help on the 'charged but no access?' page.", actor=ACTOR
        )
        if order.state not in (Order.State.PAID, Order.State.PENDING):
            continue
        if order.needs_attention:
            finding.notes.append(f"{order.reference} is waiting for a person: {order.attention_reason}")
            continue
        if order.state == Order.State.PAID:
            _fulfil(order, finding)
        elif order.stripe_payment_intent_id:
            try:
                payment_intent = gateway.retrieve_payment_intent(order.stripe_payment_intent_id)
            except stripe.StripeError as error:
                finding.notes.append(f"Could not ask Stripe about {order.stripe_payment_intent_id}: {error}")
                continue
            finding.stripe_status[order.pk] = payment_intent["status"]
            if payment_intent["status"] == "succeeded":
                _fulfil(order, finding, payment_intent)


def _fulfil(order: Order, finding: Finding, payment_intent=None) -> None:
    try:
        result = fulfil(order, via=Order.Via.SELF_SERVICE, payment_intent=payment_intent, actor=ACTOR)
    except (NotFulfillable, PaymentMismatch) as problem:
        finding.notes.append(f"Could not fulfil {order.reference}: {problem}")
        return
    if result.fulfilled_now:
        finding.access_emailed = True
        finding.notes.append(f"{order.reference} was {order.state}; fulfilled now, {result.email_kind} email sent.")


def settle_stripe_payments(request: Request, finding: Finding) -> None:
    """Succeeded payments for the email that have no fulfilled order here: settle them as the
    reconciliation's Stripe scan does (reconciliation.settle_page, so one rule decides what a
    bare payment buys: billing/adoption.py), inside a small request budget."""
    ctx = reconciliation.Context(now=timezone.now(), dry_run=False, found_by="the customer's self-service check")
    try:
        with gateway.budget(STRIPE_BUDGET, per_second=10):
            payments, summary = find_payments(request)
            reconciliation.settle_page(ctx, payments)
    except gateway.BudgetExhausted:
        finding.notes.append(f"Stripe search stopped after {STRIPE_BUDGET} requests; it may be incomplete.")
        return
    except stripe.StripeError as error:
        finding.notes.append(f"Could not search Stripe: {type(error).__name__}: {error}")
        return
    finding.notes.append(summary)
    finding.notes.extend(ctx.notes)
    finding.notes.extend(ctx.errors)
    if ctx.counts["recovered"]:
        finding.access_emailed = True
    if ctx.counts["retroactive"]:
        finding.notes.append(f"Adopted {ctx.counts['retroactive']} Stripe payment(s) that had no order here.")


def find_payments(request: Request) -> tuple[list, str]:
    """The email's succeeded PaymentIntents in Stripe, and a sentence on what was searched.

    Stripe's customer email filter is case-sensitive: both the address as typed and in its
    normal form are tried. Where PaymentIntents cannot be listed by customer (localstripe), or when
    nothing was found and the customer gave a date, recent succeeded-payment events are read
    and matched by metadata email (any case) or customer.
    """
    address = request.email
    spellings = dict.fromkeys([request.typed or address, address])
    customers = {c.id for a in spellings for c in gateway.customers_with_email(a)}
    found, statuses, by_customer = {}, [], True
    try:
        for customer_id in sorted(customers):
            for pi in gateway.customer_payment_intents(customer_id):
                statuses.append(pi.status)
                if pi.status == "succeeded":
                    found[pi.id] = pi
    except stripe.InvalidRequestError:
        by_customer = False
    scanned = False
    if not by_customer or (not found and request.paid_on):
        scanned = True
        since = timezone.now() - EVENT_LOOKBACK
        if request.paid_on:
            since = max(since, datetime.combine(request.paid_on - timedelta(days=1), datetime.min.time(), tzinfo=UTC))
        for page in gateway.succeeded_payment_pages(int(since.timestamp())):
            for event in page:
                pi = event.data.object
                customer = pi.customer if isinstance(pi.customer, str) else getattr(pi.customer, "id", None)
                metadata_email = normalize_email((pi.metadata or {}).get("email"))
                if metadata_email == address or customer in customers:
                    found[pi.id] = pi
    others = ", ".join(f"{statuses.count(s)} {s}" for s in sorted(set(statuses)) if s != "succeeded")
    summary = (
        f"Stripe: {len(customers)} customer(s) with this email, {len(found)} succeeded payment(s)"
        + (f"; other attempts: {others}" if others else "")
        + ("; recent succeeded-payment events searched too" if scanned else "")
        + "."
    )
    return list(found.values()), summary


def answer(request: Request, finding: Finding) -> str:
    """Step 3 of the module docstring: tell the email's owner, by email only. Returns
    "access_emailed" when the account is active and steps 1-2 already sent an access email;
    "signin_sent" when it is active otherwise (a fresh sign-in link, logged on the order in the
    same transaction); "case_opened" when no active access (a SupportCase with `describe()`'s
    diagnosis, its alert and the "case opened" email). Raises what the database raises."""
    user = User.objects.filter(email=request.email, is_active=True).first()
    active = user.active_subscription if user is not None else None
    if active is not None:
        if finding.access_emailed:
            return "access_emailed"
        with transaction.atomic():
            send_signin_link(user)
            active.order.log("support:resend", f"Self-service sent a fresh sign-in link to {user.email}.", actor=ACTOR)
        return "signin_sent"
    orders = list(Order.objects.filter(email=request.email).select_related("plan")[:ORDERS_LOOKED_AT])
    open_case(request, orders, describe(request, orders, finding))
    return "case_opened"


def describe(request: Request, orders: list, finding: Finding) -> str:
    """The diagnosis a person reads first: each order's sentence and action, then what the
    automatic check did and saw, then where to look next."""
    lines = []
    for order in orders[:5]:
        found = diagnose(order, finding.stripe_status.get(order.pk))
        lines.append(f"{order.reference} ({order.get_state_display().lower()}, {order.price}): {found.sentence}")
        lines.append(f"    Suggested: {found.action}")
    if not orders:
        lines.append("No order here for this email.")
    lines.extend(finding.notes)
    if not orders and request.card_last4 and request.paid_on:
        lines.extend(candidates.describe(request.card_last4, request.paid_on, finding.card_matches))
    if not orders or all(not o.was_charged for o in orders):
        hint = "Search the Stripe dashboard for the payment"
        if request.card_last4:
            hint += f" by a card ending {request.card_last4}"
        if request.paid_on:
            hint += f" around {request.paid_on:%d %b %Y}"
        lines.append(
            hint + ": the customer may have paid with another email. When found, attach it (pi_… or ch_…) "
            "from the order admin; if there is no payment, reply and ask for the bank-statement line."
        )
    return "\n".join(lines)


def open_case(request: Request, orders: list | None, diagnosis: str) -> SupportCase:
    """A case for a person, the alert that tells support, and the email that tells the
    customer. A customer who asks again while their case is open gets the same case."""
    orders = orders or []
    charged = [o for o in orders if o.was_charged]
    order = (charged or orders or [None])[0]
    now = timezone.now()
    with transaction.atomic():
        case = (
            SupportCase.objects.select_for_update()
            .filter(email=request.email, status=SupportCase.Status.OPEN)
            .order_by("-created_at")
            .first()
        )
        if case is None:
            case = SupportCase.objects.create(
                email=request.email,
                order=order,
                card_last4=request.card_last4,
                paid_on=request.paid_on,
                diagnosis=diagnosis,
            )
            if order is not None:
                order.log("support:case", f"Support case {case.pk} opened from the self-service page.", actor=ACTOR)
            alert_support(case, order, diagnosis)
        else:
            case.card_last4 = request.card_last4 or case.card_last4
            case.paid_on = request.paid_on or case.paid_on
            case.order = case.order or order
            # A worried customer asks twice: the same finding again is one line, not a second copy.
            again = " the same finding." if diagnosis.strip() == case.latest_diagnosis else f"\n{diagnosis}"
            case.diagnosis = f"{case.diagnosis}\n\n{ASKED_AGAIN} {now:%Y-%m-%d %H:%M} UTC:{again}".strip()
            case.save(update_fields=["card_last4", "paid_on", "order", "diagnosis"])
        send_case_opened(case)
    return case


def alert_support(case: SupportCase, order: Order | None, diagnosis: str) -> None:
    """One alert per case; past CASE_ALERTS_PER_HOUR, one alert for the hour instead, so that
    a flood of requests (anyone can type any email) cannot bury two people in email."""
    now = timezone.now()
    recent = Alert.objects.filter(reason=Alert.Reason.CUSTOMER_CASE, created_at__gte=now - timedelta(hours=1))
    if recent.count() >= CASE_ALERTS_PER_HOUR:
        raise_alert(
            Alert.Reason.CUSTOMER_CASE,
            f"More than {CASE_ALERTS_PER_HOUR} customers opened a case in the last hour; no more alerts this "
            "hour. Read the open cases in the admin, oldest first.",
            key=f"customer_case:many:{now:%Y-%m-%d-%H}",
        )
        return
    raise_alert(
        Alert.Reason.CUSTOMER_CASE,
        f"{case.email} says they were charged but have no access, and the automatic check could not settle it. "
        f"Case {case.pk}; reply within {settings.SUPPORT_REPLY_HOURS} hours (we promised).\n\n{diagnosis}",
        order=order,
        key=case_alert_key(case),
    )


def case_alert_key(case: SupportCase) -> str:
    """The alert's key: resolving the case should resolve this alert (billing.alerts.resolve)."""
    return f"customer_case:{case.pk}"


def send_case_opened(case: SupportCase) -> OutboundEmail:
    """The email that says a person is on it. Not tied to the order: the customer may ask more
    than once, and an order has one email of each kind."""
    return emails.send_case_opened(case, reply_hours=settings.SUPPORT_REPLY_HOURS)
