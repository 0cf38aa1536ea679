from django.db import models
from django.utils import timezone


class ReconciliationRun(models.Model):
    """One reconciliation run: the heartbeat that health checks read."""

    started_at = models.DateTimeField(default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    ok = models.BooleanField(default=False)
    dry_run = models.BooleanField(default=False)
    counts = models.JSONField(default=dict, blank=True)
    errors = models.TextField(blank=True)
    # Where the Stripe scan stands after this run (billing/scan_state.py), in Unix seconds by
    # Stripe's clock, written after every settled page: the next scan reads events from `cursor`
    # minus the overlap, up to `scan_upto` if set (the older rest of a window read newest first),
    # then moves the cursor to `scan_end`.
    cursor = models.PositiveBigIntegerField(null=True, blank=True)
    scan_upto = models.PositiveBigIntegerField(null=True, blank=True)
    scan_end = models.PositiveBigIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        get_latest_by = "started_at"

    def __str__(self) -> str:
        return f"run {self.pk} at {self.started_at:%Y-%m-%d %H:%M:%S} ({'ok' if self.ok else 'not ok'})"

    @property
    def duration_seconds(self) -> float | None:
        """How long the run took, in seconds; None while it has not finished (or never will)."""
        return (self.finished_at - self.started_at).total_seconds() if self.finished_at else None


class Lease(models.Model):
    """A named lease: a lock that works on any database and expires if its holder dies."""

    name = models.CharField(max_length=50, primary_key=True)
    holder = models.CharField(max_length=100, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} held by {self.holder or 'nobody'}"
