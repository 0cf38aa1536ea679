"""The console's System page: the last 30 days at a glance, for a support person or the operator
who would rather look than read /metrics. Staff with `billing.view_order` (the Support group has
it); the site's admin_view wrapper has already asked for a verified staff session."""

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.views.decorators.http import require_GET

from billing import daily
from billing.models import Order

from . import system_charts

PERMISSION = "billing.view_order"


@require_GET
def system_page(request):
    """GET (HEAD too): the charts and the table of billing.daily.last_days(); any other method
    is answered 405. Query parameters are ignored. Raises PermissionDenied without
    `billing.view_order`."""
    if not request.user.has_perm(PERMISSION):
        raise PermissionDenied
    days = daily.last_days()
    context = {
        **admin.site.each_context(request),
        "title": f"System: the last {len(days)} days",
        "charts": system_charts.charts(days),
        "rows": system_charts.table_rows(days),
        "states": Order.State.choices,
        "refunded": system_charts.refunded_total(days),
    }
    return TemplateResponse(request, "admin/support/system.html", context)
