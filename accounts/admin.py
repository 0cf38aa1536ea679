from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from . import factors
from .addresses import normalize_email
from .models import User


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    ordering = ["email"]
    list_display = ["email", "is_staff", "is_active", "date_joined", "last_login"]
    search_fields = ["email"]
    fieldsets = [
        (None, {"fields": ["email", "password"]}),
        ("Permissions", {"fields": ["is_active", "is_staff", "is_superuser", "groups", "user_permissions"]}),
        ("Dates", {"fields": ["last_login", "date_joined"]}),
    ]
    add_fieldsets = [(None, {"classes": ["wide"], "fields": ["email", "password1", "password2"]})]
    list_filter = ["is_staff", "is_active"]
    filter_horizontal = ["groups", "user_permissions"]
    actions = ["reset_second_factors"]

    @admin.action(description="Reset second factors (lost phone): they enrol again", permissions=["change"])
    def reset_second_factors(self, request, queryset):
        """`manage.py reset_factors` from the admin: only for active staff; any other account in
        the selection refuses the whole action, nothing changed."""
        others = [u.email for u in queryset if not (u.is_staff and u.is_active)]
        if others:
            self.message_user(
                request, f"Not a support login: {', '.join(others)}. Nothing was changed.", messages.ERROR
            )
            return
        for person in queryset:
            self.message_user(request, f"For {person.email}: {factors.reset_and_log(person, request.user)}")

    def get_search_results(self, request, queryset, search_term):
        # Stored addresses are in the normal form; SQLite's LIKE folds ASCII only.
        return super().get_search_results(request, queryset, normalize_email(search_term))
