"""One function per email kind, each over a template triple under templates/emails/:
`<name>_subject.txt`, `<name>.txt`, `<name>.html` (as healthchecks' hc/lib/emails.py does).

Each function renders once, stores the row inside the caller's transaction and queues it on
commit (`sending.queue_on_commit`). The caller passes in what the outbox must not compute itself
(a sign-in URL belongs to accounts, an amount's wording to billing.models.orders.format_money):
the outbox imports no order rules. docs/design.md, "How to add an email", says how to add one.
"""

import logging

from django.conf import settings
from django.db import IntegrityError, transaction
from django.template.loader import render_to_string

from .models import Kind, OutboundEmail
from .sending import queue_on_commit, support_email

logger = logging.getLogger("outbox")


def render_email(template: str, context: dict) -> tuple[str, str, str]:
    """Render the triple `emails/<template>…`; returns (subject on one line, text, HTML).
    Every template also gets `support_email` and `site_url`. Raises TemplateDoesNotExist."""
    context = {"support_email": support_email(), "site_url": settings.SITE_URL, **context}
    subject = render_to_string(f"emails/{template}_subject.txt", context).strip()
    text = render_to_string(f"emails/{template}.txt", context)
    html = render_to_string(f"emails/{template}.html", context)
    return " ".join(subject.split()), text, html


def _queue(kind: str, to: str, template: str, context: dict, *, inline: bool = False) -> OutboundEmail:
    subject, text, html = render_email(template, context)
    email = OutboundEmail.objects.create(kind=kind, to=to, subject=subject, body_text=text, body_html=html)
    queue_on_commit(email, inline=inline)
    return email


def _queue_for_order(order, kind: str, context: dict, *, key: str = "") -> OutboundEmail | None:
    """One email of `kind` about `order`, to the order's address. The database refuses a second
    email of the same kind for an order (or, with a `key`, a second email with that key), and a
    second access email (ACCESS_KINDS); then this returns None and queues nothing."""
    subject, text, html = render_email(kind, {"order": order, "plan": order.plan, **context})
    try:
        with transaction.atomic():
            email = OutboundEmail.objects.create(
                order=order, kind=kind, to=order.email, subject=subject, body_text=text, body_html=html, key=key
            )
    except IntegrityError:
        logger.info("order %s already has its %s email %s; not queuing another", order.reference, kind, key)
        return None
    order.log("email:queued", f"{email.get_kind_display()} email queued to {order.email}.", actor="system")
    queue_on_commit(email)
    return email


def send_confirmation(order, *, signin_url: str, subscription=None, order_url: str = "") -> OutboundEmail | None:
    """The access email of an order fulfilled on time (billing.fulfilment decides which).
    `signin_url` is the customer's sign-in link (accounts.signin.signin_url); `order_url` the
    signed link to the order's page (billing.order_links.order_url), left out when empty.
    Returns the row, or None when the order already has an access email (invariant I3)."""
    context = {"signin_url": signin_url, "subscription": subscription, "order_url": order_url}
    return _queue_for_order(order, Kind.CONFIRMATION, context)


def send_recovery(order, *, signin_url: str, subscription=None, order_url: str = "") -> OutboundEmail | None:
    """The access email of an order fulfilled late or by a non-webhook path: it says sorry and
    what happened. Same arguments and result as `send_confirmation`."""
    context = {"signin_url": signin_url, "subscription": subscription, "order_url": order_url}
    return _queue_for_order(order, Kind.RECOVERY, context)


