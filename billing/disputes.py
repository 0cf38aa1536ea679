"""Disputes and early fraud warnings: recorded once, linked to their order, alerted once.

Every way in (the webhook's `charge.dispute.*` and `radar.early_fraud_warning.*` receivers,
reconciliation's listing of both) calls `record_dispute()` / `record_warning()`, which are
idempotent and order-independent:

- the row is unique on Stripe's id (`du_…`, `issfr_…`) and written under its row lock;
- an event older (Stripe's `created`) than the last one applied fills in only what is missing,
  and a closed dispute is never reopened: a late `charge.dispute.created` after `.closed`
  changes nothing;
- a dispute or warning for a charge we do not know yet is kept with its charge and
  PaymentIntent ids; `link_orphans()` (every reconciliation run) links it when the order
  appears, and its alert says so until then;
- each dispute raises exactly one "dispute opened" alert (Alert's unique key `dispute:<du>`),
  each warning one "early fraud warning" alert (`fraud_warning:<issfr>`).

PaidUp never emails the customer about a dispute: that conversation belongs to their bank
(issue 11, item 6). The access policy (DISPUTE_ACCESS) is applied here and the automatic refund
policy (EFW_AUTO_REFUND) in billing/fraud_warnings.py, each change with its timeline row.
`submit_evidence()` sends support's reviewed evidence pack (billing/evidence.py) to Stripe once.
"""

import logging
from datetime import UTC, datetime, timedelta

import stripe
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from . import gateway
from .alerts import raise_alert
from .models import Alert, Dispute, EarlyFraudWarning, Order

logger = logging.getLogger(__name__)

ACTOR_POLICY = "system:dispute_policy"
# Stripe: a card payment can be disputed for up to 120 days (the usual network limit).
DISPUTE_WINDOW = timedelta(days=120)


def field(obj, name: str, default=None):
    """A field of a Stripe object or a dict, `default` when missing."""
    try:
        value = obj[name]
    except (KeyError, TypeError, IndexError):
        return default
    return default if value is None else value


def stripe_id(value) -> str:
    """The id of an expandable field (a string, an object with `id`, or nothing)."""
    if isinstance(value, str):
        return value
    return field(value, "id", "") or ""


def _moment(seconds) -> datetime | None:
    return datetime.fromtimestamp(int(seconds), tz=UTC) if isinstance(seconds, int) and seconds > 0 else None


def due_in_words(due_by: datetime | None, now: datetime | None = None) -> str:
    """ "evidence due in 6 days, by Mon 8 Dec 17:00 UTC" (hours under two days, minutes under two
    hours; "was due … ago" once past). Takes aware datetimes; returns "no evidence due date" for None.
    The wording is the issue's (issue 11, item 3)."""
    if due_by is None:
        return "no evidence due date"
    now = now or timezone.now()
    when = due_by.astimezone(UTC).strftime("%a %-d %b %H:%M UTC")
    seconds = int((due_by - now).total_seconds())
    span = abs(seconds)
    if span >= 48 * 3600:
        amount = f"{span // 86400} days"
    elif span >= 2 * 3600:
        amount = f"{span // 3600} hours"
    else:
        amount = f"{max(span // 60, 1)} minutes"
    return f"evidence due in {amount}, by {when}" if seconds >= 0 else f"evidence was due {amount} ago, on {when}"


def find_order(payment_intent_id: str, charge_id: str) -> Order | None:
    """The order a dispute or warning is about: by its PaymentIntent, else by its charge through
    dj-stripe's Charge mirror. None when neither is known here (yet)."""
    if payment_intent_id:
        order = Order.objects.filter(stripe_payment_intent_id=payment_intent_id).first()
        if order is not None:
            return order
    if charge_id:
        from djstripe.models import Charge

        pi = Charge.objects.filter(id=charge_id).values_list("payment_intent_id", flat=True).first()
        if pi:
            return Order.objects.filter(stripe_payment_intent_id=pi).first()
    return None


# --- disputes -------------------------------------------------------------------------------


