"""What a support person can do to an order. Each action is one function: it checks, acts,
writes the order's timeline with the staff user as actor, and returns a sentence to show.

The admin calls these; so do tests. Permissions and CSRF are the admin's job (support/admin.py).
"""

import uuid
from dataclasses import dataclass
from datetime import timedelta

import stripe
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.addresses import normalize_email
from accounts.signin import send_signin_link
from billing import adoption, email_change, gateway, refunds
from billing.fulfilment import NotFulfillable, PaymentMismatch, check_payment, fulfil
from billing.models import Order, OutboundEmail
from billing.models.orders import format_money

from .models import RefundRequest, SupportCase

CLAIM_MINUTES = 30


class ActionRefused(Exception):
    """The action cannot be done; the message says why, for the support person."""


@dataclass
class Done:
    message: str
    order: Order | None = None


def actor(user) -> str:
    """The timeline's actor for a staff `user`: "support:<username>"."""
    return f"support:{user.get_username()}"


def fulfil_verified(order: Order, user) -> Done:
    """Fulfil `order` for `user` after asking Stripe; returns Done with the sentence to show.

    Raises ActionRefused when the order has no PaymentIntent, Stripe cannot be reached, the
    payment has not succeeded, the order has no email, or fulfil() refuses it (amount, currency
    or owner differ: invariant I1). An order already fulfilled is a Done, not a refusal."""
    if order.state == Order.State.FULFILLED:
        return Done(f"{order.reference} was already fulfilled; nothing done.", order)
    if not order.stripe_payment_intent_id:
        raise ActionRefused("This order has no Stripe payment to verify. Attach the payment first.")
    try:
        payment_intent = gateway.retrieve_payment_intent(order.stripe_payment_intent_id)
    except stripe.StripeError as error:
        raise ActionRefused(f"Could not reach Stripe to verify the payment ({error.user_message or error}).") from error
    if payment_intent["status"] != "succeeded":
        raise ActionRefused(f"Stripe says the payment is {payment_intent['status']}, not succeeded. Not fulfilled.")
    if not order.email:
        raise ActionRefused("Set the customer's email on the order first.")
    try:
        result = fulfil(order, via=Order.Via.SUPPORT, payment_intent=payment_intent, actor=actor(user))
    except (NotFulfillable, PaymentMismatch) as problem:
        raise ActionRefused(str(problem)) from problem
    if result.order.state == Order.State.REFUNDED:  # refunded in full before anyone fulfilled it
        return Done(f"{order.reference} was refunded in full before it was fulfilled; no access given.", result.order)
    _clear_attention(result.order, user)
    if not result.fulfilled_now:  # the webhook, the return page or reconciliation got there first
        return Done(f"{order.reference} was already fulfilled; nothing done.", result.order)
    return Done(f"{order.reference} fulfilled; the customer gets the {result.email_kind} email.", result.order)


def resend_access(order: Order, user) -> Done:
    """A fresh sign-in link by email (the old one may have expired or been used); returns Done.
    Raises ActionRefused unless the order is fulfilled."""
    if order.state != Order.State.FULFILLED:
        raise ActionRefused("Only a fulfilled order has access to resend. Fulfil it first.")
    customer = order.subscription.user
    with transaction.atomic():
        send_signin_link(customer)
        order.log("support:resend", f"Sent a fresh sign-in link to {customer.email}.", actor=actor(user))
    return Done(f"A fresh sign-in link is on its way to {customer.email}.", order)


def change_email(order: Order, user, *, new_email: str, reason: str = "") -> Done:
    """Correct `order`'s email to `new_email` for `user` (who needs billing.change_order_email):
    the access moves to that address's account, created or joined, and a fresh sign-in link goes
    there (billing.email_change). `reason` (optional) is added to the timeline. Returns Done
    naming the old and new address; raises ActionRefused without the permission, and for an
    invalid or identical address, a staff or closed account's, or an order with no access."""
    if not user.has_perm("billing.change_order_email"):
        raise ActionRefused("You do not have permission to change an order's email.")
    try:
        change = email_change.change_email(order, new_email, actor=actor(user))
    except email_change.EmailChangeRefused as refused:
        raise ActionRefused(str(refused)) from refused
    if reason := (reason or "").strip():
        order.log("support:note", reason[:5000], actor=actor(user))
    changed = f"{order.reference}: email changed from {change.old or '(none)'} to {change.new}"
    if not change.link_sent:  # paid, not fulfilled yet
        return Done(f"{changed}; fulfilling it sends the access email there.", change.order)
    account = "their existing account" if change.joined_existing else "a new account"
    return Done(f"{changed}, access moved to {account}; a fresh sign-in link is on its way there.", change.order)


