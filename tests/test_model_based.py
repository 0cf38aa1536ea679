"""Model-based test: Hypothesis plays customers, banks, Stripe, crashes and support against
PaidUp's real entry points, and checks the invariants of the design card after every step.

The world: customers open checkouts and pay (card succeeds, is declined, is refused, or needs
3-D Secure, which the customer later passes or fails; Stripe may answer any call of the
checkout with a card error, 429, 500, a connection error or a lost answer), correct their email, come back to the
checkout and visit their order page; someone pays outside any checkout; Stripe cancels
payments, is refunded from its dashboard, and delivers webhooks late, twice, out of order or
never. The server crashes at any failpoint during a request, a webhook, a reconciliation run
or a support action, and Stripe's API is sometimes unreachable. Reconciliation runs; support
fulfils, refunds and attaches payments from the console; time passes. Banks dispute payments
and decide the disputes; card issuers send early fraud warnings (issue 11; DISPUTE_ACCESS=suspend).

After every step: I1, I3, I4 (so far), I5, and no order moves backwards. At the end of every
example (`state.teardown()` in a failing sequence) the world heals: Stripe delivers
everything it still owes, and the jobs (reconciliation, the email sweep) run until a run
changes nothing. Then I2: every succeeded payment is fulfilled or refunded; refunds here
equal Stripe's; every email went out; every dispute and warning Stripe has is recorded and
linked to its order; no access after a lost dispute.

After every step also: every dispute recorded here is alerted exactly once (one "dispute opened"
alert, keyed by its id), every warning once.

PAIDUP_MODEL_EXAMPLES sets the number of examples (default 200), PAIDUP_MODEL_STEPS the
steps per example (default 25).
"""

import functools
import os
import sys
import time
import uuid
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from django.test import Client, TestCase, override_settings
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from accounts.models import User
from billing import access, reconciliation
from billing.models import Alert, Dispute, EarlyFraudWarning, Order, OrderEvent, OutboundEmail, Refund, Subscription
from billing.refunds import RANK
from config.failpoints import NAMES, FailpointError
from outbox import sending
from support import actions
from tests.factories import PlanFactory
from tests.fixtures import stripe_disputes
from tests.fixtures.model import Example, StripeWorld
from tests.fixtures.services import cookie_reference, make_event

EXAMPLES = int(os.environ.get("PAIDUP_MODEL_EXAMPLES", 200))
STEPS = int(os.environ.get("PAIDUP_MODEL_STEPS", 25))

State = Order.State
EMAILS = ["ada@example.com", "Ada@Example.com", "grace@example.com"]
PLANS = {"pro-year": 24900, "pro-month": 2900}
# What the customer's card does at the next charge (FakeStripe.next_status).
CARDS = ["succeeded", "declined", "requires_action", "refused"]
PAYMENT_METHOD = "pm_1Card4242visa"
# The failpoint a step crashes at, if any (half the time: none), among those it passes.
# (Every failpoint lies on the checkout's path.)
CHECKOUT_CRASH = st.none() | st.sampled_from(sorted(NAMES))
# What Stripe may answer one call of a checkout instead of the work (FakeStripe.fail).
STRIPE_ANSWER = st.none() | st.tuples(
    st.sampled_from(["customer", "create", "confirm", "retrieve", "cancel"]),
    st.sampled_from(["card", "429", "500", "conn", "lost"]),
)
FULFIL_CRASH = st.none() | st.sampled_from(["fulfil_before_commit", "email_send"])
MAX_CHECKOUTS = 3


@functools.cache
def _forward(state: str) -> set[str]:
    """Every state reachable from `state`, itself included."""
    seen, todo = {state}, [state]
    while todo:
        for nxt in Order.TRANSITIONS[State(todo.pop())]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


@dataclass
class Checkout:
    """A customer's browser on the checkout page: its client holds the reference cookie."""

    client: Client
    reference: str
    email: str

    def order(self) -> Order | None:
        return Order.objects.filter(reference=self.reference).first()


