"""The business gauges an operator graphs, read from the database at scrape time.

`BusinessCollector` is a prometheus-client custom collector: every scrape of `/metrics`
(config/metrics.py) runs its queries afresh, so a gauge is never older than the scrape and
there is no background job to die. Each family below costs one query, all of them on indexed
columns or small tables (open alerts, open disputes); docs/benchmarks.md has the measured cost.

Conventions (https://prometheus.io/docs/practices/naming/): ages and durations in seconds,
dates as Unix `_timestamp_seconds`. An age of "nothing waiting" is 0, so that an alert rule
`> N` stays quiet; the age of a reconciliation that never succeeded is +Inf, so that the same
kind of rule fires. These are gauges (a count that can go down), never `_total` counters.

When the database does not answer, the scrape still succeeds with `paidup_database_up 0` and
no business gauge: Prometheus keeps the request metrics, and the operator sees why.
"""

import logging
import math
import time
from collections.abc import Iterator

from django.db import DatabaseError
from django.db.models import Count, Min, Q
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric

logger = logging.getLogger(__name__)


def _age(then, now) -> float:
    """Seconds from `then` (an aware datetime or None) to `now`; 0.0 for None (nothing waiting)."""
    return max(0.0, (now - then).total_seconds()) if then else 0.0


def orders_by_state() -> GaugeMetricFamily:
    """paidup_orders{state}: orders in each state, every state present (0 when none)."""
    from .models import Order

    # COUNT(*), not COUNT(id): PostgreSQL can then answer from the (state, created_at) index alone.
    counts = dict(Order.objects.order_by().values_list("state").annotate(n=Count("*")))
    family = GaugeMetricFamily("paidup_orders", "Orders in each state.", labels=["state"])
    for state in Order.State.values:
        family.add_metric([state], counts.get(state, 0))
    return family


def paid_not_fulfilled(now) -> list[GaugeMetricFamily]:
    """How many orders are paid and not fulfilled, and how long the oldest has waited since
    it was paid (seconds; 0 when none). One query."""
    from .models import Order

    row = Order.objects.filter(state=Order.State.PAID).aggregate(n=Count("pk"), oldest=Min("paid_at"))
    return [
        GaugeMetricFamily("paidup_orders_paid_not_fulfilled", "Orders paid but not yet fulfilled.", value=row["n"]),
        GaugeMetricFamily(
            "paidup_orders_paid_not_fulfilled_oldest_age_seconds",
            "Seconds the oldest paid-not-fulfilled order has waited since payment (0: none waiting).",
            value=_age(row["oldest"], now),
        ),
    ]


def reconciliation(now) -> list[GaugeMetricFamily]:
    """Age of the last successful (not dry) reconciliation run, from its end (+Inf when none
    ever succeeded) and that run's duration, as `/healthz` judges (billing/health.py); then the
    newest finished run's duration and whether it succeeded, failed or not. Seconds; a duration
    is absent when there is no such run. Two queries, each the newest row of an index."""
    from .models import ReconciliationRun

    runs = ReconciliationRun.objects.filter(dry_run=False, finished_at__isnull=False).order_by("-started_at")
    good = runs.filter(ok=True).values("started_at", "finished_at").first()
    last = runs.values("started_at", "finished_at", "ok").first()
    age = GaugeMetricFamily(
        "paidup_reconciliation_last_success_age_seconds",
        "Seconds since the last successful reconciliation run finished (+Inf: never).",
        value=_age(good["finished_at"], now) if good else math.inf,
    )
    good_duration = GaugeMetricFamily(
        "paidup_reconciliation_last_success_duration_seconds",
        "How long the last successful reconciliation run took, in seconds.",
    )
    last_duration = GaugeMetricFamily(
        "paidup_reconciliation_last_run_duration_seconds",
        "How long the newest finished reconciliation run took, in seconds, whether it succeeded or not.",
    )
    last_ok = GaugeMetricFamily(
        "paidup_reconciliation_last_run_ok", "1 when the newest finished reconciliation run succeeded, else 0."
    )
    if good:
        good_duration.add_metric([], (good["finished_at"] - good["started_at"]).total_seconds())
    if last:
        last_duration.add_metric([], (last["finished_at"] - last["started_at"]).total_seconds())
        last_ok.add_metric([], int(last["ok"]))
    return [age, good_duration, last_duration, last_ok]


def webhook_events_failed() -> GaugeMetricFamily:
    """Webhook events stored (signature valid) whose processing failed and has not succeeded
    since: dj-stripe's WebhookEventTrigger rows with valid=True, processed=False, the inbox
    that reconciliation replays (billing/webhooks.py). One query."""
    from djstripe.models import WebhookEventTrigger

    return GaugeMetricFamily(
        "paidup_webhook_events_failed",
        "Stripe webhook events stored but not processed (failed; replayed by reconciliation).",
        value=WebhookEventTrigger.objects.filter(valid=True, processed=False).count(),
    )