def refund(order: Order, user, *, amount_cents: int, reason: str, token: uuid.UUID) -> Done:
    """Refund `amount_cents` (integer minor units, the order's currency) of `order` for `user`,
    who needs billing.refund_order; returns Done with the sentence to show.

    The console keeps who may and the audit of the request (`RefundRequest`, unique on `token`,
    so a double submit of the same form refunds once); the money rule is the core's
    (`billing.refunds.refund_payment`: row lock, amount check, Stripe with the idempotency key
    `order-<id>-refund-<token>`, the local record). Raises ActionRefused without the permission,
    without a reason, for a non-positive amount, and when the core refuses (no payment, too much,
    Stripe said no); nothing is recorded then.
    """
    if not user.has_perm("billing.refund_order"):
        raise ActionRefused("You do not have permission to refund.")
    reason = (reason or "").strip()
    if not reason:
        raise ActionRefused("A reason is required for a refund.")
    if amount_cents <= 0:
        raise ActionRefused("The refund amount must be more than zero.")
    with transaction.atomic():
        order = Order.objects.select_for_update().get(pk=order.pk)
        # Before the state checks: a double submit of a full refund finds the order refunded.
        if RefundRequest.objects.filter(token=token).exists():
            return Done("This refund was already made (the form was submitted twice); nothing more done.", order)
        try:
            with transaction.atomic():
                request = RefundRequest.objects.create(
                    token=token, order=order, amount_cents=amount_cents, reason=reason, requested_by=actor(user)
                )
        except IntegrityError:
            return Done("This refund was already made (the form was submitted twice); nothing more done.", order)
        try:  # the money rule (state, amount, Stripe, record) is the core's; a refusal rolls the request row back
            stripe_refund = refunds.refund_payment(
                order,
                amount_cents=amount_cents,
                reason=reason,
                idempotency_key=f"order-{order.id}-refund-{token}",
                actor=actor(user),
                metadata={"order_id": str(order.id), "reference": order.reference, "by": actor(user)},
            )
        except refunds.RefundRefused as refused:
            raise ActionRefused(str(refused)) from refused
        request.stripe_refund_id = stripe_refund.id
        request.save(update_fields=["stripe_refund_id"])
    order.refresh_from_db()
    return Done(f"Refunded {format_money(amount_cents, order.currency)} on {order.reference}.", order)


def extend(order: Order, user, *, days: int, reason: str = "") -> Done:
    """Goodwill: push the subscription's end date out by `days` (1 to 366) from its end or from
    today, whichever is later; returns Done. Raises ActionRefused for days outside 1..366 or an
    order that is not fulfilled (it has no subscription)."""
    if not 1 <= days <= 366:
        raise ActionRefused("Extend by 1 to 366 days.")
    if order.state != Order.State.FULFILLED:
        raise ActionRefused("Only a fulfilled order has a subscription to extend.")
    with transaction.atomic():
        subscription = order.subscription.__class__.objects.select_for_update().get(pk=order.subscription.pk)
        before = subscription.ends_at
        subscription.ends_at = max(before, timezone.now()) + timedelta(days=days)
        subscription.save(update_fields=["ends_at"])
        order.log(
            "support:extend",
            f"Extended by {days} days: {before:%Y-%m-%d} → {subscription.ends_at:%Y-%m-%d}. {reason}".strip(),
            actor=actor(user),
            data={"days": days, "from": before.isoformat(), "to": subscription.ends_at.isoformat()},
        )
    return Done(f"Access now ends on {subscription.ends_at:%d %B %Y}.", order)


