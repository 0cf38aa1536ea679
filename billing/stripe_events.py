"""The Stripe event types PaidUp acts on: the one list the webhook receivers and stripe_setup read.

A live Stripe account delivers to an endpoint only the event types the endpoint is subscribed
to (`WebhookEndpoint.enabled_events`). A receiver for a type missing here would never run in
production: its events would arrive only through reconciliation's scan, minutes late. So:

- `billing.webhooks.receiver()` refuses, at import, to connect a receiver for a type that is not
  in `WEBHOOK_EVENTS`; a new receiver cannot be wired without being listed here.
- `billing.stripe_setup` subscribes the endpoint to exactly `WEBHOOK_EVENTS`, and updates an
  existing endpoint whose list differs (Stripe's update replaces the whole list).
- `tests/test_webhook_events.py` checks that every PaidUp receiver's type is here, that every
  type here has a receiver, and that Stripe accepts each one in `enabled_events`.

It lives in the Core, not in the webhook module, so that setting up Stripe never imports the
receivers (the import contracts in pyproject.toml).
"""

PAYMENT_INTENT_EVENTS = ("payment_intent.succeeded", "payment_intent.payment_failed", "payment_intent.canceled")
# Refunds, wherever made (billing.refunds). The pinned API version (stripe-python 15's
# 2026-08-26.dahlia, past 2024-10-28.acacia) sends refund.created/.updated/.failed for every
# refund, each with the Refund; charge.refunded carries the Charge without its refunds list
# (since 2022-11-15) and charge.refund.updated a Refund, for some payment methods only.
REFUND_EVENTS = ("charge.refunded", "charge.refund.updated", "refund.created", "refund.updated", "refund.failed")
# Disputes (billing.disputes): each carries the Dispute.
DISPUTE_EVENTS = (
    "charge.dispute.created",
    "charge.dispute.updated",
    "charge.dispute.closed",
    "charge.dispute.funds_withdrawn",
    "charge.dispute.funds_reinstated",
)
# Early fraud warnings (billing.fraud_warnings): each carries the radar.early_fraud_warning.
FRAUD_WARNING_EVENTS = ("radar.early_fraud_warning.created", "radar.early_fraud_warning.updated")

WEBHOOK_EVENTS: tuple[str, ...] = PAYMENT_INTENT_EVENTS + REFUND_EVENTS + DISPUTE_EVENTS + FRAUD_WARNING_EVENTS
