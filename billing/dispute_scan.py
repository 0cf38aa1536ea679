"""Reconciliation's net for disputes and early fraud warnings (issue 11, item 5).

Each run lists the disputes and the warnings created since reconciliation's cursor (the same
window as the refund scan: the last good run's cursor minus the overlap), reaching back to the
oldest dispute still open here so that a missed `.updated` / `.closed` is caught too: one Stripe
request each when there are none. Whatever the webhooks missed is recorded through the same
`record_dispute()` / `record_warning()` they use (idempotent: a row already known and unchanged
costs nothing), with reconciliation as the actor. Then disputes and warnings kept without an
order are linked to orders that appeared since (`link_orphans`), and DISPUTE_ACCESS is applied
to disputed orders fulfilled after their dispute arrived (`enforce_access`), EFW_AUTO_REFUND to
warnings whose order appeared after them (`apply_policy_to_linked`).
"""

import time
from datetime import timedelta

from . import disputes, fraud_warnings, gateway
from .models import Dispute, EarlyFraudWarning

ACTOR = "system:reconciliation"
# Our `created_at` of a dispute is when we first heard of it, after Stripe's `created`: reach a
# day further back so that clock skew and late webhooks never leave an open dispute outside.
MARGIN = timedelta(days=1)


def window_start(since: int) -> int:
    """`since` (Unix seconds), or earlier when a dispute still open here is older than that."""
    oldest = (
        Dispute.objects.exclude(status__in=Dispute.CLOSED)
        .order_by("created_at")
        .values_list("created_at", flat=True)[:1]
    )
    if oldest:
        return min(since, int((oldest[0] - MARGIN).timestamp()))
    return since


def scan(ctx, since: int) -> None:
    """List disputes (from `window_start(since)`) and warnings created at or after `since` (Unix
    seconds); record the new ones and the changed ones. Counts go to `ctx.counts`
    ("disputes_missed", "disputes_updated", "warnings_missed", "linked", "access_enforced").
    Honours `ctx.would()` (dry run). Raises stripe.StripeError / gateway.BudgetExhausted like the
    other steps (the run records them)."""
    now = int(time.time())
    for page in gateway.dispute_pages(window_start(since)):
        known = dict(
            Dispute.objects.filter(stripe_dispute_id__in=[d.id for d in page]).values_list(
                "stripe_dispute_id", "status"
            )
        )
        for dispute in page:
            if dispute.id not in known:
                what, count = f"record dispute {dispute.id} (missed by the webhook)", "disputes_missed"
            elif dispute.status and dispute.status != known[dispute.id] and known[dispute.id] not in Dispute.CLOSED:
                what, count = f"update dispute {dispute.id}: {known[dispute.id]} → {dispute.status}", "disputes_updated"
            else:
                continue
            if ctx.would(what):
                disputes.record_dispute(dispute, event_created=now, actor=ACTOR, event_type="reconciliation")
                ctx.counts[count] += 1
    for page in gateway.early_fraud_warning_pages(since):
        known = set(
            EarlyFraudWarning.objects.filter(stripe_warning_id__in=[w.id for w in page]).values_list(
                "stripe_warning_id", flat=True
            )
        )
        for warning in page:
            if warning.id not in known and ctx.would(f"record early fraud warning {warning.id} (missed)"):
                fraud_warnings.record_warning(warning, event_created=now, actor=ACTOR)
                ctx.counts["warnings_missed"] += 1
    if not ctx.dry_run:
        ctx.counts["linked"] += disputes.link_orphans(actor=ACTOR)
        ctx.counts["access_enforced"] += disputes.enforce_access()
        ctx.counts["auto_refunded"] += fraud_warnings.apply_policy_to_linked()
