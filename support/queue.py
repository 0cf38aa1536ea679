"""The support queue: what needs a human now, oldest first, for the admin's landing page.

One row per kind of work, each with its count, the age of its oldest item, a link to the
filtered list, and the oldest few items linking straight to the order. A constant number
of queries whatever the backlog: two per row, plus the health report.
"""

# size: one short function per row of the queue, in the order the page shows them; split across
# modules, the order support reads the rows in would no longer be visible in one place.

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlencode

from django.db.models import Q
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils import timezone
from django.utils.text import Truncator

from billing import health
from billing.disputes import due_in_words
from billing.models import Alert, Dispute, EarlyFraudWarning, Order, OutboundEmail

from .models import SupportCase

SHOWN = 5  # items listed per row; the row's link leads to the rest


@dataclass
class Item:
    title: str
    detail: str
    since: datetime | None
    url: str | None
    claimed_by: str = ""
    claimed_until: datetime | None = None
    # A one-click fix beside the item (it opens that action's confirmation page), or None.
    action_url: str | None = None
    action_label: str = ""


@dataclass
class Row:
    key: str
    title: str
    todo: str  # what to do, in one line
    count: int
    list_url: str | None
    items: list[Item] = field(default_factory=list)

    @property
    def oldest(self) -> datetime | None:
        """When the row's oldest shown item began waiting (items come oldest first); None when
        the row lists no item."""
        return self.items[0].since if self.items else None


@dataclass
class Queue:
    rows: list[Row]
    health: dict

    @property
    def total(self) -> int:
        """How many things wait for a person, all rows together (the sum of the rows' counts)."""
        return sum(row.count for row in self.rows)


