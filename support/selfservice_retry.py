"""The self-service page's kept requests (support.models.SelfServiceRequest): the q task that
checks one and forgets it once answered, and the sweep that queues again what the broker lost.

Found by the chaos run (bench/chaos.py): with the Redis broker a check that failed while
PostgreSQL restarted was never run again, and a Redis restart dropped the queued ones, so a
customer told "within a few minutes we'll email you" heard nothing. An answer may now come twice
(a check that answered, then died before forgetting the row, runs again): a second sign-in link
or a line in the same case, never silence.
"""

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import F
from django.utils import timezone
from django_q.tasks import async_task

from .models import SelfServiceRequest
from .selfservice import REQUEST_TASK, Request, check, open_case

RETRY_ATTEMPTS = 5  # queued this many times in all, then a person takes it


def check_request(pk: int) -> str:
    """The q task for a kept request: run `check` and forget the request once answered.
    Returns check's answer, or "answered already" when the row is gone (a duplicate task).
    A check that raises leaves the row for `sweep`."""
    row = SelfServiceRequest.objects.filter(pk=pk).first()
    if row is None:
        return "answered already"
    paid_on = row.paid_on.isoformat() if row.paid_on else ""
    done = check(row.email, row.card_last4, paid_on, row.typed)
    SelfServiceRequest.objects.filter(pk=pk).delete()
    return done


def sweep(now: datetime | None = None) -> int:
    """Queue again each request unanswered SELF_SERVICE_RETRY_SECONDS after it was last queued
    (the q schedule runs this every minute); after RETRY_ATTEMPTS a person gets it as a case.
    Each row is claimed by a conditional UPDATE, so two sweeps never queue one twice. Returns
    how many were queued again or handed to a person."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.SELF_SERVICE_RETRY_SECONDS)
    due = SelfServiceRequest.objects.filter(queued_at__lt=cutoff).order_by("queued_at")
    handled = 0
    for pk in due.values_list("pk", flat=True)[:100]:
        claimed = SelfServiceRequest.objects.filter(pk=pk, queued_at__lt=cutoff).update(
            queued_at=now, attempts=F("attempts") + 1
        )
        if not claimed:
            continue
        handled += 1
        row = SelfServiceRequest.objects.get(pk=pk)
        if row.attempts <= RETRY_ATTEMPTS:
            async_task(REQUEST_TASK, pk, task_name="selfservice-check")
            continue
        request = Request(row.email, row.card_last4, row.paid_on, row.typed)
        why = f"The automatic check did not finish after {RETRY_ATTEMPTS} tries; nothing was checked."
        open_case(request, None, why)
        row.delete()
    return handled