def record_dispute(obj, *, event_created: int, actor: str, event_type: str = "") -> Dispute | None:
    """Record Stripe's dispute `obj` (a Stripe object or dict: `id` du_…, `amount` in minor
    units, `currency`, `reason`, `status`, `evidence_details.due_by`, `charge`, `payment_intent`)
    as known at `event_created` (Unix seconds, Stripe's clock). Returns the row, or None when
    `obj` has no dispute id (logged and alerted: retrying cannot fix it, so no exception).

    Alerts support once per dispute; applies DISPUTE_ACCESS when it opens and closes.
    """
    dispute_id = stripe_id(obj)
    if not dispute_id.startswith("du_"):
        logger.error("dispute event without a dispute id (%s): recorded nothing", event_type or "?")
        raise_alert(
            Alert.Reason.WEBHOOK_FAILED,
            f"A Stripe dispute event ({event_type or 'unknown type'}) had no dispute id; nothing was recorded. "
            "Look the dispute up in the Stripe dashboard.",
            key=f"dispute_bad:{event_created}",
        )
        return None
    with transaction.atomic():
        dispute, created = _locked_dispute(dispute_id)
        before = dispute.status
        newer = event_created >= dispute.stripe_updated
        _apply(dispute, obj, newer=newer, event_created=event_created)
        if dispute.order_id is None:
            dispute.order = find_order(dispute.payment_intent_id, dispute.charge_id)
        dispute.save()
        order = dispute.order
        if order is not None:
            _log_dispute_event(order, dispute, before, created=created, actor=actor, event_type=event_type)
        if created:
            _alert_opened(dispute)
        if order is not None and dispute.status != before:
            apply_access_policy(dispute)
        if before not in Dispute.CLOSED and dispute.status in Dispute.CLOSED:
            _alert_closed(dispute)
    return dispute


def _locked_dispute(dispute_id: str) -> tuple[Dispute, bool]:
    dispute = Dispute.objects.select_for_update().filter(stripe_dispute_id=dispute_id).first()
    if dispute is not None:
        return dispute, False
    try:
        with transaction.atomic():
            return Dispute.objects.create(stripe_dispute_id=dispute_id), True
    except IntegrityError:  # a concurrent delivery created it: take its lock
        return Dispute.objects.select_for_update().get(stripe_dispute_id=dispute_id), False


def _apply(dispute: Dispute, obj, *, newer: bool, event_created: int) -> None:
    """Copy Stripe's fields: all of them from a newer event, only the missing ones from an older one.
    A closed dispute keeps its closing status whatever a late event says."""
    fields = {
        "charge_id": stripe_id(field(obj, "charge")),
        "payment_intent_id": stripe_id(field(obj, "payment_intent")),
        "currency": str(field(obj, "currency", ""))[:3].lower(),
        "reason": str(field(obj, "reason", ""))[:40],
    }
    amount = field(obj, "amount")
    if isinstance(amount, int) and amount >= 0:
        fields["amount_cents"] = amount
    due = _moment(field(field(obj, "evidence_details", {}), "due_by"))
    if due is not None:
        fields["evidence_due_by"] = due
    for name, value in fields.items():
        if value and (newer or not getattr(dispute, name)):
            setattr(dispute, name, value)
    status = str(field(obj, "status", ""))[:40]
    if status and (newer or not dispute.status) and dispute.status not in Dispute.CLOSED:
        dispute.status = status
        if status in Dispute.CLOSED:
            dispute.closed_at = timezone.now()
    if newer:
        dispute.stripe_updated = event_created


def _log_dispute_event(order: Order, dispute: Dispute, before: str, *, created: bool, actor: str, event_type: str):
    if created:
        message = (
            f"Dispute {dispute.stripe_dispute_id} opened: {dispute.price}, reason {dispute.reason or 'not given'}, "
            f"{due_in_words(dispute.evidence_due_by)}."
        )
        kind = "dispute:opened"
    elif dispute.status != before:
        message = f"Dispute {dispute.stripe_dispute_id} is now {dispute.status} (was {before or 'unknown'})."
        kind = "dispute:status"
    elif event_type.endswith(("funds_withdrawn", "funds_reinstated")):
        word = "withdrawn from" if event_type.endswith("withdrawn") else "returned to"
        message = f"Dispute {dispute.stripe_dispute_id}: Stripe reports the money {word} our balance."
        kind = "dispute:funds"
    else:
        return
    order.log(kind, message, actor=actor, data={"dispute": dispute.stripe_dispute_id, "status": dispute.status})