def age(since: datetime | None, now: datetime | None = None) -> str:
    """'45 s', '12 min', '3 h 5 min', '4 days': short enough for a table cell."""
    if since is None:
        return ""
    seconds = max(0, int(((now or timezone.now()) - since).total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 48 * 3600:
        hours, minutes = divmod(seconds // 60, 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{seconds // 86400} days"


def _url(user, perm: str, name: str, *args, query: dict | None = None) -> str | None:
    """A link only where the user may follow it."""
    if not user.has_perm(perm):
        return None
    url = reverse(name, args=args)
    return f"{url}?{urlencode(query)}" if query else url


def order_url(order: Order) -> str:
    """The console's page for `order` (its admin change view), as a path."""
    return reverse("admin:billing_order_change", args=[order.pk])


def _order_item(order: Order, detail: str, since: datetime | None) -> Item:
    claimed = order.claimed_until and order.claimed_until > timezone.now()
    return Item(
        title=f"{order.reference} · {order.email or 'no email'} · {order.price}",
        detail=detail,
        since=since,
        url=order_url(order),
        claimed_by=str(order.claimed_by) if claimed else "",
        claimed_until=order.claimed_until if claimed else None,
    )


# Orders that need a person, by queue row: also the changelist's "Needs a human" filter.
ORDER_ROWS = {
    # Paid here, or pending here while the last Stripe answer we stored says it succeeded (the
    # checkout crashed after the charge and the webhook has not arrived).
    "paid": Q(state=Order.State.PAID) | Q(state=Order.State.PENDING, stripe_payment_status="succeeded"),
    "attention": Q(needs_attention=True),
    "unknown": Q(retroactive=True, needs_attention=False, alerts__resolved_at__isnull=True, alerts__isnull=False),
}


def orders_in(key: str):
    """The orders of queue row `key` ("paid", "attention" or "unknown": ORDER_ROWS), as a
    distinct QuerySet. Raises KeyError for any other key."""
    return Order.objects.filter(ORDER_ROWS[key]).distinct()


# size: one row per kind of work, in the order the landing page shows them; a list, not logic.
def build(user) -> Queue:
    """The landing page's queue for staff member `user`, rows in the order the page shows them:
    disputes, early fraud warnings, charged with no access yet, needing attention, unknown
    payments, payments that bought nothing, possible double purchases, support cases, failed
    emails, bounced access emails, failed webhooks. Each Row has its count, its oldest SHOWN
    items (oldest first) and a link to the full list only where `user` has the permission to
    follow it; the Queue carries the health report too. A constant number of queries whatever
    the backlog (module docstring). Raises nothing of its own.
    """
    now = timezone.now()
    orders = Order.objects.select_related("claimed_by", "plan")
    changelist = "admin:billing_order_changelist"
    rows = [_disputes_row(user, now), _warnings_row(user)]

    paid = orders_in("paid")
    rows.append(
        Row(
            "paid",
            "Charged, no access yet",
            "The customer was charged and has no access. Open it and fulfil (it checks with Stripe first).",
            paid.count(),
            _url(user, "billing.view_order", changelist, query={"queue": "paid"}),
            [
                _order_item(o, "charged, no access yet", o.paid_at or o.created_at)
                for o in orders.filter(ORDER_ROWS["paid"]).order_by(Coalesce("paid_at", "created_at"))[:SHOWN]
            ],
        )
    )

    attention = orders_in("attention")
    rows.append(
        Row(
            "attention",
            "Needs a decision",
            "A machine could not finish it (no email, amount mismatch, fulfilment failing). Read the reason.",
            attention.count(),
            _url(user, "billing.view_order", changelist, query={"queue": "attention"}),
            [
                _order_item(o, o.attention_reason or "needs attention", o.created_at)
                for o in orders.filter(needs_attention=True).order_by("created_at")[:SHOWN]
            ],
        )
    )

    unknown = orders_in("unknown")
    rows.append(
        Row(
            "unknown",
            "Unknown payments recovered",
            "Found in Stripe with no order; reconciliation created and fulfilled the order. "
            "Check the recovery email went out, then mark resolved.",
            unknown.count(),
            _url(user, "billing.view_order", changelist, query={"queue": "unknown"}),
            [
                _order_item(o, "created from a Stripe payment", o.created_at)
                for o in orders.filter(pk__in=unknown.values("pk")).order_by("created_at")[:SHOWN]
            ],
        )
    )

    rows.append(_unmatched_row(user))
    rows.append(_double_purchase_row(user))

    cases = SupportCase.objects.filter(status=SupportCase.Status.OPEN)
    rows.append(
        Row(
            "cases",
            "Open support cases",
            "A customer wrote \u201ccharged but no access\u201d and the site could not settle it alone.",
            cases.count(),
            _url(
                user,
                "support.view_supportcase",
                "admin:support_supportcase_changelist",
                query={"status__exact": "open"},
            ),
            [
                Item(
                    title=f"{case.email}" + (f" · {case.order.reference}" if case.order else ""),
                    # The latest finding once, however often the customer asked (the case keeps them all).
                    detail=(case.latest_diagnosis or case.message[:120] or "no details")
                    + (f" (asked {case.times_asked} times)" if case.times_asked > 1 else ""),
                    since=case.created_at,
                    url=order_url(case.order)
                    if case.order
                    else _url(user, "support.view_supportcase", "admin:support_supportcase_change", case.pk),
                )
                for case in cases.select_related("order").order_by("created_at")[:SHOWN]
            ],
        )
    )

    failed_emails = OutboundEmail.objects.filter(status=OutboundEmail.Status.FAILED)
    rows.append(
        Row(
            "emails",
            "Emails that could not be sent",
            "The customer may be waiting for a link. Check the address, then resend access from the order.",
            failed_emails.count(),
            _url(
                user,
                "outbox.view_outboundemail",
                "admin:outbox_outboundemail_changelist",
                query={"status__exact": "failed"},
            ),
            [
                Item(
                    title=f"{email.get_kind_display()} to {email.to}"
                    + (f" · {email.order.reference}" if email.order else ""),
                    detail=(email.last_error or "failed")[:160],
                    since=email.created_at,
                    url=order_url(email.order)
                    if email.order
                    else _url(user, "outbox.view_outboundemail", "admin:outbox_outboundemail_change", email.pk),
                )
                for email in failed_emails.select_related("order").order_by("created_at")[:SHOWN]
            ],
        )
    )

    rows.append(_bounced_row(user))
    rows.append(_webhooks_row(user))
    return Queue(rows=rows, health=_health(user, now))


def _disputes_row(user, now) -> Row:
    """Disputes waiting for evidence, the one due first at the top, each with its countdown
    (billing.disputes.due_in_words). Always the first row: a missed date loses the dispute."""
    waiting = Dispute.objects.filter(status__in=Dispute.NEEDS_RESPONSE, evidence_submitted_at__isnull=True)
    items = []
    for dispute in waiting.select_related("order", "order__claimed_by", "order__plan").order_by("evidence_due_by")[
        :SHOWN
    ]:
        detail = f"{due_in_words(dispute.evidence_due_by, now)} · {dispute.reason or 'no reason'}, {dispute.price}"
        if dispute.order is not None:
            item = _order_item(dispute.order, detail, dispute.created_at)
        else:
            item = Item(
                title=f"{dispute.stripe_dispute_id} · charge {dispute.charge_id or '?'} (no order here yet)",
                detail=detail,
                since=dispute.created_at,
                url=_url(user, "billing.view_dispute", "admin:billing_dispute_change", dispute.pk),
            )
        items.append(item)
    return Row(
        "disputes",
        "Disputes: evidence due",
        "A bank disputes a charge; the money and a fee are gone until we answer. Open the order, review the "
        "evidence pack and submit it before the date. Never email the customer about it.",
        waiting.count(),
        _url(user, "billing.view_dispute", "admin:billing_dispute_changelist"),
        items,
    )


def _warnings_row(user) -> Row:
    """Early fraud warnings on charges that can still be refunded (paid or fulfilled, nothing
    refunded, not refunded by the policy)."""
    open_warnings = EarlyFraudWarning.objects.filter(
        auto_refunded_at__isnull=True,
        order__state__in=[Order.State.PAID, Order.State.FULFILLED],
        order__refunded_cents=0,
    )
    return Row(
        "warnings",
        "Early fraud warnings",
        "The card issuer thinks a payment may be fraudulent; a dispute usually follows. Refunding in full now "
        "is usually cheaper: open the order and use \u201cRefund in full and end access\u201d.",
        open_warnings.count(),
        _url(user, "billing.view_earlyfraudwarning", "admin:billing_earlyfraudwarning_changelist"),
        [
            _order_item(w.order, f"early fraud warning: {w.fraud_type or 'fraud'}", w.created_at)
            for w in open_warnings.select_related("order", "order__claimed_by", "order__plan").order_by("created_at")[
                :SHOWN
            ]
        ],
    )


def _unmatched_row(user) -> Row:
    """Payments that bought nothing (billing/adoption.py): no order exists, so the row lists
    their open alerts, which hold the payment's facts."""
    unmatched = Alert.objects.filter(reason=Alert.Reason.UNMATCHED_PAYMENT, resolved_at__isnull=True)
    perm = "billing.view_alert"
    return Row(
        "unmatched",
        "Payments that bought nothing",
        "Succeeded in Stripe, but no plan costs that much and they name no order: no access was given and the "
        "customer was not emailed. Find what each paid for in Stripe; refund it there if it was meant for us, "
        "then mark the alert resolved.",
        unmatched.count(),
        _url(
            user,
            perm,
            "admin:billing_alert_changelist",
            query={"reason__exact": Alert.Reason.UNMATCHED_PAYMENT, "resolved_at__isempty": 1},
        ),
        [
            Item(
                title=alert.message.split(" succeeded,")[0],
                detail="matches no plan; no access given",
                since=alert.created_at,
                url=_url(user, perm, "admin:billing_alert_change", alert.pk),
            )
            for alert in unmatched.order_by("created_at")[:SHOWN]
        ],
    )


def _bounced_row(user) -> Row:
    """Access emails a mailbox refused (billing/delivery.py): the customer paid and cannot get in.
    One open alert per bounced email; changing the order's email resolves it."""
    bounced = Alert.objects.filter(reason=Alert.Reason.ACCESS_BOUNCED, resolved_at__isnull=True)
    return Row(
        "bounced",
        "Access email bounced",
        "The customer's mailbox refused their access email: the address is probably mistyped. Find the right "
        "one, then \u201cChange email\u201d on the order (it moves the access and sends a fresh link).",
        bounced.count(),
        _url(
            user,
            "billing.view_alert",
            "admin:billing_alert_changelist",
            query={"reason__exact": Alert.Reason.ACCESS_BOUNCED, "resolved_at__isempty": 1},
        ),
        [
            _order_item(
                alert.order,
                Truncator(alert.message.split(". The customer")[0]).chars(160),
                alert.created_at,
            )
            if alert.order
            else Item(title="access email", detail=alert.message[:160], since=alert.created_at, url=None)
            for alert in bounced.select_related("order__claimed_by", "order__plan").order_by("created_at")[:SHOWN]
        ],
    )


def _double_purchase_row(user) -> Row:
    """Two paid orders for one email within 24 hours (billing/access.py): one open alert per
    pair, on the later order, each with a one-click refund of that order (the console's refund
    action, prefilled: its confirmation page, permission and audit as always). A full refund of
    either order, or "Resolved" on the later one, closes it."""
    doubles = Alert.objects.filter(reason=Alert.Reason.DOUBLE_PURCHASE, resolved_at__isnull=True)
    items = []
    for alert in doubles.select_related("order__claimed_by", "order__plan").order_by("created_at")[:SHOWN]:
        item = _order_item(alert.order, alert.message, alert.created_at)
        item.action_url = _url(
            user, "billing.refund_order", "admin:billing_order_act", alert.order.pk, "refund", query={"why": "double"}
        )
        item.action_label = f"Refund {alert.order.reference}"
        items.append(item)
    return Row(
        "double_purchase",
        "Possible double purchase",
        "One email paid twice within 24 hours. Ask or check whether they meant to; refund the later order if "
        "not (one click, then confirm), or open it and mark it resolved if they did.",
        doubles.count(),
        _url(
            user,
            "billing.view_alert",
            "admin:billing_alert_changelist",
            query={"reason__exact": Alert.Reason.DOUBLE_PURCHASE, "resolved_at__isempty": 1},
        ),
        items,
    )


def _webhooks_row(user) -> Row:
    from djstripe.models import WebhookEventTrigger

    failed = WebhookEventTrigger.objects.filter(valid=True, processed=False)
    perm = "djstripe.view_webhookeventtrigger"
    return Row(
        "webhooks",
        "Stripe events that failed",
        "Reconciliation replays them every minute; one that stays here needs a developer (read its traceback).",
        failed.count(),
        _url(
            user,
            perm,
            "admin:djstripe_webhookeventtrigger_changelist",
            query={"valid__exact": 1, "processed__exact": 0},
        ),
        [
            Item(
                title=str((trigger.json_body or {}).get("type", "event")),
                detail=(trigger.exception or "not processed")[:160],
                since=trigger.created,
                url=_url(user, perm, "admin:djstripe_webhookeventtrigger_change", trigger.pk),
            )
            for trigger in failed.order_by("created")[:SHOWN]
        ],
    )


def _health(user, now) -> dict:
    data = health.report()
    seconds = data.get("last_reconciliation_age_seconds")
    open_stale = Alert.objects.filter(reason=Alert.Reason.STALE_HEARTBEAT, resolved_at__isnull=True).exists()
    return {
        **data,
        "last_run_age": age(now - timedelta(seconds=seconds), now) if seconds is not None else "",
        "stale_alert_open": open_stale,
        "runs_url": _url(user, "billing.view_reconciliationrun", "admin:billing_reconciliationrun_changelist"),
    }
