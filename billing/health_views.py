from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from . import health


@never_cache
@require_safe
def healthz(request):
    """For uptime monitors: 200 when healthy, 503 when not, with the figures as JSON.

    GET or HEAD (`require_safe`): monitors and `curl -sI` ask with HEAD."""
    data = health.report()
    health.watch(data)
    return JsonResponse(data, status=200 if data["healthy"] else 503)
