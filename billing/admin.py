"""Plain read-only views of the rows only the code writes (outbox, money, runs).

The console itself (the order admin, plans, alerts, cases) lives in support/: see
support/admin.py. Nothing here may import support (docs/design.md, "the house").
"""

from django.contrib import admin

from .models import OutboundEmail, ReconciliationRun, Refund, Subscription


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows only the code writes (outbox, money, runs): viewable, never edited or deleted here."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(OutboundEmail)
class OutboundEmailAdmin(ReadOnlyAdmin):
    list_display = ["to", "kind", "status", "attempts", "order", "created_at", "sent_at"]
    list_filter = ["kind", "status"]
    list_select_related = ["order"]
    search_fields = ["to", "order__reference"]
    readonly_fields = [f.name for f in OutboundEmail._meta.fields]


@admin.register(Subscription)
class SubscriptionAdmin(ReadOnlyAdmin):
    """Extend from the order page, so the timeline records it."""

    list_display = ["user", "order", "starts_at", "ends_at"]
    list_select_related = ["user", "order"]
    search_fields = ["user__email", "order__reference"]
    readonly_fields = ["order", "user", "starts_at", "ends_at", "created_at"]


@admin.register(Refund)
class RefundAdmin(ReadOnlyAdmin):
    list_display = ["stripe_refund_id", "order", "price", "actor", "created_at"]
    list_select_related = ["order"]
    search_fields = ["stripe_refund_id", "order__reference"]
    readonly_fields = [f.name for f in Refund._meta.fields]


@admin.register(ReconciliationRun)
class ReconciliationRunAdmin(ReadOnlyAdmin):
    list_display = ["started_at", "finished_at", "ok", "dry_run", "counts", "errors"]
    list_filter = ["ok", "dry_run"]
    readonly_fields = [f.name for f in ReconciliationRun._meta.fields]