def attach_payment(stripe_id: str, user, *, email: str = "") -> Done:
    """A bare Stripe payment (`stripe_id`: pi_… or ch_…) becomes an order, fulfilled (the access
    email as fulfil() chooses it); `email` (optional) is used when Stripe has none. Returns Done.
    Raises ActionRefused, with the reason, unless the id is well formed, Stripe knows it and can
    be reached, the payment succeeded, has no order yet, buys a plan and has an email. The order
    is made by billing.adoption (plan_for_payment, email_for_payment, create_order), the same
    rule reconciliation and self-service follow (exactly a plan's amount and currency)."""
    stripe_id = (stripe_id or "").strip()
    if not stripe_id.startswith(("pi_", "ch_")) or len(stripe_id) > 255:
        raise ActionRefused("Paste a Stripe PaymentIntent (pi_…) or charge (ch_…) id.")
    try:
        if stripe_id.startswith("ch_"):
            charge = gateway.retrieve_charge(stripe_id)
            if not charge.payment_intent:
                raise ActionRefused(f"Charge {stripe_id} has no PaymentIntent; attach it from the Stripe dashboard.")
            stripe_id = charge.payment_intent if isinstance(charge.payment_intent, str) else charge.payment_intent.id
        payment_intent = gateway.retrieve_payment_intent(stripe_id)
    except stripe.InvalidRequestError as error:
        raise ActionRefused(f"Stripe has no payment {stripe_id}.") from error
    except stripe.StripeError as error:
        raise ActionRefused(f"Could not reach Stripe ({error.user_message or error}).") from error
    if payment_intent.status != "succeeded":
        raise ActionRefused(f"That payment is {payment_intent.status}, not succeeded. Nothing created.")
    existing = Order.objects.filter(stripe_payment_intent_id=payment_intent.id).first()
    if existing is not None:
        raise ActionRefused(f"That payment already belongs to order {existing.reference}.")
    plan = adoption.plan_for_payment(payment_intent.amount, payment_intent.currency)
    if plan is None:
        price = format_money(payment_intent.amount, payment_intent.currency)
        raise ActionRefused(
            f"No plan costs {price}: this payment buys nothing here (a Payment Link or an invoice for something "
            "else?). Nothing created. If it was meant for PaidUp, refund it in Stripe and write to the customer."
        )
    email = normalize_email(email) or adoption.email_for_payment(payment_intent)
    if not email:
        raise ActionRefused("Stripe has no email for that payment: type the customer's email and attach again.")
    try:
        with transaction.atomic():
            order = _attach(payment_intent, plan, email, user)
    except IntegrityError as error:  # someone attached it at the same moment
        other = Order.objects.filter(stripe_payment_intent_id=payment_intent.id).first()
        raise ActionRefused(f"That payment already belongs to order {other.reference if other else '?'}.") from error
    order.refresh_from_db()
    sent = order.emails.filter(kind__in=OutboundEmail.ACCESS_KINDS).first()
    return Done(
        f"Created {order.reference} from {payment_intent.id} and fulfilled it"
        + (f"; the customer gets the {sent.kind} email." if sent else "."),
        order,
    )


def _attach(payment_intent, plan, email: str, user) -> Order:
    order = adoption.create_order(
        payment_intent,
        plan,
        email,
        actor=actor(user),
        kind="order:attached",
        message=f"Created from Stripe payment {payment_intent.id}.",
    )
    check_payment(order, payment_intent)
    fulfil(order, via=Order.Via.SUPPORT, payment_intent=payment_intent, actor=actor(user))
    return order


def note(order: Order, user, text: str) -> Done:
    """Add `text` (at most 5,000 characters kept) to the timeline; returns Done. Raises
    ActionRefused for an empty note."""
    text = (text or "").strip()
    if not text:
        raise ActionRefused("The note is empty.")
    order.log("support:note", text[:5000], actor=actor(user))
    return Done("Note added.", order)


def claim(order: Order, user) -> Done:
    """ "I'm on it" for CLAIM_MINUTES; returns Done. Raises ActionRefused while someone else
    holds the claim.

    One conditional UPDATE: of two people claiming at the same moment, exactly one wins.
    """
    now = timezone.now()
    until = now + timedelta(minutes=CLAIM_MINUTES)
    free = Q(claimed_until__isnull=True) | Q(claimed_until__lte=now) | Q(claimed_by=user)
    if not Order.objects.filter(free, pk=order.pk).update(claimed_by=user, claimed_until=until):
        taken = Order.objects.select_related("claimed_by").get(pk=order.pk)
        raise ActionRefused(f"{taken.claimed_by} is on it until {timezone.localtime(taken.claimed_until):%H:%M}.")
    order.log("support:claim", f"{user.get_username()} is on it.", actor=actor(user))
    return Done(f"You're on it until {timezone.localtime(until):%H:%M}.", order)


def resolve(order: Order, user, *, note_text: str = "") -> Done:
    """Clear the order's "needs attention", resolve its open alerts and support cases, release
    the claim, and log `note_text`; returns Done. Raises nothing of its own."""
    from billing.alerts import resolve as resolve_alert

    Order.objects.filter(pk=order.pk).update(needs_attention=False, attention_reason="", claimed_until=None)
    for alert in order.alerts.filter(resolved_at__isnull=True):
        resolve_alert(alert.key)
    order.cases.filter(status=SupportCase.Status.OPEN).update(
        status=SupportCase.Status.RESOLVED, resolved_at=timezone.now(), resolved_by=actor(user)
    )
    order.log("support:resolved", note_text or "Marked resolved.", actor=actor(user))
    return Done(f"{order.reference} marked resolved.", order)


def _clear_attention(order: Order, user) -> None:
    if order.needs_attention:
        Order.objects.filter(pk=order.pk).update(needs_attention=False, attention_reason="")