def _alert_opened(dispute: Dispute) -> None:
    order = dispute.order
    about = (
        f"order {order.reference} ({order.email or 'no email'}, charged {order.price})"
        if order
        else f"charge {dispute.charge_id or '?'} / {dispute.payment_intent_id or '?'}, which matches no order here "
        "yet (it is kept and linked when the order appears)"
    )
    raise_alert(
        Alert.Reason.DISPUTE,
        f"A bank disputes {dispute.price} ({dispute.stripe_dispute_id}, reason {dispute.reason or 'not given'}) on "
        f"{about}; {due_in_words(dispute.evidence_due_by)}. The money and Stripe's fee are already withdrawn; "
        "no evidence by the due date means the dispute is lost."
        + (
            f" Stripe's amount is more than the charge ({order.price}): check the dispute in Stripe."
            if order and dispute.amount_cents > order.amount_cents
            else ""
        ),
        order=order,
        key=f"dispute:{dispute.stripe_dispute_id}",
    )


def _alert_closed(dispute: Dispute) -> None:
    raise_alert(
        Alert.Reason.DISPUTE_CLOSED,
        f"Dispute {dispute.stripe_dispute_id} ({dispute.price}) closed: {dispute.status}.",
        order=dispute.order,
        key=f"dispute_closed:{dispute.stripe_dispute_id}",
    )


def apply_access_policy(dispute: Dispute) -> str:
    """DISPUTE_ACCESS=suspend: access is suspended while a (non-inquiry) dispute is open, ends
    for good that day when it is lost, and comes back to its old end date when it is won.
    `keep` (the default) changes nothing. Call under the dispute's row lock. Returns what was
    done ("suspended", "ended", "restored" or ""), each with a timeline row."""
    order = dispute.order
    subscription = getattr(order, "subscription", None) if order else None
    if settings.DISPUTE_ACCESS != "suspend" or subscription is None:
        return ""
    now = timezone.now()
    done = ""
    if dispute.status in ("needs_response", "under_review") and dispute.access_action == "":
        dispute.access_ends_before = subscription.ends_at
        subscription.ends_at = min(subscription.ends_at, now)
        done, message = "suspended", f"Access suspended while dispute {dispute.stripe_dispute_id} is open."
    elif dispute.status == "lost" and dispute.access_action in ("", "suspended"):
        subscription.ends_at = min(subscription.ends_at, now)
        done, message = "ended", f"Dispute {dispute.stripe_dispute_id} lost: access ends today."
    elif dispute.status == "won" and dispute.access_action in ("suspended", "ended") and dispute.access_ends_before:
        subscription.ends_at = max(dispute.access_ends_before, subscription.ends_at)
        done = "restored"
        message = f"Dispute {dispute.stripe_dispute_id} won: access restored until {subscription.ends_at:%d %b %Y}."
    if not done:
        return ""
    subscription.save(update_fields=["ends_at"])
    dispute.access_action = done
    dispute.save(update_fields=["access_action", "access_ends_before"])
    order.log(f"dispute:access_{done}", message, actor=ACTOR_POLICY, data={"dispute": dispute.stripe_dispute_id})
    return done


def enforce_access() -> int:
    """Apply DISPUTE_ACCESS=suspend to disputed orders whose access came after their dispute (the
    order was fulfilled later, e.g. by reconciliation). Returns how many changed; one query when
    there are none (and none at all with `keep`). Called by every reconciliation run."""
    if settings.DISPUTE_ACCESS != "suspend":
        return 0
    due = Dispute.objects.filter(
        order__subscription__isnull=False,
        access_action="",
        status__in=("needs_response", "under_review", "lost"),
    ).values_list("pk", flat=True)
    changed = 0
    for pk in due:
        with transaction.atomic():
            changed += bool(apply_access_policy(Dispute.objects.select_for_update().get(pk=pk)))
    return changed


def send_reminders(now: datetime | None = None) -> int:
    """One follow-up alert per dispute whose evidence is due within 72 hours and was not submitted
    yet (called by every reconciliation run). Returns how many were raised; the conditional
    UPDATE on `reminder_sent_at` lets one of two concurrent runs raise each."""
    now = now or timezone.now()
    due = Dispute.objects.filter(
        status__in=Dispute.NEEDS_RESPONSE,
        evidence_submitted_at__isnull=True,
        reminder_sent_at__isnull=True,
        evidence_due_by__gt=now,
        evidence_due_by__lte=now + timedelta(hours=72),
    ).select_related("order")
    sent = 0
    for dispute in due:
        if Dispute.objects.filter(pk=dispute.pk, reminder_sent_at__isnull=True).update(reminder_sent_at=now):
            raise_alert(
                Alert.Reason.DISPUTE_DUE,
                f"No evidence submitted yet for dispute {dispute.stripe_dispute_id} ({dispute.price}); "
                f"{due_in_words(dispute.evidence_due_by, now)}. Review the evidence pack and submit it.",
                order=dispute.order,
                key=f"dispute_due:{dispute.stripe_dispute_id}",
            )
            sent += 1
    return sent