def outbox(now) -> list[GaugeMetricFamily]:
    """Emails waiting (queued, retry, sending) and failed by status, and the age of the oldest
    waiting to go (queued or retry; seconds since it was queued, 0 when none). One query."""
    from outbox.models import OutboundEmail

    status = OutboundEmail.Status
    waiting = Q(status__in=[status.QUEUED, status.RETRY])
    row = OutboundEmail.objects.filter(
        status__in=[status.QUEUED, status.RETRY, status.SENDING, status.FAILED]
    ).aggregate(
        queued=Count("pk", filter=Q(status=status.QUEUED)),
        retry=Count("pk", filter=Q(status=status.RETRY)),
        sending=Count("pk", filter=Q(status=status.SENDING)),
        failed=Count("pk", filter=Q(status=status.FAILED)),
        oldest=Min("created_at", filter=waiting),
    )
    emails = GaugeMetricFamily("paidup_outbox_emails", "Emails in the outbox not sent, by status.", labels=["status"])
    for name in ("queued", "retry", "sending", "failed"):
        emails.add_metric([name], row[name])
    oldest = GaugeMetricFamily(
        "paidup_outbox_oldest_queued_age_seconds",
        "Seconds the oldest email waiting to be sent (queued or retry) has waited (0: none).",
        value=_age(row["oldest"], now),
    )
    return [emails, oldest]


def open_alerts() -> GaugeMetricFamily:
    """paidup_alerts_open{reason}: support alerts not resolved, every reason present. One query."""
    from .models import Alert

    counts = dict(
        Alert.objects.filter(resolved_at__isnull=True).order_by().values_list("reason").annotate(n=Count("pk"))
    )
    family = GaugeMetricFamily("paidup_alerts_open", "Support alerts not yet resolved, by reason.", labels=["reason"])
    for reason in Alert.Reason.values:
        family.add_metric([reason], counts.get(reason, 0))
    return family


def disputes(now) -> list[GaugeMetricFamily]:
    """Open disputes (any status Stripe does not call closed), and the nearest evidence due date
    among those still needing a response (evidence not submitted): as a Unix timestamp and as
    seconds from now (negative: overdue), both absent when none. One query."""
    from .models import Dispute

    needs = Q(status__in=Dispute.NEEDS_RESPONSE, evidence_submitted_at__isnull=True)
    row = Dispute.objects.exclude(status__in=Dispute.CLOSED).aggregate(
        n=Count("pk"), due=Min("evidence_due_by", filter=needs)
    )
    families = [GaugeMetricFamily("paidup_disputes_open", "Disputes not closed.", value=row["n"])]
    due_at = GaugeMetricFamily(
        "paidup_disputes_evidence_due_timestamp_seconds",
        "When the nearest dispute evidence is due (Unix time), among disputes needing a response.",
    )
    due_in = GaugeMetricFamily(
        "paidup_disputes_evidence_due_in_seconds",
        "Seconds until the nearest dispute evidence is due (negative: overdue).",
    )
    if row["due"]:
        due_at.add_metric([], row["due"].timestamp())
        due_in.add_metric([], (row["due"] - now).total_seconds())
    return [*families, due_at, due_in]


class BusinessCollector:
    """A prometheus-client collector (registered on the scrape's registry, config/metrics.py)
    yielding the gauges above, `paidup_database_up` and how long they took to read."""

    def describe(self) -> list[Metric]:
        """Nothing declared at registration, so that registering never calls collect(); the gauges
        come from collect() at scrape time."""
        # Registering must not touch the database (the first scrape may come before migrations).
        return []

    def collect(self) -> Iterator[Metric]:
        """Yield every gauge (eight queries), or only `paidup_database_up 0` when the
        database does not answer. Never raises a DatabaseError."""
        started = time.perf_counter()
        now = timezone.now()
        try:
            families = [
                orders_by_state(),
                *paid_not_fulfilled(now),
                *reconciliation(now),
                webhook_events_failed(),
                *outbox(now),
                open_alerts(),
                *disputes(now),
            ]
        except DatabaseError as error:
            logger.error("metrics: database unreachable: %s", error)
            families = []
        yield GaugeMetricFamily(
            "paidup_database_up", "1 when the scrape could read the database.", value=int(bool(families))
        )
        yield from families
        yield GaugeMetricFamily(
            "paidup_metrics_collect_duration_seconds",
            "Seconds this scrape spent reading the business gauges from the database.",
            value=time.perf_counter() - started,
        )