class PaidUpWorld(RuleBasedStateMachine):
    checkouts = Bundle("checkouts")

    # Set by the test, outside the examples' savepoints.
    endpoint = None  # the dj-stripe WebhookEndpoint
    support_user = None  # may fulfil and refund

    def __init__(self) -> None:
        super().__init__()
        self.stripe = StripeWorld(self.endpoint)
        self.example = Example(self.stripe)
        self.checkout_count = 0
        self.paid_outside = False
        self.last_state: dict = {}
        # Per order, the refunds that were counted as money sent at some step: each must have
        # had its email by the end (one per refund id, even if it failed later).
        self.emailed_refunds: dict = {}

    def teardown(self) -> None:
        try:
            if sys.exc_info()[1] is None:  # a step failed: report that, not the healing
                self.heal()
                self.check_liveness()
        finally:
            self.example.close()

    @contextmanager
    def step(self, crash: str | None = None, *, stripe_down: bool = False, answer: tuple | None = None):
        """One thing happening in the world: a second passes, the server may crash at `crash`,
        Stripe's API may be unreachable or give one call a bad `answer` ((call, answer) as
        FakeStripe.fail takes them), work handed to after-commit (emails) runs, and Stripe
        queues the events it owes."""
        self.example.shift(1)
        self.stripe.fake.down = stripe_down
        if answer is not None:
            call, kind = answer
            self.stripe.fake.fail(call, kind, times=None if kind in ("429", "conn") else 1)
        try:
            with (
                override_settings(FAILPOINTS=f"{crash}=raise" if crash else ""),
                TestCase.captureOnCommitCallbacks(execute=True),
            ):
                yield
        finally:
            self.stripe.fake.down = False
            self.stripe.fake.heal()
        self.stripe.emit_events()

    # --- customers ---------------------------------------------------------------------

    @initialize(target=checkouts, email=st.sampled_from(EMAILS))
    def first_customer_opens_checkout(self, email):
        return self.customer_opens_checkout(email)

    @precondition(lambda self: self.checkout_count < MAX_CHECKOUTS)
    @rule(target=checkouts, email=st.sampled_from(EMAILS))
    def customer_opens_checkout(self, email):
        self.checkout_count += 1
        client = Client(raise_request_exception=False)
        with self.step():
            assert client.get("/checkout/").status_code == 200
        return Checkout(client, cookie_reference(client), email)

    @rule(
        checkout=checkouts,
        card=st.sampled_from(CARDS),
        plan=st.sampled_from(sorted(PLANS)),
        crash=CHECKOUT_CRASH,
        new_email=st.none() | st.sampled_from(EMAILS),
        answer=STRIPE_ANSWER,
        another_year=st.booleans(),
    )
    def customer_pays(self, checkout, card, plan, crash, new_email=None, answer=None, another_year=False):
        """Submits the form (again, if they did before, perhaps correcting their email), while
        Stripe may answer one call badly: a resubmit must never charge twice, and no key may be
        replayed with other parameters. An email that already has access must tick "another
        year" (`another_year`), or nothing is sent to Stripe (issue 10)."""
        checkout.email = new_email or checkout.email
        before = set(self.stripe.fake.intents)
        self.stripe.fake.next_status = card
        form = {"email": checkout.email, "payment_method": PAYMENT_METHOD, "plan": plan}
        if another_year:
            form["extend_access"] = checkout.email
        had_access = access.access_until(checkout.email) is not None
        with self.step(crash, answer=answer):
            status = checkout.client.post("/checkout/", form).status_code
        assert self.stripe.fake.refusals == 0, "an idempotency key was replayed with other parameters"
        assert status in (302, 402, 503, 409) or (crash and status == 500), f"checkout answered {status}"
        if status == 409:  # "You already have access until …": asked first, nothing sent to Stripe
            assert had_access and not another_year, "asked about access that the email does not have"
            assert set(self.stripe.fake.intents) == before, "charged before the customer confirmed another year"
        if status in (402, 503):  # the page says "You have not been charged"
            order = checkout.order()
            charged = [pi for pi in self.stripe.of_order(order) if pi["status"] == "succeeded"]
            assert not charged, f"the customer was told they were not charged, but {charged[0]['id']} succeeded"
        for pi in set(self.stripe.fake.intents) - before:
            assert self.stripe.fake.intents[pi]["amount"] == PLANS[plan], (
                "charged for a plan the customer did not choose"
            )

    @rule(checkout=checkouts)
    def customer_comes_back_to_checkout(self, checkout):
        """Back button or a new tab: whoever was charged, or may be, sees their order first."""
        with self.step():
            response = checkout.client.get("/checkout/")
        order = checkout.order()
        charged = order is not None and any(pi["status"] == "succeeded" for pi in self.stripe.of_order(order))
        assert response.status_code in (200, 302)
        if charged and order.state in (State.PENDING, State.PAID):
            assert response.status_code == 302, f"{order} was charged, but the customer is invited to pay again"
        if charged:
            assert "not been charged" not in response.content.decode(), f"{order} was charged; the page says not"
        # A finished order's checkout is over: the page starts a new one (a new reference).
        checkout.reference = cookie_reference(checkout.client)

    @precondition(lambda self: self.stripe.with_status("requires_action"))
    @rule(which=st.integers(0, 3), passes=st.booleans())
    def customer_answers_3d_secure(self, which, passes):
        """In the page's Stripe.js dialog; the page then goes to the order page (a visit)."""
        pi = self.stripe.pick(which, "requires_action")
        with self.step():
            self.stripe.fake.settle(pi, "succeeded" if passes else "requires_payment_method")

    @rule(
        checkout=checkouts,
        wait=st.sampled_from([0, 4]),
        crash=st.none() | st.just("fulfil_before_commit"),
        stripe_down=st.booleans(),
    )
    def customer_visits_order_page(self, checkout, wait, crash, stripe_down=False):
        """The page never fails, whatever crashes and even when Stripe cannot be reached."""
        self.example.shift(wait)  # the page asks Stripe at most every 3 s
        with self.step(crash, stripe_down=stripe_down):
            status = checkout.client.get(f"/orders/{checkout.reference}/").status_code
            assert status == (200 if checkout.order() else 404), f"order page answered {status}"

    @precondition(lambda self: not self.paid_outside)
    @rule(email=st.sampled_from(EMAILS))
    def someone_pays_outside_checkout(self, email):
        """A succeeded payment PaidUp has no order for (a payment link, an old client...)."""
        self.paid_outside = True
        with self.step():
            self.stripe.fake.pay_elsewhere(metadata={"email": email})

    # --- Stripe --------------------------------------------------------------------------

    @precondition(lambda self: self.stripe.with_status("requires_action", "requires_payment_method"))
    @rule(which=st.integers(0, 3))
    def stripe_cancels_unfinished_payment(self, which):
        """Cancelled in the dashboard, or expired."""
        pi = self.stripe.pick(which, "requires_action", "requires_payment_method")
        with self.step():
            self.stripe.fake.settle(pi, "canceled")

    @precondition(lambda self: self.stripe.refundable())
    @rule(which=st.integers(0, 3), full=st.booleans())
    def support_refunds_in_stripe_dashboard(self, which, full):
        """Refunded at Stripe, not through PaidUp: reconciliation must find and record it."""
        refundable = self.stripe.refundable()
        pi = refundable[which % len(refundable)]
        left = self.stripe.fake.intents[pi]["amount"] - self.stripe.refunded(pi)
        with self.step():
            self.stripe.fake.refund(pi, left if full else min(left, 1000))

    @precondition(lambda self: self.stripe.failable_refunds())
    @rule(which=st.integers(0, 3), cancelled=st.booleans())
    def stripe_refund_fails(self, which, cancelled):
        """Days later the bank sends a refund back (a closed card), or it is cancelled: the money
        is in our balance again and the customer, who was told it was coming, got nothing."""
        failable = self.stripe.failable_refunds()
        refund = failable[which % len(failable)]
        with self.step():
            refund["status"] = "canceled" if cancelled else "failed"
            refund["failure_reason"] = "" if cancelled else "expired_or_canceled_card"
            refund["updated"] = int(time.time())  # when Stripe's refund.failed / .updated event is created

    # --- banks and card issuers (issue 11) ---------------------------------------------------

    def undisputed(self) -> list[dict]:
        disputed = {d["payment_intent"] for d in self.stripe.fake.disputes}
        return [pi for pi in self.stripe.with_status("succeeded") if pi["id"] not in disputed]

    @precondition(lambda self: self.undisputed())
    @rule(which=st.integers(0, 3))
    def bank_opens_dispute(self, which):
        """The cardholder's bank disputes a payment; Stripe sends `charge.dispute.created`."""
        candidates = self.undisputed()
        pi = candidates[which % len(candidates)]
        with self.step():
            du = stripe_disputes.dispute(payment_intent=pi["id"], amount=pi["amount"], currency=pi["currency"])
            self.stripe.fake.disputes.append(du)
            self.stripe.pending.append(make_event("charge.dispute.created", dict(du)))

    @precondition(lambda self: any(d["status"] == "needs_response" for d in self.stripe.fake.disputes))
    @rule(which=st.integers(0, 3), won=st.booleans())
    def bank_decides_dispute(self, which, won):
        """The bank decides; Stripe sends `charge.dispute.closed` (maybe before `.created`)."""
        open_disputes = [d for d in self.stripe.fake.disputes if d["status"] == "needs_response"]
        du = open_disputes[which % len(open_disputes)]
        with self.step():
            du["status"] = "won" if won else "lost"
            self.stripe.pending.append(make_event("charge.dispute.closed", dict(du)))

    @precondition(lambda self: self.stripe.with_status("succeeded"))
    @rule(which=st.integers(0, 3))
    def issuer_sends_early_fraud_warning(self, which):
        pi = self.stripe.pick(which, "succeeded")
        with self.step():
            warning = stripe_disputes.early_fraud_warning(payment_intent=pi)
            self.stripe.fake.fraud_warnings.append(warning)
            self.stripe.pending.append(make_event("radar.early_fraud_warning.created", dict(warning)))

    @invariant()
    def disputes_are_alerted_once(self):
        disputes = set(Dispute.objects.values_list("stripe_dispute_id", flat=True))
        alerted = Counter(Alert.objects.filter(reason=Alert.Reason.DISPUTE).values_list("key", flat=True))
        assert alerted == Counter(f"dispute:{d}" for d in disputes), f"dispute alerts {alerted} for {disputes}"
        warnings = set(EarlyFraudWarning.objects.values_list("stripe_warning_id", flat=True))
        alerted = Counter(Alert.objects.filter(key__startswith="fraud_warning:").values_list("key", flat=True))
        assert alerted == Counter(f"fraud_warning:{w}" for w in warnings), f"warning alerts {alerted}"

    @precondition(lambda self: self.stripe.pending)
    @rule(which=st.integers(0, 8), crash=FULFIL_CRASH)
    def stripe_delivers_webhook(self, which, crash):
        """The oldest event Stripe owes (which=0), or a newer one first."""
        self._deliver(which % len(self.stripe.pending), crash)

    @precondition(lambda self: self.stripe.pending)
    @rule(which=st.integers(0, 8))
    def stripe_delivers_webhook_and_will_send_it_again(self, which):
        self._deliver(which % len(self.stripe.pending), None, again=True)

    @precondition(lambda self: self.stripe.pending)
    @rule(which=st.integers(0, 8))
    def stripe_gives_up_on_webhook(self, which):
        self.stripe.pending.pop(which % len(self.stripe.pending))

    def _deliver(self, index: int, crash: str | None, *, again: bool = False) -> None:
        event = self.stripe.pending[index]
        with self.step(crash):
            status = self.stripe.deliver(event)
        assert status == 200 or (crash and status == 500), f"webhook {event['type']} answered {status}"
        if status == 200 and not again:
            self.stripe.pending.remove(event)
        # On a 500 Stripe keeps the event and retries it later.

    # --- PaidUp's jobs and support -------------------------------------------------------

    @rule(crash=FULFIL_CRASH, stripe_down=st.booleans())
    def reconciliation_runs(self, crash, stripe_down=False):
        with self.step(crash, stripe_down=stripe_down):
            run = reconciliation.run()
        assert run is not None, "reconciliation found its lock held"
        assert run.ok or crash or stripe_down, run.errors

    def orders(self, *states: str) -> list[Order]:
        """Orders in these states with a payment, in a stable order (for `which`)."""
        found = Order.objects.filter(state__in=states, stripe_payment_intent_id__isnull=False)
        return list(found.order_by("created_at", "stripe_payment_intent_id"))

    @precondition(lambda self: self.orders(State.PENDING, State.PAID))
    @rule(which=st.integers(0, 3), crash=st.none() | st.just("fulfil_before_commit"), stripe_down=st.booleans())
    def support_fulfils_from_console(self, which, crash, stripe_down=False):
        """A customer writes in ("charged, no access"); support presses "fulfil", which asks
        Stripe first and refuses unless the payment succeeded."""
        candidates = self.orders(State.PENDING, State.PAID)
        order = candidates[which % len(candidates)]
        with self.step(crash, stripe_down=stripe_down):
            try:
                actions.fulfil_verified(order, self.support_user)
            except actions.ActionRefused as refusal:
                order.refresh_from_db()
                paid = self.stripe.fake.intents[order.stripe_payment_intent_id]["status"] == "succeeded"
                refused_rightly = not paid or order.state == State.REFUNDED or stripe_down
                assert refused_rightly, f"support could not fulfil {order}: {refusal}"
            except FailpointError:
                assert crash

    def payments_without_order(self) -> list[dict]:
        known = set(
            Order.objects.exclude(stripe_payment_intent_id=None).values_list("stripe_payment_intent_id", flat=True)
        )
        return [pi for pi in self.stripe.with_status("succeeded") if pi["id"] not in known]

    @precondition(lambda self: self.payments_without_order())
    @rule(by_charge=st.booleans(), crash=st.none() | st.just("fulfil_before_commit"))
    def support_attaches_payment_from_console(self, by_charge, crash):
        """A customer writes in with a Stripe receipt for a payment we have no order for;
        support pastes its id (PaymentIntent or charge) into the console."""
        pi = self.payments_without_order()[0]
        with self.step(crash):
            try:
                done = actions.attach_payment(pi["latest_charge"] if by_charge else pi["id"], self.support_user)
            except FailpointError:
                assert crash
            else:
                assert done.order.state == State.FULFILLED, done.message

    @precondition(lambda self: self.orders(State.PAID, State.FULFILLED))
    @rule(which=st.integers(0, 3), full=st.booleans(), double_submit=st.booleans())
    def support_refunds_from_console(self, which, full, double_submit):
        """The console's "refund" form: refunds in Stripe and records it here at once."""
        candidates = self.orders(State.PAID, State.FULFILLED)
        order = candidates[which % len(candidates)]
        amount = order.amount_cents - order.refunded_cents if full else 1000
        token = uuid.uuid4()  # one form; a double submit sends it twice
        with self.step():
            for _ in range(2 if double_submit else 1):
                order.refresh_from_db()
                refundable = order.amount_cents - max(
                    order.refunded_cents, self.stripe.refunded(order.stripe_payment_intent_id)
                )
                try:
                    actions.refund(order, self.support_user, amount_cents=amount, reason="asked", token=token)
                except actions.ActionRefused as refusal:
                    allowed = order.state in (State.PAID, State.FULFILLED) and 0 < amount <= refundable
                    assert not allowed, f"support could not refund {amount} on {order}: {refusal}"

    @precondition(lambda self: self.example.elapsed < 30 * 3600)
    @rule(seconds=st.sampled_from([10 * 60, 25 * 3600]))
    def time_passes(self, seconds):
        """Late enough for the recovery email; or past the deadline for abandoned checkouts."""
        self.example.shift(seconds)

    # --- safety, after every step ----------------------------------------------------------

    @invariant()
    def orders_are_safe(self):
        orders = Order.objects.values_list(
            "pk", "reference", "state", "stripe_payment_intent_id", "amount_cents", "currency", "refunded_cents"
        )
        timelines = defaultdict(list)
        for order_id, kind, actor, data in OrderEvent.objects.filter(kind__startswith="state:").values_list(
            "order_id", "kind", "actor", "data"
        ):
            timelines[order_id].append((kind, actor, data))
        access_emails = defaultdict(list)
        for order_id, to in OutboundEmail.objects.filter(kind__in=OutboundEmail.ACCESS_KINDS).values_list(
            "order_id", "to"
        ):
            access_emails[order_id].append(to)
        subscriptions = Counter(Subscription.objects.values_list("order_id", flat=True))
        refunds = defaultdict(list)
        for order_id, refund_id, amount, status in Refund.objects.values_list(
            "order_id", "stripe_refund_id", "amount_cents", "status"
        ):
            refunds[order_id].append((refund_id, amount, status))
        stripe_refunds = {r.id: r for r in self.stripe.fake.refunds}
        refund_emails = defaultdict(list)
        for email in OutboundEmail.objects.filter(kind="refund").exclude(key=""):
            refund_emails[email.order_id].append(email)
        charges = Counter(pi["metadata"].get("order_id") for pi in self.stripe.with_status("succeeded"))

        for pk, reference, state, pi_id, amount, currency, refunded in orders:
            ref = f"{reference} ({state})"
            assert charges[str(pk)] <= 1, f"{ref}: the customer was charged {charges[str(pk)]} times"
            # I1: paid, fulfilled or refunded only with a succeeded PaymentIntent of its amount.
            if state in (State.PAID, State.FULFILLED, State.REFUNDED):
                pi = self.stripe.fake.intents.get(pi_id)
                assert pi is not None, f"I1: {ref} has no PaymentIntent in Stripe"
                assert pi["status"] == "succeeded", f"I1: {ref} but {pi_id} is {pi['status']}"
                assert (pi["amount"], pi["currency"]) == (amount, currency), f"I1: {ref} is not what {pi_id} paid"

            # I5: a legal path from pending to the current state, every move with its actor.
            path = State.PENDING
            for kind, actor, data in timelines[pk]:
                assert actor, f"I5: {ref}: {kind} has no actor"
                assert data.get("from") == path, f"I5: {ref}: {kind} from {data.get('from')}, not {path}"
                assert data["to"] in Order.TRANSITIONS[State(path)], f"I5: {ref}: illegal {path} → {data['to']}"
                path = data["to"]
            assert path == state, f"I5: {ref}: the timeline ends at {path}"
            before = self.last_state.get(pk, State.PENDING)
            assert state in _forward(before), f"{ref} moved backwards from {before}"
            self.last_state[pk] = state

            # I3: one subscription and one access email, and only for an order that was fulfilled;
            # the email goes where the customer said when they paid.
            was_fulfilled = any(data["to"] == State.FULFILLED for _, _, data in timelines[pk])
            assert subscriptions[pk] == was_fulfilled, f"I3: {ref}: {subscriptions[pk]} subscriptions"
            assert len(access_emails[pk]) == was_fulfilled, f"I3: {ref}: {len(access_emails[pk])} access emails"
            if access_emails[pk]:
                paid_with = self.stripe.fake.intents[pi_id]["metadata"]["email"]
                assert access_emails[pk][0].lower() == paid_with.lower(), f"{ref}: access sent to {access_emails[pk]}"

            # I4: the refunded total is the sum of the refunds sent or on their way, never more than
            # the charge; every refund here is one Stripe made on this payment, never further
            # along than Stripe says (a failed refund is never counted as money sent).
            counted = sum(a for _, a, status in refunds[pk] if status in Refund.COUNTED)
            assert counted == refunded <= amount, f"I4: {ref} refunded {refunded}, its refunds say {counted}"
            for refund_id, refund_amount, status in refunds[pk]:
                made = stripe_refunds.get(refund_id)
                assert made is not None and made.amount == refund_amount, f"I4: {refund_id} is not Stripe's"
                assert made.payment_intent == pi_id, f"I4: {ref}: {refund_id} refunds another payment"
                assert RANK[status] <= RANK[made.status], f"I4: {refund_id} is {status} here, {made.status} at Stripe"
            assert len({m.key for m in refund_emails[pk]}) == len(refund_emails[pk]), f"{ref}: a refund emailed twice"
            counted_ids = {f"refund:{i}" for i, _, status in refunds[pk] if status in Refund.COUNTED}
            assert {m.key for m in refund_emails[pk]} <= {f"refund:{i}" for i, _, _ in refunds[pk]}, (
                f"{ref}: an email for a refund not recorded"
            )
            self.emailed_refunds.setdefault(pk, set()).update(counted_ids)

    # --- healing, then liveness ------------------------------------------------------------

    def heal(self) -> None:
        """No more crashes. Stripe delivers all it owes; jobs run until a run changes nothing."""
        last = None
        for _ in range(8):
            self.example.shift(3600)  # past every rate limit, recheck interval and email backoff
            with self.step():
                while self.stripe.pending:
                    event = self.stripe.pending.pop(0)
                    assert self.stripe.deliver(event) == 200, f"healing: webhook {event['type']} refused"
            with self.step():
                run = reconciliation.run()
                sending.send_due_emails()
            assert run.ok, run.errors
            now = self.snapshot()
            if now == last and not self.stripe.pending:
                return
            last = now
        pytest.fail("the jobs kept changing things after 8 runs")

    def snapshot(self) -> tuple:
        return (
            sorted(Order.objects.values_list("reference", "state", "refunded_cents", "needs_attention")),
            sorted(Refund.objects.values_list("stripe_refund_id", "status")),
            Subscription.objects.count(),
            sorted(OutboundEmail.objects.values_list("kind", "to", "status")),
        )

    def check_liveness(self) -> None:
        orders = {o.stripe_payment_intent_id: o for o in Order.objects.exclude(stripe_payment_intent_id=None)}
        for pi_id, pi in self.stripe.fake.intents.items():
            if pi["status"] != "succeeded":
                continue
            # I2: every succeeded payment ends fulfilled or refunded.
            order = orders.get(pi_id)
            assert order is not None, f"I2: {pi_id} succeeded and has no order"
            ref = f"{order.reference} ({order.state})"
            assert order.state in (State.FULFILLED, State.REFUNDED), f"I2: {pi_id} succeeded but {ref}"
            # I4: every refund made in Stripe is recorded here, in Stripe's status; a full one ends
            # the order; and each refund the customer was counted as getting had its own email.
            assert order.refunded_cents == self.stripe.refunded(pi_id), f"I4: {ref} refunds differ from Stripe"
            ours = dict(Refund.objects.filter(order=order).values_list("stripe_refund_id", "status"))
            theirs = {r.id: r.status for r in self.stripe.fake.refunds if r.payment_intent == pi_id}
            assert ours == theirs, f"I4: {ref} refunds {ours} here, {theirs} at Stripe"
            keys = set(OutboundEmail.objects.filter(order=order, kind="refund").values_list("key", flat=True))
            assert self.emailed_refunds.get(order.pk, set()) <= keys, f"{ref}: a refund had no email"
            if order.refunded_cents >= order.amount_cents:
                assert order.state == State.REFUNDED, f"I4: {ref} fully refunded in Stripe"
        unsent = OutboundEmail.objects.exclude(status=OutboundEmail.Status.SENT)
        assert not unsent.exists(), f"emails never sent: {list(unsent)}"
        # Issue 11: every dispute and warning is recorded and linked, a dispute with Stripe's
        # last status; no access after a lost dispute (DISPUTE_ACCESS=suspend).
        for du in self.stripe.fake.disputes:
            dispute = Dispute.objects.select_related("order").get(stripe_dispute_id=du["id"])
            assert dispute.status == du["status"], f"{du['id']} is {dispute.status} here, {du['status']} in Stripe"
            assert dispute.order == orders.get(du["payment_intent"]), f"{du['id']} is not linked to its order"
            subscription = getattr(dispute.order, "subscription", None)
            if du["status"] == "lost" and subscription is not None:
                assert not subscription.is_active, f"{dispute.order.reference} has access after a lost dispute"
        for warning in self.stripe.fake.fraud_warnings:
            row = EarlyFraudWarning.objects.get(stripe_warning_id=warning["id"])
            assert row.order == orders.get(warning["payment_intent"]), f"{warning['id']} is not linked"


