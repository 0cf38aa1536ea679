from django.db import models


class RateLimit(models.Model):
    """Hits per key and fixed time window, counted in the database so that every web process
    shares one count (billing/ratelimit.py). The key holds a keyed hash of the client address or
    email, never the value itself; rows outlive their window by nothing and are swept."""

    key = models.CharField(max_length=100, primary_key=True)
    hits = models.PositiveIntegerField(default=0)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        # Born in the support app (support/migrations/0004_selfservice.py) for the self-service
        # page; moved to the core so the order page can share it (billing/migrations/0018),
        # keeping its table.
        db_table = "support_ratelimit"

    def __str__(self) -> str:
        return f"{self.key}: {self.hits}"
