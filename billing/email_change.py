"""Correcting an order's email: the one way an order's address changes after checkout.

Two ways in call `change_email()`: support's console action "Change email"
(support/actions.py, with its own permission) and the customer on the order page, once, after
the access email bounced (billing/order_views.py: only the browser holding the order's reference
cookie is offered it).

What a change does, in one transaction under the order's row lock:
- the order's email becomes the new address (timeline: old and new, and who);
- the access moves to the account of the new address: that account is created, or, when one
  exists, joined (the subscription is that account's now; the old account keeps anything else
  it has);
- a fresh sign-in link goes to the new address through the outbox (the order's confirmation
  email exists once per order, invariant I3, so the link is the access email that can be sent
  again; it is what "Resend access email" sends too);
- the order's open "Access email bounced" alerts are resolved: the address they were about is
  gone.

A paid order not yet fulfilled only changes its address: fulfilment sends the access email to
the new one. Refused, with nothing changed: an invalid address, the same address, a staff or
deactivated account's address, an order that has no access to give (pending, failed,
refunded), and a second customer correction.
"""

from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator
from django.db import transaction
from django.utils import timezone

from accounts.addresses import normalize_email
from accounts.models import User
from accounts.signin import send_signin_link

from . import access, alerts
from .delivery import unreachable_access_email
from .models import Alert, Order, OutboundEmail

CHANGEABLE = (Order.State.PAID, Order.State.FULFILLED)


class EmailChangeRefused(Exception):
    """The change cannot be made; the message says why, in words for whoever asked."""


@dataclass(frozen=True)
class EmailChange:
    """A change made: the order (reloaded), the old and new address, whether the new address
    already had an account (joined) and whether a sign-in link was queued."""

    order: Order
    old: str
    new: str
    joined_existing: bool
    link_sent: bool


@dataclass(frozen=True)
class Preview:
    """What a change to `new` would do, for a confirmation page; `problem` is "" when it can be
    made, else the refusal `change_email` would raise."""

    old: str
    new: str
    problem: str
    existing_account: bool
    existing_access_until: object  # datetime of the account's active access, or None


def customer_may_correct(order: Order) -> OutboundEmail | None:
    """The bounced access email the customer may correct the address of, from the order page;
    None when the order is not fulfilled, its newest access email was not refused, or the
    customer already used their one correction. (Whether this browser may see it is the page's
    rule: the order's reference cookie.)"""
    if order.state != Order.State.FULFILLED or order.customer_email_corrected_at is not None:
        return None
    return unreachable_access_email(order)


def check_address(order: Order, new_email: str) -> str:
    """The normal form of `new_email` for `order`; raises EmailChangeRefused when it is not an
    address, is the order's own, or belongs to a staff or deactivated account, or when the
    order has no access to move (state not paid or fulfilled)."""
    new = normalize_email(new_email)
    try:
        EmailValidator()(new)
    except ValidationError:
        raise EmailChangeRefused("That is not an email address. Please check it.") from None
    if len(new) > 254:
        raise EmailChangeRefused("That is not an email address. Please check it.")
    if new == order.email:
        raise EmailChangeRefused(f"{new} is already this order's email; nothing to change.")
    if order.state not in CHANGEABLE:
        raise EmailChangeRefused(f"The order is {order.get_state_display().lower()}: there is no access to move.")
    existing = User.objects.filter(email=new).first()
    if existing is not None and (existing.is_staff or not existing.is_active):
        raise EmailChangeRefused(f"{new} belongs to a staff or closed account; access cannot be moved there.")
    return new


def preview(order: Order, new_email: str) -> Preview:
    """What `change_email(order, new_email, …)` would do now (see Preview); changes nothing."""
    try:
        new = check_address(order, new_email)
    except EmailChangeRefused as refused:
        return Preview(order.email, normalize_email(new_email), str(refused), False, None)
    existing = User.objects.filter(email=new).first()
    return Preview(order.email, new, "", existing is not None, access.access_until(new) if existing else None)


def change_email(order: Order, new_email: str, *, actor: str, by_customer: bool = False) -> EmailChange:
    """Give `order` the address `new_email` (module docstring) for `actor` (the timeline's:
    "support:<name>" or "customer"). With `by_customer`, the order's one customer correction is
    used up (a conditional UPDATE: of two tabs at once, one wins). Returns an EmailChange;
    raises EmailChangeRefused with nothing changed."""
    with transaction.atomic():
        order = Order.objects.select_for_update(of=("self",)).select_related("plan").get(pk=order.pk)
        try:
            new = check_address(order, new_email)
        except EmailChangeRefused:
            if by_customer and normalize_email(new_email) != order.email:
                # The customer's form says nothing about whose address it is (staff, closed).
                raise EmailChangeRefused(
                    "We can't send your access to that address. Please check it, or write to us."
                ) from None
            raise
        if by_customer and unreachable_access_email(order) is None:
            raise EmailChangeRefused("Your sign-in email was not refused, so there is nothing to correct here.")
        if by_customer and not Order.objects.filter(pk=order.pk, customer_email_corrected_at__isnull=True).update(
            customer_email_corrected_at=timezone.now()
        ):
            raise EmailChangeRefused("This order's email was already corrected once. Please write to us instead.")
        old = order.email
        subscription = getattr(order, "subscription", None) if order.state == Order.State.FULFILLED else None
        moved_from = ""
        if subscription is None:  # not fulfilled yet: fulfilment makes or finds the account
            user, created = None, not User.objects.filter(email=new).exists()
        else:
            user, created = User.objects.get_or_create(email=new)
            subscription = type(subscription).objects.select_for_update().get(pk=subscription.pk)
            moved_from = subscription.user.email
            subscription.user = user
            subscription.save(update_fields=["user"])
            # Joining an account that already has access: these paid days come after that access.
            access.rechain(access.customer_for_update(new), actor=actor)
        Order.objects.filter(pk=order.pk).update(email=new, updated_at=timezone.now())
        order.email = new
        account = "a new account" if created else "the existing account"
        order.log(
            "email:changed",
            f"Email changed from {old or '(none)'} to {new}"
            + (" by the customer after the access email could not be delivered" if by_customer else "")
            + (f"; access moved from {moved_from}'s account to {account} of {new}" if subscription else "")
            + ".",
            actor=actor,
            data={"from": old, "to": new, "joined_existing": not created, "by_customer": by_customer},
        )
        for alert in order.alerts.filter(reason=Alert.Reason.ACCESS_BOUNCED, resolved_at__isnull=True):
            alerts.resolve(alert.key)
        if subscription is not None:
            send_signin_link(user)
            order.log("email:queued", f"Sign-in link email queued to {new}.", actor=actor)
    order.refresh_from_db()
    return EmailChange(order, old, new, joined_existing=not created, link_sent=subscription is not None)