@pytest.fixture
def world(plan, webhook_endpoint, request) -> type[PaidUpWorld]:
    """The machine class, bound to rows that outlive the examples: plans, endpoint, support."""
    request.getfixturevalue("settings").DISPUTE_ACCESS = "suspend"
    PlanFactory(slug="pro-month", name="PaidUp Pro, one month", amount_cents=PLANS["pro-month"], duration_days=31)
    assert plan.amount_cents == PLANS[plan.slug]
    support_user = User.objects.create(email="ada@support.paidup.example", is_staff=True, is_superuser=True)
    return type("World", (PaidUpWorld,), {"endpoint": webhook_endpoint, "support_user": support_user})


@pytest.mark.django_db
@pytest.mark.timeout(300 + EXAMPLES * 3)  # Hypothesis may shrink a failure for up to 300 s
def test_it_never_loses_a_paid_order(world):
    run_state_machine_as_test(
        world,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )


# Sequences Hypothesis found, kept as plain tests: they run every time, whatever it generates.


@pytest.mark.django_db
def test_a_payment_refunded_in_full_while_its_fulfilment_kept_crashing_ends_refunded_without_access(world):
    state = world()
    try:
        state.someone_pays_outside_checkout(email="ada@example.com")
        state.support_refunds_in_stripe_dashboard(which=0, full=True)
        # Adopting the payment crashes in fulfil(); the same run still records the refund.
        state.reconciliation_runs(crash="fulfil_before_commit")
        state.orders_are_safe()
        state.reconciliation_runs(crash=None)
        state.orders_are_safe()
        order = Order.objects.get()
        assert order.state == State.REFUNDED and order.refunded_cents == order.amount_cents
        assert not Subscription.objects.exists()
        assert list(OutboundEmail.objects.filter(order=order).values_list("kind", flat=True)) == ["refund"]
    finally:
        state.teardown()


