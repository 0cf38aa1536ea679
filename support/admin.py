"""Support's own models in the admin: cases, alerts, refund requests. Read-only but for
closing a case that has no order (an order's cases close with its "Resolved" action)."""

from django.contrib import admin
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from billing.admin import ReadOnlyAdmin

from .actions import actor
from .models import Alert, RefundRequest, SupportCase
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

    @admin.display(description="order")
    def order_link(self, alert: Alert):
        return _order_link(alert)


@admin.register(RefundRequest)
class RefundRequestAdmin(ReadOnlyAdmin):
    list_display = ["token", "order_link", "amount_cents", "requested_by", "stripe_refund_id", "created_at"]
    list_select_related = ["order"]
    search_fields = ["=order__reference", "=stripe_refund_id"]
    readonly_fields = [f.name for f in RefundRequest._meta.fields]

    @admin.display(description="order")
    def order_link(self, request_: RefundRequest):
        return _order_link(request_)