def send_refund(
    order,
    *,
    key: str,
    amount: str,
    refunded: str,
    card_last4: str = "",
    full: bool = False,
    had_access: bool = True,
    access_until=None,
    order_url: str = "",
) -> OutboundEmail | None:
    """The email for one refund of `order`, once per `key` (billing.refunds passes
    "refund:<Stripe refund id>"). The caller words the money (billing's format_money): `amount`
    is this refund, `refunded` the order's refunded total so far; `card_last4` the card's last
    four digits ("" when unknown); `full` whether the whole payment is now refunded; `had_access`
    whether the order ever gave access (a full refund then ends it today); `access_until`
    (datetime or None) when access ends if it continues; `order_url` the signed link to the
    order's page (left out when empty). Returns the row, or None when an email with this key already exists."""
    context = {
        "amount": amount,
        "refunded": refunded,
        "card_last4": card_last4,
        "full": full,
        "had_access": had_access,
        "access_until": access_until,
        "order_url": order_url,
    }
    return _queue_for_order(order, Kind.REFUND, context, key=key)


def send_signin(user, *, signin_url: str) -> OutboundEmail:
    """A sign-in link to `user.email` (not tied to an order: one may ask as often as they like).
    Returns the row."""
    return _queue(Kind.SIGNIN, user.email, "signin", {"user": user, "signin_url": signin_url})


def send_staff_invite(user, *, invite_url: str, invited_by: str, days: int) -> OutboundEmail:
    """An invite to the support team: a one-time link (`invite_url`, made by support/invites.py)
    to set a password and a second factor. Kind "signin" (it is the person's first sign-in; no
    new kind, so no outbox migration), its own template triple "staff_invite". Returns the row."""
    context = {"user": user, "invite_url": invite_url, "invited_by": invited_by, "days": days}
    return _queue(Kind.SIGNIN, user.email, "staff_invite", context)


def send_case_opened(case, *, reply_hours: int) -> OutboundEmail:
    """Tells a customer who opened a support case that a person is on it, within `reply_hours`
    hours. Not tied to the order: a customer may ask more than once. Returns the row."""
    return _queue(Kind.CASE_OPENED, case.email, "case_opened", {"case": case, "reply_hours": reply_hours})


def send_alert(alert, *, admin_url: str, what_to_do: str) -> list[OutboundEmail]:
    """A new support alert, to every address in settings.SUPPORT_EMAILS, sent by the q cluster.
    `admin_url` is an absolute link to the order (or the admin index). Returns the rows."""
    context = {"alert": alert, "follow_up": False, "admin_url": admin_url, "what_to_do": what_to_do}
    return [_queue(Kind.ALERT, address, "alert", context) for address in settings.SUPPORT_EMAILS]


def send_followup(alert, *, admin_url: str, what_to_do: str) -> list[OutboundEmail]:
    """The one reminder for an alert still open after ALERT_FOLLOWUP_HOURS: the alert triple,
    worded as a follow-up. Same arguments and result as `send_alert`."""
    context = {"alert": alert, "follow_up": True, "admin_url": admin_url, "what_to_do": what_to_do}
    return [_queue(Kind.ALERT, address, "alert", context) for address in settings.SUPPORT_EMAILS]


def send_watchdog(alert, *, admin_url: str, what_to_do: str) -> list[OutboundEmail]:
    """A watchdog alert (reconciliation stopped, outbox stuck), to every support address, sent
    by this process right after the commit (`queue_on_commit(inline=True)`): the q cluster may
    be what died. Same arguments and result as `send_alert`."""
    context = {"alert": alert, "follow_up": False, "admin_url": admin_url, "what_to_do": what_to_do}
    return [_queue(Kind.WATCHDOG, address, "alert", context, inline=True) for address in settings.SUPPORT_EMAILS]


def send_watchdog_recovered(alert, *, admin_url: str, what_to_do: str, recovery: str) -> list[OutboundEmail]:
    """ "RECOVERED": a watchdog alert is over; `recovery` says what came back. Sent inline like
    `send_watchdog`; returns the rows."""
    context = {
        "alert": alert,
        "follow_up": False,
        "admin_url": admin_url,
        "what_to_do": what_to_do,
        "recovery": recovery,
    }
    return [
        _queue(Kind.WATCHDOG, address, "alert_recovered", context, inline=True) for address in settings.SUPPORT_EMAILS
    ]
