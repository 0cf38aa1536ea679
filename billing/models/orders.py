import secrets
import uuid
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models.functions import Upper
from django.utils import timezone

# Readable over the phone: no 0/O, 1/I/L, U.
REFERENCE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTVWXYZ"
REFERENCE_PREFIX = "PU-"


def new_reference() -> str:
    return REFERENCE_PREFIX + "".join(secrets.choice(REFERENCE_ALPHABET) for _ in range(6))


def normalize_reference(value: str) -> str:
    """Uppercase, trim, and accept the reference with or without its prefix."""
    value = (value or "").strip().upper().replace(" ", "")
    if value and not value.startswith(REFERENCE_PREFIX):
        value = REFERENCE_PREFIX + value.removeprefix("PU")
    return value


def is_valid_reference(value: str) -> bool:
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
        return format_money(self.amount_cents, self.currency)


def format_money(cents: int, currency: str) -> str:
    symbol = {"usd": "$", "eur": "€", "gbp": "£"}.get(currency.lower())
    amount = f"{cents // 100:,}.{cents % 100:02d}"
    return f"{symbol}{amount}" if symbol else f"{amount} {currency.upper()}"


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
    email = models.EmailField(blank=True)
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
    fulfilled_via = models.CharField(max_length=16, choices=Via.choices, blank=True)
    refunded_cents = models.PositiveIntegerField(default=0)
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
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    paid_at = models.DateTimeField(null=True, blank=True)
    fulfilled_at = models.DateTimeField(null=True, blank=True)
    refunded_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    stripe_checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["state", "created_at"]),
            models.Index(fields=["email"]),
            # Support searches emails case-insensitively (email__iexact → UPPER(email) = UPPER(%s)).
            models.Index(Upper("email"), name="billing_order_email_upper"),
            models.Index(fields=["stripe_customer_id"]),
        ]
        permissions = [
            ("fulfil_order", "Can fulfil an order from the support console"),
            ("resend_access", "Can resend the access email"),
            ("extend_subscription", "Can extend a subscription (goodwill)"),
            ("attach_payment", "Can attach a bare Stripe payment to a new order"),
            ("refund_order", "Can refund an order"),
        ]

    def __str__(self) -> str:
        return self.reference

    @property
    def price(self) -> str:
        return format_money(self.amount_cents, self.currency)

    @property
    def is_settled(self) -> bool:
        """No further change is expected without a human or a refund."""
        return self.state in {self.State.FULFILLED, self.State.REFUNDED, self.State.FAILED}

    @property
    def was_charged(self) -> bool:
        return self.state in {self.State.PAID, self.State.FULFILLED, self.State.REFUNDED}

    def flag_attention(self, reason: str, *, actor: str) -> None:
        """Mark the order for a person; the timeline says why."""
        Order.objects.filter(pk=self.pk).update(needs_attention=True, attention_reason=reason[:255])
        self.needs_attention, self.attention_reason = True, reason[:255]
        self.log("needs_attention", reason, actor=actor)

    def idempotency_key(self, purpose: str) -> str:
        return f"order-{self.id}-{purpose}"

    def log(self, kind: str, message: str, *, actor: str, data: dict | None = None) -> "OrderEvent":
        return OrderEvent.objects.create(order=self, kind=kind, actor=actor, message=message, data=data or {})

    def transition(self, new_state: str, *, actor: str, message: str = "", data=None) -> None:
        """The one way to change state: checks the map, stamps the time, writes the timeline.

        The caller holds the row lock (select_for_update) inside a transaction.
        """
        new_state = self.State(new_state)
        if new_state not in self.TRANSITIONS[self.State(self.state)]:
            raise IllegalTransition(f"{self.reference}: {self.state} -> {new_state} is not allowed")
        old_state = self.state
        self.state = new_state
        fields = ["state", "updated_at"]
        if stamp := self.STATE_TIMESTAMPS.get(new_state):
            setattr(self, stamp, timezone.now())
            fields.append(stamp)
        if new_state == self.State.FULFILLED:
            fields.append("fulfilled_via")
        self.save(update_fields=fields)
        self.log(
            f"state:{new_state}",
            message or f"{old_state} → {new_state}",
            actor=actor,
            data={"from": old_state, "to": new_state, **(data or {})},
        )


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
        return {"kind": self.kind, "actor": self.actor, "message": self.message, "data": self.data}
