from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from . import health


@never_cache
@require_GET
def healthz(request):
    """For uptime monitors: 200 when healthy, 503 when not, with the figures as JSON."""
    data = health.report()
    health.watch_heartbeat(data)
    return JsonResponse(data, status=200 if data["healthy"] else 503)
