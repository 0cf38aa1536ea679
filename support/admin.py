"""The console's admin. Support's own models here: cases, alerts, refund requests, read-only
but for closing a case or alert that has no order (an order's close with its "Resolved" action).
The order admin is support/order_admin.py and plans are support/plan_admin.py; importing them
here registers them, because Django's autodiscovery imports only each app's admin module."""

from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from billing.admin import ReadOnlyAdmin
from billing.models import Alert, Dispute, EarlyFraudWarning

from . import order_admin, plan_admin  # noqa: F401  (registers the order and plan admins)
from .actions import actor
from .models import RefundRequest, StaffEvent, SupportCase
from .queue import age


def _order_link(obj):
    if obj.order_id is None:
        return "—"
    return format_html(
        '<a href="{}">{}</a>', reverse("admin:billing_order_change", args=[obj.order_id]), obj.order.reference
    )


@admin.register(SupportCase)
class SupportCaseAdmin(admin.ModelAdmin):
    list_display = ["email", "order_link", "status", "waiting", "diagnosis", "created_at"]
    list_filter = ["status"]
    list_select_related = ["order"]
    search_fields = ["=email", "=order__reference"]
    search_help_text = "The customer's exact email, or the order reference (PU-…)."
    readonly_fields = [f.name for f in SupportCase._meta.fields]
    actions = ["mark_resolved"]

    @admin.display(description="order")
    def order_link(self, case: SupportCase):
        return _order_link(case)

    @admin.display(description="waiting")
    def waiting(self, case: SupportCase) -> str:
        return "" if case.status == SupportCase.Status.RESOLVED else age(case.created_at)

    @admin.action(description="Mark the selected cases resolved", permissions=["change"])
    def mark_resolved(self, request, queryset):
        done = queryset.filter(status=SupportCase.Status.OPEN).update(
            status=SupportCase.Status.RESOLVED, resolved_at=timezone.now(), resolved_by=actor(request.user)
        )
        self.message_user(request, f"{done} case(s) marked resolved.")

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    list_display = ["reason", "order_link", "message", "created_at", "resolved_at"]
    list_filter = ["reason", ("resolved_at", admin.EmptyFieldListFilter)]
    list_select_related = ["order"]
    readonly_fields = [f.name for f in Alert._meta.fields]
    actions = ["mark_resolved"]

    @admin.display(description="order")
    def order_link(self, alert: Alert):
        return _order_link(alert)

    @admin.action(description="Mark the selected alerts resolved", permissions=["view"])
    def mark_resolved(self, request, queryset):
        """For alerts with no order (a payment that bought nothing); an order's alerts close
        with the order's "Resolved" action, which also writes its timeline."""
        done = queryset.filter(order__isnull=True, resolved_at__isnull=True).update(resolved_at=timezone.now())
        self.message_user(request, f"{done} alert(s) marked resolved.")


@admin.register(RefundRequest)
class RefundRequestAdmin(ReadOnlyAdmin):
    list_display = ["token", "order_link", "price", "requested_by", "stripe_refund_id", "created_at"]
    list_select_related = ["order"]
    search_fields = ["=order__reference", "=stripe_refund_id"]
    readonly_fields = [f.name for f in RefundRequest._meta.fields]

    @admin.display(description="order")
    def order_link(self, request_: RefundRequest):
        return _order_link(request_)


@admin.register(Dispute)
class DisputeAdmin(ReadOnlyAdmin):
    """Disputes, due first; the work (evidence) is done from the order page."""

    list_display = ["stripe_dispute_id", "order_link", "price", "reason", "status", "evidence_due_by", "submitted"]
    list_filter = ["status", "reason"]
    list_select_related = ["order"]
    search_fields = ["=stripe_dispute_id", "=charge_id", "=payment_intent_id", "=order__reference"]
    readonly_fields = [f.name for f in Dispute._meta.fields]

    @admin.display(description="order")
    def order_link(self, dispute: Dispute):
        return _order_link(dispute)

    @admin.display(description="evidence submitted", boolean=True)
    def submitted(self, dispute: Dispute) -> bool:
        return dispute.evidence_submitted_at is not None


@admin.register(EarlyFraudWarning)
class EarlyFraudWarningAdmin(ReadOnlyAdmin):
    list_display = ["stripe_warning_id", "order_link", "fraud_type", "actionable", "created_at", "auto_refunded_at"]
    list_select_related = ["order"]
    search_fields = ["=stripe_warning_id", "=charge_id", "=payment_intent_id", "=order__reference"]
    readonly_fields = [f.name for f in EarlyFraudWarning._meta.fields]

    @admin.display(description="order")
    def order_link(self, warning: EarlyFraudWarning):
        return _order_link(warning)


@admin.register(StaffEvent)
class StaffEventAdmin(ReadOnlyAdmin):
    """ "Staff sign-ins and security": who signed in, failed, was locked out or unlocked, and who
    added or removed a second factor (support/staff_events.py). Read-only: nobody edits history."""

    list_display = ["at", "kind", "email", "actor", "client_address", "detail"]
    list_filter = ["kind"]
    search_fields = ["email", "actor"]
    search_help_text = "An email (or part of one): the account's, or the one typed at a failed sign-in."
    date_hierarchy = "at"
    readonly_fields = [f.name for f in StaffEvent._meta.fields]


@admin.register(LogEntry)
class ConsoleActionAdmin(ReadOnlyAdmin):
    """ "Console actions": every person's admin log (refunds, fulfils, resends, notes…, written by
    support/admin_views.py in the action's own transaction), so each sees what the other did."""

    list_display = ["action_time", "user", "object_repr", "change_message"]
    list_filter = ["content_type"]
    list_select_related = ["user", "content_type"]
    search_fields = ["user__email", "object_repr"]
    search_help_text = "A support person's email, or an order reference."
    date_hierarchy = "action_time"
    readonly_fields = [
        "action_time",
        "user",
        "content_type",
        "object_id",
        "object_repr",
        "action_flag",
        "change_message",
    ]
