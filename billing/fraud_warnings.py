"""Early fraud warnings (Radar `issfr_…`): recorded once, linked, alerted once, and the
EFW_AUTO_REFUND policy.

A card issuer's early fraud warning usually comes before a dispute; a refunded charge cannot be
disputed, so refunding at once usually costs less than the dispute's fee and the lost evidence
fight (DESIGN.md, "Stripe's answers"). `record_warning()` is what the webhook and reconciliation
call (idempotent, order-independent, like billing.disputes.record_dispute); `auto_refund()`
applies the policy through the core's one refund rule (billing.refunds.refund_payment) under a
key derived from the warning, so a retried event refunds once.
"""

import logging
from datetime import datetime

import stripe
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from . import refunds
from .alerts import raise_alert
from .disputes import ACTOR_POLICY, DISPUTE_WINDOW, field, find_order, stripe_id
from .models import Alert, EarlyFraudWarning, Order

logger = logging.getLogger(__name__)


def record_warning(obj, *, event_created: int, actor: str) -> EarlyFraudWarning | None:
    """Record Stripe's early fraud warning `obj` (`id` issfr_…, `charge`, `payment_intent`,
    `fraud_type`, `actionable`) as known at `event_created`. Returns the row, or None without an
    id (logged and alerted). Alerts support once per warning, then applies EFW_AUTO_REFUND."""
    warning_id = stripe_id(obj)
    if not warning_id.startswith("issfr_"):
        logger.error("early fraud warning event without a warning id: recorded nothing")
        raise_alert(
            Alert.Reason.WEBHOOK_FAILED,
            "A Stripe early fraud warning event had no warning id; nothing was recorded.",
            key=f"fraud_warning_bad:{event_created}",
        )
        return None
    with transaction.atomic():
        warning = EarlyFraudWarning.objects.select_for_update().filter(stripe_warning_id=warning_id).first()
        created = warning is None
        if created:
            try:
                with transaction.atomic():
                    warning = EarlyFraudWarning.objects.create(stripe_warning_id=warning_id)
            except IntegrityError:
                created = False
                warning = EarlyFraudWarning.objects.select_for_update().get(stripe_warning_id=warning_id)
        newer = event_created >= warning.stripe_updated
        for name, value in (
            ("charge_id", stripe_id(field(obj, "charge"))),
            ("payment_intent_id", stripe_id(field(obj, "payment_intent"))),
            ("fraud_type", str(field(obj, "fraud_type", ""))[:40]),
        ):
            if value and (newer or not getattr(warning, name)):
                setattr(warning, name, value)
        if newer:
            warning.actionable = bool(field(obj, "actionable", warning.actionable))
            warning.stripe_updated = event_created
        if warning.order_id is None:
            warning.order = find_order(warning.payment_intent_id, warning.charge_id)
        warning.save()
        if created:
            _alert_warning(warning, actor=actor)
        auto_refund(warning)
    return warning


def _alert_warning(warning: EarlyFraudWarning, *, actor: str) -> None:
    order = warning.order
    if order is not None:
        order.log(
            "fraud_warning",
            f"Early fraud warning {warning.stripe_warning_id} ({warning.fraud_type or 'fraud'}) from the card issuer.",
            actor=actor,
            data={"warning": warning.stripe_warning_id},
        )
    about = (
        f"order {order.reference} ({order.email or 'no email'}, {order.price})"
        if order
        else f"charge {warning.charge_id or '?'}, which matches no order here yet (linked when it appears)"
    )
    raise_alert(
        Alert.Reason.FRAUD_WARNING,
        f"The card issuer warns that {about} may be fraudulent ({warning.fraud_type or 'unspecified'}). "
        "A dispute usually follows; refunding now avoids it and its fee.",
        order=order,
        key=f"fraud_warning:{warning.stripe_warning_id}",
    )


