import secrets
import uuid
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.utils import dateformat, timezone

from accounts.addresses import NormalizedEmailField

# The one money formatter; imported from here by every caller (billing.money explains Stripe's units).
from billing.money import format_money

# Readable over the phone: no 0/O, 1/I/L, U.
REFERENCE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"
REFERENCE_PREFIX = "PU-"


def new_reference() -> str:
    """A fresh random order reference, "PU-" and six characters of REFERENCE_ALPHABET (no 0/O,
    1/I/L, U: easy to read out on the phone), e.g. "PU-7KQ2MX". Not checked for uniqueness here:
    the unique column refuses a collision."""
    return REFERENCE_PREFIX + "".join(secrets.choice(REFERENCE_ALPHABET) for _ in range(6))


def normalize_reference(value: str) -> str:
    """Uppercase, trim, and accept the reference with or without its prefix."""
    value = (value or "").strip().upper().replace(" ", "")
    if value and not value.startswith(REFERENCE_PREFIX):
        value = REFERENCE_PREFIX + value.removeprefix("PU")
    return value


def is_valid_reference(value: str) -> bool:
    """Whether `value` (already normalised: normalize_reference) is shaped like a reference
    new_reference() makes. Says nothing about whether such an order exists."""
    body = value.removeprefix(REFERENCE_PREFIX)
    return value.startswith(REFERENCE_PREFIX) and len(body) == 6 and all(c in REFERENCE_ALPHABET for c in body)


class Plan(models.Model):
    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=100)
    amount_cents = models.PositiveIntegerField()
    currency = models.CharField(max_length=3, default="usd")
    duration_days = models.PositiveIntegerField(default=365)
    active = models.BooleanField(default=True)

    def __str__(self) -> str:
        return f"{self.name} ({format_money(self.amount_cents, self.currency)})"

    @property
    def price(self) -> str:
        """The plan's price worded for people, e.g. "$249.00" (format_money of `amount_cents`)."""
        return format_money(self.amount_cents, self.currency)


class IllegalTransition(Exception):
    pass


