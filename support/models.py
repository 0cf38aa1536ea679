import re

from django.db import models
from django.utils import timezone

# How self-service marks a customer's next request on an open case (support/selfservice.py).
ASKED_AGAIN = "Asked again"
_ASKED_AGAIN_HEADER = re.compile(rf"^{ASKED_AGAIN} [0-9: -]+ UTC:", re.MULTILINE)


class SupportCase(models.Model):
    """A customer's "charged but no access" that the machine could not settle alone."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        RESOLVED = "resolved", "Resolved"

    email = models.EmailField(db_index=True)
    order = models.ForeignKey("billing.Order", on_delete=models.SET_NULL, null=True, blank=True, related_name="cases")
    card_last4 = models.CharField(max_length=4, blank=True)
    paid_on = models.DateField(null=True, blank=True)
    message = models.TextField(blank=True)
    diagnosis = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN, db_index=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"case {self.pk} from {self.email} ({self.status})"

    @property
    def latest_diagnosis(self) -> str:
        """The most recent finding: the diagnosis after its last "Asked again …" header, or
        the whole diagnosis when the customer asked once, or asked again and nothing changed.
        Where a row has room for one finding (the queue), this one; the case page keeps all."""
        parts = _ASKED_AGAIN_HEADER.split(self.diagnosis)
        for part in reversed(parts):
            if part.strip() and part.strip() != "the same finding.":
                return part.strip()
        return ""

    @property
    def times_asked(self) -> int:
        """How many times the customer asked: once, plus one per "Asked again" header that
        self-service appended to the diagnosis."""
        return 1 + len(_ASKED_AGAIN_HEADER.findall(self.diagnosis))


class RefundRequest(models.Model):
    """One refund as a support person asked for it: its token is the Stripe idempotency key,
    so a double submit or a retry can never refund twice."""

    token = models.UUIDField(unique=True)
    order = models.ForeignKey("billing.Order", on_delete=models.PROTECT, related_name="refund_requests")
    amount_cents = models.PositiveIntegerField()
    reason = models.TextField()
    requested_by = models.CharField(max_length=100)
    stripe_refund_id = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"refund request {self.token} ({self.price})"

    @property
    def price(self) -> str:
        """The amount asked for, formatted in the order's currency (one query unless the order is loaded)."""
        from billing.models.orders import format_money

        return format_money(self.amount_cents, self.order.currency)


class StaffEvent(models.Model):
    """Who did what at the door of the console (issue 12, item 6): passwords accepted, second
    factors verified (only then is a person in the console), codes refused, sign-outs, failed and
    throttled sign-ins, unlocks, second factors added and removed. Written by support/staff_events.py
    (signal receivers, and the verify step) and never edited; neither the password nor the code tried
    nor an invite token is ever stored. Read next to the money actions (the admin's LogEntry rows)
    by the other person."""

    class Kind(models.TextChoices):
        # The password step only (Django's user_logged_in): not yet in the console.
        LOGIN = "login", "Password accepted"
        FACTOR_VERIFIED = "factor_verified", "Second factor verified"
        CODE_REFUSED = "code_refused", "Code refused"
        LOGOUT = "logout", "Signed out"
        LOGIN_FAILED = "login_failed", "Failed sign-in"
        LOCKED_OUT = "locked_out", "Locked out"
        UNLOCKED = "unlocked", "Unlocked"
        FACTOR_ADDED = "factor_added", "Second factor added"
        FACTOR_REMOVED = "factor_removed", "Second factor removed"

    kind = models.CharField(max_length=20, choices=Kind.choices, db_index=True)
    # The staff account concerned, when there is one (none for an unknown email typed at the login).
    user = models.ForeignKey(
        "accounts.User", on_delete=models.SET_NULL, null=True, blank=True, related_name="staff_events"
    )
    # The account's email, or for a failed sign-in the email as typed (normal form): it may be a
    # typo of a real staff address, which is worth seeing.
    email = models.CharField(max_length=254, blank=True, db_index=True)
    # Who did it: the person's email (for a sign-in, the person themselves), "" when nobody is
    # signed in (a failed sign-in), "manage.py" for a command.
    actor = models.CharField(max_length=254, blank=True)
    client_address = models.CharField(max_length=64, blank=True)
    user_agent = models.CharField(max_length=500, blank=True)
    at = models.DateTimeField(default=timezone.now, db_index=True)
    detail = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-at", "-pk"]
        verbose_name = "staff sign-in and security event"
        verbose_name_plural = "Staff sign-ins and security"

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.email or 'unknown'} at {self.at:%Y-%m-%d %H:%M} UTC"


class SelfServiceRequest(models.Model):
    """A "charged but no access?" request the page accepted, kept until the check has answered it.

    The page promises an email within minutes; the q broker alone cannot keep that promise: a
    Redis restart drops what is queued, and a task that fails (a database restart under it) is
    not run again. This row is written before the task is queued and deleted once the customer
    has their answer (so the email typed is not kept), and `support.selfservice.sweep` queues
    again a request left unanswered (found by the chaos run, bench/chaos.py).
    """

    email = models.EmailField()  # in the normal form (accounts.addresses)
    typed = models.CharField(max_length=254, blank=True)  # as typed, for Stripe's case-sensitive search
    card_last4 = models.CharField(max_length=4, blank=True)
    paid_on = models.DateField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # When the check was last handed to the q broker, and how many times.
    queued_at = models.DateTimeField(default=timezone.now, db_index=True)
    attempts = models.PositiveSmallIntegerField(default=1)

    def __str__(self) -> str:
        return f"self-service request {self.pk} ({self.attempts} attempts)"
