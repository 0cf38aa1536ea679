"""`/metrics` for Prometheus: request metrics, the business gauges, behind a bearer token.

Who may read it (docs/deploy.md, "Metrics"):
- METRICS_TOKEN set: a request must carry `Authorization: Bearer <token>`; the token is compared
  in constant time. None → 401 (with `WWW-Authenticate: Bearer`), another → 403; both bodies say
  nothing more, and no database query runs before the token is right.
- METRICS_TOKEN empty, DEBUG off: 404, as for any address that does not exist.
- METRICS_TOKEN empty, DEBUG on (development): served without a token.

Request metrics are counted by `RequestMetricsMiddleware` (first in MIDDLEWARE, so it times
everything). Under gunicorn with several workers, set PROMETHEUS_MULTIPROC_DIR (an empty
folder, wiped at each start) so that every scrape adds up all workers' counts; prometheus-client
then keeps them in files there (its "multiprocess mode"). The business gauges are read from the
database by whichever worker answers (billing/metrics.py), so they need nothing of the kind.
"""

import hmac
import os
import time
from collections.abc import Callable
from functools import cache

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    multiprocess,
)
from prometheus_client.django import PrometheusDjangoView

from billing.metrics import BusinessCollector

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# registry=None: registered only on the scrape's registry below, not on the library's global one.
REQUESTS = Counter(
    "paidup_http_requests",  # exposed as paidup_http_requests_total
    "HTTP requests answered, by method and status class (2xx, 3xx, 4xx, 5xx).",
    ["method", "status"],
    registry=None,
)
LATENCY = Histogram(
    "paidup_http_request_duration_seconds",
    "Seconds from the request reaching Django to its response leaving the middleware stack.",
    ["method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=None,
)


def multiprocess_mode() -> bool:
    """Whether prometheus-client keeps its values in PROMETHEUS_MULTIPROC_DIR (several workers)."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


@cache
def scrape_registry() -> CollectorRegistry:
    """The registry `/metrics` serves, built once per process: the request metrics (summed over
    every worker in multiprocess mode), this process's own figures (single process only) and the
    business gauges. Building it runs no query."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_mode():
        multiprocess.MultiProcessCollector(registry)
    else:
        for collector in (REQUESTS, LATENCY, PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            registry.register(collector)
    registry.register(BusinessCollector())
    return registry


class RequestMetricsMiddleware:
    """Counts every request by method and status class, and observes its latency in seconds.

    A method outside METHODS is counted as "other", so a client cannot grow the label set."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        method = request.method if request.method in METHODS else "other"
        REQUESTS.labels(method, f"{response.status_code // 100}xx").inc()
        LATENCY.labels(method).observe(time.perf_counter() - started)
        return response


def token_refusal(request: HttpRequest) -> HttpResponse | None:
    """None when `request` may read the metrics; else the response that refuses it (401 without
    a bearer token, 403 with a wrong one). Raises Http404 when no token is configured and DEBUG
    is off: the endpoint does not exist."""
    expected = settings.METRICS_TOKEN
    if not expected:
        if settings.DEBUG:
            return None
        raise Http404
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        refusal = HttpResponse("Unauthorized\n", status=401, content_type="text/plain")
        refusal["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return refusal
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        return HttpResponse("Forbidden\n", status=403, content_type="text/plain")
    return None


class MetricsView(PrometheusDjangoView):
    """prometheus-client's Django view (text format, gzip, `name[]` filters) on our registry,
    behind `token_refusal`. GET and HEAD only (and OPTIONS, after the token)."""

    http_method_names = ["get", "head", "options"]

    def dispatch(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        refusal = token_refusal(request)
        if refusal is not None:
            return refusal
        self.registry = scrape_registry()
        response = super().dispatch(request, *args, **kwargs)
        response["Cache-Control"] = "no-store"
        return response


metrics_view = MetricsView.as_view()
