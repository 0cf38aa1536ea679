"""Minimal admin registrations; the support console (issue 4) builds on these."""

from django.contrib import admin

from .models import Order, OrderEvent, OutboundEmail, Plan, Subscription


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "amount_cents", "currency", "duration_days", "active"]


class OrderEventInline(admin.TabularInline):
    model = OrderEvent
    extra = 0
    can_delete = False
    readonly_fields = ["created_at", "kind", "actor", "message", "data"]
    fields = readonly_fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ["reference", "email", "state", "amount_cents", "currency", "fulfilled_via", "created_at"]
    list_filter = ["state", "fulfilled_via"]
    search_fields = ["reference", "email", "stripe_payment_intent_id", "stripe_customer_id"]
    readonly_fields = [f.name for f in Order._meta.fields]
    inlines = [OrderEventInline]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(OutboundEmail)
class OutboundEmailAdmin(admin.ModelAdmin):
    list_display = ["to", "kind", "status", "attempts", "order", "created_at", "sent_at"]
    list_filter = ["kind", "status"]
    search_fields = ["to", "order__reference"]
    readonly_fields = [f.name for f in OutboundEmail._meta.fields]


@admin.register(Subscription)
class SubscriptionAdmin(admin.ModelAdmin):
    list_display = ["user", "order", "starts_at", "ends_at"]
    search_fields = ["user__email", "order__reference"]
    readonly_fields = ["order", "user", "created_at"]