@pytest.mark.django_db
def test_a_new_attempt_after_a_failed_3d_secure_charges_the_plan_chosen_on_that_submit(world):
    state = world()
    try:
        checkout = state.first_customer_opens_checkout(email="ada@example.com")
        state.customer_pays(checkout=checkout, card="requires_action", plan="pro-year", crash=None)
        state.customer_answers_3d_secure(which=0, passes=False)
        # The order still says "requires_action": only Stripe knows the attempt is over.
        state.customer_pays(checkout=checkout, card="succeeded", plan="pro-month", crash=None)
        state.orders_are_safe()
        order = checkout.order()
        assert (order.state, order.amount_cents) == (State.FULFILLED, PLANS["pro-month"])
    finally:
        state.teardown()


@pytest.mark.django_db
def test_a_customer_back_on_the_checkout_after_passing_3d_secure_is_not_told_they_were_not_charged(world):
    state = world()
    try:
        checkout = state.first_customer_opens_checkout(email="ada@example.com")
        state.customer_pays(checkout=checkout, card="requires_action", plan="pro-year", crash=None)
        state.customer_answers_3d_secure(which=0, passes=True)
        # Before the webhook or the order page: only Stripe knows the money moved.
        state.customer_comes_back_to_checkout(checkout=checkout)
        state.orders_are_safe()
    finally:
        state.teardown()