class Order(models.Model):
    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        PAID = "paid", "Paid, not yet fulfilled"
        FULFILLED = "fulfilled", "Fulfilled"
        REFUNDED = "refunded", "Refunded"
        FAILED = "failed", "Failed"

    class Via(models.TextChoices):
        WEBHOOK = "webhook", "Webhook"
        RETURN = "return", "Return page"
        RECONCILIATION = "reconciliation", "Reconciliation"
        SUPPORT = "support", "Support"
        SELF_SERVICE = "self_service", "Self-service page"  # /help/charged/ (support/selfservice.py)

    # The only legal moves; anything else raises. Never backwards: a late failure event
    # cannot undo a payment.
    TRANSITIONS = {
        State.PENDING: {State.PAID, State.FAILED},
        State.PAID: {State.FULFILLED, State.REFUNDED},
        State.FULFILLED: {State.REFUNDED},
        State.REFUNDED: set(),
        State.FAILED: set(),
    }
    STATE_TIMESTAMPS = {
        State.PAID: "paid_at",
        State.FULFILLED: "fulfilled_at",
        State.REFUNDED: "refunded_at",
        State.FAILED: "failed_at",
    }

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    reference = models.CharField(max_length=12, unique=True, default=new_reference)
    # Blank only for a payment found in Stripe with no email anywhere (needs a human).
    email = NormalizedEmailField(blank=True)
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="orders")
    amount_cents = models.PositiveIntegerField()
    currency = models.CharField(max_length=3)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    stripe_payment_intent_id = models.CharField(max_length=255, unique=True, null=True, blank=True)
    stripe_customer_id = models.CharField(max_length=255, blank=True)
    # The last PaymentIntent status we saw; tells a retry after a decline from a charge
    # in flight without asking Stripe.
    stripe_payment_status = models.CharField(max_length=40, blank=True)
    payment_attempts = models.PositiveSmallIntegerField(default=0)
    # What the current attempt sends to Stripe (a hash of card, email, amount, currency), committed
    # with the attempt number before the request: its idempotency keys are reused only for the
    # same parameters (Stripe refuses a key replayed with others: 400 idempotency_error).
    payment_fingerprint = models.CharField(max_length=64, blank=True)
    # Confirm requests sent for the current attempt; part of the confirm key, committed before
    # each confirm, so a confirm that failed without charging is retried under a fresh key
    # (Stripe replays a key's saved 500 for 24 hours).
    confirm_attempts = models.PositiveSmallIntegerField(default=0)
    fulfilled_via = models.CharField(max_length=16, choices=Via.choices, blank=True)
    # Sum of the order's refunds that are sent or on their way (Refund.COUNTED); never above
    # amount_cents (billing/refunds.py keeps it so, invariant I4).
    refunded_cents = models.PositiveIntegerField(default=0)
    # The last four digits of the card that paid, when a Stripe object told us (a charge event,
    # a refund made from the console): the refund email names the card.
    card_last4 = models.CharField(max_length=4, blank=True)
    # Created by reconciliation from a Stripe payment that had no order here.
    retroactive = models.BooleanField(default=False)
    # Set when a machine cannot finish the job and a person must decide; see support alerts.
    needs_attention = models.BooleanField(default=False, db_index=True)
    attention_reason = models.CharField(max_length=255, blank=True)
    # "I'm on it": a support person holds the case for a while, visible to the other one.
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    claimed_until = models.DateTimeField(null=True, blank=True)
    # When the customer corrected a bounced address from the order page: once per order, taken
    # by a conditional UPDATE (billing/email_change.py), so two tabs cannot both use it.
    customer_email_corrected_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    # When Stripe charged the card, by Stripe's clock (its succeeded event's or its charge's
    # `created`): how long the customer waited decides the confirmation or the recovery email.
    charged_at = models.DateTimeField(null=True, blank=True)
    fulfilled_at = models.DateTimeField(null=True, blank=True)
    refunded_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    stripe_checked_at = models.DateTimeField(null=True, blank=True)
    # Who paid, as the checkout request showed them (evidence for a dispute: billing/evidence.py).
    checkout_ip = models.GenericIPAddressField(null=True, blank=True)
    checkout_user_agent = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["state", "created_at"]),
            # The metrics' orders-by-state and the console's state filter (billing 0024, built concurrently).
            models.Index(fields=["state"], name="billing_order_state_idx"),
            models.Index(fields=["email"]),
            models.Index(fields=["stripe_customer_id"]),
        ]
        permissions = [
            ("fulfil_order", "Can fulfil an order from the support console"),
            ("resend_access", "Can resend the access email"),
            ("extend_subscription", "Can extend a subscription (goodwill)"),
            ("attach_payment", "Can attach a bare Stripe payment to a new order"),
            ("refund_order", "Can refund an order"),
            ("change_order_email", "Can correct an order's email and move its access"),
        ]

    def __str__(self) -> str:
        return self.reference

    @property
    def price(self) -> str:
        """The amount charged (or to be charged) worded, e.g. "$249.00" (format_money of
        `amount_cents`, the order's own amount, which a later plan price change does not touch)."""
        return format_money(self.amount_cents, self.currency)

    @property
    def refundable_cents(self) -> int:
        """What is left to refund, in minor units: the charge less what was refunded (never below 0)."""
        return max(0, self.amount_cents - self.refunded_cents)

    @property
    def refunded(self) -> str:
        """The refunded total, worded (format_money of `refunded_cents`)."""
        return format_money(self.refunded_cents, self.currency)

    @property
    def refund_story(self) -> list[str]:
        """The order's refunds as the customer and support read them, oldest first, then what
        happened to access: ["$50.00 refunded on 2 Dec 2026.", "Your access continues until
        2 Dec 2027."]. [] when there is no refund. Used by the order page, the account page and
        the console, so that none of them says "we received $249" alone after a refund."""
        lines = []
        for refund in self.refunds.all():
            when = dateformat.format(timezone.localtime(refund.created_at), "j M Y")
            if refund.status == "succeeded":
                lines.append(f"{refund.price} refunded on {when}.")
            elif refund.counts:
                lines.append(f"{refund.price} refunded on {when}, on its way to your card.")
            else:
                lines.append(
                    f"A {refund.price} refund made on {when} didn't reach your card (your bank sent it back). "
                    "We'll write to you to pay it back another way."
                )
        if not lines:
            return []
        subscription = getattr(self, "subscription", None)
        if self.state == self.State.REFUNDED and self.refunded_at:
            ended = dateformat.format(timezone.localtime(self.refunded_at), "j M Y")
            lines.append(f"Your access ended on {ended}, when the payment was refunded in full.")
        elif self.state == self.State.FULFILLED and subscription is not None:
            until = dateformat.format(timezone.localtime(subscription.ends_at), "j M Y")
            lines.append(f"Your access continues until {until}.")
        return lines

    @property
    def is_settled(self) -> bool:
        """No further change is expected without a human or a refund."""
        return self.state in {self.State.FULFILLED, self.State.REFUNDED, self.State.FAILED}

    @property
    def was_charged(self) -> bool:
        """Whether money was taken: paid, fulfilled or refunded (a refunded order was charged too)."""
        return self.state in {self.State.PAID, self.State.FULFILLED, self.State.REFUNDED}

    def flag_attention(self, reason: str, *, actor: str) -> None:
        """Mark the order for a person; the timeline says why."""
        Order.objects.filter(pk=self.pk).update(needs_attention=True, attention_reason=reason[:255])
        self.needs_attention, self.attention_reason = True, reason[:255]
        self.log("needs_attention", reason, actor=actor)

    # Fields of a transition(save=False) not yet written (the next transition() writes them).
    unsaved_transition: tuple = ()

    def idempotency_key(self, purpose: str) -> str:
        """Stripe's Idempotency-Key for this order's request `purpose` ("pi-1", "customer-1"…),
        "order-<uuid>-<purpose>": derived from the committed row, so a retried or resubmitted
        request gets the same Stripe object back (DESIGN.md "The paid path", step 3)."""
        return f"order-{self.id}-{purpose}"

    def log(self, kind: str, message: str, *, actor: str, data: dict | None = None) -> "OrderEvent":
        """Write one timeline row for this order (saved order required) and return it: `kind`
        (e.g. "state:paid", "support:note"), a sentence for support, who did it (`actor`, e.g.
        "stripe:webhook", "support:<user>"), and optional JSON `data` (invariant I5, I7)."""
        return OrderEvent.objects.create(order=self, kind=kind, actor=actor, message=message, data=data or {})

    def transition(
        self, new_state: str, *, actor: str, message: str = "", data=None, also: tuple = (), save: bool = True
    ) -> None:
        """The one way to change state: checks the map, stamps the time, writes the timeline.

        The caller holds the row lock (select_for_update) inside a transaction. Saves the state,
        its timestamp (STATE_TIMESTAMPS) and, when fulfilling, `fulfilled_via`; writes a
        "state:<new>" timeline row by `actor`. Raises ValueError for an unknown state and
        IllegalTransition for a move TRANSITIONS does not allow (invariant I5: never backwards).
        `also` names other fields the caller has just set on this object, saved in the same
        UPDATE as the state (one statement instead of two on the webhook's path).

        `save=False` writes the timeline row now and leaves the UPDATE to the next `transition()`
        on this object, which saves both moves in one statement (pending → paid → fulfilled in
        one fulfilment: nobody outside the transaction can see the state in between). The caller
        must make that next transition in the same transaction, or raise so that it rolls back
        (`_fulfil_locked` does: every branch after its paid move ends in a transition or raises);
        `unsaved_transition` says whether one is owed.
        """
        new_state = self.State(new_state)
        if new_state not in self.TRANSITIONS[self.State(self.state)]:
            raise IllegalTransition(f"{self.reference}: {self.state} -> {new_state} is not allowed")
        old_state = self.state
        self.state = new_state
        fields = [*self.unsaved_transition, "state", "updated_at", *also]
        if stamp := self.STATE_TIMESTAMPS.get(new_state):
            setattr(self, stamp, timezone.now())
            fields.append(stamp)
        if new_state == self.State.FULFILLED:
            fields.append("fulfilled_via")
        fields = list(dict.fromkeys(fields))
        if save:
            self.save(update_fields=fields)
            self.unsaved_transition = ()
        else:
            self.unsaved_transition = tuple(fields)
        self.log(
            f"state:{new_state}",
            message or f"{old_state} → {new_state}",
            actor=actor,
            data={"from": old_state, "to": new_state, **(data or {})},
        )

    def close_unpaid(self, *, actor: str, message: str, unless=None, payment_status: str = "", data=None) -> bool:
        """Close an order nobody paid: pending → failed, under the row lock. The one way to do it
        (the webhook's `payment_intent.canceled`, the order page's Stripe check and
        reconciliation's abandoned checkouts all call it).

        Takes the timeline's `actor` and `message`; `unless`, a function of the locked order
        that returns True when the order must stay open after all (its PaymentIntent was
        replaced, or a checkout request recorded a newer status meanwhile); `payment_status`,
        a Stripe status to store with the move (e.g. "canceled"); `data` for the timeline row.
        Returns True when this call closed the order, False when it was no longer pending (a
        late cancel never moves a paid order backwards: invariant I5) or `unless` said no.
        Opens its own transaction (nested inside the caller's, if any) and reloads this object from
        the row afterwards; raises nothing of its own.
        """
        with transaction.atomic():
            order = type(self).objects.select_for_update().get(pk=self.pk)
            closed = order.state == self.State.PENDING and not (unless is not None and unless(order))
            if closed:
                if payment_status:
                    order.stripe_payment_status = payment_status
                    order.save(update_fields=["stripe_payment_status", "updated_at"])
                order.transition(self.State.FAILED, actor=actor, message=message, data=data)
        self.refresh_from_db()  # the caller's object shows the row as it stands now
        return closed


class OrderEvent(models.Model):
    """The timeline of an order: what support reads, and the audit trail."""

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=40)
    # "customer", "stripe:webhook", "system:return", "system:reconciliation", "support:<user>"
    actor = models.CharField(max_length=100)
    message = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.kind} by {self.actor}"

    def as_dict(self) -> dict[str, Any]:
        """The row as plain JSON-able data: kind, actor, message, data (no time, no order)."""
        return {"kind": self.kind, "actor": self.actor, "message": self.message, "data": self.data}
