"""The support queue: what needs a human now, oldest first, for the admin's landing page.

One row per kind of work, each with its count, the age of its oldest item, a link to the
filtered list, and the oldest few items linking straight to the order. A constant number
of queries whatever the backlog: two per row, plus the health report.
"""

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import urlencode

from django.db.models import Q
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils import timezone

from billing import health
from billing.models import Order, OutboundEmail

from .models import Alert, SupportCase

SHOWN = 5  # items listed per row; the row's link leads to the rest


@dataclass
class Item:
    title: str
    detail: str
    since: datetime | None
    url: str | None
    claimed_by: str = ""
    claimed_until: datetime | None = None


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
        return self.items[0].since if self.items else None


@dataclass
class Queue:
    rows: list[Row]
    health: dict

    @property
    def total(self) -> int:
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
    return Order.objects.filter(ORDER_ROWS[key]).distinct()


def build(user) -> Queue:
    now = timezone.now()
    orders = Order.objects.select_related("claimed_by", "plan")
    changelist = "admin:billing_order_changelist"
    rows = []

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
                    detail=case.diagnosis or case.message[:120] or "no details",
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
                "billing.view_outboundemail",
                "admin:billing_outboundemail_changelist",
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
                    else _url(user, "billing.view_outboundemail", "admin:billing_outboundemail_change", email.pk),
                )
                for email in failed_emails.select_related("order").order_by("created_at")[:SHOWN]
            ],
        )
    )

    rows.append(_webhooks_row(user))
    return Queue(rows=rows, health=_health(user, now))


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
