from django.http import HttpResponse, JsonResponse
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


@never_cache
@require_safe
def livez(request):
    """For the load balancer's active health check: 200 "ok" whenever this process answers.

    It reads nothing, the database included, on purpose. /healthz is business health: it answers
    503 when reconciliation is stale or an order is stuck, which is true of every node at once and
    is no reason to take a node out of rotation (the proxy would then refuse all traffic, checkout
    included, when the q cluster dies). A database outage is also every node's: the application's
    own error pages say honestly what is known, the proxy's "no server available" would not.
    What the proxy must learn is only "this process is gone or hung" (docs/deploy.md, 14)."""
    return HttpResponse("ok\n", content_type="text/plain")
