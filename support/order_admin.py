"""The support console's order admin: the list, exact search, and the order page (diagnosis,
actions, timeline, emails, the Stripe side, reply templates).

Orders are never edited by hand: everything a support person does goes through an action
(support/admin_views.py → support/actions.py), which writes the timeline and an admin
LogEntry. The model stays `billing.Order`, so the URLs stay /admin/billing/order/….
"""

import logging

import stripe
from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Q
from django.urls import path, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html

from accounts.addresses import normalize_email
from billing import gateway
from billing.models import Order, OutboundEmail, Refund
from billing.models.orders import format_money, is_valid_reference, normalize_reference

from . import admin_views, mirror
from .diagnosis import diagnose
from .queue import ORDER_ROWS
from .replies import NEVER, replies_for

logger = logging.getLogger(__name__)

# Which reply template fits which diagnosis (the page highlights it).
SUGGESTED_REPLY = {
    "paid_not_fulfilled": "acknowledge",
    "missed_webhook": "acknowledge",
    "not_charged": "cant_find",
    "refunded": "refunded",
    "refund_failed": "refund_failed",
    "email_not_delivered": "resolved",
    "access_email_bounced": "acknowledge",
    "healthy": "resolved",
    "unknown_payment": "resolved",
    "two_payments": "acknowledge",
    "two_payments_earlier": "acknowledge",
    "disputed": "dispute",
    "dispute_review": "dispute",
    "fraud_warning": "acknowledge",
}


class EstimatedCountPaginator(Paginator):
    """The unfiltered order list on a big PostgreSQL table counts by the planner's estimate:
    COUNT(*) over a million rows was most of the page's time (docs/benchmarks.md). Filtered
    and small lists count exactly."""

    EXACT_BELOW = 100_000

    @cached_property
    def count(self) -> int:
        query = getattr(self.object_list, "query", None)
        if connection.vendor == "postgresql" and query is not None and not query.where:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT reltuples::bigint FROM pg_class WHERE relname = %s", [query.model._meta.db_table]
                )
                row = cursor.fetchone()
            if row and row[0] >= self.EXACT_BELOW:
                return row[0]
        return super().count


class QueueFilter(admin.SimpleListFilter):
    """The landing page's rows, as a changelist filter."""

    title = "needs a human"
    parameter_name = "queue"

    def lookups(self, request, model_admin):
        return [("paid", "Charged, no access yet"), ("attention", "Needs a decision"), ("unknown", "Unknown payment")]

    def queryset(self, request, queryset):
        if self.value() in ORDER_ROWS:
            return queryset.filter(pk__in=Order.objects.filter(ORDER_ROWS[self.value()]).values("pk"))
        return queryset