def link_orphans(*, actor: str) -> int:
    """Link disputes and warnings kept without an order to the order that has appeared since
    (by PaymentIntent, else by charge). Returns how many were linked; each gets a timeline row
    and its open alert now points at the order. Two queries when there is nothing to link."""
    linked = 0
    for model, label in ((Dispute, "Dispute"), (EarlyFraudWarning, "Early fraud warning")):
        for row in model.objects.filter(order__isnull=True):
            order = find_order(row.payment_intent_id, row.charge_id)
            if order is None or not model.objects.filter(pk=row.pk, order__isnull=True).update(order=order):
                continue
            row.order = order
            stripe_id = str(row)
            order.log(
                "dispute:linked" if model is Dispute else "fraud_warning:linked",
                f"{label} {stripe_id} arrived before this order was known here; linked now.",
                actor=actor,
                data={"stripe_id": stripe_id},
            )
            Alert.objects.filter(key__endswith=f":{stripe_id}", order__isnull=True).update(order=order)
            if model is Dispute:
                with transaction.atomic():
                    locked = Dispute.objects.select_for_update().get(pk=row.pk)
                    apply_access_policy(locked)
            linked += 1
    return linked


# --- evidence ---------------------------------------------------------------------------------


class EvidenceRefused(Exception):
    """The evidence cannot be submitted; the message says why, for a support person."""


def open_dispute_needing_evidence(order: Order) -> Dispute | None:
    """The order's dispute that waits for evidence (the one due first), or None."""
    return (
        order.disputes.filter(status__in=Dispute.NEEDS_RESPONSE, evidence_submitted_at__isnull=True)
        .order_by("evidence_due_by")
        .first()
    )


def submit_evidence(dispute: Dispute, evidence_fields: dict[str, str], *, actor: str, idempotency_key: str) -> bool:
    """Send `evidence_fields` (Stripe evidence field name → text; empty values left out) for
    `dispute` to Stripe and submit it, once. Returns True when submitted now, False when it had
    already been submitted (a double click: the second request waits for the first's row lock,
    then finds it done). Records who and when, the text sent, Stripe's new status and a timeline
    row, in the caller's transaction.

    Raises EvidenceRefused when the dispute no longer takes evidence (closed, under review),
    when there is nothing to send, and when Stripe refuses or cannot be reached (its message
    included; nothing is recorded then).
    """
    sent = {name: value.strip() for name, value in evidence_fields.items() if value and value.strip()}
    with transaction.atomic():
        dispute = Dispute.objects.select_for_update().get(pk=dispute.pk)
        if dispute.evidence_submitted_at is not None:
            return False
        if dispute.status not in Dispute.NEEDS_RESPONSE:
            state = dispute.status or "in an unknown state"
            raise EvidenceRefused(f"Dispute {dispute} is {state}: it takes no evidence now.")
        if not sent:
            raise EvidenceRefused("The evidence is empty: fill in at least the cover text.")
        try:
            answer = gateway.submit_dispute_evidence(dispute.stripe_dispute_id, sent, idempotency_key=idempotency_key)
        except stripe.StripeError as error:
            raise EvidenceRefused(f"Stripe refused the evidence: {error.user_message or error}") from error
        dispute.evidence_draft = sent
        dispute.evidence_submitted_at = timezone.now()
        dispute.evidence_submitted_by = actor
        dispute.status = str(field(answer, "status", "under_review"))[:40]
        dispute.save()
        if dispute.order is not None:
            dispute.order.log(
                "dispute:evidence_submitted",
                f"Evidence for dispute {dispute} submitted to Stripe ({', '.join(sorted(sent))}).",
                actor=actor,
                data={"dispute": dispute.stripe_dispute_id, "fields": sorted(sent)},
            )
    return True