def auto_refund_reason(warning: EarlyFraudWarning, now: datetime | None = None) -> str:
    """Why EFW_AUTO_REFUND would refund this warning's charge now, or "" when it must not: the
    policy is off, the charge is disputed, refunded (in part or full) or not paid, it is not
    below DISPUTE_FEE_CENTS under `below_fee`, or older than the dispute window under `always`."""
    policy, order = settings.EFW_AUTO_REFUND, warning.order
    if policy == "off" or order is None or warning.auto_refunded_at or not warning.actionable:
        return ""
    if order.state not in (Order.State.PAID, Order.State.FULFILLED) or order.refunded_cents:
        return ""
    if order.disputes.exists():
        return ""
    if policy == "below_fee":
        if order.amount_cents >= settings.DISPUTE_FEE_CENTS:
            return ""
        return (
            f"EFW_AUTO_REFUND=below_fee: the charge ({order.price}) is smaller than a dispute's fee "
            f"(DISPUTE_FEE_CENTS={settings.DISPUTE_FEE_CENTS}); waiting would cost more than refunding."
        )
    charged = order.charged_at or order.paid_at or order.created_at
    if (now or timezone.now()) - charged > DISPUTE_WINDOW:
        return ""
    return "EFW_AUTO_REFUND=always: refunded at the card issuer's early fraud warning, before a dispute."


def auto_refund(warning: EarlyFraudWarning) -> bool:
    """Apply EFW_AUTO_REFUND to `warning` (caller holds its row lock): refund the whole charge
    through billing.refunds.refund_payment under the key `efw-<issfr>-refund`, so a retried
    event refunds once (and `auto_refunded_at` is set in the same transaction). Returns whether
    it refunded now. A refusal (Stripe said no) raises nothing: it alerts support instead."""
    reason = auto_refund_reason(warning)
    if not reason:
        return False
    order = warning.order
    try:
        with transaction.atomic():
            refunds.refund_payment(
                order,
                amount_cents=order.amount_cents - order.refunded_cents,
                reason=f"Early fraud warning {warning.stripe_warning_id}. {reason}",
                idempotency_key=f"efw-{warning.stripe_warning_id}-refund",
                actor=ACTOR_POLICY,
                metadata={
                    "order_id": str(order.id),
                    "reference": order.reference,
                    "warning": warning.stripe_warning_id,
                },
            )
            warning.auto_refunded_at = timezone.now()
            warning.save(update_fields=["auto_refunded_at"])
    except (refunds.RefundRefused, stripe.StripeError) as refused:
        order.log("fraud_warning:auto_refund_failed", f"Automatic refund refused: {refused}", actor=ACTOR_POLICY)
        raise_alert(
            Alert.Reason.FRAUD_WARNING,
            f"EFW_AUTO_REFUND could not refund {order.reference}: {refused}. Refund it by hand.",
            order=order,
            key=f"fraud_refund_failed:{warning.stripe_warning_id}",
        )
        return False
    raise_alert(
        Alert.Reason.FRAUD_REFUNDED,
        f"{order.reference} ({order.price}) was refunded in full and its access ended, automatically: {reason}",
        order=order,
        key=f"fraud_refunded:{warning.stripe_warning_id}",
    )
    return True


def apply_policy_to_linked() -> int:
    """EFW_AUTO_REFUND for warnings whose order appeared or was paid after the warning (the
    webhook could not apply it then). Called by every reconciliation run; no query with `off`.
    Returns how many charges it refunded now."""
    if settings.EFW_AUTO_REFUND == "off":
        return 0
    candidates = EarlyFraudWarning.objects.filter(
        auto_refunded_at__isnull=True,
        actionable=True,
        order__state__in=[Order.State.PAID, Order.State.FULFILLED],
        order__refunded_cents=0,
    ).values_list("pk", flat=True)
    refunded = 0
    for pk in candidates:
        with transaction.atomic():
            refunded += auto_refund(EarlyFraudWarning.objects.select_for_update().get(pk=pk))
    return refunded