class ClaimedFilter(admin.SimpleListFilter):
    title = "someone on it"
    parameter_name = "claimed"

    def lookups(self, request, model_admin):
        return [("yes", "Someone is on it"), ("me", "I'm on it"), ("no", "Nobody is on it")]

    def queryset(self, request, queryset):
        active = Q(claimed_until__gt=timezone.now(), claimed_by__isnull=False)
        if self.value() == "yes":
            return queryset.filter(active)
        if self.value() == "me":
            return queryset.filter(active, claimed_by=request.user)
        if self.value() == "no":
            return queryset.exclude(active)
        return queryset


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ["reference", "email", "state_badge", "on_it", "price", "created_at", "fulfilled_via"]
    list_filter = [QueueFilter, "state", "fulfilled_via", "needs_attention", ClaimedFilter, "retroactive"]
    list_select_related = ["claimed_by"]
    # Only the fallback for free text; ids and emails are looked up exactly (get_search_results).
    search_fields = ["email", "reference"]
    search_help_text = (
        "Email, reference (PU-…), or a Stripe id: PaymentIntent pi_…, charge ch_…, customer cus_…, refund re_…"
    )
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    date_hierarchy = None
    list_per_page = 50
    change_form_template = "admin/billing/order/change_form.html"
    change_list_template = "admin/billing/order/change_list.html"
    fieldsets = [
        (
            "Order",
            {
                "fields": [
                    ("reference", "state"),
                    ("email", "plan"),
                    ("price", "refunded"),  # money as people read it (billing/money.py), never raw cents
                    ("fulfilled_via", "retroactive"),
                    ("created_at", "paid_at"),
                    ("fulfilled_at", "refunded_at", "failed_at"),
                ]
            },
        ),
        (
            "Stripe",
            {
                "fields": [
                    "stripe_payment_intent_id",
                    "stripe_customer_id",
                    ("stripe_payment_status", "payment_attempts", "stripe_checked_at"),
                ]
            },
        ),
        ("Support", {"fields": [("needs_attention", "attention_reason"), ("claimed_by", "claimed_until")]}),
    ]
    readonly_fields = [f.name for f in Order._meta.fields] + ["price", "refunded"]

    # --- list ---------------------------------------------------------------------------

    @admin.display(description="state", ordering="state")
    def state_badge(self, order: Order):
        charged = order.state == Order.State.PENDING and order.stripe_payment_status == "succeeded"
        return format_html(
            '<span class="pu-state pu-state-{}">{}</span>{}',
            order.state,
            order.get_state_display() + (" (charged)" if charged else ""),
            format_html(' <span class="pu-flag" title="{}">needs attention</span>', order.attention_reason)
            if order.needs_attention
            else "",
        )

    @admin.display(description="amount", ordering="amount_cents")
    def price(self, order: Order) -> str:
        return order.price

    @admin.display(description="refunded")
    def refunded(self, order: Order) -> str:
        return format_money(order.refunded_cents, order.currency)

    @admin.display(description="on it")
    def on_it(self, order: Order):
        if order.claimed_by_id and order.claimed_until and order.claimed_until > timezone.now():
            return format_html(
                '<span class="pu-claim">{} until {}</span>',
                order.claimed_by,
                timezone.localtime(order.claimed_until).strftime("%H:%M"),
            )
        return ""

    # --- search: exact ids by index, never a scan -----------------------------------------

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        exact = self.exact_match(request, term)
        if exact is not None:
            return queryset.filter(exact), False
        # Stored addresses are lower-case; SQLite's LIKE folds ASCII only, so fold the term here.
        return super().get_search_results(request, queryset, normalize_email(search_term))

    def exact_match(self, request, term: str) -> Q | None:
        """A Q on a unique or indexed column for anything that looks like an id or an email."""
        if not term or " " in term:
            return None
        if term.startswith("pi_"):
            return Q(stripe_payment_intent_id=term)
        if term.startswith("cus_"):
            return Q(stripe_customer_id=term)
        if term.startswith("re_"):
            return Q(pk__in=Refund.objects.filter(stripe_refund_id=term).values("order_id"))
        if term.startswith(("ch_", "py_")):
            return Q(stripe_payment_intent_id=self.payment_intent_of_charge(request, term) or "-")
        if "@" in term:  # every stored address is in the normal form: exact and indexed
            return Q(email=normalize_email(term))
        reference = normalize_reference(term)
        if is_valid_reference(reference):
            return Q(reference=reference)
        return None

    def payment_intent_of_charge(self, request, charge_id: str) -> str | None:
        """dj-stripe's Charge mirror first (indexed); else one call to Stripe."""
        from djstripe.models import Charge

        pi_id = Charge.objects.filter(id=charge_id).values_list("payment_intent_id", flat=True).first()
        if pi_id:
            return pi_id
        try:
            charge = gateway.retrieve_charge(charge_id)
        except stripe.InvalidRequestError:
            return None
        except Exception as error:  # noqa: BLE001  (search must answer, Stripe or not)
            messages.warning(request, f"Could not ask Stripe about {charge_id}: {mirror.short_error(error)}")
            return None
        pi = charge.get("payment_intent") if hasattr(charge, "get") else getattr(charge, "payment_intent", None)
        return mirror.stripe_id(pi)

    # --- the console page ---------------------------------------------------------------

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("attach/", wrap(lambda r: admin_views.attach_payment(self, r)), name="billing_order_attach"),
            path(
                "<path:object_id>/act/<slug:action_key>/",
                wrap(lambda r, object_id, action_key: admin_views.order_action(self, r, object_id, action_key)),
                name="billing_order_act",
            ),
            path(
                "<path:object_id>/refresh/",
                wrap(lambda r, object_id: admin_views.refresh_from_stripe(self, r, object_id)),
                name="billing_order_refresh",
            ),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        order = self.get_object(request, object_id) if request.method == "GET" else None
        if order is not None and self.has_view_permission(request, order):
            extra_context = {**console_context(request, order), **(extra_context or {})}
        return super().change_view(request, object_id, form_url, extra_context)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False  # read-only: every change is an action with a timeline row

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


def console_context(request, order: Order) -> dict:
    """Everything the order page shows besides the order's own fields."""
    user = request.user
    live = mirror.live_status(order)
    diagnosis = diagnose(order, live.status)
    suggested = admin_views.SUGGESTED.get(diagnosis.code)
    holder = admin_views.claim_holder(order, user)
    mine = order.claimed_by_id == user.pk and order.claimed_until and order.claimed_until > timezone.now()
    emails = list(order.emails.all())
    if order.email:
        emails += list(
            OutboundEmail.objects.filter(
                kind=OutboundEmail.Kind.SIGNIN, to=order.email, created_at__gte=order.created_at
            )[:10]
        )
    emails.sort(key=lambda e: e.created_at)
    suggested_reply = SUGGESTED_REPLY.get(diagnosis.code)
    return {
        "order": order,
        "diagnosis": diagnosis,
        "live": live,
        "buttons": admin_views.available_actions(order, user, suggested),
        "holder": holder,
        "claimed_by_me": bool(mine),
        "events": order.events.all(),
        "emails": emails,
        "subscription": getattr(order, "subscription", None),
        "refunds": order.refunds.all(),
        "mirror_rows": mirror.mirrored(order, user),
        "replies": sorted(replies_for(order), key=lambda r: r.key != suggested_reply),
        "suggested_reply": suggested_reply,
        "never": NEVER,
        "open_cases": order.cases.filter(status="open"),
        "open_alerts": order.alerts.filter(resolved_at__isnull=True),
        "disputes": order.disputes.all(),
        "fraud_warnings": order.fraud_warnings.all(),
        "refresh_url": reverse("admin:billing_order_refresh", args=[order.pk]),
        "can_attach": user.has_perm("billing.attach_payment"),
    }
